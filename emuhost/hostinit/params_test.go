package main

import "testing"

func TestModuleName(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/harness/ko/2-kvm-intel.ko", "kvm_intel"},
		{"/harness/ko/0-irqbypass.ko", "irqbypass"},
		{"/harness/ko/3-kvm-amd.ko", "kvm_amd"},
		{"kvm.ko", "kvm"},
	}
	for _, tt := range tests {
		if got := moduleName(tt.path); got != tt.want {
			t.Errorf("moduleName(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestModuleParams(t *testing.T) {
	tests := []struct {
		cmdline, module, want string
	}{
		{"console=ttyS0 quiet kvm_intel.ept=0 rdinit=/init", "kvm_intel", "ept=0"},
		{"kvm-intel.ept=0 kvm_intel.unrestricted_guest=0", "kvm_intel", "ept=0 unrestricted_guest=0"},
		{"kvm_intel.ept=0", "kvm", ""},
		{"kvm.ignore_msrs=1 kvm_intel.ept=0", "kvm", "ignore_msrs=1"},
		{"kvm_intel. kvm_intel.=1 ept=0", "kvm_intel", ""},
		{"", "kvm_amd", ""},
	}
	for _, tt := range tests {
		if got := moduleParams(tt.cmdline, tt.module); got != tt.want {
			t.Errorf("moduleParams(%q, %s) = %q, want %q", tt.cmdline, tt.module, got, tt.want)
		}
	}
}
