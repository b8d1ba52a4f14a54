package tracepoint

import "testing"

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
