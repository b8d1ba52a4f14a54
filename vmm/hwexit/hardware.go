package hwexit

// The hardware layer beneath KVM's exits.
//
// KVM_RUN hands user space a KVM_EXIT_* reason, but the processor had its own
// reason for leaving the guest: a VT-x "basic exit reason" on Intel (and
// VIA/Zhaoxin) parts, an SVM "exit code" on AMD (and Hygon) parts. This file
// holds both tables, written from the specifications:
//
//   - Intel SDM Vol. 3C, Appendix C "VMX Basic Exit Reasons", and the
//     exit-reason field layout in §25.9.1 "Basic VM-Exit Information" (§24.9.1
//     in editions before 2023, whose chapter numbers are one lower);
//   - AMD64 APM Vol. 2, Appendix C "SVM Intercept Exit Codes", and §15.6
//     "#VMEXIT";
//
// with the names of Linux's constants (arch/x86/include/uapi/asm/vmx.h and
// svm.h: EXIT_REASON_IO_INSTRUCTION, SVM_EXIT_IOIO). The kvm:kvm_exit
// tracepoint and `perf kvm stat` print other spellings, short lower-case
// words on SVM ("io", "npf"); tracename.go reads those back. The one-line
// meanings are ours.
//
// KVM does not tell user space which hardware exit produced an ordinary
// KVM_EXIT_IO or KVM_EXIT_MMIO, but for most KVM reasons only one hardware
// exit (or a short list) can produce it, so Beneath derives it. Only
// KVM_EXIT_FAIL_ENTRY, KVM_EXIT_UNKNOWN and some KVM_EXIT_INTERNAL_ERROR
// exits carry the hardware value itself.

import (
	"fmt"
	"strings"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/trace"
)

// Vendor is the host's hardware-virtualisation flavour, spelled the way
// /proc/cpuinfo spells the CPU flag and trace.HW spells its Vendor field.
type Vendor string

// The two x86 virtualisation extensions KVM drives.
const (
	VMX Vendor = "vmx" // Intel VT-x (kvm_intel.ko), also VIA/Zhaoxin
	SVM Vendor = "svm" // AMD-V / Secure Virtual Machine (kvm_amd.ko), also Hygon
)

// VendorFromCPUID maps the 12-byte vendor string of CPUID leaf 0 (EBX, EDX,
// ECX) to the virtualisation extension that vendor's processors implement.
// It returns "" for a string it does not know (including "").
func VendorFromCPUID(vendorString string) Vendor {
	switch strings.TrimSpace(vendorString) {
	case "GenuineIntel", "CentaurHauls", "Shanghai": // Intel, VIA, Zhaoxin ("  Shanghai  ")
		return VMX
	case "AuthenticAMD", "HygonGenuine":
		return SVM
	}
	return ""
}

// Technology is the marketing name a learner will search for.
func (v Vendor) Technology() string {
	switch v {
	case VMX:
		return "Intel VT-x"
	case SVM:
		return "AMD SVM"
	}
	return "hardware virtualisation"
}

type exitInfo struct{ name, meaning string }

