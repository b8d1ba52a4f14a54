package kvm

import "testing"

// The ioctl request numbers encode these sizes; a mismatch would make the
// kernel read or write the wrong number of bytes.
func TestStructSizes(t *testing.T) {
	want := map[string]uintptr{
		"kvm_regs": 144, "kvm_sregs": 312, "kvm_segment": 24, "kvm_cpuid_entry2": 40,
		"kvm_msr_entry": 16, "kvm_userspace_memory_region": 32, "kvm_pit_config": 64,
		"kvm_translation": 24, "kvm_guest_debug": 72,
	}
	got := structSizes()
	for name, size := range want {
		if got[name] != size {
			t.Errorf("sizeof(%s) = %d, want %d", name, got[name], size)
		}
	}
}

func TestIoctlNumbersEncodeSizes(t *testing.T) {
	// _IOC(dir, 0xAE, nr, size): size lives in bits 16-29.
	cases := []struct {
		name string
		req  uint32
		size uint32
	}{
		{"KVM_GET_REGS", ioGetRegs, 144}, {"KVM_SET_REGS", ioSetRegs, 144},
		{"KVM_GET_SREGS", ioGetSregs, 312}, {"KVM_SET_SREGS", ioSetSregs, 312},
		{"KVM_SET_USER_MEMORY_REGION", ioSetUserMemoryRegion, 32}, {"KVM_CREATE_PIT2", ioCreatePIT2, 64},
		{"KVM_TRANSLATE", ioTranslate, 24}, {"KVM_SET_GUEST_DEBUG", ioSetGuestDebug, 72},
		{"KVM_IRQ_LINE", ioIRQLine, 8}, {"KVM_SET_CPUID2", ioSetCPUID2, 8}, {"KVM_SET_MSRS", ioSetMSRs, 8},
	}
	for _, c := range cases {
		if got := (c.req >> 16) & 0x3fff; got != c.size {
			t.Errorf("%s: encoded size %d, want %d", c.name, got, c.size)
		}
		if (c.req>>8)&0xff != 0xAE {
			t.Errorf("%s: not a KVMIO request", c.name)
		}
	}
}
