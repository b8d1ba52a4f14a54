package x86

import (
	"testing"

	"kvmlab/vmm/kvm"
)

func TestFilterCPUID(t *testing.T) {
	in := []kvm.CPUIDEntry{
		{Function: 1, EBX: 0xff12_3456, ECX: ecxMonitor | ecxVMX | 1},
		{Function: 6, EAX: 7, EBX: 7},
		{Function: 0xB, Index: 0, EDX: 99},
		{Function: 0x8000_0001, ECX: ecxSVM | 1},
		{Function: 0x4000_0000, EAX: 0, EBX: 0x4b4d564b},
		{Function: 0x4000_0001, EAX: 0x1234},
	}
	out := FilterCPUID(in, 3, 4)
	tests := []struct {
		name string
		got  uint32
		want uint32
	}{
		{"leaf1 EBX apic id and logical count", out[0].EBX, 0x0304_3456},
		{"leaf1 ECX hypervisor set, monitor and vmx cleared", out[0].ECX, ecxHypervisor | 1},
		{"leaf6 EAX zeroed", out[1].EAX, 0},
		{"leafB EDX x2apic id", out[2].EDX, 3},
		{"0x80000001 SVM hidden", out[3].ECX, 1},
		{"KVM signature max leaf", out[4].EAX, 0x4000_0001},
		{"KVM features passed through", out[5].EAX, 0x1234},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	if in[0].ECX&ecxHypervisor != 0 {
		t.Error("FilterCPUID modified its input")
	}
}

func TestWithTSCDeadline(t *testing.T) {
	in := []kvm.CPUIDEntry{{Function: 0, EAX: 0xd}, {Function: 1, ECX: 1}, {Function: 7, ECX: 2}}
	out := WithTSCDeadline(in)
	tests := []struct {
		name      string
		got, want uint32
	}{
		{"leaf 1 ECX gains bit 24", out[1].ECX, 1 | 1<<24},
		{"leaf 0 untouched", out[0].EAX, 0xd},
		{"leaf 7 ECX untouched", out[2].ECX, 2},
		{"input unchanged", in[1].ECX, 1},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}
