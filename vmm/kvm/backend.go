package kvm

import (
	"os"
	"strings"
)

// What stands behind /dev/kvm.
//
// KVM proper is a thin layer over the CPU's virtualisation extensions: Intel
// VT-x (the "vmx" CPUID flag, VMLAUNCH/VMRESUME and the VMCS, SDM Vol. 3
// chapters 23-28) or AMD SVM ("svm", VMRUN and the VMCB, APM Vol. 2 chapter
// 15). The guest's instructions run on the real CPU and only the exits are
// the hypervisor's work. A /dev/kvm can also be offered by a module that has
// no such hardware to drive: kvm_pvm (Pagetable-based Virtual Machine) runs
// guest code with ordinary page tables and emulates what it must in
// software. It answers the same ioctls, KVM_GET_API_VERSION included, so a
// probe of the API alone mistakes it for KVM; but it cannot run an
// unmodified Linux guest (measured on a kvm_pvm host: a bzImage never leaves
// its decompressor, and an ELF vmlinux stops with "KVM could not emulate an
// instruction" while setting up XSAVE). kvmlab therefore asks the CPU too.

// Backend describes the virtualisation /dev/kvm is built on.
type Backend struct {
	// Extension is "VT-x (vmx)" or "AMD SVM (svm)", or "" when the CPU
	// advertises neither.
	Extension string
	// Vendor is the CPU's vendor_id ("GenuineIntel", "AuthenticAMD").
	Vendor string
	// Hypervisor is true when the CPUID hypervisor bit is set: this host
	// is itself a VM, and its guests will be nested.
	Hypervisor bool
	// PVM is true when the kvm_pvm module is loaded.
	PVM bool
}

// HostBackend reads /proc/cpuinfo and /sys/module.
func HostBackend() Backend {
	b, _ := os.ReadFile("/proc/cpuinfo")
	be := ParseCPUInfo(string(b))
	_, err := os.Stat("/sys/module/kvm_pvm")
	be.PVM = err == nil
	return be
}

// ParseCPUInfo reads the vendor and the virtualisation flags of the first
// processor listed in a /proc/cpuinfo text.
func ParseCPUInfo(cpuinfo string) Backend {
	var be Backend
	seenFlags := false
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "vendor_id":
			if be.Vendor == "" {
				be.Vendor = v
			}
		case "flags":
			if seenFlags {
				continue
			}
			seenFlags = true
			for _, f := range strings.Fields(v) {
				switch f {
				case "vmx": // TestCheck in the emulated Intel host checks this line
					be.Extension = "VT-x (vmx)"
				case "svm":
					be.Extension = "AMD SVM (svm)"
				case "hypervisor":
					be.Hypervisor = true
				}
			}
		}
	}
	if be.Vendor == "" {
		be.Vendor = "unknown"
	}
	return be
}

// CanRunLinux reports whether KVM on this backend can run an unmodified
// Linux guest, and if not, why, in one sentence.
func (b Backend) CanRunLinux() (bool, string) {
	if b.Extension != "" {
		return true, ""
	}
	if b.PVM {
		return false, "/dev/kvm here is kvm_pvm, a software KVM on a CPU without VT-x/AMD-V: it cannot run an unmodified Linux guest"
	}
	return false, "the CPU (" + b.Vendor + ") advertises neither VT-x (vmx) nor AMD SVM (svm), so /dev/kvm cannot run guests on hardware virtualisation"
}
