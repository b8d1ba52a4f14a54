package hwexit

// The hardware layer as the kernel spells it.
//
// The kvm:kvm_exit tracepoint (arch/x86/kvm/trace.h) prints the hardware
// reason of every exit by name, through the two tables Linux keeps next to
// the exit codes (VMX_EXIT_REASONS in arch/x86/include/uapi/asm/vmx.h,
// SVM_EXIT_REASONS in svm.h). On VT-x most of those names are the SDM's, as
// in vmxReasons; on SVM they are short lower-case words ("io", "npf",
// "DB excp") where the APM and this package say VMEXIT_IOIO, VMEXIT_NPF,
// VMEXIT_EXCP_DB. A code missing from the kernel's table is printed as a hex
// number ("0xa6"), and on VT-x the flag bits of the exit-reason field follow
// the name after a space ("EPT_VIOLATION FAILED_VMENTRY").
//
// FromTracepoint reads such a name back into a code, so that the reason
// kvmlab derived for an exit can be compared with the one the hardware gave
// (observatory's hardware-layer check, `kvmlab run --stats
// --kvm-exit-tracepoint`). The names below are the ones Linux 6.1 prints
// (read from the event's format file, /sys/kernel/tracing/events/kvm/
// kvm_exit/format); a name this table does not know is reported as such,
// never guessed.

import (
	"strconv"
	"strings"

	"kvmlab/vmm/trace"
)

// vmxTraceAliases are the VT-x names Linux prints that differ from the
// SDM-style names in vmxReasons.
var vmxTraceAliases = map[string]uint32{
	"VMOFF":               26, // VMXOFF
	"VMON":                27, // VMXON
	"MWAIT_INSTRUCTION":   36,
	"MONITOR_TRAP_FLAG":   37,
	"MONITOR_INSTRUCTION": 39,
	"PAUSE_INSTRUCTION":   40,
}

// svmTraceNames are Linux's SVM_EXIT_REASONS spellings, but for the
// families FromTracepoint computes (read_crN, write_crN, read_drN,
// write_drN, "XX excp", write_crN_trap).
var svmTraceNames = map[string]uint64{
	"interrupt": svmINTR, "nmi": svmNMI, "smi": 0x62, "init": 0x63, "vintr": svmVINTR,
	"cr0_sel_write": 0x65,
	// "rt" is how Linux spells TR (the task register) here.
	"read_idtr": 0x66, "read_gdtr": 0x67, "read_ldtr": 0x68, "read_rt": 0x69,
	"write_idtr": 0x6a, "write_gdtr": 0x6b, "write_ldtr": 0x6c, "write_rt": 0x6d,
	"rdtsc": 0x6e, "rdpmc": 0x6f, "pushf": 0x70, "popf": 0x71, "cpuid": 0x72, "rsm": 0x73,
	"iret": 0x74, "swint": 0x75, "invd": 0x76, "pause": 0x77, "hlt": svmHLT, "invlpg": 0x79,
	"invlpga": 0x7a, "io": svmIOIO, "msr": svmMSR, "task_switch": 0x7d, "ferr_freeze": 0x7e,
	"shutdown": svmShutdown, "vmrun": 0x80, "hypercall": svmVMMCALL, "vmload": 0x82,
	"vmsave": 0x83, "stgi": 0x84, "clgi": 0x85, "skinit": 0x86, "rdtscp": 0x87, "icebp": 0x88,
	"wbinvd": 0x89, "monitor": 0x8a, "mwait": 0x8b, "xsetbv": 0x8d, "write_efer_trap": 0x8f,
	"invpcid": 0xa2, "npf": svmNPF, "avic_incomplete_ipi": 0x401,
	"avic_unaccelerated_access": svmAVICNoAccel, "vmgexit": svmVMGEXIT,
	"invalid_guest_state": svmInvalid,
}

// svmTraceVectors are the exception mnemonics of Linux's "XX excp" names
// (note XF, not XM, for vector 19, the SIMD floating-point exception).
var svmTraceVectors = map[string]uint64{
	"DE": 0, "DB": 1, "BP": 3, "OF": 4, "BR": 5, "UD": 6, "NM": 7, "DF": 8, "TS": 10,
	"NP": 11, "SS": 12, "GP": 13, "PF": 14, "MF": 16, "AC": 17, "MC": 18, "XF": 19,
}

// maxTraceName bounds what FromTracepoint looks at: the longest name the
// kernel prints is well under it, and the text is the kernel's, not ours.
const maxTraceName = 64

// FromTracepoint reads the reason text of a kvm:kvm_exit line (what follows
// "reason " up to " rip") on a host of vendor v into the hardware exit it
// names, as package trace writes it (Derived false: the hardware said so).
// ok is false for text that names no exit of v.
func FromTracepoint(v Vendor, text string) (trace.HW, bool) {
	text = strings.TrimSpace(text)
	if text == "" || len(text) > maxTraceName {
		return trace.HW{}, false
	}
	switch v {
	case VMX:
		// The flags, if any, follow the name: the basic reason is the
		// first word.
		name, _, _ := strings.Cut(text, " ")
		if code, ok := vmxTraceCode(name); ok {
			return hwVMX(code, false), true
		}
	case SVM:
		if code, ok := svmTraceCode(text); ok {
			return hwSVM(code, false), true
		}
	}
	return trace.HW{}, false
}

func vmxTraceCode(name string) (uint32, bool) {
	if c, ok := vmxTraceAliases[name]; ok {
		return c, true
	}
	if n, ok := traceHex(name); ok {
		if n > vmxBasicReasonMask {
			return 0, false
		}
		return uint32(n), true
	}
	for code, e := range vmxReasons {
		if e.name != "" && e.name == name {
			return uint32(code), true
		}
	}
	return 0, false
}

func svmTraceCode(name string) (uint64, bool) {
	if c, ok := svmTraceNames[name]; ok {
		return c, true
	}
	if n, ok := traceHex(name); ok {
		return svmNormalize(n), true
	}
	if mn, ok := strings.CutSuffix(name, " excp"); ok {
		if vec, ok := svmTraceVectors[mn]; ok {
			return svmExcpBase + vec, true
		}
		return 0, false
	}
	// read_cr0, write_cr8, read_dr7, write_cr4_trap: a register number in
	// a family.
	families := []struct {
		prefix, suffix string
		base, max      uint64
	}{
		{"read_cr", "", 0x00, 15}, {"write_cr", "", 0x10, 15},
		{"read_dr", "", 0x20, 15}, {"write_dr", "", 0x30, 15},
		{"write_cr", "_trap", 0x90, 15},
	}
	for _, f := range families {
		rest, ok := strings.CutPrefix(name, f.prefix)
		if !ok {
			continue
		}
		rest, ok = strings.CutSuffix(rest, f.suffix)
		if !ok || (f.suffix == "" && strings.Contains(rest, "_")) {
			continue
		}
		n, err := strconv.ParseUint(rest, 10, 8)
		if err != nil || n > f.max || (len(rest) > 1 && rest[0] == '0') {
			continue
		}
		return f.base + n, true
	}
	return 0, false
}

// traceHex reads the "0x%lx" form the kernel prints for a code its table
// lacks.
func traceHex(s string) (uint64, bool) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || h == "" || len(h) > 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(h, 16, 64)
	return n, err == nil
}