// vmxReasons is Intel SDM Vol. 3C Table C-1, indexed by basic exit reason.
// Gaps (35, 38, 42, 71, 82, 83) are reasons the SDM does not define.
var vmxReasons = [...]exitInfo{
	0:  {"EXCEPTION_NMI", "the guest raised an exception whose bit is set in the exception bitmap, or an NMI arrived"},
	1:  {"EXTERNAL_INTERRUPT", "a hardware interrupt meant for the host arrived while the guest was running"},
	2:  {"TRIPLE_FAULT", "a fault while delivering a double fault; a bare CPU would shut down"},
	3:  {"INIT_SIGNAL", "an INIT signal (an INIT IPI) arrived"},
	4:  {"SIPI_SIGNAL", "a start-up IPI arrived while the CPU was waiting for one"},
	5:  {"IO_SMI", "a system-management interrupt right after an I/O instruction (dual-monitor SMM only)"},
	6:  {"OTHER_SMI", "a system-management interrupt not tied to an I/O instruction (dual-monitor SMM only)"},
	7:  {"INTERRUPT_WINDOW", "the guest can now accept an interrupt: RFLAGS.IF=1 and no STI/MOV SS shadow"},
	8:  {"NMI_WINDOW", "the guest can now accept an NMI"},
	9:  {"TASK_SWITCH", "the guest attempted a hardware task switch"},
	10: {"CPUID", "the guest executed CPUID, which always exits"},
	11: {"GETSEC", "the guest executed GETSEC (Safer Mode Extensions)"},
	12: {"HLT", "the guest executed HLT to wait for an interrupt"},
	13: {"INVD", "the guest executed INVD (drop caches without writing back), which always exits"},
	14: {"INVLPG", "the guest flushed one TLB entry with INVLPG"},
	15: {"RDPMC", "the guest read a performance counter with RDPMC"},
	16: {"RDTSC", "the guest read the time-stamp counter with RDTSC"},
	17: {"RSM", "the guest executed RSM to leave system-management mode"},
	18: {"VMCALL", "the guest called the hypervisor with VMCALL"},
	19: {"VMCLEAR", "the guest executed VMCLEAR (nested VMX)"},
	20: {"VMLAUNCH", "the guest executed VMLAUNCH (nested VMX)"},
	21: {"VMPTRLD", "the guest executed VMPTRLD (nested VMX)"},
	22: {"VMPTRST", "the guest executed VMPTRST (nested VMX)"},
	23: {"VMREAD", "the guest executed VMREAD on a field not covered by VMCS shadowing (nested VMX)"},
	24: {"VMRESUME", "the guest executed VMRESUME (nested VMX)"},
	25: {"VMWRITE", "the guest executed VMWRITE on a field not covered by VMCS shadowing (nested VMX)"},
	26: {"VMXOFF", "the guest executed VMXOFF (nested VMX)"},
	27: {"VMXON", "the guest executed VMXON (nested VMX)"},
	28: {"CR_ACCESS", "the guest touched CR0, CR3, CR4 or CR8 (MOV CR, CLTS, LMSW) in a way the VMM watches"},
	29: {"DR_ACCESS", "the guest moved to or from a debug register (MOV DR)"},
	30: {"IO_INSTRUCTION", "the guest executed IN, OUT, INS or OUTS on a trapped port"},
	31: {"MSR_READ", "the guest executed RDMSR on an MSR its MSR bitmap traps"},
	32: {"MSR_WRITE", "the guest executed WRMSR on an MSR its MSR bitmap traps"},
	33: {"INVALID_STATE", "VM entry failed: the guest-state area broke a consistency check"},
	34: {"MSR_LOAD_FAIL", "VM entry failed while loading an MSR from the VM-entry MSR-load list"},
	36: {"MWAIT", "the guest executed MWAIT"},
	37: {"MTF", "monitor trap flag: the guest finished one instruction while being single-stepped"},
	39: {"MONITOR", "the guest executed MONITOR"},
	40: {"PAUSE", "the guest executed PAUSE, typically spinning on a lock (pause-loop exiting)"},
	41: {"MCE_DURING_VMENTRY", "VM entry failed because of a machine-check event"},
	43: {"TPR_BELOW_THRESHOLD", "the guest lowered its task priority below the threshold, so a pending interrupt may be deliverable"},
	44: {"APIC_ACCESS", "the guest accessed the APIC-access page in a way the hardware does not virtualise"},
	45: {"EOI_INDUCED", "the guest acknowledged (EOI) a vector the VMM asked to hear about, such as a level-triggered one"},
	46: {"GDTR_IDTR", "the guest executed LGDT, LIDT, SGDT or SIDT with descriptor-table exiting on"},
	47: {"LDTR_TR", "the guest executed LLDT, LTR, SLDT or STR with descriptor-table exiting on"},
	48: {"EPT_VIOLATION", "a guest-physical access was not allowed by the EPT entries (not mapped, or wrong permissions)"},
	49: {"EPT_MISCONFIG", "a guest-physical access met an EPT entry with an illegal combination of bits"},
	50: {"INVEPT", "the guest executed INVEPT (nested VMX)"},
	51: {"RDTSCP", "the guest executed RDTSCP"},
	52: {"PREEMPTION_TIMER", "the VMX-preemption timer counted down to zero"},
	53: {"INVVPID", "the guest executed INVVPID (nested VMX)"},
	54: {"WBINVD", "the guest executed WBINVD or WBNOINVD (write back and flush caches)"},
	55: {"XSETBV", "the guest wrote an extended control register (XCR0) with XSETBV"},
	56: {"APIC_WRITE", "the guest wrote a virtual-APIC register whose side effects need emulating (trap-like)"},
	57: {"RDRAND", "the guest executed RDRAND with RDRAND exiting on"},
	58: {"INVPCID", "the guest executed INVPCID with INVLPG exiting on"},
	59: {"VMFUNC", "the guest invoked a VM function that is disabled or failed"},
	60: {"ENCLS", "the guest executed an SGX supervisor instruction (ENCLS) the VMM traps"},
	61: {"RDSEED", "the guest executed RDSEED with RDSEED exiting on"},
	62: {"PML_FULL", "the page-modification log, the CPU's dirty-page buffer, is full"},
	63: {"XSAVES", "the guest executed XSAVES on a component the XSS-exiting bitmap traps"},
	64: {"XRSTORS", "the guest executed XRSTORS on a component the XSS-exiting bitmap traps"},
	65: {"PCONFIG", "the guest executed PCONFIG (platform configuration, e.g. memory-encryption keys)"},
	66: {"SPP", "an event related to sub-page write permissions"},
	67: {"UMWAIT", "the guest executed UMWAIT (user-level wait)"},
	68: {"TPAUSE", "the guest executed TPAUSE (timed pause)"},
	69: {"LOADIWKEY", "the guest executed LOADIWKEY (Key Locker)"},
	70: {"ENCLV", "the guest executed an SGX virtualisation instruction (ENCLV) the VMM traps"},
	72: {"ENQCMD_PASID_FAIL", "ENQCMD could not translate the guest's PASID"},
	73: {"ENQCMDS_PASID_FAIL", "ENQCMDS could not translate the guest's PASID"},
	74: {"BUS_LOCK", "the guest locked the bus (a split lock or a locked access to uncached memory)"},
	75: {"NOTIFY", "the CPU spent too long in one instruction without an interrupt window (instruction timeout)"},
	76: {"SEAMCALL", "the guest executed SEAMCALL (TDX)"},
	77: {"TDCALL", "the guest executed TDCALL (TDX)"},
	78: {"RDMSRLIST", "the guest executed RDMSRLIST on a trapped MSR"},
	79: {"WRMSRLIST", "the guest executed WRMSRLIST on a trapped MSR"},
	80: {"URDMSR", "the guest executed URDMSR (user-mode MSR read)"},
	81: {"UWRMSR", "the guest executed UWRMSR (user-mode MSR write)"},
	84: {"MSR_READ_IMM", "the guest executed RDMSR with an immediate MSR index on a trapped MSR"},
	85: {"MSR_WRITE_IMM", "the guest executed WRMSRNS with an immediate MSR index on a trapped MSR"},
}

