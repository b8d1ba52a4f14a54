package exits

import (
	"encoding/binary"
	"errors"
	"testing"
)

// The mapping KVM_GET_VCPU_MMAP_SIZE asks for is usually three pages: struct
// kvm_run in the first, the port I/O data page (KVM_PIO_PAGE_OFFSET = 1) in
// the second, and the coalesced MMIO ring in the third. Real I/O exits
// therefore point at offset 0x1000.
const (
	pageSize    = 4096
	realRunSize = 3 * pageSize
	pioOffset   = pageSize
)

// putUnion writes raw little-endian fields into the exit union, the way the
// kernel would, for exits that have no Encode helper.
func putUnion(run []byte, r Reason, fields map[int]uint64, widths map[int]int) {
	EncodeReason(run, r)
	for off, v := range fields {
		p := run[offUnion+off:]
		switch widths[off] {
		case 1:
			p[0] = byte(v)
		case 4:
			binary.LittleEndian.PutUint32(p, uint32(v))
		default:
			binary.LittleEndian.PutUint64(p, v)
		}
	}
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		r    Reason
		want string
	}{
		{Unknown, "KVM_EXIT_UNKNOWN"},
		{IO, "KVM_EXIT_IO"},
		{MMIO, "KVM_EXIT_MMIO"},
		{Shutdown, "KVM_EXIT_SHUTDOWN"},
		{SystemEvent, "KVM_EXIT_SYSTEM_EVENT"},
		{InternalError, "KVM_EXIT_INTERNAL_ERROR"},
		{MemoryFault, "KVM_EXIT_MEMORY_FAULT"},
		{Reason(13), "KVM_EXIT_13"}, // a gap in the numbering
		{Reason(1000), "KVM_EXIT_1000"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("Reason(%d).String() = %q, want %q", uint32(tc.r), got, tc.want)
		}
	}
}

