package hwexit

import (
	"strings"
	"testing"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/trace"
)

func TestVendorFromCPUID(t *testing.T) {
	tests := []struct {
		in   string
		want Vendor
	}{
		{"GenuineIntel", VMX},
		{"AuthenticAMD", SVM},
		{"HygonGenuine", SVM},
		{"CentaurHauls", VMX},
		{"  Shanghai  ", VMX},
		{"KVMKVMKVM\x00\x00\x00", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := VendorFromCPUID(tc.in); got != tc.want {
			t.Errorf("VendorFromCPUID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if VMX.Technology() != "Intel VT-x" || SVM.Technology() != "AMD SVM" {
		t.Errorf("Technology: %q, %q", VMX.Technology(), SVM.Technology())
	}
}

func TestVMXReason(t *testing.T) {
	tests := []struct {
		code uint32
		name string
	}{
		{0, "EXCEPTION_NMI"},
		{1, "EXTERNAL_INTERRUPT"},
		{2, "TRIPLE_FAULT"},
		{3, "INIT_SIGNAL"},
		{7, "INTERRUPT_WINDOW"},
		{10, "CPUID"},
		{12, "HLT"},
		{18, "VMCALL"},
		{28, "CR_ACCESS"},
		{30, "IO_INSTRUCTION"},
		{31, "MSR_READ"},
		{32, "MSR_WRITE"},
		{33, "INVALID_STATE"},
		{34, "MSR_LOAD_FAIL"},
		{37, "MTF"},
		{40, "PAUSE"},
		{44, "APIC_ACCESS"},
		{48, "EPT_VIOLATION"},
		{49, "EPT_MISCONFIG"},
		{52, "PREEMPTION_TIMER"},
		{55, "XSETBV"},
		{62, "PML_FULL"},
		{74, "BUS_LOCK"},
		{75, "NOTIFY"},
		{77, "TDCALL"},
	}
	for _, tc := range tests {
		name, meaning, ok := VMXReason(tc.code)
		if !ok || name != tc.name || meaning == "" {
			t.Errorf("VMXReason(%d) = %q, %q, %v; want %q", tc.code, name, meaning, ok, tc.name)
		}
	}
	for _, code := range []uint32{35, 38, 42, 71, 82, 83, 86, 1000, 0x80000021} {
		if name, _, ok := VMXReason(code); ok {
			t.Errorf("VMXReason(%d) = %q, want ok=false", code, name)
		}
	}
	// Every defined entry has both a name and a meaning, and names are
	// unique.
	seen := map[string]uint32{}
	for code := uint32(0); code < 100; code++ {
		name, meaning, ok := VMXReason(code)
		if !ok {
			continue
		}
		if meaning == "" {
			t.Errorf("VMXReason(%d) %s has no meaning", code, name)
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("name %s used for %d and %d", name, prev, code)
		}
		seen[name] = code
	}
	if len(seen) < 75 {
		t.Errorf("only %d VMX reasons defined", len(seen))
	}
}

func TestDecodeVMXExitReason(t *testing.T) {
	tests := []struct {
		full uint32
		want VMXExitReason
		str  string
	}{
		{0x80000021, VMXExitReason{Full: 0x80000021, Basic: 33, EntryFailure: true}, "VM-entry failure, INVALID_STATE (33)"},
		{0x80000022, VMXExitReason{Full: 0x80000022, Basic: 34, EntryFailure: true}, "VM-entry failure, MSR_LOAD_FAIL (34)"},
		{0x80000029, VMXExitReason{Full: 0x80000029, Basic: 41, EntryFailure: true}, "VM-entry failure, MCE_DURING_VMENTRY (41)"},
		{30, VMXExitReason{Full: 30, Basic: 30}, "IO_INSTRUCTION (30)"},
		{1 << 27, VMXExitReason{Full: 1 << 27, Enclave: true}, "EXCEPTION_NMI (0), from enclave mode"},
		{1<<26 | 48, VMXExitReason{Full: 1<<26 | 48, Basic: 48, BusLock: true}, "EPT_VIOLATION (48), bus lock detected"},
		{1<<29 | 1<<28 | 6, VMXExitReason{Full: 1<<29 | 1<<28 | 6, Basic: 6, PendingMTF: true, FromVMXRoot: true},
			"OTHER_SMI (6), pending MTF exit, from VMX root operation"},
		{99, VMXExitReason{Full: 99, Basic: 99}, "EXIT_REASON_99 (99)"},
	}
	for _, tc := range tests {
		got := DecodeVMXExitReason(tc.full)
		if got != tc.want {
			t.Errorf("DecodeVMXExitReason(%#x) = %+v, want %+v", tc.full, got, tc.want)
		}
		if s := got.String(); s != tc.str {
			t.Errorf("DecodeVMXExitReason(%#x).String() = %q, want %q", tc.full, s, tc.str)
		}
	}
	r := DecodeVMXExitReason(0x80000021)
	if r.Name() != "INVALID_STATE" || !strings.Contains(r.Meaning(), "VM entry failed") || r.Undefined() {
		t.Errorf("0x80000021: name %q meaning %q undefined %v", r.Name(), r.Meaning(), r.Undefined())
	}
	if !DecodeVMXExitReason(1<<16 | 30).Undefined() {
		t.Error("bit 16 set should be reported as undefined")
	}
}

func TestVMInstructionError(t *testing.T) {
	if name, m, ok := VMInstructionError(7); !ok || name != "ENTRY_INVALID_CONTROL" || !strings.Contains(m, "control") {
		t.Errorf("VMInstructionError(7) = %q, %q, %v", name, m, ok)
	}
	if name, _, ok := VMInstructionError(8); !ok || name != "ENTRY_INVALID_HOST_STATE" {
		t.Errorf("VMInstructionError(8) = %q, %v", name, ok)
	}
	for _, n := range []uint32{0, 14, 21, 27, 29} {
		if _, _, ok := VMInstructionError(n); ok {
			t.Errorf("VMInstructionError(%d) ok, want undefined", n)
		}
	}
}

func TestSVMExit(t *testing.T) {
	tests := []struct {
		code uint64
		name string
	}{
		{0x00, "VMEXIT_CR0_READ"},
		{0x03, "VMEXIT_CR3_READ"},
		{0x0f, "VMEXIT_CR15_READ"},
		{0x10, "VMEXIT_CR0_WRITE"},
		{0x18, "VMEXIT_CR8_WRITE"},
		{0x27, "VMEXIT_DR7_READ"},
		{0x37, "VMEXIT_DR7_WRITE"},
		{0x40, "VMEXIT_EXCP_DE"},
		{0x41, "VMEXIT_EXCP_DB"},
		{0x42, "VMEXIT_EXCP_2"},
		{0x43, "VMEXIT_EXCP_BP"},
		{0x46, "VMEXIT_EXCP_UD"},
		{0x4d, "VMEXIT_EXCP_GP"},
		{0x4e, "VMEXIT_EXCP_PF"},
		{0x52, "VMEXIT_EXCP_MC"},
		{0x5d, "VMEXIT_EXCP_VC"},
		{0x5f, "VMEXIT_EXCP_31"},
		{0x60, "VMEXIT_INTR"},
		{0x61, "VMEXIT_NMI"},
		{0x64, "VMEXIT_VINTR"},
		{0x65, "VMEXIT_CR0_SEL_WRITE"},
		{0x72, "VMEXIT_CPUID"},
		{0x77, "VMEXIT_PAUSE"},
		{0x78, "VMEXIT_HLT"},
		{0x7b, "VMEXIT_IOIO"},
		{0x7c, "VMEXIT_MSR"},
		{0x7f, "VMEXIT_SHUTDOWN"},
		{0x80, "VMEXIT_VMRUN"},
		{0x81, "VMEXIT_VMMCALL"},
		{0x8c, "VMEXIT_MWAIT_CONDITIONAL"},
		{0x8d, "VMEXIT_XSETBV"},
		{0x8e, "VMEXIT_RDPRU"},
		{0x8f, "VMEXIT_EFER_WRITE_TRAP"},
		{0x90, "VMEXIT_CR0_WRITE_TRAP"},
		{0x98, "VMEXIT_CR8_WRITE_TRAP"},
		{0xa0, "VMEXIT_INVLPGB"},
		{0xa2, "VMEXIT_INVPCID"},
		{0xa5, "VMEXIT_BUSLOCK"},
		{0x400, "VMEXIT_NPF"},
		{0x401, "VMEXIT_AVIC_INCOMPLETE_IPI"},
		{0x402, "VMEXIT_AVIC_NOACCEL"},
		{0x403, "VMEXIT_VMGEXIT"},
		{0xffffffffffffffff, "VMEXIT_INVALID"},
		{0xffffffff, "VMEXIT_INVALID"}, // a kernel that kept the code in 32 bits
		{0xfffffffffffffffe, "VMEXIT_BUSY"},
		{0xfffffffffffffffc, "VMEXIT_INVALID_PMC"},
	}
	for _, tc := range tests {
		name, meaning, ok := SVMExit(tc.code)
		if !ok || name != tc.name || meaning == "" {
			t.Errorf("SVMExit(%#x) = %q, %q, %v; want %q", tc.code, name, meaning, ok, tc.name)
		}
	}
	for _, code := range []uint64{0xa7, 0xff, 0x3ff, 0x404, 0x80000001, 0xfffffffffffffffb, 0xfffffffb} {
		if name, _, ok := SVMExit(code); ok {
			t.Errorf("SVMExit(%#x) = %q, want ok=false", code, name)
		}
	}
	if _, m, _ := SVMExit(0x4e); !strings.Contains(m, "#PF") || !strings.Contains(m, "page fault") {
		t.Errorf("SVMExit(0x4e) meaning %q", m)
	}
}

// hwCodes is the (vendor, code) list of Beneath's answer, for comparison.
func hwCodes(hs []trace.HW) []uint64 {
	var out []uint64
	for _, h := range hs {
		out = append(out, h.Code)
	}
	return out
}

func TestBeneath(t *testing.T) {
	tests := []struct {
		r        exits.Reason
		ex       *exits.Exit
		vmx      []uint64
		vmxName  string // name of the first
		svm      []uint64
		svmName  string
		notDeriv bool
	}{
		{r: exits.IO, vmx: []uint64{30}, vmxName: "IO_INSTRUCTION", svm: []uint64{0x7b}, svmName: "VMEXIT_IOIO"},
		{r: exits.MMIO, vmx: []uint64{49, 48}, vmxName: "EPT_MISCONFIG", svm: []uint64{0x400}, svmName: "VMEXIT_NPF"},
		{r: exits.HLT, vmx: []uint64{12}, vmxName: "HLT", svm: []uint64{0x78, 0xa6}, svmName: "VMEXIT_HLT"},
		{r: exits.Shutdown, vmx: []uint64{2}, vmxName: "TRIPLE_FAULT", svm: []uint64{0x7f}, svmName: "VMEXIT_SHUTDOWN"},
		{r: exits.Debug, ex: &exits.Exit{Reason: exits.Debug, Debug: &exits.DebugExit{Exception: 1}},
			vmx: []uint64{0}, vmxName: "EXCEPTION_NMI", svm: []uint64{0x41}, svmName: "VMEXIT_EXCP_DB"},
		{r: exits.Debug, ex: &exits.Exit{Reason: exits.Debug, Debug: &exits.DebugExit{Exception: 3}},
			vmx: []uint64{0}, vmxName: "EXCEPTION_NMI", svm: []uint64{0x43}, svmName: "VMEXIT_EXCP_BP"},
		{r: exits.Debug, vmx: []uint64{0}, vmxName: "EXCEPTION_NMI", svm: []uint64{0x41, 0x43}, svmName: "VMEXIT_EXCP_DB"},
		{r: exits.Intr, vmx: []uint64{1}, vmxName: "EXTERNAL_INTERRUPT", svm: []uint64{0x60}, svmName: "VMEXIT_INTR"},
		{r: exits.IRQWindowOpen, vmx: []uint64{7}, vmxName: "INTERRUPT_WINDOW", svm: []uint64{0x64}, svmName: "VMEXIT_VINTR"},
		{r: exits.X86RDMSR, vmx: []uint64{31}, vmxName: "MSR_READ", svm: []uint64{0x7c}, svmName: "VMEXIT_MSR"},
		{r: exits.X86WRMSR, vmx: []uint64{32}, vmxName: "MSR_WRITE", svm: []uint64{0x7c}, svmName: "VMEXIT_MSR"},
		{r: exits.Hypercall, vmx: []uint64{18, 77}, vmxName: "VMCALL", svm: []uint64{0x81, 0x403}, svmName: "VMEXIT_VMMCALL"},
		{r: exits.Exception, vmx: []uint64{0}, vmxName: "EXCEPTION_NMI"},
		{r: exits.NMI, vmx: []uint64{0}, vmxName: "EXCEPTION_NMI", svm: []uint64{0x61}, svmName: "VMEXIT_NMI"},
		{r: exits.TPRAccess, vmx: []uint64{44}, vmxName: "APIC_ACCESS", svm: []uint64{0x400}, svmName: "VMEXIT_NPF"},
		{r: exits.IOAPICEOI, vmx: []uint64{45, 44}, vmxName: "EOI_INDUCED", svm: []uint64{0x400, 0x402}, svmName: "VMEXIT_NPF"},
		{r: exits.X86BusLock, vmx: []uint64{74}, vmxName: "BUS_LOCK", svm: []uint64{0xa5}, svmName: "VMEXIT_BUSLOCK"},
		{r: exits.Notify, vmx: []uint64{75}, vmxName: "NOTIFY"},
		{r: exits.MemoryFault, vmx: []uint64{48}, vmxName: "EPT_VIOLATION", svm: []uint64{0x400}, svmName: "VMEXIT_NPF"},
		{r: exits.APResetHold, svm: []uint64{0x403}, svmName: "VMEXIT_VMGEXIT"},
		{r: exits.SetTPR},
		{r: exits.DirtyRingFull},
		{r: exits.SystemEvent, ex: &exits.Exit{Reason: exits.SystemEvent, SystemEvent: &exits.SystemEventExit{Type: exits.SystemEventShutdown}}},
		{r: exits.SystemEvent, ex: &exits.Exit{Reason: exits.SystemEvent, SystemEvent: &exits.SystemEventExit{Type: 6}}, svm: []uint64{0x403}, svmName: "VMEXIT_VMGEXIT"},
		{r: exits.SystemEvent, ex: &exits.Exit{Reason: exits.SystemEvent, SystemEvent: &exits.SystemEventExit{Type: 7}}, vmx: []uint64{77}, vmxName: "TDCALL"},
		// Hardware values KVM reported.
		{r: exits.FailEntry, ex: &exits.Exit{Reason: exits.FailEntry, FailEntry: &exits.FailEntryExit{HardwareEntryFailureReason: 0x80000021}},
			vmx: []uint64{33}, vmxName: "INVALID_STATE", svm: []uint64{0x80000021}, svmName: "VMEXIT_0x80000021", notDeriv: true},
		{r: exits.FailEntry, ex: &exits.Exit{Reason: exits.FailEntry, FailEntry: &exits.FailEntryExit{HardwareEntryFailureReason: 7}},
			vmx: []uint64{7}, vmxName: "VM_INSTRUCTION_ERROR_ENTRY_INVALID_CONTROL", svm: []uint64{7}, svmName: "VMEXIT_CR7_READ", notDeriv: true},
		{r: exits.FailEntry, ex: &exits.Exit{Reason: exits.FailEntry, FailEntry: &exits.FailEntryExit{HardwareEntryFailureReason: 0xffffffff}},
			vmx: []uint64{0xffff}, vmxName: "EXIT_REASON_65535", svm: []uint64{^uint64(0)}, svmName: "VMEXIT_INVALID", notDeriv: true},
		{r: exits.FailEntry},
		{r: exits.Unknown, ex: &exits.Exit{Reason: exits.Unknown, HardwareExitReason: 62},
			vmx: []uint64{62}, vmxName: "PML_FULL", svm: []uint64{62}, svmName: "VMEXIT_DR14_WRITE", notDeriv: true},
		{r: exits.Unknown, ex: &exits.Exit{Reason: exits.Unknown, HardwareExitReason: 0x401},
			vmx: []uint64{0x401}, vmxName: "EXIT_REASON_1025", svm: []uint64{0x401}, svmName: "VMEXIT_AVIC_INCOMPLETE_IPI", notDeriv: true},
		{r: exits.InternalError, ex: &exits.Exit{Reason: exits.InternalError, InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorUnexpectedEx, NData: 2, Data: [16]uint64{69, 3}}},
			vmx: []uint64{69}, vmxName: "LOADIWKEY", svm: []uint64{69}, svmName: "VMEXIT_EXCP_BR", notDeriv: true},
		{r: exits.InternalError, ex: &exits.Exit{Reason: exits.InternalError, InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorDeliveryEv, NData: 5, Data: [16]uint64{0x80000b0e, 49, 0, 0xfee00000, 1}}},
			vmx: []uint64{49}, vmxName: "EPT_MISCONFIG", svm: []uint64{49}, svmName: "VMEXIT_DR1_WRITE", notDeriv: true},
		// Emulation failure, Linux >= 5.14: flags with instruction bytes,
		// 2 words of bytes, then the exit info (reason first).
		{r: exits.InternalError, ex: &exits.Exit{Reason: exits.InternalError, InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorEmulation, NData: 8,
			Data: [16]uint64{1, 0x0000000000c5f8770f, 0x9090909090909090, 0x400, 0x86, 0xfee00000, 0, 0}}},
			vmx: []uint64{0x400}, vmxName: "EXIT_REASON_1024", svm: []uint64{0x400}, svmName: "VMEXIT_NPF", notDeriv: true},
		{r: exits.InternalError, ex: &exits.Exit{Reason: exits.InternalError, InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorEmulation, NData: 6,
			Data: [16]uint64{0, 49, 0, 0xfee00000, 0, 0}}},
			vmx: []uint64{49}, vmxName: "EPT_MISCONFIG", svm: []uint64{49}, svmName: "VMEXIT_DR1_WRITE", notDeriv: true},
		// Older kernels attach no data to an emulation failure.
		{r: exits.InternalError, ex: &exits.Exit{Reason: exits.InternalError, InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorEmulation}}},
		{r: exits.InternalError, ex: &exits.Exit{Reason: exits.InternalError, InternalError: &exits.InternalErrorExit{Suberror: exits.InternalErrorSimulEx, NData: 4}},
			vmx: []uint64{0}, vmxName: "EXCEPTION_NMI"},
		{r: exits.Reason(1000)},
	}
	for _, tc := range tests {
		for _, side := range []struct {
			v     Vendor
			codes []uint64
			name  string
		}{{VMX, tc.vmx, tc.vmxName}, {SVM, tc.svm, tc.svmName}} {
			hs := Beneath(tc.r, side.v, tc.ex)
			got := hwCodes(hs)
			if len(got) != len(side.codes) {
				t.Errorf("Beneath(%v, %s) = %v (%+v), want %#x", tc.r, side.v, got, hs, side.codes)
				continue
			}
			for i := range got {
				if got[i] != side.codes[i] {
					t.Errorf("Beneath(%v, %s)[%d] = %#x, want %#x", tc.r, side.v, i, got[i], side.codes[i])
				}
			}
			for _, h := range hs {
				if h.Vendor != string(side.v) || h.Derived == tc.notDeriv || h.Name == "" {
					t.Errorf("Beneath(%v, %s): %+v (want derived=%v)", tc.r, side.v, h, !tc.notDeriv)
				}
			}
			first := HWFor(tc.r, side.v, tc.ex)
			if len(hs) == 0 {
				if first != nil {
					t.Errorf("HWFor(%v, %s) = %+v, want nil", tc.r, side.v, first)
				}
				continue
			}
			if first == nil || *first != hs[0] {
				t.Errorf("HWFor(%v, %s) = %+v, want %+v", tc.r, side.v, first, hs[0])
			}
			if hs[0].Name != side.name && side.name != "" {
				t.Errorf("Beneath(%v, %s)[0].Name = %q, want %q", tc.r, side.v, hs[0].Name, side.name)
			}
		}
		if hs := Beneath(tc.r, "", tc.ex); hs != nil {
			t.Errorf("Beneath(%v, unknown vendor) = %+v, want nil", tc.r, hs)
		}
	}
}