// VMX basic exit reasons this package refers to by name.
const (
	vmxExceptionNMI     = 0
	vmxExternalInt      = 1
	vmxTripleFault      = 2
	vmxInterruptWindow  = 7
	vmxCPUID            = 10
	vmxHLT              = 12
	vmxVMCALL           = 18
	vmxIOInstruction    = 30
	vmxMSRRead          = 31
	vmxMSRWrite         = 32
	vmxInvalidState     = 33
	vmxAPICAccess       = 44
	vmxEOIInduced       = 45
	vmxEPTViolation     = 48
	vmxEPTMisconfig     = 49
	vmxBusLock          = 74
	vmxNotify           = 75
	vmxTDCALL           = 77
	vmxEntryFailureBit  = 1 << 31
	vmxBasicReasonMask  = 0xffff
	vmxBusLockBit       = 1 << 26
	vmxEnclaveModeBit   = 1 << 27
	vmxPendingMTFBit    = 1 << 28
	vmxFromVMXRootBit   = 1 << 29
	vmxDefinedFlagsMask = vmxBasicReasonMask | vmxBusLockBit | vmxEnclaveModeBit | vmxPendingMTFBit | vmxFromVMXRootBit | vmxEntryFailureBit
)

// VMXReason names a VT-x basic exit reason (Intel SDM Vol. 3C, Table C-1).
// It takes the basic reason, bits 15:0; use DecodeVMXExitReason for the full
// 32-bit field. ok is false for numbers the SDM does not define.
func VMXReason(code uint32) (name, meaning string, ok bool) {
	if code < uint32(len(vmxReasons)) && vmxReasons[code].name != "" {
		e := vmxReasons[code]
		return e.name, e.meaning, true
	}
	return "", "", false
}

// VMXExitReason is the 32-bit exit-reason VMCS field taken apart (Intel SDM
// Vol. 3C §25.9.1, table "Format of Exit Reason"):
//
//	bits 15:0  basic exit reason (Appendix C)
//	bit  16    always 0
//	bits 25:17 not defined
//	bit  26    a bus lock was detected during the exiting instruction
//	bit  27    the exit came from enclave mode (SGX)
//	bit  28    a pending MTF VM exit (SMM VM exits only)
//	bit  29    the exit came from VMX root operation (SMM VM exits only)
//	bit  30    not defined
//	bit  31    VM-entry failure: VM entry itself failed (SDM Vol. 3C,
//	           "VM-Entry Failures During or After Loading Guest State")
type VMXExitReason struct {
	Full         uint32
	Basic        uint16
	BusLock      bool // bit 26
	Enclave      bool // bit 27
	PendingMTF   bool // bit 28
	FromVMXRoot  bool // bit 29
	EntryFailure bool // bit 31
}

// DecodeVMXExitReason splits a full VT-x exit-reason field, as KVM reports it
// in kvm_run.fail_entry.hardware_entry_failure_reason or as the kvm_exit
// tracepoint prints it.
func DecodeVMXExitReason(full uint32) VMXExitReason {
	return VMXExitReason{
		Full:         full,
		Basic:        uint16(full & vmxBasicReasonMask),
		BusLock:      full&vmxBusLockBit != 0,
		Enclave:      full&vmxEnclaveModeBit != 0,
		PendingMTF:   full&vmxPendingMTFBit != 0,
		FromVMXRoot:  full&vmxFromVMXRootBit != 0,
		EntryFailure: full&vmxEntryFailureBit != 0,
	}
}

// Name is the basic reason's name, or "EXIT_REASON_<n>" if the SDM defines
// none.
func (r VMXExitReason) Name() string { return vmxName(uint32(r.Basic)) }

// Meaning is the basic reason's one-line meaning ("" if unknown).
func (r VMXExitReason) Meaning() string {
	_, m, _ := VMXReason(uint32(r.Basic))
	return m
}

// Undefined reports whether bits the SDM leaves undefined (16-25, 30) are
// set: a sign that the value is not an exit reason at all.
func (r VMXExitReason) Undefined() bool { return r.Full&^vmxDefinedFlagsMask != 0 }

// String renders the field the way a learner reads it, e.g.
// "VM-entry failure, INVALID_STATE (33)".
func (r VMXExitReason) String() string {
	var b strings.Builder
	if r.EntryFailure {
		b.WriteString("VM-entry failure, ")
	}
	fmt.Fprintf(&b, "%s (%d)", r.Name(), r.Basic)
	for _, f := range []struct {
		on   bool
		text string
	}{
		{r.BusLock, "bus lock detected"},
		{r.Enclave, "from enclave mode"},
		{r.PendingMTF, "pending MTF exit"},
		{r.FromVMXRoot, "from VMX root operation"},
	} {
		if f.on {
			b.WriteString(", " + f.text)
		}
	}
	return b.String()
}

