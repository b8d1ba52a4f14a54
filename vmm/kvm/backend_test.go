package kvm

import (
	"strings"
	"testing"
)

func TestParseCPUInfo(t *testing.T) {
	tests := []struct {
		name    string
		cpuinfo string
		want    Backend
		canRun  bool
		why     string
	}{
		{"intel", "vendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx ssse3\n", Backend{Extension: "VT-x (vmx)", Vendor: "GenuineIntel"}, true, ""},
		{"amd nested", "vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm hypervisor\n", Backend{Extension: "AMD SVM (svm)", Vendor: "AuthenticAMD", Hypervisor: true}, true, ""},
		{"no extension", "vendor_id\t: AuthenticAMD\nflags\t\t: fpu hypervisor\n", Backend{Vendor: "AuthenticAMD", Hypervisor: true}, false, "neither VT-x"},
		{"only the first processor's flags", "vendor_id\t: GenuineIntel\nflags\t\t: fpu\n\nvendor_id\t: GenuineIntel\nflags\t\t: vmx\n", Backend{Vendor: "GenuineIntel"}, false, "neither VT-x"},
		{"empty", "", Backend{Vendor: "unknown"}, false, "neither VT-x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseCPUInfo(tc.cpuinfo)
			if got != tc.want {
				t.Fatalf("ParseCPUInfo = %+v, want %+v", got, tc.want)
			}
			ok, why := got.CanRunLinux()
			if ok != tc.canRun || !strings.Contains(why, tc.why) {
				t.Errorf("CanRunLinux = %v, %q; want %v, containing %q", ok, why, tc.canRun, tc.why)
			}
		})
	}
	pvm := Backend{Vendor: "AuthenticAMD", PVM: true}
	if ok, why := pvm.CanRunLinux(); ok || !strings.Contains(why, "kvm_pvm") {
		t.Errorf("kvm_pvm backend: CanRunLinux = %v, %q; want false, naming kvm_pvm", ok, why)
	}
}
