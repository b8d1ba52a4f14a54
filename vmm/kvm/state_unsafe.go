package kvm

import "unsafe"

// SAFETY (for every ptr* helper in this file): each returns the address of
// a Go value whose layout matches, byte for byte, the kernel structure its
// type's comment names (the sizes are checked in state_test.go against the
// sizes the request numbers encode). The kernel reads or writes exactly
// that many bytes through it during the ioctl, and ioctlPtr keeps the
// value alive for the call.

func ptrFPU(p *FPU) unsafe.Pointer               { return unsafe.Pointer(p) }
func ptrXSAVE(p *XSAVE) unsafe.Pointer           { return unsafe.Pointer(p) }
func ptrXCRs(p *XCRs) unsafe.Pointer             { return unsafe.Pointer(p) }
func ptrLAPIC(p *LAPICState) unsafe.Pointer      { return unsafe.Pointer(p) }
func ptrVCPUEvents(p *VCPUEvents) unsafe.Pointer { return unsafe.Pointer(p) }
func ptrDebugRegs(p *DebugRegs) unsafe.Pointer   { return unsafe.Pointer(p) }
func ptrIRQChip(p *IRQChip) unsafe.Pointer       { return unsafe.Pointer(p) }
func ptrPITState2(p *PITState2) unsafe.Pointer   { return unsafe.Pointer(p) }
func ptrClockData(p *ClockData) unsafe.Pointer   { return unsafe.Pointer(p) }

// stateStructSizes reports the sizes of the state structures, for the test
// that checks them against the uapi's.
func stateStructSizes() map[string]uintptr {
	return map[string]uintptr{
		"kvm_fpu": unsafe.Sizeof(FPU{}), "kvm_xsave": unsafe.Sizeof(XSAVE{}),
		"kvm_xcr": unsafe.Sizeof(XCR{}), "kvm_xcrs": unsafe.Sizeof(XCRs{}),
		"kvm_lapic_state": unsafe.Sizeof(LAPICState{}), "kvm_vcpu_events": unsafe.Sizeof(VCPUEvents{}),
		"kvm_debugregs": unsafe.Sizeof(DebugRegs{}), "kvm_irqchip": unsafe.Sizeof(IRQChip{}),
		"kvm_pic_state": unsafe.Sizeof(PICState{}), "kvm_ioapic_state": unsafe.Sizeof(IOAPICState{}),
		"kvm_pit_channel_state": unsafe.Sizeof(PITChannelState{}), "kvm_pit_state2": unsafe.Sizeof(PITState2{}),
		"kvm_clock_data": unsafe.Sizeof(ClockData{}),
	}
}

// stateFieldOffsets reports the offsets of fields whose place a wrong
// padding would shift, for the same test.
func stateFieldOffsets() map[string]uintptr {
	var f FPU
	var e VCPUEvents
	var p PITState2
	var c ClockData
	var x XCRs
	var d DebugRegs
	var i IOAPICState
	var q IRQChip
	return map[string]uintptr{
		"kvm_fpu.fcw": unsafe.Offsetof(f.FCW), "kvm_fpu.last_ip": unsafe.Offsetof(f.LastIP),
		"kvm_fpu.xmm": unsafe.Offsetof(f.XMM), "kvm_fpu.mxcsr": unsafe.Offsetof(f.MXCSR),
		"kvm_vcpu_events.interrupt": unsafe.Offsetof(e.InterruptInjected), "kvm_vcpu_events.nmi": unsafe.Offsetof(e.NMIInjected),
		"kvm_vcpu_events.sipi_vector": unsafe.Offsetof(e.SIPIVector), "kvm_vcpu_events.flags": unsafe.Offsetof(e.Flags),
		"kvm_vcpu_events.smi": unsafe.Offsetof(e.SMISMM), "kvm_vcpu_events.triple_fault": unsafe.Offsetof(e.TripleFaultPending),
		"kvm_vcpu_events.exception_has_payload": unsafe.Offsetof(e.ExceptionHasPayload),
		"kvm_vcpu_events.exception_payload":     unsafe.Offsetof(e.ExceptionPayload),
		"kvm_pit_channel_state.count_load_time": unsafe.Offsetof(p.Channels[0].CountLoadTime),
		"kvm_pit_state2.flags":                  unsafe.Offsetof(p.Flags),
		"kvm_clock_data.flags":                  unsafe.Offsetof(c.Flags), "kvm_clock_data.realtime": unsafe.Offsetof(c.Realtime),
		"kvm_clock_data.host_tsc": unsafe.Offsetof(c.HostTSC),
		"kvm_xcrs.xcrs":           unsafe.Offsetof(x.XCRs),
		"kvm_debugregs.dr6":       unsafe.Offsetof(d.DR6), "kvm_debugregs.flags": unsafe.Offsetof(d.Flags),
		"kvm_ioapic_state.redirtbl": unsafe.Offsetof(i.RedirTbl),
		"kvm_irqchip.chip":          unsafe.Offsetof(q.Chip),
	}
}