func vmxName(code uint32) string {
	if n, _, ok := VMXReason(code); ok {
		return n
	}
	return fmt.Sprintf("EXIT_REASON_%d", code)
}

// vmInstructionErrors is Intel SDM Vol. 3C §31.4 "VM Instruction Error
// Numbers" (§30.4 in older editions). When VMLAUNCH/VMRESUME fail before
// the processor even starts loading guest state (VMfailValid), there is no
// exit reason; the reason sits in the VM-instruction error field instead, and
// KVM passes that number in kvm_run.fail_entry with bit 31 clear.
var vmInstructionErrors = map[uint32]exitInfo{
	1:  {"VMCALL_IN_ROOT", "VMCALL executed in VMX root operation"},
	2:  {"VMCLEAR_BAD_ADDRESS", "VMCLEAR with an invalid physical address"},
	3:  {"VMCLEAR_VMXON_POINTER", "VMCLEAR with the VMXON pointer"},
	4:  {"VMLAUNCH_NONCLEAR_VMCS", "VMLAUNCH with a VMCS that is not clear"},
	5:  {"VMRESUME_NONLAUNCHED_VMCS", "VMRESUME with a VMCS that was never launched"},
	6:  {"VMRESUME_AFTER_VMXOFF", "VMRESUME after VMXOFF"},
	7:  {"ENTRY_INVALID_CONTROL", "VM entry with invalid control field(s)"},
	8:  {"ENTRY_INVALID_HOST_STATE", "VM entry with invalid host-state field(s)"},
	9:  {"VMPTRLD_BAD_ADDRESS", "VMPTRLD with an invalid physical address"},
	10: {"VMPTRLD_VMXON_POINTER", "VMPTRLD with the VMXON pointer"},
	11: {"VMPTRLD_BAD_REVISION", "VMPTRLD with an incorrect VMCS revision identifier"},
	12: {"VMREAD_VMWRITE_BAD_FIELD", "VMREAD/VMWRITE of an unsupported VMCS component"},
	13: {"VMWRITE_READ_ONLY", "VMWRITE to a read-only VMCS component"},
	15: {"VMXON_IN_ROOT", "VMXON executed in VMX root operation"},
	16: {"ENTRY_BAD_EXECUTIVE_VMCS", "VM entry with an invalid executive-VMCS pointer"},
	17: {"ENTRY_NONLAUNCHED_EXECUTIVE_VMCS", "VM entry with a non-launched executive VMCS"},
	18: {"ENTRY_EXECUTIVE_VMCS_NOT_VMXON", "VM entry with an executive-VMCS pointer that is not the VMXON pointer"},
	19: {"VMCALL_NONCLEAR_VMCS", "VMCALL with a VMCS that is not clear"},
	20: {"VMCALL_BAD_EXIT_CONTROLS", "VMCALL with invalid VM-exit control fields"},
	22: {"VMCALL_BAD_MSEG_REVISION", "VMCALL with an incorrect MSEG revision identifier"},
	23: {"VMXOFF_DUAL_MONITOR", "VMXOFF under dual-monitor treatment of SMIs and SMM"},
	24: {"VMCALL_BAD_SMM_FEATURES", "VMCALL with invalid SMM-monitor features"},
	25: {"ENTRY_BAD_EXECUTIVE_CONTROLS", "VM entry with invalid execution controls in the executive VMCS"},
	26: {"ENTRY_BLOCKED_BY_MOV_SS", "VM entry with events blocked by MOV SS"},
	28: {"INVEPT_INVVPID_BAD_OPERAND", "invalid operand to INVEPT or INVVPID"},
}

// vmInsnErrPrefix starts the trace.HW name of a VM-instruction error, which
// Beneath reports for a KVM_EXIT_FAIL_ENTRY with bit 31 clear, so that it
// cannot be mistaken for the basic exit reason with the same number.
const vmInsnErrPrefix = "VM_INSTRUCTION_ERROR_"

// VMInstructionError names a VT-x VM-instruction error number.
func VMInstructionError(n uint32) (name, meaning string, ok bool) {
	e, ok := vmInstructionErrors[n]
	return e.name, e.meaning, ok
}

// SVM exit codes this package refers to by name (AMD APM Vol. 2, Table C-1).
const (
	svmExcpBase     = 0x40
	svmExcpDB       = svmExcpBase + 1
	svmExcpBP       = svmExcpBase + 3
	svmINTR         = 0x60
	svmNMI          = 0x61
	svmVINTR        = 0x64
	svmHLT          = 0x78
	svmIOIO         = 0x7b
	svmMSR          = 0x7c
	svmShutdown     = 0x7f
	svmVMMCALL      = 0x81
	svmBusLock      = 0xa5
	svmIdleHLT      = 0xa6
	svmNPF          = 0x400
	svmAVICNoAccel  = 0x402
	svmVMGEXIT      = 0x403
	svmInvalid      = ^uint64(0) // -1: VMRUN found invalid guest state
	svmLastNegative = ^uint64(3) // -4: the lowest negative code defined
)

