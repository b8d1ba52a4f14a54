package tracepoint

import (
	"slices"
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
			true, Event{TID: 93, VCPU: 0, Reason: "io", RIP: 0xffffffff81000010}},
		{"vmx ept violation, dashed comm", "  my-vmm-thread-1207 [001] d.... 5.000001: kvm_exit: vcpu 3 reason EPT_VIOLATION rip 0xfff0 info1 0x0 info2 0x0",
			true, Event{TID: 1207, VCPU: 3, Reason: "EPT_VIOLATION", RIP: 0xfff0}},
		{"other event", "kvmlab-93 [000] d.... 1.0: kvm_entry: vcpu 0, rip 0x10", false, Event{}},
		{"garbage", "kvm_exit: reason", false, Event{}},
		{"no reason", "kvmlab-1 [000] d.... 1.0: kvm_exit: vcpu 0", false, Event{}},
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

func FuzzParseLine(f *testing.F) {
	f.Add("kvmlab-93 [000] d.... 1.0: kvm_exit: vcpu 0 reason io rip 0x10 info1 0x0")
	f.Add(" kvm_exit: ")
	f.Fuzz(func(t *testing.T, s string) {
		ev, ok := ParseLine(s)
		if ok && ev.Reason == "" {
			t.Fatalf("accepted a line without a reason: %q", s)
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
