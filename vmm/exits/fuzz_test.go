package exits

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode feeds Decode arbitrary run pages: the fuzz input is the start of
// the page and pad zero bytes follow it (so that pages of realistic size do
// not need large inputs). Decode must never panic or modify the page; a page
// shorter than MinRunSize is ErrShortRun; a bad I/O exit is ErrBadIO; a
// successful IO exit's data lies inside the page and IOData aliases it; a
// successful MMIO exit has a length of 1 to 8; and decoding into an Exit
// that held another exit gives the same result as decoding into a fresh one.
func FuzzDecode(f *testing.F) {
	seed := func(build func(run []byte)) {
		run := make([]byte, MinRunSize)
		build(run)
		f.Add(run, uint16(pageSize-MinRunSize))
	}
	seed(func(run []byte) { EncodeIO(run, Out, 1, 0x3f8, 1, 0x200, []byte("H")) })
	seed(func(run []byte) { EncodeIO(run, In, 4, 0xcfc, 1, pageSize-4, nil) })
	seed(func(run []byte) { EncodeIO(run, Out, 2, 0x1f0, 3, pageSize-6, nil) })
	seed(func(run []byte) { EncodeIO(run, Out, 1, 0x80, 1, pageSize, nil) })
	seed(func(run []byte) { EncodeMMIO(run, 0xfec0_0000, []byte{1, 2, 3, 4}, true) })
	seed(func(run []byte) { EncodeReason(run, SystemEvent); run[offUnion] = SystemEventReset })
	seed(func(run []byte) { EncodeReason(run, InternalError); run[offUnion] = InternalErrorEmulation })
	seed(func(run []byte) { EncodeReason(run, Debug) })
	f.Add([]byte{}, uint16(0))
	f.Add(make([]byte, 40), uint16(MinRunSize-41))
	f.Fuzz(func(t *testing.T, head []byte, pad uint16) {
		run := append(append([]byte(nil), head...), make([]byte, pad%(4*pageSize))...)
		orig := append([]byte(nil), run...)

		var fresh Exit
		err := Decode(run, &fresh)
		if !bytes.Equal(run, orig) {
			t.Fatal("Decode modified the run page")
		}
		if len(run) < MinRunSize {
			if !errors.Is(err, ErrShortRun) {
				t.Fatalf("Decode of %d bytes = %v, want ErrShortRun", len(run), err)
			}
			return
		}
		if fresh.Reason == IO && err != nil && !errors.Is(err, ErrBadIO) {
			t.Fatalf("IO exit error %v does not wrap ErrBadIO", err)
		}

		// Decode again into an Exit that holds every kind of payload.
		used := Exit{
			IO: &IOExit{Port: 1, Count: 9}, MMIO: &MMIOExit{Len: 3},
			SystemEvent: &SystemEventExit{}, InternalError: &InternalErrorExit{},
			FailEntry: &FailEntryExit{}, Debug: &DebugExit{}, HardwareExitReason: 5,
		}
		err2 := Decode(run, &used)
		if (err == nil) != (err2 == nil) || !reflect.DeepEqual(fresh, used) {
			t.Fatalf("decoding into a used Exit gave %+v, %v; a fresh one %+v, %v", used, err2, fresh, err)
		}
		if err != nil {
			return
		}

		switch fresh.Reason {
		case IO:
			io := fresh.IO
			n := uint64(io.Size) * uint64(io.Count)
			if io.Count == 0 || (io.Size != 1 && io.Size != 2 && io.Size != 4) || io.Direction > Out {
				t.Fatalf("accepted a malformed IO exit %+v", io)
			}
			if io.DataOffset > uint64(len(run)) || n > uint64(len(run))-io.DataOffset {
				t.Fatalf("IO data %#x+%d outside the %d-byte page", io.DataOffset, n, len(run))
			}
			d := IOData(run, io)
			if uint64(len(d)) != n {
				t.Fatalf("IOData has %d bytes, want %d", len(d), n)
			}
			d[0] ^= 0xff
			if run[io.DataOffset] != orig[io.DataOffset]^0xff {
				t.Fatal("IOData does not alias the page at DataOffset")
			}
		case MMIO:
			if fresh.MMIO.Len == 0 || fresh.MMIO.Len > 8 {
				t.Fatalf("accepted MMIO length %d", fresh.MMIO.Len)
			}
		}
		if got, want := setPointers(&fresh), expectedPointer(fresh.Reason); got != want {
			t.Fatalf("%v: pointers %q set, want %q", fresh.Reason, got, want)
		}
	})
}