// Exception vectors by number, as #XX mnemonics (Intel SDM Vol. 3A Table
// 6-1, AMD APM Vol. 2 §8.2). "" marks reserved or unnamed vectors.
var vectorNames = [32]struct{ mnemonic, what string }{
	0: {"DE", "divide error"}, 1: {"DB", "debug"}, 2: {"", "NMI"}, 3: {"BP", "breakpoint (INT3)"},
	4: {"OF", "overflow (INTO)"}, 5: {"BR", "BOUND range exceeded"}, 6: {"UD", "invalid opcode"},
	7: {"NM", "device not available"}, 8: {"DF", "double fault"}, 9: {"", "coprocessor segment overrun"},
	10: {"TS", "invalid TSS"}, 11: {"NP", "segment not present"}, 12: {"SS", "stack-segment fault"},
	13: {"GP", "general protection"}, 14: {"PF", "page fault"}, 16: {"MF", "x87 floating-point error"},
	17: {"AC", "alignment check"}, 18: {"MC", "machine check"}, 19: {"XF", "SIMD floating-point error"},
	21: {"CP", "control protection"}, 28: {"HV", "hypervisor injection"}, 29: {"VC", "VMM communication (SEV-ES)"},
	30: {"SX", "security exception"},
}

// svmFixed holds the SVM exit codes that are not members of a numbered
// family (CRn/DRn reads and writes, exceptions, CR write traps).
var svmFixed = map[uint64]exitInfo{
	0x60:            {"VMEXIT_INTR", "a physical interrupt for the host arrived while the guest was running"},
	0x61:            {"VMEXIT_NMI", "a physical NMI arrived"},
	0x62:            {"VMEXIT_SMI", "a system-management interrupt arrived"},
	0x63:            {"VMEXIT_INIT", "an INIT signal arrived"},
	0x64:            {"VMEXIT_VINTR", "the virtual interrupt (V_IRQ) the VMM queued can now be taken: the guest's interrupt window is open"},
	0x65:            {"VMEXIT_CR0_SEL_WRITE", "the guest wrote CR0 changing bits other than TS and MP (selective CR0 write intercept)"},
	0x66:            {"VMEXIT_IDTR_READ", "the guest read IDTR (SIDT)"},
	0x67:            {"VMEXIT_GDTR_READ", "the guest read GDTR (SGDT)"},
	0x68:            {"VMEXIT_LDTR_READ", "the guest read LDTR (SLDT)"},
	0x69:            {"VMEXIT_TR_READ", "the guest read TR (STR)"},
	0x6a:            {"VMEXIT_IDTR_WRITE", "the guest loaded IDTR (LIDT)"},
	0x6b:            {"VMEXIT_GDTR_WRITE", "the guest loaded GDTR (LGDT)"},
	0x6c:            {"VMEXIT_LDTR_WRITE", "the guest loaded LDTR (LLDT)"},
	0x6d:            {"VMEXIT_TR_WRITE", "the guest loaded TR (LTR)"},
	0x6e:            {"VMEXIT_RDTSC", "the guest read the time-stamp counter with RDTSC"},
	0x6f:            {"VMEXIT_RDPMC", "the guest read a performance counter with RDPMC"},
	0x70:            {"VMEXIT_PUSHF", "the guest executed PUSHF"},
	0x71:            {"VMEXIT_POPF", "the guest executed POPF"},
	0x72:            {"VMEXIT_CPUID", "the guest executed CPUID"},
	0x73:            {"VMEXIT_RSM", "the guest executed RSM"},
	0x74:            {"VMEXIT_IRET", "the guest executed IRET"},
	0x75:            {"VMEXIT_SWINT", "the guest executed a software interrupt (INTn)"},
	0x76:            {"VMEXIT_INVD", "the guest executed INVD (drop caches without writing back)"},
	0x77:            {"VMEXIT_PAUSE", "the guest executed PAUSE, typically spinning on a lock (pause filter)"},
	0x78:            {"VMEXIT_HLT", "the guest executed HLT to wait for an interrupt"},
	0x79:            {"VMEXIT_INVLPG", "the guest flushed one TLB entry with INVLPG"},
	0x7a:            {"VMEXIT_INVLPGA", "the guest executed INVLPGA"},
	0x7b:            {"VMEXIT_IOIO", "the guest executed IN, OUT, INS or OUTS on a port the I/O permission map traps"},
	0x7c:            {"VMEXIT_MSR", "the guest executed RDMSR or WRMSR on an MSR the MSR permission map traps"},
	0x7d:            {"VMEXIT_TASK_SWITCH", "the guest attempted a hardware task switch"},
	0x7e:            {"VMEXIT_FERR_FREEZE", "the guest froze on an x87 error (legacy FERR handling)"},
	0x7f:            {"VMEXIT_SHUTDOWN", "the guest entered the shutdown state, usually a triple fault"},
	0x80:            {"VMEXIT_VMRUN", "the guest executed VMRUN (nested SVM); always intercepted"},
	0x81:            {"VMEXIT_VMMCALL", "the guest called the hypervisor with VMMCALL"},
	0x82:            {"VMEXIT_VMLOAD", "the guest executed VMLOAD (nested SVM)"},
	0x83:            {"VMEXIT_VMSAVE", "the guest executed VMSAVE (nested SVM)"},
	0x84:            {"VMEXIT_STGI", "the guest executed STGI (nested SVM)"},
	0x85:            {"VMEXIT_CLGI", "the guest executed CLGI (nested SVM)"},
	0x86:            {"VMEXIT_SKINIT", "the guest executed SKINIT (secure init)"},
	0x87:            {"VMEXIT_RDTSCP", "the guest executed RDTSCP"},
	0x88:            {"VMEXIT_ICEBP", "the guest executed ICEBP (INT1)"},
	0x89:            {"VMEXIT_WBINVD", "the guest executed WBINVD or WBNOINVD (write back and flush caches)"},
	0x8a:            {"VMEXIT_MONITOR", "the guest executed MONITOR or MONITORX"},
	0x8b:            {"VMEXIT_MWAIT", "the guest executed MWAIT or MWAITX"},
	0x8c:            {"VMEXIT_MWAIT_CONDITIONAL", "the guest executed MWAIT while the monitor was armed"},
	0x8d:            {"VMEXIT_XSETBV", "the guest wrote an extended control register (XCR0) with XSETBV"},
	0x8e:            {"VMEXIT_RDPRU", "the guest executed RDPRU (read processor register)"},
	0x8f:            {"VMEXIT_EFER_WRITE_TRAP", "the guest wrote EFER; reported after the write (SEV-ES)"},
	0xa0:            {"VMEXIT_INVLPGB", "the guest executed INVLPGB (broadcast TLB invalidation)"},
	0xa1:            {"VMEXIT_INVLPGB_ILLEGAL", "the guest executed INVLPGB with an illegal operand"},
	0xa2:            {"VMEXIT_INVPCID", "the guest executed INVPCID"},
	0xa3:            {"VMEXIT_MCOMMIT", "the guest executed MCOMMIT"},
	0xa4:            {"VMEXIT_TLBSYNC", "the guest executed TLBSYNC"},
	0xa5:            {"VMEXIT_BUSLOCK", "the guest locked the bus more often than the bus-lock threshold allows"},
	0xa6:            {"VMEXIT_IDLE_HLT", "the guest executed HLT with no interrupt pending (idle-HLT intercept)"},
	0x400:           {"VMEXIT_NPF", "nested page fault: the guest-physical address has no valid nested page-table entry"},
	0x401:           {"VMEXIT_AVIC_INCOMPLETE_IPI", "AVIC could not deliver a guest IPI by itself (target not running or invalid)"},
	0x402:           {"VMEXIT_AVIC_NOACCEL", "the guest accessed a virtual-APIC register AVIC does not accelerate"},
	0x403:           {"VMEXIT_VMGEXIT", "an SEV-ES/SEV-SNP guest called the hypervisor with VMGEXIT, details in the GHCB"},
	svmInvalid:      {"VMEXIT_INVALID", "VMRUN failed: the VMCB holds invalid guest state"},
	^uint64(1):      {"VMEXIT_BUSY", "VMRUN failed: the BUSY bit was set in the VMSA (SEV-SNP)"},
	^uint64(2):      {"VMEXIT_IDLE_REQUIRED", "VMRUN failed: the sibling thread is not idle"},
	svmLastNegative: {"VMEXIT_INVALID_PMC", "VMRUN failed: invalid performance-counter state"},
}

