package x86

import "kvmlab/vmm/kvm"

// Boot-time MSRs (SDM Vol. 4; AMD APM Vol. 2 Appendix A).
const (
	MSRIA32TSC        = 0x10
	MSRIA32MiscEnable = 0x1a0
	MSRMTRRDefType    = 0x2ff
	MSRSysenterCS     = 0x174
	MSRSysenterESP    = 0x175
	MSRSysenterEIP    = 0x176
	MSRSTAR           = 0xc000_0081
	MSRLSTAR          = 0xc000_0082
	MSRCSTAR          = 0xc000_0083
	MSRSyscallMask    = 0xc000_0084
	MSRKernelGSBase   = 0xc000_0102
)

// MSR values firmware leaves behind.
const (
	// MiscEnableFastStrings is IA32_MISC_ENABLE bit 0: fast string
	// operations (REP MOVS/STOS) enabled.
	MiscEnableFastStrings = 1 << 0
	// MTRRDefTypeEnable is IA32_MTRR_DEF_TYPE bit 11 (E: MTRRs on), and
	// MemTypeWB is memory type 6, write-back (SDM Vol. 3A §11.11.2.1).
	MTRRDefTypeEnable = 1 << 11
	MemTypeWB         = 6
)

// BootMSRs returns the MSRs a vCPU starts with, keeping those the host's
// KVM can set (supported is KVM_GET_MSR_INDEX_LIST as a set): the system
// call entry points and the TSC at zero, fast strings on, and the MTRRs
// enabled with write-back as the default memory type. The last is
// firmware's job on real hardware; without it Linux treats RAM as uncached.
func BootMSRs(supported map[uint32]bool) []kvm.MSR {
	all := []kvm.MSR{
		{Index: MSRSysenterCS}, {Index: MSRSysenterESP}, {Index: MSRSysenterEIP},
		{Index: MSRSTAR}, {Index: MSRLSTAR}, {Index: MSRCSTAR}, {Index: MSRSyscallMask}, {Index: MSRKernelGSBase},
		{Index: MSRIA32TSC},
		{Index: MSRIA32MiscEnable, Data: MiscEnableFastStrings},
		{Index: MSRMTRRDefType, Data: MTRRDefTypeEnable | MemTypeWB},
	}
	var out []kvm.MSR
	for _, msr := range all {
		if supported[msr.Index] {
			out = append(out, msr)
		}
	}
	return out
}
