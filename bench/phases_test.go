package bench

import (
	"math"
	"testing"
	"time"
)

// TestParseMilestone reads the console lines of a Debian 6.1 boot.
func TestParseMilestone(t *testing.T) {
	for _, c := range []struct {
		line  string
		key   string
		stamp float64
		ok    bool
	}{
		{"[    0.512003] APIC: Switch to symmetric I/O mode setup", "setup", 0.512003, true},
		{"[    0.620101] Calibrating delay loop (skipped), value calculated using timer frequency.. 5999.99 BogoMIPS (lpj=11999996)\r", "timers", 0.620101, true},
		{"[    0.621000] pid_max: default: 32768 minimum: 301", "delay", 0.621, true},
		{"[    0.700000] devtmpfs: initialized", "early", 0.7, true},
		{"[    1.000000] Trying to unpack rootfs image as initramfs...", "unpack-start", 1, true},
		{"[    1.250000] Freeing initrd memory: 4096K", "unpack-end", 1.25, true},
		{"[   12.345678] Freeing unused kernel image (initmem) memory: 2700K", "initcalls", 12.345678, true},
		{"[   12.400000] Run /init as init process", "init", 12.4, true},
		{"Run /init as init process", "", 0, false},                   // no stamp: not the kernel's log
		{"[    0.000000] Linux version 6.1.0-57-amd64", "", 0, false}, // not a milestone
		{"[abc] Run /init as init process", "", 0, false},
	} {
		key, stamp, ok := parseMilestone(c.line)
		if key != c.key || ok != c.ok || math.Abs(stamp-c.stamp) > 1e-9 {
			t.Errorf("parseMilestone(%q) = %q, %v, %v; want %q, %v, %v", c.line, key, stamp, ok, c.key, c.stamp, c.ok)
		}
	}
}

// TestPhaseTimes: phases are differences of the kernel's stamps, the time
// before the clock's zero is the host time of "Run /init" minus its stamp,
// and exits are counted between milestones.
func TestPhaseTimes(t *testing.T) {
	s := time.Second
	marks := map[string]mark{
		"setup":     {stamp: 0.5, host: 3500 * time.Millisecond, exits: 1000},
		"timers":    {stamp: 0.75, host: 3750 * time.Millisecond, exits: 1600},
		"delay":     {stamp: 0.75, host: 3750 * time.Millisecond, exits: 1600},
		"early":     {stamp: 1, host: 4 * s, exits: 2000},
		"initcalls": {stamp: 2.5, host: 5500 * time.Millisecond, exits: 9000},
		"init":      {stamp: 2.75, host: 5750 * time.Millisecond, exits: 9100},
	}
	got := phaseTimes(marks, 6*s)
	want := map[string]float64{
		"phase: VMM start -> kernel clock zero (firmware, decompressor, earliest set-up)": 3,
		"phase: early set-up (clock zero -> APIC set-up)":                                 0.5,
		"phase: timers and clock calibration":                                             0.25,
		"phase: delay-loop calibration":                                                   0,
		"phase: scheduler, SMP, early init":                                               0.25,
		"phase: initcalls":                                                                1.5,
		"phase: free init memory -> Run /init":                                            0.25,
		"phase: Run /init -> user-space marker":                                           0.25,
		"exits: phase: timers and clock calibration":                                      600,
		"exits: phase: delay-loop calibration":                                            0,
		"exits: phase: scheduler, SMP, early init":                                        400,
		"exits: phase: initcalls":                                                         7000,
		"exits: phase: free init memory -> Run /init":                                     100,
	}
	if len(got) != len(want) {
		t.Errorf("got %d figures, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || math.Abs(g-w) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, w)
		}
	}
	// The unpack milestones were not seen: no initramfs figure.
	if _, ok := got["phase: initramfs unpack (within the initcalls)"]; ok {
		t.Error("initramfs phase without its milestones")
	}
}

// TestAddPhaseFigures: quiet boots (no milestones) add no rows; logged
// ones add a row per phase and VMM, with the median.
func TestAddPhaseFigures(t *testing.T) {
	rep := Report{}
	addPhaseFigures(&rep, []sample{{peer: "kvmlab"}, {peer: "qemu-q35"}}, []string{"kvmlab", "qemu-q35"})
	if len(rep.Figures) != 0 {
		t.Fatalf("quiet boots gave %d phase rows", len(rep.Figures))
	}
	m := func(t0 float64) map[string]mark {
		return map[string]mark{"setup": {stamp: t0}, "timers": {stamp: t0 + 1}}
	}
	all := []sample{{peer: "kvmlab", marks: m(0)}, {peer: "kvmlab", marks: m(0.5)}, {peer: "qemu-q35", marks: m(2)}}
	addPhaseFigures(&rep, all, []string{"kvmlab", "qemu-q35"})
	var found bool
	for _, f := range rep.Figures {
		if f.Figure == "phase: timers and clock calibration" && f.VMM == "kvmlab" {
			found = true
			if f.N != 2 || f.Median != 1 {
				t.Errorf("kvmlab timers row %+v", f)
			}
		}
	}
	if !found {
		t.Fatalf("no timers row in %+v", rep.Figures)
	}
}
