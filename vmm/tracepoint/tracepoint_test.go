package tracepoint

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		ok   bool
		want Event
	}{
		{"svm io", "          kvmlab-93      [000] d..1.   123.456789: kvm_exit: vcpu 0 reason io rip 0xffffffff81000010 info1 0x0000000003f80010 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000",
			true, Event{Kind: KindExit, TID: 93, VCPU: 0, Reason: "io", RIP: 0xffffffff81000010}},
		{"vmx ept violation, dashed comm", "  my-vmm-thread-1207 [001] d.... 5.000001: kvm_exit: vcpu 3 reason EPT_VIOLATION rip 0xfff0 info1 0x0 info2 0x0",
			true, Event{Kind: KindExit, TID: 1207, VCPU: 3, Reason: "EPT_VIOLATION", RIP: 0xfff0}},
		{"svm exception, a name with a space", "kvmlab-7 [000] d.... 1.0: kvm_exit: vcpu 1 reason DB excp rip 0x10 info1 0x0",
			true, Event{Kind: KindExit, TID: 7, VCPU: 1, Reason: "DB excp", RIP: 0x10}},
		{"vmx with a flag", "kvmlab-7 [000] d.... 1.0: kvm_exit: vcpu 0 reason INVALID_STATE FAILED_VMENTRY rip 0x0 info1 0x0",
			true, Event{Kind: KindExit, TID: 7, VCPU: 0, Reason: "INVALID_STATE FAILED_VMENTRY"}},
		{"user exit", "kvmlab-93 [000] ..... 123.456790: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
			true, Event{Kind: KindUserExit, TID: 93, VCPU: -1, KVMReason: 2}},
		{"user exit, EINTR", "kvmlab-93 [000] ..... 1.0: kvm_userspace_exit: reason restart (4)",
			true, Event{Kind: KindUserExit, TID: 93, VCPU: -1, Errno: true}},
		{"user exit, error", "kvmlab-93 [000] ..... 1.0: kvm_userspace_exit: reason error (14)",
			true, Event{Kind: KindUserExit, TID: 93, VCPU: -1, Errno: true}},
		{"lost events", "CPU:1 [LOST 42 EVENTS]", true, Event{Kind: KindLost, Lost: 42}},
		{"lost events, uncounted", "CPU:0 [LOST EVENTS]", true, Event{Kind: KindLost, Lost: 1}},
		{"lost events, not a number", "CPU:0 [LOST many EVENTS]", false, Event{}},
		{"other event", "kvmlab-93 [000] d.... 1.0: kvm_entry: vcpu 0, rip 0x10", false, Event{}},
		{"garbage", "kvm_exit: reason", false, Event{}},
		{"no reason", "kvmlab-1 [000] d.... 1.0: kvm_exit: vcpu 0", false, Event{}},
		{"empty reason", "kvmlab-1 [000] d.... 1.0: kvm_exit: vcpu 0 reason  rip 0x1", false, Event{}},
		{"huge tid", "kvmlab-99999999999 [000] d.... 1.0: kvm_exit: vcpu 0 reason io rip 0x1", false, Event{}},
		{"tid not a number", "kvmlab-x5 [000] d.... 1.0: kvm_exit: vcpu 0 reason io rip 0x1", false, Event{}},
		{"user exit without number", "kvmlab-1 [000] ..... 1.0: kvm_userspace_exit: reason KVM_EXIT_IO", false, Event{}},
		{"user exit, number too big", "kvmlab-1 [000] ..... 1.0: kvm_userspace_exit: reason KVM_EXIT_IO (99999999999)", false, Event{}},
		{"long reason", "kvmlab-1 [000] d.... 1.0: kvm_exit: vcpu 0 reason " + strings.Repeat("x", 100) + " rip 0x1", false, Event{}},
		{"line over the bound", "kvmlab-1 [000] d.... 1.0: kvm_exit: vcpu 0 reason io rip 0x1 " + strings.Repeat(" ", MaxLine), false, Event{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseLine(tc.line)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("ParseLine = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestCollectorPairs feeds the collector a thread's lines as trace_pipe
// gives them and checks the returns it pairs with their VM exits.
func TestCollectorPairs(t *testing.T) {
	self := os.Getpid() // a thread of this process: /proc/self/task/PID exists
	other := 1 << 30    // no such thread
	l := func(tid int, rest string) string { return fmt.Sprintf("kvmlab-%d [000] d.... 1.0: %s", tid, rest) }
	c := &Collector{counts: map[string]uint64{}, ours: map[int]bool{}, names: map[string]string{},
		threads: map[int]*threadState{}, userExits: true}
	for _, line := range []string{
		l(self, "kvm_userspace_exit: reason KVM_EXIT_IO (2)"), // before any exit: no VM exit to name
		l(self, "kvm_exit: vcpu 2 reason npf rip 0x100 info1 0x0"),
		l(self, "kvm_exit: vcpu 2 reason io rip 0x200 info1 0x0"),
		l(other, "kvm_exit: vcpu 0 reason hlt rip 0x1 info1 0x0"), // another process's
		l(self, "kvm_userspace_exit: reason KVM_EXIT_IO (2)"),
		l(self, "kvm_userspace_exit: reason KVM_EXIT_IO (2)"), // same instruction, no new exit
		l(self, "kvm_exit: vcpu 2 reason interrupt rip 0x300 info1 0x0"),
		l(self, "kvm_userspace_exit: reason restart (4)"), // a signal: not an exit of kvmlab's
		l(self, "kvm_exit: vcpu 2 reason npf rip 0x400 info1 0x0"),
		l(other, "kvm_userspace_exit: reason KVM_EXIT_MMIO (6)"),
		l(self, "kvm_userspace_exit: reason KVM_EXIT_MMIO (6)"),
		"CPU:0 [LOST 3 EVENTS]",
		"some noise",
	} {
		c.line(line)
	}
	got := c.Check()
	want := []UserExit{
		{TID: self, VCPU: -1, KVMReason: 2, Fresh: false},
		{TID: self, VCPU: 2, KVMReason: 2, HW: "io", RIP: 0x200, Fresh: true},
		{TID: self, VCPU: 2, KVMReason: 2, HW: "io", RIP: 0x200, Fresh: false},
		{TID: self, VCPU: 2, KVMReason: 6, HW: "npf", RIP: 0x400, Fresh: true},
	}
	if !slices.Equal(got.Exits, want) {
		t.Errorf("exits =\n%+v\nwant\n%+v", got.Exits, want)
	}
	if got.Lost != 3 || got.Malformed != 1 || !got.Available {
		t.Errorf("lost %d, malformed %d, available %v; want 3, 1, true", got.Lost, got.Malformed, got.Available)
	}
	if c.lines != 4 || c.counts["npf"] != 2 || c.counts["hlt"] != 0 {
		t.Errorf("counted %d exits %v; want 4, npf 2, no hlt", c.lines, c.counts)
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("kvmlab-93 [000] d.... 1.0: kvm_exit: vcpu 0 reason io rip 0x10 info1 0x0")
	f.Add("kvmlab-93 [000] ..... 1.0: kvm_userspace_exit: reason KVM_EXIT_IO (2)")
	f.Add("CPU:1 [LOST 42 EVENTS]")
	f.Add(" kvm_exit: ")
	f.Fuzz(func(t *testing.T, s string) {
		ev, ok := ParseLine(s)
		if !ok {
			return
		}
		switch ev.Kind {
		case KindExit:
			if ev.Reason == "" || len(ev.Reason) > maxReason || ev.TID < 0 {
				t.Fatalf("accepted a kvm_exit line with reason %q, tid %d: %q", ev.Reason, ev.TID, s)
			}
		case KindUserExit:
			if ev.TID < 0 || ev.Reason != "" {
				t.Fatalf("bad kvm_userspace_exit parse %+v of %q", ev, s)
			}
		case KindLost:
		default:
			t.Fatalf("no kind for %q", s)
		}
		if len(s) > MaxLine {
			t.Fatalf("accepted a line over MaxLine")
		}
	})
}

// A "hist" file as Linux 6.1 prints it for the trigger StartUserExits sets.
const sampleHist = `# event histogram
#
# trigger info: hist:keys=common_pid,reason:vals=hitcount:sort=hitcount:size=4096 [active]
#

{ common_pid:        612, reason:         10 } hitcount:          1
{ common_pid:        613, reason:          6 } hitcount:         17
{ common_pid:        612, reason:          2 } hitcount:       1663
{ common_pid:     123456, reason:          2 } hitcount:   12345678

Totals:
    Hits: 12347359
    Entries: 4
    Dropped: 0
`

func TestParseHist(t *testing.T) {
	got := ParseHist(sampleHist, "reason")
	want := []HistEntry{{612, 10, 1}, {613, 6, 17}, {612, 2, 1663}, {123456, 2, 12345678}}
	if !slices.Equal(got, want) {
		t.Fatalf("ParseHist = %+v, want %+v", got, want)
	}
	// The same parser, another key: kvm_pio by port.
	ports := ParseHist("{ common_pid:  700, port:       1016 } hitcount:  90410\n{ common_pid: 700, reason: 2 } hitcount: 5", "port")
	if len(ports) != 1 || ports[0] != (HistEntry{700, 1016, 90410}) {
		t.Errorf("ParseHist by port = %+v", ports)
	}
	for _, bad := range []string{
		"{ common_pid: 1 } hitcount: 5",                      // no reason
		"{ common_pid: x, reason: 2 } hitcount: 5",           // not a number
		"{ common_pid: 1, reason: 2 } hitcount: -5",          // negative
		"{ common_pid: 1, reason: 2 hitcount: 5",             // no closing brace
		"{ common_pid: 1, reason: 2 } bytes: 5",              // another value
		"{ common_pid: 1, reason: 99999999999 } hitcount: 5", // reason over 32 bits
	} {
		if e := ParseHist(bad, "reason"); len(e) != 0 {
			t.Errorf("ParseHist(%q) = %+v, want nothing", bad, e)
		}
	}
}

func FuzzParseHist(f *testing.F) {
	f.Add(sampleHist)
	f.Add("{ common_pid: 1, reason: 2 } hitcount: 3")
	f.Add("{}")
	f.Fuzz(func(t *testing.T, s string) {
		for _, e := range ParseHist(s, "reason") {
			if e.TID < 0 {
				t.Fatalf("negative thread id from %q", s)
			}
		}
	})
}