func TestParseReason(t *testing.T) {
	tests := []struct {
		in     string
		want   Reason
		wantOK bool
	}{
		{"io", IO, true},
		{"IO", IO, true},
		{"KVM_EXIT_MMIO", MMIO, true},
		{"kvm_exit_mmio", MMIO, true},
		{"Kvm_Exit_Hlt", HLT, true},
		{"system_event", SystemEvent, true},
		{"2", IO, true},
		{"24", SystemEvent, true},
		{"0", Unknown, true},
		{"unknown", Unknown, true},
		{"13", Reason(13), true}, // numbers need not have a name
		{"", 0, false},
		{"lots", 0, false},
		{"KVM_EXIT_", 0, false},
		{"KVM_EXIT_BOGUS", 0, false},
		{"-1", 0, false},
		{"4294967296", 0, false}, // does not fit in 32 bits
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := ParseReason(tc.in)
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("ParseReason(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
	// Every named reason survives String and ParseReason.
	for r := range reasonNames {
		if got, ok := ParseReason(r.String()); !ok || got != r {
			t.Errorf("ParseReason(%q) = %v, %v; want %v", r.String(), got, ok, r)
		}
	}
}

func TestDirectionString(t *testing.T) {
	if In.String() != "in" || Out.String() != "out" {
		t.Errorf("In, Out = %q, %q", In, Out)
	}
}

func TestDecodeIO(t *testing.T) {
	tests := []struct {
		name    string
		pageLen int
		dir     Direction
		size    uint8
		port    uint16
		count   uint32
		off     uint64
		data    []byte // what OUT put in the data area
	}{
		{"OUTB 'H' to COM1 THR", realRunSize, Out, 1, 0x3f8, 1, pioOffset, []byte("H")},
		{"OUTW", realRunSize, Out, 2, 0x1f0, 1, pioOffset, []byte{0x34, 0x12}},
		{"OUTL to PCI CONFIG_ADDRESS", realRunSize, Out, 4, 0xcf8, 1, pioOffset, []byte{0x00, 0x00, 0x00, 0x80}},
		{"INB from the i8042 status port", realRunSize, In, 1, 0x64, 1, pioOffset, nil},
		{"INW", realRunSize, In, 2, 0x71, 1, pioOffset, nil},
		{"INL from PCI CONFIG_DATA", realRunSize, In, 4, 0xcfc, 1, pioOffset, nil},
		{"REP OUTSB count 3", realRunSize, Out, 1, 0x3f8, 3, pioOffset, []byte("abc")},
		{"REP INSW count 4", realRunSize, In, 2, 0x1f0, 4, pioOffset, nil},
		{"REP OUTSL filling the data page", realRunSize, Out, 4, 0x80, 1024, pioOffset, nil},
		{"data inside a single 4 KiB page", pageSize, Out, 1, 0x80, 1, 0x200, []byte{0x7f}},
		{"data ending exactly at the page end", pageSize, Out, 4, 0x80, 2, pageSize - 8, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{"smallest page Decode accepts", MinRunSize, In, 1, 0x80, 1, MinRunSize - 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, tc.pageLen)
			EncodeIO(run, tc.dir, tc.size, tc.port, tc.count, tc.off, tc.data)
			var e Exit
			if err := Decode(run, &e); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := IOExit{Direction: tc.dir, Size: tc.size, Port: tc.port, Count: tc.count, DataOffset: tc.off}
			if e.Reason != IO || e.IO == nil || *e.IO != want {
				t.Fatalf("Decode = %v %+v, want KVM_EXIT_IO %+v", e.Reason, e.IO, want)
			}
			if e.MMIO != nil || e.SystemEvent != nil || e.InternalError != nil || e.FailEntry != nil || e.Debug != nil {
				t.Errorf("other exit pointers set: %+v", e)
			}
			d := IOData(run, e.IO)
			if len(d) != int(tc.size)*int(tc.count) {
				t.Fatalf("IOData has %d bytes, want %d x %d", len(d), tc.count, tc.size)
			}
			if tc.data != nil && string(d) != string(tc.data) {
				t.Errorf("IOData = %x, want %x", d, tc.data)
			}
			// IOData aliases the page: an IN handler fills it in place
			// for KVM to pick up.
			d[0] = 0xee
			if run[tc.off] != 0xee {
				t.Error("IOData does not alias the run page")
			}
		})
	}
}

func TestDecodeIOErrors(t *testing.T) {
	tests := []struct {
		name  string
		dir   Direction
		size  uint8
		count uint32
		off   uint64
	}{
		{"data offset at the page end", Out, 1, 1, pageSize},
		{"data offset far past the page", Out, 1, 1, 1 << 40},
		{"data offset near 2^64", Out, 4, 4, ^uint64(0) - 3},
		{"data running one byte past the page end", Out, 4, 1, pageSize - 3},
		{"REP count running past the page end", In, 2, 3, pageSize - 4},
		{"huge REP count", In, 4, ^uint32(0), 0x100},
		{"zero count", Out, 1, 0, 0x100},
		{"size 0", Out, 0, 1, 0x100},
		{"size 3", In, 3, 1, 0x100},
		{"size 8 (there is no 64-bit IN)", In, 8, 1, 0x100},
		{"direction 2", Direction(2), 1, 1, 0x100},
		{"direction 0xff", Direction(0xff), 4, 1, 0x100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, pageSize)
			EncodeIO(run, tc.dir, tc.size, 0x3f8, tc.count, tc.off, []byte{1, 2, 3, 4})
			var e Exit
			err := Decode(run, &e)
			if !errors.Is(err, ErrBadIO) {
				t.Fatalf("Decode = %v, want an error wrapping ErrBadIO", err)
			}
			if e.Reason != IO {
				t.Errorf("Reason = %v, want KVM_EXIT_IO even on error", e.Reason)
			}
		})
	}
}

