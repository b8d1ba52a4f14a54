package exits

import (
	"encoding/binary"
	"reflect"
	"slices"
	"testing"
)

// The VMM's writes land at the offsets struct kvm_run gives them on x86-64
// (include/uapi/linux/kvm.h): immediate_exit at 1, kvm_valid_regs at 288,
// s.regs (struct kvm_regs) at 304 with RIP its 17th word, at 432. The
// numbers are spelled out here, not taken from runpage.go, so that a slip in
// the layout constants fails this test.
func TestRunPageWrites(t *testing.T) {
	tests := []struct {
		name  string
		write func(run []byte)
		want  map[int]byte // offset -> byte; every other byte stays 0
	}{
		{"immediate_exit on", func(run []byte) { SetImmediateExit(run, true) }, map[int]byte{1: 1}},
		{"immediate_exit off", func(run []byte) { SetImmediateExit(run, true); SetImmediateExit(run, false) }, nil},
		{"sync regs requested", EnableSyncRegs, map[int]byte{288: 1}},
		{"MMIO read data", func(run []byte) { SetMMIOData(run, []byte{0xaa, 0xbb}) }, map[int]byte{40: 0xaa, 41: 0xbb}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, pageSize)
			tc.write(run)
			for i, b := range run {
				if b != tc.want[i] {
					t.Errorf("byte %d = %#x, want %#x", i, b, tc.want[i])
				}
			}
		})
	}
}

func TestSyncedRIP(t *testing.T) {
	run := make([]byte, pageSize)
	binary.LittleEndian.PutUint64(run[432:], 0xffffffff81000000) // s.regs.rip
	binary.LittleEndian.PutUint64(run[424:], 0x1111)             // s.regs.r15, just before
	binary.LittleEndian.PutUint64(run[440:], 0x2222)             // s.regs.rflags, just after
	if got := SyncedRIP(run); got != 0xffffffff81000000 {
		t.Errorf("SyncedRIP = %#x, want 0xffffffff81000000", got)
	}
}

func TestReasons(t *testing.T) {
	rs := Reasons()
	if !slices.IsSorted(rs) {
		t.Errorf("Reasons() not in numeric order: %v", rs)
	}
	if len(rs) != len(reasonNames) {
		t.Errorf("Reasons() has %d reasons, the name table %d", len(rs), len(reasonNames))
	}
	for _, want := range []Reason{Unknown, IO, MMIO, HLT, Shutdown, InternalError, MemoryFault} {
		if !slices.Contains(rs, want) {
			t.Errorf("Reasons() lacks %v", want)
		}
	}
	if slices.Contains(rs, Reason(13)) {
		t.Error("Reasons() lists 13, which has no name")
	}
}

// The encoders build what Decode reads back, at the kernel's offsets.
func TestEncodeRoundTrip(t *testing.T) {
	words := make([]uint64, 20) // more than the 16 the union holds
	for i := range words {
		words[i] = uint64(i+1) << 32
	}
	var want16 [16]uint64
	copy(want16[:], words)
	tests := []struct {
		name   string
		encode func(run []byte)
		want   Exit
		raw    map[int]byte // bytes of the page the kernel's layout puts there
	}{
		{"system event", func(run []byte) { EncodeSystemEvent(run, SystemEventReset, 7, 8) },
			Exit{Reason: SystemEvent, SystemEvent: &SystemEventExit{Type: SystemEventReset, NData: 2, Data: [16]uint64{7, 8}}},
			map[int]byte{8: 24, 32: 2, 36: 2, 40: 7, 48: 8}},
		{"internal error, data capped at 16", func(run []byte) { EncodeInternalError(run, InternalErrorEmulation, words...) },
			Exit{Reason: InternalError, InternalError: &InternalErrorExit{Suberror: InternalErrorEmulation, NData: 16, Data: want16}},
			map[int]byte{8: 17, 32: 1, 36: 16, 44: 1, 164: 16, 172: 0}},
		{"fail entry", func(run []byte) { EncodeFailEntry(run, 0x80000021, 3) },
			Exit{Reason: FailEntry, FailEntry: &FailEntryExit{HardwareEntryFailureReason: 0x80000021, CPU: 3}},
			map[int]byte{8: 9, 32: 0x21, 35: 0x80, 40: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := make([]byte, pageSize)
			tc.encode(run)
			for off, b := range tc.raw {
				if run[off] != b {
					t.Errorf("byte %d = %#x, want %#x", off, run[off], b)
				}
			}
			var e Exit
			if err := Decode(run, &e); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e, tc.want) {
				t.Errorf("Decode = %+v, want %+v", e, tc.want)
			}
		})
	}
}