// SVMExit names an AMD SVM exit code (AMD APM Vol. 2, Table C-1 "SVM
// Intercept Codes"), the 64-bit EXITCODE field of the VMCB. The negative
// codes (VMEXIT_INVALID = -1 and friends) mean VMRUN itself failed; since
// older kernels kept the exit code in 32 bits, 0xffffffff is read as -1 too.
// ok is false for codes the APM does not define.
func SVMExit(code uint64) (name, meaning string, ok bool) {
	code = svmNormalize(code)
	switch {
	case code <= 0x0f:
		return fmt.Sprintf("VMEXIT_CR%d_READ", code), fmt.Sprintf("the guest read CR%d (MOV from CR%d)", code, code), true
	case code <= 0x1f:
		n := code - 0x10
		return fmt.Sprintf("VMEXIT_CR%d_WRITE", n), fmt.Sprintf("the guest wrote CR%d (MOV to CR%d, or CLTS/LMSW for CR0)", n, n), true
	case code <= 0x2f:
		n := code - 0x20
		return fmt.Sprintf("VMEXIT_DR%d_READ", n), fmt.Sprintf("the guest read debug register DR%d", n), true
	case code <= 0x3f:
		n := code - 0x30
		return fmt.Sprintf("VMEXIT_DR%d_WRITE", n), fmt.Sprintf("the guest wrote debug register DR%d", n), true
	case code <= 0x5f:
		v := code - svmExcpBase
		vn := vectorNames[v]
		name := fmt.Sprintf("VMEXIT_EXCP_%d", v)
		what := fmt.Sprintf("vector %d", v)
		if vn.mnemonic != "" {
			name = "VMEXIT_EXCP_" + vn.mnemonic
			what = "#" + vn.mnemonic
		}
		if vn.what != "" {
			what += ", " + vn.what
		} else {
			what += ", reserved"
		}
		return name, "the guest raised exception " + what + ", which is intercepted", true
	case code >= 0x90 && code <= 0x9f:
		n := code - 0x90
		return fmt.Sprintf("VMEXIT_CR%d_WRITE_TRAP", n), fmt.Sprintf("the guest wrote CR%d; reported after the write (SEV-ES)", n), true
	}
	if e, ok := svmFixed[code]; ok {
		return e.name, e.meaning, true
	}
	return "", "", false
}