func TestDecodeMMIO(t *testing.T) {
	tests := []struct {
		name  string
		addr  uint64
		data  []byte
		write bool
	}{
		{"byte read", 0xd000_0000, make([]byte, 1), false},
		{"dword write to the IOAPIC index", 0xfec0_0000, []byte{0x10, 0, 0, 0}, true},
		{"qword write", 0xfee0_0300, []byte{1, 2, 3, 4, 5, 6, 7, 8}, true},
		{"word read", 0xfed0_0000, make([]byte, 2), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, pageSize)
			EncodeMMIO(run, tc.addr, tc.data, tc.write)
			var e Exit
			if err := Decode(run, &e); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			m := e.MMIO
			if e.Reason != MMIO || m == nil || e.IO != nil {
				t.Fatalf("Decode = %+v, want only an MMIO exit", e)
			}
			if m.PhysAddr != tc.addr || m.Len != uint32(len(tc.data)) || m.IsWrite != tc.write || string(m.Data[:m.Len]) != string(tc.data) {
				t.Errorf("MMIO = %+v, want addr %#x len %d write %v data %x", m, tc.addr, len(tc.data), tc.write, tc.data)
			}
		})
	}
}

func TestDecodeMMIOLength(t *testing.T) {
	for _, tc := range []struct {
		name    string
		len     uint32
		wantErr bool
	}{
		{"len 0 is an error", 0, true},
		{"len 1", 1, false},
		{"len 8", 8, false},
		{"len 9 is an error", 9, true},
		{"len 0xffffffff is an error", ^uint32(0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, pageSize)
			EncodeMMIO(run, 0x1000, nil, false)
			binary.LittleEndian.PutUint32(run[offUnion+16:], tc.len)
			var e Exit
			err := Decode(run, &e)
			if (err != nil) != tc.wantErr {
				t.Errorf("Decode with MMIO len %d = %v, want error %v", tc.len, err, tc.wantErr)
			}
		})
	}
}

func TestSetMMIOData(t *testing.T) {
	// The VMM completes an MMIO read by writing the value where the exit
	// had its data; the length and direction must not be disturbed.
	run := make([]byte, pageSize)
	EncodeMMIO(run, 0xfec0_0010, make([]byte, 4), false)
	SetMMIOData(run, []byte{0x11, 0x00, 0x17, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0x99, 0x99})
	var e Exit
	if err := Decode(run, &e); err != nil {
		t.Fatal(err)
	}
	if e.MMIO.Data != [8]byte{0x11, 0x00, 0x17, 0x00, 0xaa, 0xbb, 0xcc, 0xdd} {
		t.Errorf("data = %x", e.MMIO.Data)
	}
	if e.MMIO.Len != 4 || e.MMIO.IsWrite || e.MMIO.PhysAddr != 0xfec0_0010 {
		t.Errorf("SetMMIOData disturbed the rest of the exit: %+v", e.MMIO)
	}
}

