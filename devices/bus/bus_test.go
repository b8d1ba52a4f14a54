package bus

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// access is one call a fakeDev received.
type access struct {
	write  bool
	offset uint64
	data   []byte
}

// fakeDev is a device backed by a byte array: reads return regs[offset:],
// writes store into it, and every call is recorded. It fails the test if the
// bus ever hands it an access that does not fit inside its range, which is
// the promise Bus makes to devices.
type fakeDev struct {
	t        testing.TB
	regs     []byte
	accesses []access
	err      error // returned from every call when set
}

func newFakeDev(t testing.TB, size int) *fakeDev {
	d := &fakeDev{t: t, regs: make([]byte, size)}
	for i := range d.regs {
		d.regs[i] = byte(0xa0 + i)
	}
	return d
}

func (d *fakeDev) check(offset uint64, data []byte) bool {
	if offset > uint64(len(d.regs)) || uint64(len(data)) > uint64(len(d.regs))-offset {
		d.t.Errorf("device saw an access of %d bytes at offset %#x, outside its %d-byte range", len(data), offset, len(d.regs))
		return false
	}
	return true
}

func (d *fakeDev) Read(offset uint64, data []byte) error {
	d.accesses = append(d.accesses, access{false, offset, nil})
	if d.check(offset, data) {
		copy(data, d.regs[offset:])
	}
	return d.err
}

func (d *fakeDev) Write(offset uint64, data []byte) error {
	d.accesses = append(d.accesses, access{true, offset, append([]byte(nil), data...)})
	if d.check(offset, data) {
		copy(d.regs[offset:], data)
	}
	return d.err
}

func mustRegister(t *testing.T, b *Bus, space Space, base, size uint64, name string, dev Device) {
	t.Helper()
	if err := b.Register(space, base, size, name, dev); err != nil {
		t.Fatalf("Register(%v, %#x, %#x, %q): %v", space, base, size, name, err)
	}
}

func TestSpaceString(t *testing.T) {
	for _, tc := range []struct {
		s    Space
		want string
	}{{PIO, "pio"}, {MMIO, "mmio"}, {Space(7), "space(7)"}} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Space(%d).String() = %q, want %q", uint8(tc.s), got, tc.want)
		}
	}
}

func TestRegister(t *testing.T) {
	// Every case starts from a bus holding PIO [0x10, 0x20) ("uart") and
	// PIO [0x40, 0x50) ("rtc"), then registers one more range.
	tests := []struct {
		name       string
		space      Space
		base, size uint64
		wantErr    error // nil: accepted
	}{
		{"rejects exactly the same range", PIO, 0x10, 0x10, ErrOverlap},
		{"rejects overlap at start (new range runs into the device)", PIO, 0x08, 0x10, ErrOverlap},
		{"rejects overlap at end (new range starts inside the device)", PIO, 0x18, 0x10, ErrOverlap},
		{"rejects overlap of the last byte only", PIO, 0x1f, 0x01, ErrOverlap},
		{"rejects overlap of the first byte only", PIO, 0x00, 0x11, ErrOverlap},
		{"rejects a range containing a device", PIO, 0x00, 0x30, ErrOverlap},
		{"rejects a range contained in a device", PIO, 0x12, 0x02, ErrOverlap},
		{"rejects a range spanning two devices", PIO, 0x18, 0x30, ErrOverlap},
		{"rejects a range containing two devices", PIO, 0x00, 0x100, ErrOverlap},
		{"accepts a range adjacent below", PIO, 0x00, 0x10, nil},
		{"accepts a range adjacent above", PIO, 0x20, 0x10, nil},
		{"accepts a range filling the gap exactly", PIO, 0x20, 0x20, nil},
		{"accepts the same addresses in the other space", MMIO, 0x10, 0x10, nil},
		{"rejects a zero-length range", PIO, 0x30, 0, ErrEmptyRange},
		{"rejects a zero-length MMIO range", MMIO, 0x1000, 0, ErrEmptyRange},
		{"rejects an MMIO range that wraps past 2^64", MMIO, 0xffff_ffff_ffff_f000, 0x2000, ErrEmptyRange},
		{"rejects an MMIO range ending exactly at 2^64 (End would wrap to 0)", MMIO, 0xffff_ffff_ffff_f000, 0x1000, ErrEmptyRange},
		{"accepts an MMIO range ending just below 2^64", MMIO, 0xffff_ffff_ffff_f000, 0xfff, nil},
		{"accepts the last I/O port", PIO, 0xffff, 1, nil},
		{"accepts a range ending at the top of the port space", PIO, 0xfff0, 0x10, nil},
		{"rejects a port range running past 0xffff", PIO, 0xfff0, 0x11, ErrEmptyRange},
		{"rejects a port beyond 0xffff", PIO, 0x10000, 1, ErrEmptyRange},
		{"accepts MMIO above 64 KiB", MMIO, 0xfec0_0000, 0x1000, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New()
			mustRegister(t, b, PIO, 0x10, 0x10, "uart", newFakeDev(t, 0x10))
			mustRegister(t, b, PIO, 0x40, 0x10, "rtc", newFakeDev(t, 0x10))
			before := b.Ranges(tc.space)

			err := b.Register(tc.space, tc.base, tc.size, "new", newFakeDev(t, 1))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Register(%v, %#x, %#x) = %v, want success", tc.space, tc.base, tc.size, err)
				}
				r, ok := b.Lookup(tc.space, tc.base)
				if !ok || r.Name != "new" || r.Base != tc.base || r.Size != tc.size || r.Space != tc.space {
					t.Errorf("after Register, Lookup(%#x) = %+v, %v; want the new range", tc.base, r, ok)
				}
				if got := len(b.Ranges(tc.space)); got != len(before)+1 {
					t.Errorf("%d ranges after Register, want %d", got, len(before)+1)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Register(%v, %#x, %#x) = %v, want an error wrapping %v", tc.space, tc.base, tc.size, err, tc.wantErr)
			}
			if after := b.Ranges(tc.space); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("a rejected Register changed the bus: %v, was %v", after, before)
			}
		})
	}
}