// Every KVM exit reason kvmlab knows is either mapped for some vendor or on
// the short list of reasons with no hardware exit behind them.
func TestBeneathCoversReasons(t *testing.T) {
	none := map[exits.Reason]bool{exits.SetTPR: true, exits.DirtyRingFull: true, exits.SystemEvent: true, exits.FailEntry: true, exits.Unknown: true, exits.InternalError: true}
	for _, r := range exits.Reasons() {
		if none[r] {
			continue
		}
		if len(Beneath(r, VMX, nil))+len(Beneath(r, SVM, nil)) == 0 {
			t.Errorf("%v has no hardware exit on either vendor", r)
		}
	}
}

func TestHWForHotPathDecodedExit(t *testing.T) {
	// The observatory calls HWFor with the vCPU's decoded exit; an I/O
	// exit decoded from a run page must map like the reason alone. The
	// mapping is three pages, kvm_run then the port I/O data page
	// (KVM_PIO_PAGE_OFFSET = 1), as KVM_GET_VCPU_MMAP_SIZE usually asks.
	const (
		pageSize    = 4096
		realRunSize = 3 * pageSize
		pioOffset   = pageSize
	)
	run := make([]byte, realRunSize)
	exits.EncodeIO(run, exits.Out, 1, 0x3f8, 1, pioOffset, []byte{'H'})
	var e exits.Exit
	if err := exits.Decode(run, &e); err != nil {
		t.Fatal(err)
	}
	h := HWFor(e.Reason, SVM, &e)
	if h == nil || *h != (trace.HW{Vendor: "svm", Code: 0x7b, Name: "VMEXIT_IOIO", Derived: true}) {
		t.Errorf("HWFor(IO, svm) = %+v", h)
	}
	h = HWFor(e.Reason, VMX, &e)
	if h == nil || *h != (trace.HW{Vendor: "vmx", Code: 30, Name: "IO_INSTRUCTION", Derived: true}) {
		t.Errorf("HWFor(IO, vmx) = %+v", h)
	}
}
