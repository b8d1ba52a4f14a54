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
		// A snapshot reads the whole machine while it runs (state.go);
		// every write of that state is a restore, before the filter.
		{"KVM_GET_FPU", ioGetFPU},                     // x87/SSE where XSAVE is missing
		{"KVM_GET_XSAVE", ioGetXSAVE},                 // x87/SSE/AVX state
		{"KVM_GET_XSAVE2", ioGetXSAVE2},               // the same, when larger than 4 KiB
		{"KVM_GET_XCRS", ioGetXCRs},                   // XCR0: which XSAVE features the guest enabled
		{"KVM_GET_MSRS", ioGetMSRs},                   // the saveable MSRs (TSC, SYSCALL, PAT, kvm-clock...)
		{"KVM_GET_LAPIC", ioGetLAPIC},                 // local APIC registers and pending vectors
		{"KVM_GET_VCPU_EVENTS", ioGetVCPUEvents},      // the exception/interrupt/NMI in flight
		{"KVM_GET_MP_STATE", ioGetMPState},            // runnable, halted or waiting for SIPI
		{"KVM_GET_DEBUGREGS", ioGetDebugRegs},         // the guest's DR0-3, DR6, DR7
		{"KVM_GET_TSC_KHZ", ioGetTSCKHz},              // the guest's TSC rate, to refuse a restore elsewhere
		{"KVM_GET_IRQCHIP", ioGetIRQChip},             // the PICs and the I/O APIC
		{"KVM_GET_PIT2", ioGetPIT2},                   // the 8254 timer
		{"KVM_GET_CLOCK", ioGetClock},                 // kvm-clock
		{"KVM_GET_MSR_INDEX_LIST", ioGetMSRIndexList}, // on /dev/kvm: reads a list, harmless
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
		// A restore writes the state a snapshot read, while the machine
		// is built (state.go); a running VMM has no reason to.
		{"KVM_SET_FPU", ioSetFPU},
		{"KVM_SET_XSAVE", ioSetXSAVE},
		{"KVM_SET_XCRS", ioSetXCRs},
		{"KVM_SET_LAPIC", ioSetLAPIC},
		{"KVM_SET_VCPU_EVENTS", ioSetVCPUEvents},
		{"KVM_SET_MP_STATE", ioSetMPState},
		{"KVM_SET_DEBUGREGS", ioSetDebugRegs},
		{"KVM_SET_TSC_KHZ", ioSetTSCKHz},
		{"KVM_SET_IRQCHIP", ioSetIRQChip},
		{"KVM_SET_PIT2", ioSetPIT2},
		{"KVM_SET_CLOCK", ioSetClock},
	}
}