func TestDecodeOtherExits(t *testing.T) {
	sysData := func(n int) [16]uint64 {
		var d [16]uint64
		for i := range d {
			d[i] = uint64(n+i) * 0x1_0000_0001
		}
		return d
	}
	// fill writes data[16] at union offset 8, as the kernel lays out
	// system_event and internal.
	fill := func(run []byte, d [16]uint64) {
		for i, v := range d {
			binary.LittleEndian.PutUint64(run[offUnion+8+8*i:], v)
		}
	}
	tests := []struct {
		name  string
		build func(run []byte)
		check func(t *testing.T, e *Exit)
	}{
		{"system event reset", func(run []byte) {
			putUnion(run, SystemEvent, map[int]uint64{0: SystemEventReset, 4: 16}, map[int]int{0: 4, 4: 4})
			fill(run, sysData(1))
		}, func(t *testing.T, e *Exit) {
			want := SystemEventExit{Type: SystemEventReset, NData: 16, Data: sysData(1)}
			if e.SystemEvent == nil || *e.SystemEvent != want {
				t.Errorf("SystemEvent = %+v, want %+v", e.SystemEvent, want)
			}
		}},
		{"system event shutdown", func(run []byte) {
			putUnion(run, SystemEvent, map[int]uint64{0: SystemEventShutdown}, map[int]int{0: 4})
		}, func(t *testing.T, e *Exit) {
			if e.SystemEvent == nil || e.SystemEvent.Type != SystemEventShutdown || e.SystemEvent.NData != 0 {
				t.Errorf("SystemEvent = %+v", e.SystemEvent)
			}
		}},
		{"internal error: emulation failure", func(run []byte) {
			putUnion(run, InternalError, map[int]uint64{0: InternalErrorEmulation, 4: 3}, map[int]int{0: 4, 4: 4})
			fill(run, sysData(7))
		}, func(t *testing.T, e *Exit) {
			want := InternalErrorExit{Suberror: InternalErrorEmulation, NData: 3, Data: sysData(7)}
			if e.InternalError == nil || *e.InternalError != want {
				t.Errorf("InternalError = %+v, want %+v", e.InternalError, want)
			}
		}},
		{"fail entry: invalid guest state", func(run []byte) {
			putUnion(run, FailEntry, map[int]uint64{0: 0x8000_0021, 8: 3}, map[int]int{0: 8, 8: 4})
		}, func(t *testing.T, e *Exit) {
			want := FailEntryExit{HardwareEntryFailureReason: 0x8000_0021, CPU: 3}
			if e.FailEntry == nil || *e.FailEntry != want {
				t.Errorf("FailEntry = %+v, want %+v", e.FailEntry, want)
			}
		}},
		{"debug: single step", func(run []byte) {
			putUnion(run, Debug, map[int]uint64{0: 1, 8: 0xffff_ffff_8100_0000, 16: 0xffff_4ff0, 24: 0x400}, map[int]int{0: 4})
		}, func(t *testing.T, e *Exit) {
			want := DebugExit{Exception: 1, PC: 0xffff_ffff_8100_0000, DR6: 0xffff_4ff0, DR7: 0x400}
			if e.Debug == nil || *e.Debug != want {
				t.Errorf("Debug = %+v, want %+v", e.Debug, want)
			}
		}},
		{"unknown exit carries the hardware reason", func(run []byte) {
			putUnion(run, Unknown, map[int]uint64{0: 0x1234}, nil)
		}, func(t *testing.T, e *Exit) {
			if e.HardwareExitReason != 0x1234 {
				t.Errorf("HardwareExitReason = %#x, want 0x1234", e.HardwareExitReason)
			}
		}},
		{"HLT has no payload", func(run []byte) { EncodeReason(run, HLT) }, func(t *testing.T, e *Exit) {}},
		{"shutdown has no payload", func(run []byte) { EncodeReason(run, Shutdown) }, func(t *testing.T, e *Exit) {}},
		{"a reason from a newer kernel decodes to just the number", func(run []byte) { EncodeReason(run, 99) }, func(t *testing.T, e *Exit) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, pageSize)
			tc.build(run)
			want := Reason(binary.LittleEndian.Uint32(run[offExitReason:]))
			var e Exit
			if err := Decode(run, &e); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if e.Reason != want {
				t.Errorf("Reason = %v, want %v", e.Reason, want)
			}
			tc.check(t, &e)
			if got := setPointers(&e); got != expectedPointer(want) {
				t.Errorf("pointers set: %q, want %q", got, expectedPointer(want))
			}
		})
	}
}

// setPointers names the payload pointers that are set in e.
func setPointers(e *Exit) string {
	s := ""
	add := func(ok bool, name string) {
		if ok {
			s += name + " "
		}
	}
	add(e.IO != nil, "IO")
	add(e.MMIO != nil, "MMIO")
	add(e.SystemEvent != nil, "SystemEvent")
	add(e.InternalError != nil, "InternalError")
	add(e.FailEntry != nil, "FailEntry")
	add(e.Debug != nil, "Debug")
	return s
}

// expectedPointer is the payload a reason decodes into.
func expectedPointer(r Reason) string {
	switch r {
	case IO:
		return "IO "
	case MMIO:
		return "MMIO "
	case SystemEvent:
		return "SystemEvent "
	case InternalError:
		return "InternalError "
	case FailEntry:
		return "FailEntry "
	case Debug:
		return "Debug "
	}
	return ""
}

