package vmm

import "testing"

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