// svmNormalize sign-extends the 32-bit forms of the negative exit codes
// (0xfffffffc-0xffffffff), which is how kernels that kept the exit code in a
// u32 reported VMEXIT_INVALID in kvm_run.
func svmNormalize(code uint64) uint64 {
	if code>>32 == 0 && code >= 0xfffffffc {
		return uint64(int64(int32(uint32(code))))
	}
	return code
}

func svmName(code uint64) string {
	if n, _, ok := SVMExit(code); ok {
		return n
	}
	return fmt.Sprintf("VMEXIT_%#x", code)
}

// hwVMX and hwSVM build one trace.HW.
func hwVMX(code uint32, derived bool) trace.HW {
	return trace.HW{Vendor: string(VMX), Code: uint64(code), Name: vmxName(code), Derived: derived}
}

func hwSVM(code uint64, derived bool) trace.HW {
	code = svmNormalize(code)
	return trace.HW{Vendor: string(SVM), Code: code, Name: svmName(code), Derived: derived}
}

// hwFromRaw interprets a hardware exit value KVM reported: a full VT-x exit
// reason (basic reason in bits 15:0) or an SVM exit code.
func hwFromRaw(v Vendor, raw uint64) []trace.HW {
	switch v {
	case VMX:
		r := DecodeVMXExitReason(uint32(raw))
		return []trace.HW{hwVMX(uint32(r.Basic), false)}
	case SVM:
		return []trace.HW{hwSVM(raw, false)}
	}
	return nil
}

// pick returns the derived hardware exits for one KVM reason: vmx on Intel,
// svm on AMD.
func pick(v Vendor, vmx []uint32, svm []uint64) []trace.HW {
	var out []trace.HW
	switch v {
	case VMX:
		for _, c := range vmx {
			out = append(out, hwVMX(c, true))
		}
	case SVM:
		for _, c := range svm {
			out = append(out, hwSVM(c, true))
		}
	}
	return out
}

// Beneath lists the hardware exit(s) that can produce KVM exit r on a host
// of vendor v, most likely first. ex, when not nil, refines the answer and
// supplies the hardware value for the exits that carry one.
//
// Derived is true when the answer is inferred from the KVM reason (KVM does
// not report it), false when it comes from a hardware value KVM passed up:
// KVM_EXIT_FAIL_ENTRY, KVM_EXIT_UNKNOWN and some KVM_EXIT_INTERNAL_ERRORs.
// Reasons no hardware exit stands behind (DIRTY_RING_FULL, which KVM raises
// before re-entering; SET_TPR, which KVM no longer uses) and an unknown
// vendor give nil.
func Beneath(r exits.Reason, v Vendor, ex *exits.Exit) []trace.HW {
	switch r {
	case exits.IO:
		// VT-x: KVM sets "unconditional I/O exiting", so every IN/OUT/INS/
		// OUTS exits. SVM: KVM fills the I/O permission map (IOPM) with
		// ones (APM Vol. 2 §15.10). KVM first offers the port to its
		// in-kernel devices; only unclaimed ports reach user space.
		return pick(v, []uint32{vmxIOInstruction}, []uint64{svmIOIO})
	case exits.MMIO:
		// A guest-physical page with no memory slot. On VT-x KVM installs
		// a deliberately misconfigured EPT entry for such a page after the
		// first fault (an EPT violation), so every later access exits as
		// EPT_MISCONFIG, which KVM recognises as MMIO at once. On SVM the
		// same trick uses reserved bits in the nested page table, and
		// every access is a nested page fault (APM Vol. 2 §15.25.6).
		return pick(v, []uint32{vmxEPTMisconfig, vmxEPTViolation}, []uint64{svmNPF})
	case exits.HLT:
		// Recent KVM on AMD uses the idle-HLT intercept, which only
		// exits when no interrupt is pending, in place of the HLT one.
		return pick(v, []uint32{vmxHLT}, []uint64{svmHLT, svmIdleHLT})
	case exits.Shutdown:
		return pick(v, []uint32{vmxTripleFault}, []uint64{svmShutdown})
	case exits.Debug:
		// VT-x reports every intercepted exception as EXCEPTION_NMI with
		// the vector in the VM-exit interruption information; SVM has one
		// exit code per vector.
		svm := []uint64{svmExcpDB, svmExcpBP}
		if ex != nil && ex.Debug != nil {
			switch ex.Debug.Exception {
			case 1:
				svm = svm[:1]
			case 3:
				svm = svm[1:]
			}
		}
		return pick(v, []uint32{vmxExceptionNMI}, svm)
	case exits.Exception:
		// KVM_EXIT_EXCEPTION (an exception KVM could not handle, e.g. in
		// real mode) is VT-x only; the vector is not in the decoded exit.
		return pick(v, []uint32{vmxExceptionNMI}, nil)
	case exits.NMI:
		// Defined by the ABI; current x86 KVM does not return it.
		return pick(v, []uint32{vmxExceptionNMI}, []uint64{svmNMI})
	case exits.Intr:
		// A signal for the vCPU thread is delivered by an IPI to the CPU
		// running the guest, and any host interrupt takes it out of
		// guest mode. (If the signal was already pending before entry,
		// KVM_RUN returns with no hardware exit at all.)
		return pick(v, []uint32{vmxExternalInt}, []uint64{svmINTR})
	case exits.IRQWindowOpen:
		return pick(v, []uint32{vmxInterruptWindow}, []uint64{svmVINTR})
	case exits.X86RDMSR:
		return pick(v, []uint32{vmxMSRRead}, []uint64{svmMSR})
	case exits.X86WRMSR:
		return pick(v, []uint32{vmxMSRWrite}, []uint64{svmMSR})
	case exits.Hypercall:
		// Confidential guests (TDX, SEV-ES/SNP) reach the same hypercalls
		// through TDCALL and VMGEXIT.
		return pick(v, []uint32{vmxVMCALL, vmxTDCALL}, []uint64{svmVMMCALL, svmVMGEXIT})
	case exits.TPRAccess:
		return pick(v, []uint32{vmxAPICAccess}, []uint64{svmNPF})
	case exits.IOAPICEOI:
		// Split irqchip: the guest's EOI of a level-triggered vector.
		return pick(v, []uint32{vmxEOIInduced, vmxAPICAccess}, []uint64{svmNPF, svmAVICNoAccel})
	case exits.X86BusLock:
		return pick(v, []uint32{vmxBusLock}, []uint64{svmBusLock})
	case exits.Notify:
		return pick(v, []uint32{vmxNotify}, nil)
	case exits.MemoryFault:
		return pick(v, []uint32{vmxEPTViolation}, []uint64{svmNPF})
	case exits.APResetHold:
		return pick(v, nil, []uint64{svmVMGEXIT})
	case exits.SystemEvent:
		// On x86 the usual source is a confidential guest asking to be
		// terminated: KVM_SYSTEM_EVENT_SEV_TERM (6) via VMGEXIT,
		// KVM_SYSTEM_EVENT_TDX_FATAL (7) via TDCALL.
		if ex != nil && ex.SystemEvent != nil {
			switch ex.SystemEvent.Type {
			case 6:
				return pick(v, nil, []uint64{svmVMGEXIT})
			case 7:
				return pick(v, []uint32{vmxTDCALL}, nil)
			}
		}
		return nil
	case exits.FailEntry:
		if ex == nil || ex.FailEntry == nil {
			return nil
		}
		raw := ex.FailEntry.HardwareEntryFailureReason
		if v == VMX && uint32(raw)&vmxEntryFailureBit == 0 {
			// VMfailValid: a VM-instruction error number, not an exit
			// reason.
			n := uint32(raw)
			name, _, ok := VMInstructionError(n)
			if !ok {
				name = fmt.Sprintf("%d", n)
			}
			return []trace.HW{{Vendor: string(VMX), Code: uint64(n), Name: vmInsnErrPrefix + name}}
		}
		return hwFromRaw(v, raw)
	case exits.Unknown:
		if ex == nil {
			return nil
		}
		return hwFromRaw(v, ex.HardwareExitReason)
	case exits.InternalError:
		if ex == nil || ex.InternalError == nil {
			return nil
		}
		return beneathInternalError(v, ex.InternalError)
	}
	return nil
}

