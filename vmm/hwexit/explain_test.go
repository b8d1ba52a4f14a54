package hwexit

import (
	"regexp"
	"strings"
	"testing"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/trace"
)

// sentenceEnd matches the end of one sentence and the start of the next
// ("Vol. 3C" does not match: a digit follows).
var sentenceEnd = regexp.MustCompile(`[.!?]['")]? +[A-Za-z#(]`)

func sentences(s string) int { return len(sentenceEnd.FindAllString(s, -1)) + 1 }

// traced builds the event the observatory records for a decoded exit, with
// the hardware layer from HWFor as vmm/observe.go fills it.
func traced(r exits.Reason, v Vendor, ex *exits.Exit, ev trace.Event) *trace.Event {
	ev.Reason = r.String()
	ev.Code = uint32(r)
	if ex == nil {
		ex = &exits.Exit{Reason: r}
	}
	ev.HW = HWFor(r, v, ex)
	return &ev
}

func TestExplain(t *testing.T) {
	com1Out := trace.Event{IO: &trace.IO{Port: 0x3f8, Size: 1, Dir: "out", Count: 1, Data: "48"},
		Device: "com1", Action: "COM1 THR write 'H'"}
	unclaimedIn := trace.Event{IO: &trace.IO{Port: 0x80, Size: 1, Dir: "in", Count: 1, Data: "ff"},
		Action: "unclaimed port 0x80 in (reads as all ones)"}
	unclaimedOut := trace.Event{IO: &trace.IO{Port: 0xcf8, Size: 4, Dir: "out", Count: 1, Data: "00000080"}}
	hpetRead := trace.Event{MMIO: &trace.MMIO{Addr: 0xfed000f0, Len: 8, Data: "1234000000000000"},
		Device: "hpet", Action: "HPET main counter read"}
	holeRead := trace.Event{MMIO: &trace.MMIO{Addr: 0xfebff000, Len: 4, Data: "ffffffff"}}
	holeWrite := trace.Event{MMIO: &trace.MMIO{Addr: 0xfebff000, Len: 2, Write: true, Data: "3412"}}

	tests := []struct {
		name string
		ev   *trace.Event
		v    Vendor
		want []string
		not  []string
	}{
		{"io out svm", traced(exits.IO, SVM, nil, com1Out), SVM,
			[]string{"OUT to I/O port 0x3f8", "0x48 'H'", "I/O permission map", "VMEXIT_IOIO (0x7b)", "EXITINFO1", "KVM_EXIT_IO", "com1", "COM1 THR write 'H'"},
			[]string{"VT-x"}},
		{"io out vmx", traced(exits.IO, VMX, nil, com1Out), VMX,
			[]string{"port 0x3f8", "unconditional I/O exiting", "IO_INSTRUCTION (30)", "exit qualification", "COM1 THR write 'H'"},
			[]string{"SVM", "IOPM"}},
		{"io in unclaimed", traced(exits.IO, VMX, nil, unclaimedIn), VMX,
			[]string{"IN from I/O port 0x80", "IO_INSTRUCTION (30)", "No kvmlab device claims port 0x80", "all ones (0xff)", "next KVM_RUN"},
			[]string{"reads as all ones)"}},
		{"io out unclaimed", traced(exits.IO, SVM, nil, unclaimedOut), SVM,
			[]string{"4-byte OUT to I/O port 0xcf8", "the bytes 00 00 00 80", "VMEXIT_IOIO", "write was dropped"}, nil},
		{"io rep outs", traced(exits.IO, VMX, nil, trace.Event{IO: &trace.IO{Port: 0x1f0, Size: 2, Dir: "out", Count: 256, Data: "0102"}}), VMX,
			[]string{"REP OUTS", "(256 elements)", "instruction emulator"}, nil},
		{"mmio device vmx", traced(exits.MMIO, VMX, nil, hpetRead), VMX,
			[]string{"read 8 bytes from guest-physical address 0xfed000f0", "EPT_MISCONFIG (49)", "EPT_VIOLATION (48)", "instruction emulator", "KVM_EXIT_MMIO", "hpet", "HPET main counter read"},
			[]string{"NPF"}},
		{"mmio hole svm", traced(exits.MMIO, SVM, nil, holeRead), SVM,
			[]string{"0xfebff000", "VMEXIT_NPF (0x400)", "EXITINFO2", "reserved bits", "all ones (0xffffffff)"},
			[]string{"EPT"}},
		{"mmio write hole", traced(exits.MMIO, SVM, nil, holeWrite), SVM,
			[]string{"wrote 2 bytes to guest-physical address 0xfebff000", "the bytes 34 12", "write was dropped"}, nil},
		{"hlt", traced(exits.HLT, VMX, nil, trace.Event{}), VMX,
			[]string{"HLT", "HLT (12)", "in-kernel irqchip"}, nil},
		{"shutdown vmx", traced(exits.Shutdown, VMX, nil, trace.Event{RIP: 0xfff0}), VMX,
			[]string{"triple fault", "TRIPLE_FAULT (2)", "KVM_EXIT_SHUTDOWN", "0xfff0"}, nil},
		{"shutdown svm", traced(exits.Shutdown, SVM, nil, trace.Event{}), SVM,
			[]string{"triple fault", "VMEXIT_SHUTDOWN (0x7f)", "intercepts the shutdown"}, nil},
		{"debug bp svm", traced(exits.Debug, SVM, &exits.Exit{Reason: exits.Debug, Debug: &exits.DebugExit{Exception: 3, PC: 0x100000}}, trace.Event{RIP: 0x100000}), SVM,
			[]string{"RIP 0x100000", "#BP", "KVM_SET_GUEST_DEBUG", "VMEXIT_EXCP_BP (0x43)", "KVM_EXIT_DEBUG"}, nil},
		{"debug vmx", traced(exits.Debug, VMX, nil, trace.Event{}), VMX,
			[]string{"#DB", "EXCEPTION_NMI (0)", "interruption information"}, nil},
		{"intr vmx", traced(exits.Intr, VMX, nil, trace.Event{}), VMX,
			[]string{"signal", "IPI", "EXTERNAL_INTERRUPT (1)", "KVM_EXIT_INTR"}, nil},
		{"intr svm", traced(exits.Intr, SVM, nil, trace.Event{}), SVM,
			[]string{"IPI", "VMEXIT_INTR (0x60)"}, nil},
		{"irq window", traced(exits.IRQWindowOpen, SVM, nil, trace.Event{}), SVM,
			[]string{"request_interrupt_window", "VMEXIT_VINTR (0x64)", "KVM_EXIT_IRQ_WINDOW_OPEN"}, nil},
		{"rdmsr", traced(exits.X86RDMSR, VMX, nil, trace.Event{}), VMX,
			[]string{"RDMSR", "MSR bitmap", "MSR_READ (31)", "kvm_run.msr"}, nil},
		{"wrmsr", traced(exits.X86WRMSR, SVM, nil, trace.Event{}), SVM,
			[]string{"WRMSR", "MSRPM", "VMEXIT_MSR (0x7c)"}, nil},
		{"hypercall", traced(exits.Hypercall, SVM, nil, trace.Event{}), SVM,
			[]string{"VMMCALL", "VMEXIT_VMMCALL (0x81)", "KVM_CAP_EXIT_HYPERCALL"}, nil},
		{"fail entry vmx", traced(exits.FailEntry, VMX, &exits.Exit{Reason: exits.FailEntry, FailEntry: &exits.FailEntryExit{HardwareEntryFailureReason: 0x80000021}}, trace.Event{}), VMX,
			[]string{"VM entry itself failed", "Checks on Guest-State Area", "INVALID_STATE (33)", "kvm_run.fail_entry"}, nil},
		{"fail entry vmfail", traced(exits.FailEntry, VMX, &exits.Exit{Reason: exits.FailEntry, FailEntry: &exits.FailEntryExit{HardwareEntryFailureReason: 7}}, trace.Event{}), VMX,
			[]string{"control or host-state", "VM-instruction error 7", "invalid control field"}, []string{"INTERRUPT_WINDOW"}},
		{"fail entry svm", traced(exits.FailEntry, SVM, &exits.Exit{Reason: exits.FailEntry, FailEntry: &exits.FailEntryExit{HardwareEntryFailureReason: 0xffffffff}}, trace.Event{}), SVM,
			[]string{"VMRUN", "VMEXIT_INVALID (-1)"}, nil},
		{"unknown", traced(exits.Unknown, SVM, &exits.Exit{Reason: exits.Unknown, HardwareExitReason: 0x8e}, trace.Event{}), SVM,
			[]string{"no handler", "VMEXIT_RDPRU (0x8e)", "KVM_EXIT_UNKNOWN"}, nil},
		{"internal error with reason", traced(exits.InternalError, VMX, &exits.Exit{Reason: exits.InternalError,
			InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorEmulation, NData: 6, Data: [16]uint64{0, 49}}}, trace.Event{RIP: 0x401000}), VMX,
			[]string{"instruction emulator", "EPT_MISCONFIG (49)", "RIP 0x401000"}, nil},
		{"internal error bare", traced(exits.InternalError, SVM, nil, trace.Event{}), SVM,
			[]string{"KVM gave up", "does not say"}, nil},
		{"system event", traced(exits.SystemEvent, VMX, nil, trace.Event{}), VMX,
			[]string{"system event", "No single hardware exit"}, nil},
		{"other reason", traced(exits.Notify, VMX, nil, trace.Event{}), VMX,
			[]string{"KVM_EXIT_NOTIFY", "NOTIFY (75)"}, nil},
		// The recorded hardware layer wins over the vendor argument.
		{"hw vendor wins", traced(exits.IO, SVM, nil, com1Out), VMX,
			[]string{"VMEXIT_IOIO (0x7b)", "EXITINFO1"}, []string{"VT-x", "exit qualification"}},
		// No vendor anywhere: name both.
		{"no vendor", &trace.Event{Reason: "KVM_EXIT_IO", Code: uint32(exits.IO), IO: unclaimedIn.IO}, "",
			[]string{"IO_INSTRUCTION (30) on Intel", "VMEXIT_IOIO (0x7b) on AMD", "port 0x80", "all ones"}, nil},
		// A hand-made event with only the reason's name.
		{"by name", &trace.Event{Reason: "KVM_EXIT_MMIO", MMIO: holeRead.MMIO}, VMX,
			[]string{"0xfebff000", "EPT_MISCONFIG (49)"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Explain(tc.ev, tc.v)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("unexpected %q in:\n%s", n, got)
				}
			}
			if n := sentences(got); n < 2 || n > 6 {
				t.Errorf("%d sentences, want 3-6 (2 for the short ones):\n%s", n, got)
			}
		})
	}
	if got := Explain(nil, VMX); got != "" {
		t.Errorf("Explain(nil) = %q", got)
	}
}

