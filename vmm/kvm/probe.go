package kvm

import (
	"os"
	"strings"
)

// Probes of the host a VMM makes before it builds a machine, so that it can
// refuse in one line, not halfway through set-up.

// Probe opens /dev/kvm, checks the capabilities kvmlab requires (Required)
// and returns the most vCPUs one VM may have there. Its errors are those of
// Open and CheckRequired (ErrAPIVersion, ErrMissingCap, fs errors).
func Probe() (maxVCPUs int, err error) {
	sys, err := Open()
	if err != nil {
		return 0, err
	}
	defer sys.Close()
	if err := sys.CheckRequired(); err != nil {
		return 0, err
	}
	return sys.MaxVCPUs(), nil
}

// NestedParam reads the "nested" parameter of the loaded hardware KVM
// module (kvm_intel or kvm_amd): on when this host's guests may run KVM
// themselves. ok is false when neither module is loaded.
func NestedParam() (module, value string, on, ok bool) {
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if b, err := os.ReadFile("/sys/module/" + m + "/parameters/nested"); err == nil {
			v := strings.TrimSpace(string(b))
			return m, v, v == "1" || v == "Y", true
		}
	}
	return "", "", false, false
}

// KVMClock reports whether KVM offers guests kvm-clock: the
// KVM_FEATURE_CLOCKSOURCE2 bit (3) of the KVM features leaf 0x4000_0001 in
// KVM_GET_SUPPORTED_CPUID (Documentation/virt/kvm/x86/cpuid.rst). found is
// false when the leaf is not there or the ioctl failed.
func (s *System) KVMClock() (advertised, found bool) {
	cpuid, err := s.SupportedCPUID()
	if err != nil {
		return false, false
	}
	for _, e := range cpuid {
		if e.Function == 0x4000_0001 {
			return e.EAX&(1<<3) != 0, true
		}
	}
	return false, false
}
