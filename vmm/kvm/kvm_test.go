package kvm

import "testing"

// The ioctl request numbers encode these sizes; a mismatch would make the
// kernel read or write the wrong number of bytes.
func TestStructSizes(t *testing.T) {
	want := map[string]uintptr{
		"kvm_regs": 144, "kvm_sregs": 312, "kvm_segment": 24, "kvm_cpuid_entry2": 40,
		"kvm_msr_entry": 16, "kvm_userspace_memory_region": 32, "kvm_pit_config": 64,
		"kvm_translation": 24, "kvm_guest_debug": 72,
		"kvm_ioeventfd": 64, "kvm_irqfd": 32,
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
		{"KVM_IRQ_LINE", ioIRQLine, 8},
		{"KVM_IOEVENTFD", ioIOEventFD, 64}, {"KVM_IRQFD", ioIRQFD, 32}, {"KVM_SIGNAL_MSI", ioSignalMSI, 32},
		{"KVM_SET_GSI_ROUTING", ioSetGSIRouting, 8}, {"KVM_SET_CPUID2", ioSetCPUID2, 8}, {"KVM_SET_MSRS", ioSetMSRs, 8},
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

func TestDefaultRoutes(t *testing.T) {
	rs := DefaultRoutes()
	// 16 PIC pins + 24 I/O APIC pins, as kvm_setup_default_irq_routing.
	if len(rs) != 40 {
		t.Fatalf("%d default routes, want 40", len(rs))
	}
	b := EncodeRoutes(rs)
	if len(b) != 8+40*48 {
		t.Fatalf("encoded %d bytes", len(b))
	}
	// GSI 4 (COM1): master PIC pin 4 and I/O APIC pin 4.
	var pic, ioapic bool
	for _, r := range rs {
		if r.GSI == 4 && r.IRQChip == IRQChipPICMaster && r.Pin == 4 {
			pic = true
		}
		if r.GSI == 4 && r.IRQChip == IRQChipIOAPIC && r.Pin == 4 {
			ioapic = true
		}
		if r.GSI >= 8 && r.GSI < 16 && r.IRQChip == IRQChipPICSlave && r.Pin != r.GSI-8 {
			t.Errorf("GSI %d on slave pin %d", r.GSI, r.Pin)
		}
	}
	if !pic || !ioapic {
		t.Errorf("GSI 4 routes: pic %v ioapic %v", pic, ioapic)
	}
}

func TestEncodeMSIRoute(t *testing.T) {
	b := EncodeRoutes([]Route{{GSI: 30, IsMSI: true, MSI: MSI{Addr: 0x1_FEE0_0000, Data: 0x4041}}})
	want := map[int]uint32{0: 1, 8: 30, 12: routeTypeMSI, 24: 0xFEE00000, 28: 1, 32: 0x4041}
	for off, v := range want {
		got := uint32(b[off]) | uint32(b[off+1])<<8 | uint32(b[off+2])<<16 | uint32(b[off+3])<<24
		if got != v {
			t.Errorf("dword at %d = %#x, want %#x", off, got, v)
		}
	}
}