func TestDecodeShortRun(t *testing.T) {
	for _, n := range []int{0, offExitReason + 4, offUnion, MinRunSize - 1} {
		var e Exit
		err := Decode(make([]byte, n), &e)
		if !errors.Is(err, ErrShortRun) {
			t.Errorf("Decode of a %d-byte page = %v, want ErrShortRun", n, err)
		}
	}
	if err := Decode(nil, &Exit{}); !errors.Is(err, ErrShortRun) {
		t.Errorf("Decode(nil) = %v, want ErrShortRun", err)
	}
	run := make([]byte, MinRunSize)
	EncodeReason(run, HLT)
	if err := Decode(run, &Exit{}); err != nil {
		t.Errorf("Decode of a MinRunSize page = %v, want success", err)
	}
}

func TestDecodeReusesStorage(t *testing.T) {
	run := make([]byte, realRunSize)
	var e Exit

	EncodeIO(run, Out, 1, 0x3f8, 1, pioOffset, []byte("x"))
	if err := Decode(run, &e); err != nil {
		t.Fatal(err)
	}
	io := e.IO

	t.Run("a different reason leaves only its own pointer", func(t *testing.T) {
		EncodeMMIO(run, 0xfee0_00b0, []byte{0, 0, 0, 0}, true)
		if err := Decode(run, &e); err != nil {
			t.Fatal(err)
		}
		if got := setPointers(&e); got != "MMIO " || e.Reason != MMIO {
			t.Errorf("after IO then MMIO: %v with %q set, want MMIO only", e.Reason, got)
		}
		EncodeReason(run, Shutdown)
		if err := Decode(run, &e); err != nil {
			t.Fatal(err)
		}
		if got := setPointers(&e); got != "" || e.Reason != Shutdown {
			t.Errorf("after MMIO then SHUTDOWN: %v with %q set, want none", e.Reason, got)
		}
		EncodeReason(run, Unknown)
		binary.LittleEndian.PutUint64(run[offUnion:], 7)
		_ = Decode(run, &e)
		EncodeIO(run, In, 1, 0x64, 1, pioOffset, nil)
		if err := Decode(run, &e); err != nil {
			t.Fatal(err)
		}
		if e.HardwareExitReason != 0 || setPointers(&e) != "IO " {
			t.Errorf("after UNKNOWN then IO: stale fields %+v", e)
		}
	})

	t.Run("the same reason reuses its storage without allocating", func(t *testing.T) {
		EncodeIO(run, Out, 1, 0x3f8, 1, pioOffset, []byte("y"))
		if err := Decode(run, &e); err != nil {
			t.Fatal(err)
		}
		io = e.IO
		EncodeIO(run, In, 4, 0xcfc, 1, pioOffset, nil)
		if err := Decode(run, &e); err != nil {
			t.Fatal(err)
		}
		if e.IO != io {
			t.Error("a second IO exit allocated a new IOExit")
		}
		if e.IO.Direction != In || e.IO.Port != 0xcfc || e.IO.Size != 4 {
			t.Errorf("reused IOExit holds %+v, want the second exit", e.IO)
		}
		if n := testing.AllocsPerRun(100, func() { _ = Decode(run, &e) }); n != 0 {
			t.Errorf("decoding an IO exit into a warm Exit allocates %v times", n)
		}
		EncodeMMIO(run, 0xd000_0000, []byte{1, 2}, true)
		_ = Decode(run, &e)
		if n := testing.AllocsPerRun(100, func() { _ = Decode(run, &e) }); n != 0 {
			t.Errorf("decoding an MMIO exit into a warm Exit allocates %v times", n)
		}
	})
}

func TestEncodeIODataOutsidePage(t *testing.T) {
	// The encoder is used by fuzzers with hostile offsets: it must not
	// panic, and Decode must then refuse the exit.
	run := make([]byte, MinRunSize)
	EncodeIO(run, Out, 1, 0x80, 1, 1<<62, []byte{1})
	if err := Decode(run, &Exit{}); !errors.Is(err, ErrBadIO) {
		t.Errorf("Decode = %v, want ErrBadIO", err)
	}
}