func TestRegisterOverlapErrorNamesTheOwner(t *testing.T) {
	b := New()
	mustRegister(t, b, PIO, 0x3f8, 8, "COM1", newFakeDev(t, 8))
	err := b.Register(PIO, 0x3fc, 8, "COM1-bis", newFakeDev(t, 8))
	if !errors.Is(err, ErrOverlap) {
		t.Fatalf("err = %v, want ErrOverlap", err)
	}
	for _, want := range []string{"COM1-bis", "COM1 at 0x3f8+0x8", "0x3fc"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestRegisterUnknownSpace(t *testing.T) {
	b := New()
	err := b.Register(Space(2), 0, 1, "x", newFakeDev(t, 1))
	if err == nil || errors.Is(err, ErrOverlap) || errors.Is(err, ErrEmptyRange) {
		t.Fatalf("Register in Space(2) = %v, want a plain error", err)
	}
	if _, ok := b.Lookup(Space(2), 0); ok {
		t.Error("Lookup in an unknown space found something")
	}
	if rs := b.Ranges(Space(2)); rs != nil {
		t.Errorf("Ranges(Space(2)) = %v, want nil", rs)
	}
}

func TestLookup(t *testing.T) {
	b := New()
	mustRegister(t, b, PIO, 0x60, 1, "kbd-data", newFakeDev(t, 1))
	mustRegister(t, b, PIO, 0x64, 1, "kbd-cmd", newFakeDev(t, 1))
	mustRegister(t, b, PIO, 0x3f8, 8, "COM1", newFakeDev(t, 8))
	mustRegister(t, b, MMIO, 0xfec0_0000, 0x1000, "ioapic", newFakeDev(t, 0x1000))
	tests := []struct {
		name     string
		space    Space
		addr     uint64
		wantName string // "" means no device
	}{
		{"below every device", PIO, 0x0, ""},
		{"one-port device", PIO, 0x60, "kbd-data"},
		{"gap between one-port devices", PIO, 0x61, ""},
		{"second one-port device", PIO, 0x64, "kbd-cmd"},
		{"first port of a range", PIO, 0x3f8, "COM1"},
		{"last port of a range", PIO, 0x3ff, "COM1"},
		{"one past the end of a range", PIO, 0x400, ""},
		{"one before the start of a range", PIO, 0x3f7, ""},
		{"top of the port space", PIO, 0xffff, ""},
		{"spaces are separate: a port address in MMIO", MMIO, 0x3f8, ""},
		{"MMIO device", MMIO, 0xfec0_0010, "ioapic"},
		{"MMIO one past the end", MMIO, 0xfec0_1000, ""},
		{"MMIO at the top of the address space", MMIO, ^uint64(0), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := b.Lookup(tc.space, tc.addr)
			if ok != (tc.wantName != "") || r.Name != tc.wantName {
				t.Errorf("Lookup(%v, %#x) = %q, %v; want %q", tc.space, tc.addr, r.Name, ok, tc.wantName)
			}
			if ok && (tc.addr < r.Base || tc.addr >= r.End()) {
				t.Errorf("Lookup(%v, %#x) returned %#x+%#x, which does not hold the address", tc.space, tc.addr, r.Base, r.Size)
			}
		})
	}
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name        string
		write       bool
		addr        uint64
		data        []byte // written, or the width of a read
		wantHandled bool
		wantOffset  uint64
		wantRead    []byte // for reads: what the guest sees
	}{
		{"read at base is offset 0", false, 0x3f8, make([]byte, 1), true, 0, []byte{0xa0}},
		{"read inside is relative to base", false, 0x3fd, make([]byte, 1), true, 5, []byte{0xa5}},
		{"word read", false, 0x3fa, make([]byte, 2), true, 2, []byte{0xa2, 0xa3}},
		{"dword read ending at the last port", false, 0x3fc, make([]byte, 4), true, 4, []byte{0xa4, 0xa5, 0xa6, 0xa7}},
		{"read running past the end is unclaimed", false, 0x3fe, make([]byte, 4), false, 0, []byte{0xff, 0xff, 0xff, 0xff}},
		{"read below the device is unclaimed", false, 0x3f7, make([]byte, 1), false, 0, []byte{0xff}},
		{"read after the device is unclaimed", false, 0x400, make([]byte, 2), false, 0, []byte{0xff, 0xff}},
		{"write at base is offset 0", true, 0x3f8, []byte{'H'}, true, 0, nil},
		{"write inside is relative to base", true, 0x3fb, []byte{0x83}, true, 3, nil},
		{"word write", true, 0x3fe, []byte{1, 2}, true, 6, nil},
		{"write running past the end is unclaimed", true, 0x3ff, []byte{1, 2}, false, 0, nil},
		{"write to an empty port is unclaimed", true, 0x80, []byte{0x42}, false, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New()
			dev := newFakeDev(t, 8)
			mustRegister(t, b, PIO, 0x3f8, 8, "COM1", dev)
			data := append([]byte(nil), tc.data...)
			if !tc.write {
				for i := range data {
					data[i] = 0x5a // garbage the read must overwrite
				}
			}
			var res Result
			var err error
			if tc.write {
				res, err = b.Write(PIO, tc.addr, data)
			} else {
				res, err = b.Read(PIO, tc.addr, data)
			}
			if err != nil {
				t.Fatalf("unexpected device error %v", err)
			}
			if res.Handled != tc.wantHandled {
				t.Fatalf("Handled = %v, want %v", res.Handled, tc.wantHandled)
			}
			reads, writes := b.Unhandled()
			if tc.wantHandled {
				if res.Name != "COM1" || res.Offset != tc.wantOffset || res.Dev != Device(dev) {
					t.Errorf("Result = %+v, want COM1 at offset %d", res, tc.wantOffset)
				}
				if len(dev.accesses) != 1 {
					t.Fatalf("device saw %d accesses, want 1", len(dev.accesses))
				}
				a := dev.accesses[0]
				if a.write != tc.write || a.offset != tc.wantOffset {
					t.Errorf("device saw write=%v offset %d, want write=%v offset %d", a.write, a.offset, tc.write, tc.wantOffset)
				}
				if tc.write && !bytes.Equal(a.data, tc.data) {
					t.Errorf("device got %x, want %x", a.data, tc.data)
				}
				if reads != 0 || writes != 0 {
					t.Errorf("Unhandled() = %d, %d after a handled access, want 0, 0", reads, writes)
				}
			} else {
				if res != (Result{}) {
					t.Errorf("unhandled access returned %+v, want the zero Result", res)
				}
				if len(dev.accesses) != 0 {
					t.Errorf("device saw %v for an access outside its range", dev.accesses)
				}
				wantR, wantW := uint64(1), uint64(0)
				if tc.write {
					wantR, wantW = 0, 1
				}
				if reads != wantR || writes != wantW {
					t.Errorf("Unhandled() = %d, %d, want %d, %d", reads, writes, wantR, wantW)
				}
			}
			if !tc.write && !bytes.Equal(data, tc.wantRead) {
				t.Errorf("read returned %x, want %x", data, tc.wantRead)
			}
		})
	}
}

