package observatory

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/trace"
	"kvmlab/vmm/tracepoint"
)

// ex is one exit as the vCPU loop reports it: the hardware reason comes
// from hwexit, as in vmm/observe.go.
func ex(seq uint64, vcpu int, r exits.Reason, v hwexit.Vendor, rip uint64) *trace.Event {
	return &trace.Event{Seq: seq, VCPU: vcpu, Reason: r.String(), Code: uint32(r), RIP: rip, HW: hwexit.HWFor(r, v, nil)}
}

func ue(vcpu int, r exits.Reason, hw string, rip uint64, fresh bool) tracepoint.UserExit {
	return tracepoint.UserExit{TID: 100 + vcpu, VCPU: vcpu, KVMReason: uint32(r), HW: hw, RIP: rip, Fresh: fresh}
}

func TestCheckHardware(t *testing.T) {
	tests := []struct {
		name     string
		kvmlab   []*trace.Event
		tp       tracepoint.Check
		agree    uint64
		listed   uint64
		disagree uint64
		unchk    uint64
		want     []string // regexps the report must match
	}{
		{
			name: "svm: port and MMIO exits agree, two vCPUs interleaved",
			kvmlab: []*trace.Event{
				ex(1, 0, exits.IO, hwexit.SVM, 0x102), ex(2, 1, exits.MMIO, hwexit.SVM, 0x200),
				ex(3, 0, exits.IO, hwexit.SVM, 0x102), ex(4, 1, exits.IO, hwexit.SVM, 0x302),
			},
			tp: tracepoint.Check{Available: true, Exits: []tracepoint.UserExit{
				ue(1, exits.MMIO, "npf", 0x200, true), ue(0, exits.IO, "io", 0x100, true),
				ue(1, exits.IO, "io", 0x300, true), ue(0, exits.IO, "io", 0x100, false),
			}},
			agree: 4,
			want: []string{
				`(?m)^  KVM_EXIT_IO\s+svm VMEXIT_IOIO \(0x7b\) \*\s+svm VMEXIT_IOIO \(0x7b\)\s+3  agree$`,
				`(?m)^  KVM_EXIT_MMIO\s+svm VMEXIT_NPF \(0x400\) \*\s+svm VMEXIT_NPF \(0x400\)\s+1  agree$`,
				`1 returned with no new VM exit`,
				`for 4 of 4`,
				`(?m)^hardware layer check: 4 of 4 exits to kvmlab: the derived AMD SVM reason matches the kvm_exit tracepoint \(0 disagree, 0 not checked\)$`,
			},
		},
		{
			name:   "vmx: the first touch of an MMIO page is an EPT violation, a listed alternative",
			kvmlab: []*trace.Event{ex(1, 0, exits.MMIO, hwexit.VMX, 0x10), ex(2, 0, exits.MMIO, hwexit.VMX, 0x10)},
			tp: tracepoint.Check{Available: true, Exits: []tracepoint.UserExit{
				ue(0, exits.MMIO, "EPT_VIOLATION", 0x10, true), ue(0, exits.MMIO, "EPT_MISCONFIG", 0x10, true)}},
			agree: 2, listed: 1,
			want: []string{`vmx EPT_MISCONFIG \(49\) \*\s+vmx EPT_VIOLATION \(48\)\s+1  agree, listed`,
				`1 agree with another hardware exit`, `2 of 2 exits to kvmlab: the derived Intel VT-x reason`},
		},
		{
			name:   "a wrong table shows as a disagreement",
			kvmlab: []*trace.Event{ex(7, 0, exits.IO, hwexit.VMX, 0x10)},
			tp: tracepoint.Check{Available: true, Exits: []tracepoint.UserExit{
				ue(0, exits.IO, "EXTERNAL_INTERRUPT", 0x10, true)}},
			disagree: 1,
			want: []string{`IO_INSTRUCTION \(30\) \*\s+vmx EXTERNAL_INTERRUPT \(1\)\s+1  DISAGREE`,
				`DISAGREE #7 vCPU0 KVM_EXIT_IO at rip 0x10: kvmlab derived vmx IO_INSTRUCTION \(30\), the tracepoint saw vmx EXTERNAL_INTERRUPT \(1\)`,
				`0 of 1 exits to kvmlab: .* \(1 disagree, 0 not checked\)`},
		},
		{
			name:   "a name kvmlab does not know, and out of step",
			kvmlab: []*trace.Event{ex(1, 0, exits.IO, hwexit.SVM, 0x10), ex(2, 0, exits.IO, hwexit.SVM, 0x10)},
			tp: tracepoint.Check{Available: true, Exits: []tracepoint.UserExit{
				ue(0, exits.IO, "warp_drive", 0x10, true), ue(0, exits.MMIO, "npf", 0x10, true)}},
			disagree: 2,
			want:     []string{`the tracepoint says "warp_drive", which kvmlab's AMD SVM table does not name`, `out of step`},
		},
		{
			name:   "exits the tracepoint missed are not checked, returns kvmlab missed disagree",
			kvmlab: []*trace.Event{ex(1, 0, exits.IO, hwexit.SVM, 0x10), ex(2, 0, exits.IO, hwexit.SVM, 0x10), ex(3, 1, exits.IO, hwexit.SVM, 0x10)},
			tp: tracepoint.Check{Available: true, Lost: 5, Exits: []tracepoint.UserExit{
				ue(0, exits.IO, "io", 0x10, true), ue(2, exits.IO, "io", 0x10, true), ue(-1, exits.IO, "", 0, false)}},
			agree: 1, disagree: 2, unchk: 2,
			want: []string{`dropped 5 events`, `saw 2 returns of KVM_RUN that kvmlab did not record`, `1 of 3 exits .*\(2 disagree, 2 not checked\)`},
		},
		{
			name:   "no kvm_userspace_exit",
			kvmlab: []*trace.Event{ex(1, 0, exits.IO, hwexit.SVM, 0x10)},
			tp:     tracepoint.Check{Why: "kvm:kvm_userspace_exit could not be enabled: no"},
			unchk:  1,
			want:   []string{`(?m)^hardware layer check: not done: kvm:kvm_userspace_exit could not be enabled: no$`},
		},
		{
			name:   "no hardware reason derived: not checked",
			kvmlab: []*trace.Event{{Seq: 1, Reason: "KVM_EXIT_SYSTEM_EVENT", Code: uint32(exits.SystemEvent)}},
			tp:     tracepoint.Check{Available: true, Exits: []tracepoint.UserExit{ue(0, exits.SystemEvent, "io", 0x10, true)}},
			unchk:  1,
			want:   []string{`0 of 1 exits .*\(0 disagree, 1 not checked\)`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newHWRecorder()
			for _, e := range tc.kvmlab {
				r.Record(e)
			}
			c := checkHardware(r, tc.tp)
			var b bytes.Buffer
			c.write(&b)
			out := b.String()
			if c.agree != tc.agree || c.listed != tc.listed || c.disagree != tc.disagree || c.notChecked != tc.unchk {
				t.Errorf("agree %d (listed %d), disagree %d, not checked %d; want %d (%d), %d, %d\n%s",
					c.agree, c.listed, c.disagree, c.notChecked, tc.agree, tc.listed, tc.disagree, tc.unchk, out)
			}
			if c.total != uint64(len(tc.kvmlab)) {
				t.Errorf("total %d, want %d", c.total, len(tc.kvmlab))
			}
			for _, re := range tc.want {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("report lacks %q:\n%s", re, out)
				}
			}
		})
	}
}

// TestCheckHardwareBounded: the examples are bounded however many exits
// disagree, and the recorder keeps no more than maxRecorded.
func TestCheckHardwareBounded(t *testing.T) {
	r := newHWRecorder()
	var tp tracepoint.Check
	tp.Available = true
	for i := range 50 {
		r.Record(ex(uint64(i+1), 0, exits.IO, hwexit.SVM, 0x10))
		tp.Exits = append(tp.Exits, ue(0, exits.IO, "hlt", 0x10, true))
	}
	c := checkHardware(r, tp)
	var b bytes.Buffer
	c.write(&b)
	if n := strings.Count(b.String(), "  DISAGREE #"); n != maxExamples || c.disagree != 50 {
		t.Errorf("%d examples, %d disagree; want %d, 50:\n%s", n, c.disagree, maxExamples, b.String())
	}
	r.n = maxRecorded
	r.Record(ex(99, 0, exits.IO, hwexit.SVM, 0x10))
	if r.dropped != 1 {
		t.Errorf("recorded past maxRecorded")
	}
}
