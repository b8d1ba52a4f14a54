package kvm

// Ioctl is one KVM request number with its name, for a seccomp filter that
// lets a running VMM make only the requests it still needs.
type Ioctl struct {
	Name    string
	Request uint32
}

// RunningIoctls lists the KVM requests a kvmlab machine makes after it is
// built: entering the guest, raising interrupts, the eventfd shortcuts the
// guest's virtio drivers switch on while they start, what snapshots, the
// stepper and the failure dump read or set on a vCPU, and the statistics
// file. Everything that builds a machine (KVM_CREATE_VM, KVM_CREATE_VCPU,
// memory slots, CPUID, MSRs, segment registers) is missing on purpose: a
// VMM taken over by its guest must not make a new VM or map more memory
// into this one (package vmm/seccomp).
func RunningIoctls() []Ioctl {
	return []Ioctl{
		{"KVM_RUN", ioRun},
		{"KVM_IRQ_LINE", ioIRQLine},
		{"KVM_SIGNAL_MSI", ioSignalMSI},
		{"KVM_IRQFD", ioIRQFD},
		{"KVM_SET_GSI_ROUTING", ioSetGSIRouting},
		{"KVM_IOEVENTFD", ioIOEventFD},
		{"KVM_GET_REGS", ioGetRegs},
		{"KVM_SET_REGS", ioSetRegs},
		{"KVM_GET_SREGS", ioGetSregs},
		{"KVM_TRANSLATE", ioTranslate},
		{"KVM_SET_GUEST_DEBUG", ioSetGuestDebug},
		// On /dev/kvm: it only reads a number, and is harmless.
		{"KVM_CHECK_EXTENSION", ioCheckExtension},
	}
}

// SetupIoctls lists requests only the building of a machine makes; a
// filter installed after set-up must refuse them (its tests check that).
func SetupIoctls() []Ioctl {
	return []Ioctl{
		{"KVM_CREATE_VM", ioCreateVM},
		{"KVM_CREATE_VCPU", ioCreateVCPU},
		// The statistics files are opened with the vCPUs (vmm's
		// createVCPUs says why), and only read afterwards.
		{"KVM_GET_STATS_FD", ioGetStatsFD},
		{"KVM_SET_USER_MEMORY_REGION", ioSetUserMemoryRegion},
		{"KVM_SET_CPUID2", ioSetCPUID2},
		{"KVM_SET_MSRS", ioSetMSRs},
		{"KVM_SET_SREGS", ioSetSregs},
		{"KVM_CREATE_IRQCHIP", ioCreateIRQChip},
		{"KVM_SET_TSS_ADDR", ioSetTSSAddr},
	}
}
