package observatory

import (
	"errors"
	"strings"
	"testing"
	"time"

	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
)

// kernelCounterDelta is the counters part of a snapshot's line, from KVM's
// counters now and at the previous snapshot: vmm computes what moved,
// formatCounterDeltas writes it.
func kernelCounterDelta(now, before map[string]uint64) string {
	return formatCounterDeltas(vmm.KernelCounterDeltas(now, before))
}

func TestKernelCounterDelta(t *testing.T) {
	tests := []struct {
		name        string
		now, before map[string]uint64
		want        string
	}{
		{"first snapshot: everything so far", map[string]uint64{"exits": 9, "io_exits": 0, "pf_fixed": 3}, nil, "exits +9, pf_fixed +3"},
		{"exit counters first, then by size", map[string]uint64{"exits": 50, "irq_exits": 10, "insn_emulation": 900, "halt_exits": 10},
			map[string]uint64{"exits": 40, "irq_exits": 5, "insn_emulation": 100, "halt_exits": 5},
			"exits +10, halt_exits +5, irq_exits +5, insn_emulation +800"},
		{"nothing moved", map[string]uint64{"exits": 7}, map[string]uint64{"exits": 7}, "none moved (the vCPU neither exited nor was interrupted: halted, or not run)"},
		{"a gauge that went down is not a negative", map[string]uint64{"exits": 8, "halt_poll_ns_peak": 1}, map[string]uint64{"exits": 7, "halt_poll_ns_peak": 5}, "exits +1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := kernelCounterDelta(tc.now, tc.before); got != tc.want {
				t.Errorf("kernelCounterDelta = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKernelCounterDeltaCapsTheList(t *testing.T) {
	now := map[string]uint64{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		now[n] = 1
	}
	if got, want := kernelCounterDelta(now, nil), "a +1, b +1, c +1, d +1, e +1, f +1, g +1, h +1, i +1, j +1, (2 more)"; got != want {
		t.Errorf("kernelCounterDelta = %q, want %q", got, want)
	}
}

// TestFormatSnapshot pins the text kvmlab run prints on SIGUSR1, which the
// integration tests (tests/snapshot_test.go, tests/stall_test.go) and
// people read.
func TestFormatSnapshot(t *testing.T) {
	regs := vmm.VCPUState{
		Regs:  kvm.Regs{RIP: 0x400000, RFLAGS: 2},
		Sregs: kvm.Sregs{CS: kvm.Segment{Selector: 0x10, L: 1}, CR0: 0x80000011, EFER: 0x500},
		PC:    0x400000,
	}
	regsText := vmm.FormatRegs(regs.Regs, regs.Sregs)
	indented := "    " + strings.ReplaceAll(regsText, "\n", "\n    ") + "\n"
	withCode := regs
	withCode.Code = []byte{0xeb, 0xfe, 0xf4} // jmp $; hlt
	noCode := regs
	noCode.CodeErr = errors.New("not mapped")
	tests := []struct {
		name string
		s    vmm.Snapshot
		want string
	}{
		{"first snapshot, one vCPU inside KVM_RUN, code unreadable",
			vmm.Snapshot{N: 1, Started: true, SinceStart: 1500 * time.Millisecond, VCPUs: []vmm.VCPUSnapshot{
				{ID: 0, Answered: true, Interrupted: true, Exits: 7, State: noCode, HasKernel: true,
					Kernel: []vmm.CounterDelta{{Name: "exits", Delta: 9}}},
			}},
			"kvmlab: snapshot 1, 1.50 s after the vCPUs started\n" +
				"  vCPU 0: was inside KVM_RUN (the request interrupted it); exits to kvmlab: 7\n" +
				"    long mode (64-bit), CPL 0\n" +
				"    code at 0x400000 unreadable: not mapped\n" + indented +
				"    KVM's own counters so far: exits +9\n"},
		{"second snapshot: differences, a silent vCPU, a vCPU that does not answer",
			vmm.Snapshot{N: 2, Started: true, SinceStart: 3 * time.Second, Prev: 1, SincePrev: 1500 * time.Millisecond, VCPUs: []vmm.VCPUSnapshot{
				{ID: 0, Answered: true, Exits: 7, HasPrevExits: true, State: vmm.VCPUState{Err: errors.New("KVM_GET_REGS: EIO")}, HasKernel: true},
				{ID: 1},
			}},
			"kvmlab: snapshot 2, 3.00 s after the vCPUs started, 1.50 s after snapshot 1\n" +
				"  vCPU 0: was between exits; exits to kvmlab: 7, +0 since snapshot 1\n" +
				"    registers unavailable: KVM_GET_REGS: EIO\n" +
				"    KVM's own counters since snapshot 1: none moved (the vCPU neither exited nor was interrupted: halted, or not run)\n" +
				"  vCPU 1: no answer within 2s: its thread is not in KVM_RUN or the loop (stopped, or blocked in a device)\n"},
		{"before Run, KVM's counters unreadable",
			vmm.Snapshot{N: 1, KernelErr: errors.New("no stats fd"), VCPUs: []vmm.VCPUSnapshot{
				{ID: 0, Answered: true, State: withCode},
			}},
			"kvmlab: snapshot 1\n" +
				"  vCPU 0: was between exits; exits to kvmlab: 0\n" +
				"    long mode (64-bit), CPL 0\n" +
				"    => 0000000000400000  eb fe                          jmp 0x400000\n" +
				"       0000000000400002  f4                             hlt\n" + indented +
				"    KVM's own counters: no stats fd\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := FormatSnapshot(tc.s, nil); got != tc.want {
				t.Errorf("FormatSnapshot =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