func TestDispatchWriteThenRead(t *testing.T) {
	// The same device at two bases sees the same offsets: devices never
	// know where they were placed.
	b := New()
	com1, com2 := newFakeDev(t, 8), newFakeDev(t, 8)
	mustRegister(t, b, PIO, 0x3f8, 8, "COM1", com1)
	mustRegister(t, b, PIO, 0x2f8, 8, "COM2", com2)
	if _, err := b.Write(PIO, 0x3f8+7, []byte{0x11}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(PIO, 0x2f8+7, []byte{0x22}); err != nil {
		t.Fatal(err)
	}
	if com1.regs[7] != 0x11 || com2.regs[7] != 0x22 {
		t.Errorf("scratch registers = %#x, %#x; want 0x11, 0x22", com1.regs[7], com2.regs[7])
	}
	got := []byte{0}
	if r, _ := b.Read(PIO, 0x2ff, got); !r.Handled || r.Name != "COM2" || r.Offset != 7 || got[0] != 0x22 {
		t.Errorf("read 0x2ff = %+v, %#x; want COM2 offset 7 value 0x22", r, got[0])
	}
}

func TestDeviceErrorIsReturnedButAccessIsHandled(t *testing.T) {
	b := New()
	dev := newFakeDev(t, 4)
	dev.err = errors.New("reserved register")
	mustRegister(t, b, MMIO, 0xd000_0000, 4, "dev", dev)
	r, err := b.Write(MMIO, 0xd000_0002, []byte{1})
	if err != dev.err || !r.Handled || r.Offset != 2 {
		t.Errorf("Write = %+v, %v; want handled at offset 2 with the device's error", r, err)
	}
	r, err = b.Read(MMIO, 0xd000_0000, make([]byte, 4))
	if err != dev.err || !r.Handled || r.Offset != 0 {
		t.Errorf("Read = %+v, %v; want handled at offset 0 with the device's error", r, err)
	}
	if reads, writes := b.Unhandled(); reads != 0 || writes != 0 {
		t.Errorf("Unhandled() = %d, %d; device errors are not unclaimed accesses", reads, writes)
	}
}

func TestUnhandledCountsAccumulate(t *testing.T) {
	b := New()
	for i := 0; i < 3; i++ {
		data := []byte{0, 0, 0, 0}
		if r, err := b.Read(PIO, 0xcf8, data); r.Handled || err != nil {
			t.Fatalf("read on an empty bus = %+v, %v", r, err)
		}
		if !bytes.Equal(data, []byte{0xff, 0xff, 0xff, 0xff}) {
			t.Errorf("open-bus read = %x, want ffffffff", data)
		}
	}
	for i := 0; i < 2; i++ {
		if r, err := b.Write(MMIO, 0xfee0_0000, []byte{1}); r.Handled || err != nil {
			t.Fatalf("write on an empty bus = %+v, %v", r, err)
		}
	}
	// A zero-length read at an empty address is unclaimed too, and must
	// not touch anything.
	if r, _ := b.Read(PIO, 0, nil); r.Handled {
		t.Error("zero-length read on an empty bus handled")
	}
	if reads, writes := b.Unhandled(); reads != 4 || writes != 2 {
		t.Errorf("Unhandled() = %d, %d; want 4, 2", reads, writes)
	}
}

func TestRangesSortedCopy(t *testing.T) {
	b := New()
	bases := []uint64{0x3f8, 0x60, 0xcf8, 0x70, 0x2f8, 0x64, 0x80}
	for _, base := range bases {
		mustRegister(t, b, PIO, base, 1, fmt.Sprintf("p%x", base), newFakeDev(t, 1))
	}
	mustRegister(t, b, MMIO, 0x1000, 1, "m", newFakeDev(t, 1))
	rs := b.Ranges(PIO)
	want := []uint64{0x60, 0x64, 0x70, 0x80, 0x2f8, 0x3f8, 0xcf8}
	if len(rs) != len(want) {
		t.Fatalf("Ranges(PIO) has %d entries, want %d", len(rs), len(want))
	}
	for i, r := range rs {
		if r.Base != want[i] || r.Name != fmt.Sprintf("p%x", want[i]) || r.Space != PIO {
			t.Errorf("Ranges(PIO)[%d] = %+v, want base %#x", i, r, want[i])
		}
	}
	rs[0].Base, rs[0].Name = 0x9999, "mutated"
	if r, ok := b.Lookup(PIO, 0x60); !ok || r.Name != "p60" {
		t.Errorf("mutating the result of Ranges changed the bus: Lookup(0x60) = %+v, %v", r, ok)
	}
	if m := b.Ranges(MMIO); len(m) != 1 || m[0].Name != "m" {
		t.Errorf("Ranges(MMIO) = %v, want just m", m)
	}
	if got := New().Ranges(PIO); len(got) != 0 {
		t.Errorf("Ranges on an empty bus = %v", got)
	}
}

func TestRangeEnd(t *testing.T) {
	if got := (Range{Base: 0x3f8, Size: 8}).End(); got != 0x400 {
		t.Errorf("End() = %#x, want 0x400", got)
	}
}