// beneathInternalError reads the hardware exit out of the data KVM attaches
// to KVM_EXIT_INTERNAL_ERROR (arch/x86/kvm/x86.c and vmx/vmx.c):
//
//   - UNEXPECTED_EXIT_REASON: data[0] is the exit KVM has no handler for.
//   - DELIVERY_EV: an exit KVM cannot handle while the CPU was delivering an
//     event to the guest; data[1] is the exit reason.
//   - EMULATION: the instruction emulator gave up. Since Linux 5.14 data[0]
//     holds flags, data[1..2] the instruction bytes if flag bit 0 is set,
//     and the next word the exit reason that led to emulation.
//   - SIMUL_EX: an exception while delivering another one, found by the
//     VT-x exception handler.
func beneathInternalError(v Vendor, ie *exits.InternalErrorExit) []trace.HW {
	n := min(int(ie.NData), len(ie.Data))
	switch ie.Suberror {
	case exits.InternalErrorUnexpectedEx:
		if n >= 1 {
			return hwFromRaw(v, reasonWord(v, ie.Data[0]))
		}
	case exits.InternalErrorDeliveryEv:
		if n >= 2 {
			return hwFromRaw(v, reasonWord(v, ie.Data[1]))
		}
	case exits.InternalErrorEmulation:
		if n >= 1 {
			at := 1
			if ie.Data[0]&1 != 0 { // KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
				at = 3
			}
			if n >= at+5 { // the five exit-info words follow the flags/bytes
				return hwFromRaw(v, reasonWord(v, ie.Data[at]))
			}
		}
	case exits.InternalErrorSimulEx:
		return pick(v, []uint32{vmxExceptionNMI}, nil)
	}
	return nil
}

// reasonWord trims a reason KVM stored through a u32 pointer.
func reasonWord(v Vendor, w uint64) uint64 {
	if v == SVM {
		return svmNormalize(uint64(uint32(w)))
	}
	return uint64(uint32(w))
}

// HWFor is the most likely hardware exit beneath r, or nil when there is
// none to name (see Beneath).
func HWFor(r exits.Reason, v Vendor, ex *exits.Exit) *trace.HW {
	hs := Beneath(r, v, ex)
	if len(hs) == 0 {
		return nil
	}
	return &hs[0]
}