// The main exit kinds a learner meets get a full paragraph.
func TestExplainLength(t *testing.T) {
	for _, r := range []exits.Reason{exits.IO, exits.MMIO, exits.HLT, exits.Shutdown, exits.Debug, exits.Intr, exits.IRQWindowOpen, exits.X86RDMSR, exits.Hypercall, exits.FailEntry, exits.InternalError} {
		for _, v := range []Vendor{VMX, SVM, ""} {
			ev := traced(r, v, nil, trace.Event{
				IO:   &trace.IO{Port: 0x3f8, Size: 1, Dir: "out", Count: 1, Data: "41"},
				MMIO: &trace.MMIO{Addr: 0xd0000000, Len: 4},
			})
			got := Explain(ev, v)
			if n := sentences(got); n < 3 || n > 6 {
				t.Errorf("%v on %q: %d sentences:\n%s", r, v, n, got)
			}
		}
	}
}

func TestShowData(t *testing.T) {
	tests := []struct{ in, want string }{
		{"48", "the byte 0x48 'H'"},
		{"0a", "the byte 0x0a"},
		{"00", "the byte 0x00"},
		{"3412", "the bytes 34 12"},
		{"zz", "zz"},
	}
	for _, tc := range tests {
		if got := showData(tc.in); got != tc.want {
			t.Errorf("showData(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestKernelHandled(t *testing.T) {
	for _, tc := range []struct {
		v    Vendor
		must []string
	}{
		{VMX, []string{"CPUID", "HLT", "IO_INSTRUCTION", "MSR_READ", "MSR_WRITE", "EPT_VIOLATION", "EPT_MISCONFIG", "EXTERNAL_INTERRUPT", "PAUSE", "APIC_ACCESS", "XSETBV", "INVLPG"}},
		{SVM, []string{"VMEXIT_CPUID", "VMEXIT_HLT", "VMEXIT_IOIO", "VMEXIT_MSR", "VMEXIT_NPF", "VMEXIT_INTR", "VMEXIT_PAUSE", "VMEXIT_AVIC_NOACCEL", "VMEXIT_XSETBV", "VMEXIT_INVLPG"}},
	} {
		list := KernelHandled(tc.v)
		names := map[string]bool{}
		for _, k := range list {
			if k.Vendor != tc.v || k.Why == "" {
				t.Errorf("%s: bad entry %+v", tc.v, k)
			}
			var ok bool
			if tc.v == VMX {
				_, _, ok = VMXReason(uint32(k.Code))
			} else {
				_, _, ok = SVMExit(k.Code)
			}
			if !ok {
				t.Errorf("%s: %#x (%s) is not a defined exit", tc.v, k.Code, k.Name)
			}
			if names[k.Name] {
				t.Errorf("%s: %s listed twice", tc.v, k.Name)
			}
			names[k.Name] = true
		}
		for _, m := range tc.must {
			if !names[m] {
				t.Errorf("%s: %s missing from KernelHandled", tc.v, m)
			}
		}
	}
	if KernelHandled("") != nil {
		t.Error("KernelHandled(unknown vendor) should be nil")
	}
}
