package x86

import "kvmlab/vmm/kvm"

// CPUID leaves and bits kvmlab edits before giving KVM's supported list to a
// vCPU (Intel SDM Vol. 2A, CPUID; AMD APM Vol. 3 Appendix E).
const (
	leafFeatures     = 0x1
	leafPower        = 0x6
	leafPerfMon      = 0xA
	leafTopology     = 0xB
	leafTopologyV2   = 0x1F
	leafKVMSignature = 0x4000_0000
	leafKVMFeatures  = 0x4000_0001
	leafExtFeatures  = 0x8000_0001

	ecxMonitor     = 1 << 3  // MONITOR/MWAIT: we don't emulate it; Linux would idle with MWAIT
	ecxVMX         = 1 << 5  // no nested virtualisation inside kvmlab guests (Intel; every guest of the emulated Intel host's tests)
	ecxHypervisor  = 1 << 31 // "running under a hypervisor": tells Linux to look for the KVM leaves
	ecxSVM         = 1 << 2  // leaf 0x80000001: AMD's nested virtualisation
	ecxTSCDeadline = 1 << 24 // the local APIC timer's TSC-deadline mode
)

// FilterCPUID adapts KVM_GET_SUPPORTED_CPUID's answer for vCPU apicID of a
// guest with ncpu vCPUs. It returns a new slice; the input is not changed.
//
//   - leaf 1 EBX[31:24] and leaves 0xB/0x1F EDX carry this vCPU's APIC ID, so
//     each CPU sees its own identity (matching the ACPI MADT).
//   - leaf 1 ECX bit 31 (hypervisor present) is set; leaf 0x40000000 carries
//     the "KVMKVMKVM" signature and 0x40000001 KVM's paravirtual features.
//     With KVM_FEATURE_CLOCKSOURCE2 there, Linux uses kvm-clock and takes the
//     TSC frequency from KVM instead of calibrating it against the PIT, which
//     under nested virtualisation is too slow and noisy to work.
//   - features kvmlab does not emulate are hidden: MONITOR/MWAIT, VMX/SVM,
//     the thermal and power leaf, and the architectural PMU.
func FilterCPUID(in []kvm.CPUIDEntry, apicID uint32, ncpu int) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, 0, len(in))
	for _, e := range in {
		switch e.Function {
		case leafFeatures:
			e.EBX = e.EBX&0x00ff_ffff | apicID<<24
			// EBX[23:16]: maximum addressable logical processor IDs.
			e.EBX = e.EBX&^0x00ff_0000 | uint32(ncpu&0xff)<<16
			e.ECX |= ecxHypervisor
			e.ECX &^= ecxMonitor | ecxVMX
		case leafPower, leafPerfMon:
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		case leafTopology, leafTopologyV2:
			e.EDX = apicID
		case leafExtFeatures:
			e.ECX &^= ecxSVM
		case leafKVMSignature:
			// KVM fills in the signature; make sure a max leaf is set.
			if e.EAX < leafKVMFeatures {
				e.EAX = leafKVMFeatures
			}
		}
		out = append(out, e)
	}
	return out
}

// WithTSCDeadline returns in with leaf 1 ECX bit 24 (TSC-deadline timer)
// set. KVM_GET_SUPPORTED_CPUID never reports this bit: KVM's in-kernel
// local APIC emulates the mode whenever KVM_CAP_TSC_DEADLINE_TIMER is
// present, and the VMM is to set the bit itself (Documentation/virt/kvm/
// api.rst, KVM_GET_SUPPORTED_CPUID; QEMU does). It matters for boot time:
// Linux 6.1's calibrate_APIC_clock (arch/x86/kernel/apic/apic.c) returns
// at once on a CPU with the feature, and programs the timer in TSC ticks,
// whose rate kvm-clock already gave it; without it the kernel measures the
// APIC timer against jiffies for a tenth of a second or more ("Calibrating
// APIC timer"), which under nested virtualisation is slow and noisy. The
// caller checks the capability; the input is not changed.
func WithTSCDeadline(in []kvm.CPUIDEntry) []kvm.CPUIDEntry {
	out := append([]kvm.CPUIDEntry(nil), in...)
	for i := range out {
		if out[i].Function == leafFeatures {
			out[i].ECX |= ecxTSCDeadline
		}
	}
	return out
}
