package kvm

// The state of a machine, as KVM holds it: what a snapshot must save and a
// restore must put back (Documentation/virt/kvm/api.rst §4 for each ioctl;
// the layouts are arch/x86/include/uapi/asm/kvm.h and
// include/uapi/linux/kvm.h, mirrored byte for byte and checked in
// state_test.go).
//
// Guest RAM and the device models kvmlab emulates itself are the VMM's; the
// rest of the machine lives in the kernel and can only be read and written
// through these ioctls:
//
//   - each vCPU: general registers (KVM_GET_REGS), segment/control
//     registers (KVM_GET_SREGS), x87/SSE/AVX state (KVM_GET_XSAVE, or
//     KVM_GET_FPU where XSAVE is missing) and XCR0 (KVM_GET_XCRS), the
//     model-specific registers (KVM_GET_MSRS), the local APIC's register page
//     (KVM_GET_LAPIC), events in flight (KVM_GET_VCPU_EVENTS), the
//     multiprocessing state (KVM_GET_MP_STATE), the debug registers
//     (KVM_GET_DEBUGREGS) and the TSC frequency (KVM_GET_TSC_KHZ);
//   - the VM: the two 8259A PICs and the I/O APIC (KVM_GET_IRQCHIP), the
//     8254 PIT (KVM_GET_PIT2) and kvm-clock (KVM_GET_CLOCK).
//
// Every structure here is plain data: exported fixed-size fields (padding is
// named _), so encoding/binary can write each one as it is, and gob can
// write VCPUState and VMState whole. Only VCPUState.MSRs and
// VCPUState.XSAVEExtra are slices.
//
// Not covered: nested virtualisation (KVM_GET_NESTED_STATE, for a guest
// running guests of its own), SMM, Hyper-V and Xen state, and the guest's
// CPUID, which is not state but configuration the VMM sets again on
// restore (KVM_SET_CPUID2, before anything here).

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ioctl request numbers of the state ioctls: _IOR/_IOW/_IOWR(KVMIO=0xAE,
// nr, size), checked against the sizes in state_test.go.
const (
	ioGetIRQChip    = 0xC208AE62 // _IOWR(KVMIO, 0x62, struct kvm_irqchip)
	ioSetIRQChip    = 0x8208AE63 // _IOR(KVMIO, 0x63, struct kvm_irqchip): "R" is a historic mistake kept for ABI
	ioSetClock      = 0x4030AE7B // _IOW(KVMIO, 0x7b, struct kvm_clock_data)
	ioGetClock      = 0x8030AE7C // _IOR(KVMIO, 0x7c, struct kvm_clock_data)
	ioGetFPU        = 0x81A0AE8C // _IOR(KVMIO, 0x8c, struct kvm_fpu)
	ioSetFPU        = 0x41A0AE8D // _IOW(KVMIO, 0x8d, struct kvm_fpu)
	ioGetLAPIC      = 0x8400AE8E // _IOR(KVMIO, 0x8e, struct kvm_lapic_state)
	ioSetLAPIC      = 0x4400AE8F // _IOW(KVMIO, 0x8f, struct kvm_lapic_state)
	ioSetMPState    = 0x4004AE99 // _IOW(KVMIO, 0x99, struct kvm_mp_state)
	ioGetVCPUEvents = 0x8040AE9F // _IOR(KVMIO, 0x9f, struct kvm_vcpu_events)
	ioSetVCPUEvents = 0x4040AEA0 // _IOW(KVMIO, 0xa0, struct kvm_vcpu_events)
	ioGetPIT2       = 0x8070AE9F // _IOR(KVMIO, 0x9f, struct kvm_pit_state2)
	ioSetPIT2       = 0x4070AEA0 // _IOW(KVMIO, 0xa0, struct kvm_pit_state2)
	ioGetDebugRegs  = 0x8080AEA1 // _IOR(KVMIO, 0xa1, struct kvm_debugregs)
	ioSetDebugRegs  = 0x4080AEA2 // _IOW(KVMIO, 0xa2, struct kvm_debugregs)
	ioSetTSCKHz     = 0xAEA2     // _IO(KVMIO, 0xa2): the frequency is the argument
	ioGetTSCKHz     = 0xAEA3     // _IO(KVMIO, 0xa3): the frequency is the result
	ioGetXSAVE      = 0x9000AEA4 // _IOR(KVMIO, 0xa4, struct kvm_xsave)
	ioSetXSAVE      = 0x5000AEA5 // _IOW(KVMIO, 0xa5, struct kvm_xsave)
	ioGetXCRs       = 0x8188AEA6 // _IOR(KVMIO, 0xa6, struct kvm_xcrs)
	ioSetXCRs       = 0x4188AEA7 // _IOW(KVMIO, 0xa7, struct kvm_xcrs)
	ioGetXSAVE2     = 0x9000AECF // _IOR(KVMIO, 0xcf, struct kvm_xsave), but writes KVM_CAP_XSAVE2 bytes
)

// Capabilities of the state ioctls (KVM_CAP_*).
const (
	CapVCPUEvents   Cap = 41
	CapPITState2    Cap = 35
	CapDebugRegs    Cap = 50
	CapXSAVE        Cap = 55
	CapXCRs         Cap = 56
	CapTSCControl   Cap = 60
	CapGetTSCKHz    Cap = 61
	CapXSAVE2       Cap = 208
	CapVMTSCControl Cap = 214
)

func init() {
	capNames[CapVCPUEvents] = "KVM_CAP_VCPU_EVENTS"
	capNames[CapPITState2] = "KVM_CAP_PIT_STATE2"
	capNames[CapDebugRegs] = "KVM_CAP_DEBUGREGS"
	capNames[CapXSAVE] = "KVM_CAP_XSAVE"
	capNames[CapXCRs] = "KVM_CAP_XCRS"
	capNames[CapTSCControl] = "KVM_CAP_TSC_CONTROL"
	capNames[CapGetTSCKHz] = "KVM_CAP_GET_TSC_KHZ"
	capNames[CapXSAVE2] = "KVM_CAP_XSAVE2"
	capNames[CapVMTSCControl] = "KVM_CAP_VM_TSC_CONTROL"
}

// Check returns the KVM_CHECK_EXTENSION answer for c asked of this VM, which
// may differ from /dev/kvm's (api.rst §4.4: "the answer may depend on the
// VM"); KVM_CAP_XSAVE2 is only meaningful here.
func (v *VM) Check(c Cap) int {
	n, err := ioctlInt(v.fd(), ioCheckExtension, uintptr(c))
	if err != nil {
		return 0
	}
	return n
}

// ---------------------------------------------------------------------------
// x87, SSE and AVX: KVM_GET/SET_FPU, KVM_GET/SET_XSAVE, KVM_GET/SET_XCRS.

// FPU is struct kvm_fpu: the x87 and SSE state in the layout of FXSAVE (SDM
// Vol. 1 §10.5.1, "FXSAVE Area"): eight 80-bit x87 registers (in 16-byte
// slots), the x87 control, status and abridged tag words, the last x87
// instruction's opcode and operand addresses, sixteen XMM registers and
// MXCSR. It is the pre-XSAVE interface; on a host with KVM_CAP_XSAVE the
// XSAVE area holds all of it and more (AVX's upper halves, ...), and is
// what a snapshot should use: KVM_GET_FPU leaves MXCSR at 0 whatever the
// guest's (kvm_arch_vcpu_ioctl_get_fpu never copies it, measured here),
// and a KVM_SET_FPU does not mark the SSE component in use, so a later
// KVM_GET_XSAVE reports the XMM registers in their initial state.
type FPU struct {
	FPR        [8][16]byte
	FCW        uint16
	FSW        uint16
	FTWX       uint8 // abridged tag word, as FXSAVE stores it
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]byte
	MXCSR      uint32
	_          uint32
}

// GetFPU reads the vCPU's x87 and SSE registers (KVM_GET_FPU).
func (c *VCPU) GetFPU() (FPU, error) {
	var f FPU
	if err := ioctlPtr(c.fd(), ioGetFPU, ptrFPU(&f)); err != nil {
		return f, fmt.Errorf("KVM_GET_FPU: %w", err)
	}
	return f, nil
}

// SetFPU writes the vCPU's x87 and SSE registers (KVM_SET_FPU).
func (c *VCPU) SetFPU(f FPU) error {
	if err := ioctlPtr(c.fd(), ioSetFPU, ptrFPU(&f)); err != nil {
		return fmt.Errorf("KVM_SET_FPU: %w", err)
	}
	return nil
}

// XSAVESize is the size of struct kvm_xsave without KVM_CAP_XSAVE2.
const XSAVESize = 4096

// XSAVE is struct kvm_xsave: the guest's extended processor state in the
// standard (non-compacted) format of the XSAVE instruction (SDM Vol. 1
// §13.4, "XSAVE Area"): the 512-byte legacy FXSAVE region (x87, SSE) at
// offset 0, the 64-byte XSAVE header at 512 (XSTATE_BV says which
// components hold non-initial values), then each enabled component (AVX
// upper halves, MPX, AVX-512, PKRU, ...) at the offset CPUID leaf 0xD gives
// on the host.
type XSAVE struct {
	Region [XSAVESize / 4]uint32
}

// Bytes returns the area as bytes, in the host's (little-endian) order.
func (x *XSAVE) Bytes() []byte {
	b := make([]byte, XSAVESize)
	for i, w := range x.Region {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
	return b
}

// SetBytes fills the area from the first 4096 bytes of b.
func (x *XSAVE) SetBytes(b []byte) {
	for i := range x.Region {
		if 4*i+4 > len(b) {
			x.Region[i] = 0
			continue
		}
		x.Region[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
}

// XSAVEBufSize is how many bytes KVM_GET_XSAVE2 writes and KVM_SET_XSAVE
// reads on this VM's vCPUs: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM
// fd, which api.rst promises is at least 4096 (it is more only when the
// VMM enabled a dynamic XSAVE feature such as AMX with arch_prctl, which
// kvmlab does not), or 4096 when the capability is missing.
func (v *VM) XSAVEBufSize() int {
	if n := v.Check(CapXSAVE2); n > XSAVESize {
		return n
	}
	return XSAVESize
}

// xsaveBufSize is XSAVEBufSize of the vCPU's VM.
func (c *VCPU) xsaveBufSize() int {
	if c.vm == nil {
		return XSAVESize
	}
	return c.vm.XSAVEBufSize()
}

// GetXSAVE reads the vCPU's XSAVE area (KVM_GET_XSAVE). KVM refuses it with
// EINVAL when the area is larger than 4096 bytes; use GetXSAVE2 then.
func (c *VCPU) GetXSAVE() (XSAVE, error) {
	var x XSAVE
	if err := ioctlPtr(c.fd(), ioGetXSAVE, ptrXSAVE(&x)); err != nil {
		return x, fmt.Errorf("KVM_GET_XSAVE: %w", err)
	}
	return x, nil
}

// GetXSAVE2 reads the whole XSAVE area, however large (KVM_GET_XSAVE2,
// KVM_CAP_XSAVE2): the first 4096 bytes are struct kvm_xsave, the rest the
// dynamically enabled components.
func (c *VCPU) GetXSAVE2() ([]byte, error) {
	b := make([]byte, c.xsaveBufSize())
	if _, err := ioctlBytes(c.fd(), ioGetXSAVE2, b); err != nil {
		return nil, fmt.Errorf("KVM_GET_XSAVE2 (%d bytes): %w", len(b), err)
	}
	return b, nil
}

// ErrXSAVESize is wrapped by the error SetXSAVE and SetXSAVEBytes return
// when the buffer is smaller than what KVM will read.
var ErrXSAVESize = errors.New("XSAVE buffer smaller than KVM_CAP_XSAVE2")

// SetXSAVE writes the vCPU's XSAVE area (KVM_SET_XSAVE). KVM validates the
// header: XSTATE_BV may only name components the host supports.
func (c *VCPU) SetXSAVE(x XSAVE) error {
	if n := c.xsaveBufSize(); n > XSAVESize {
		// KVM would read n bytes from a 4096-byte buffer.
		return fmt.Errorf("KVM_SET_XSAVE: %w: 4096 < %d, use SetXSAVEBytes", ErrXSAVESize, n)
	}
	if err := ioctlPtr(c.fd(), ioSetXSAVE, ptrXSAVE(&x)); err != nil {
		return fmt.Errorf("KVM_SET_XSAVE: %w", err)
	}
	return nil
}

// SetXSAVEBytes writes an XSAVE area of any size KVM accepts, such as one
// GetXSAVE2 read (KVM_SET_XSAVE reads KVM_CAP_XSAVE2 bytes). b must hold at
// least that many bytes: KVM reads that many, whatever the buffer's length.
func (c *VCPU) SetXSAVEBytes(b []byte) error {
	if n := c.xsaveBufSize(); len(b) < n {
		return fmt.Errorf("KVM_SET_XSAVE: %w: %d < %d", ErrXSAVESize, len(b), n)
	}
	if _, err := ioctlBytes(c.fd(), ioSetXSAVE, b); err != nil {
		return fmt.Errorf("KVM_SET_XSAVE (%d bytes): %w", len(b), err)
	}
	return nil
}

// XCR is struct kvm_xcr: one extended control register.
type XCR struct {
	XCR   uint32 // which one: 0 is XCR0
	_     uint32
	Value uint64
}

// MaxXCRs is KVM_MAX_XCRS.
const MaxXCRs = 16

// XCRs is struct kvm_xcrs: the extended control registers XSETBV writes
// (SDM Vol. 1 §13.3). XCR0 says which state components the guest's OS has
// enabled for XSAVE (bit 0 x87, 1 SSE, 2 AVX, ...); it is the only one KVM
// has today.
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [MaxXCRs]XCR
	_      [16]uint64
}

// GetXCRs reads the extended control registers (KVM_GET_XCRS).
func (c *VCPU) GetXCRs() (XCRs, error) {
	var x XCRs
	if err := ioctlPtr(c.fd(), ioGetXCRs, ptrXCRs(&x)); err != nil {
		return x, fmt.Errorf("KVM_GET_XCRS: %w", err)
	}
	return x, nil
}

// SetXCRs writes the extended control registers (KVM_SET_XCRS). KVM refuses
// an XCR0 with features the guest's CPUID does not offer, so CPUID must be
// set first.
func (c *VCPU) SetXCRs(x XCRs) error {
	if err := ioctlPtr(c.fd(), ioSetXCRs, ptrXCRs(&x)); err != nil {
		return fmt.Errorf("KVM_SET_XCRS: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Model-specific registers: which ones can be saved.

// ReadMSRs reads the MSRs with the given indices (KVM_GET_MSRS) and returns
// them with their values. KVM stops at the first MSR it cannot read; that
// is an error naming it.
func (c *VCPU) ReadMSRs(indices []uint32) ([]MSR, error) {
	msrs := make([]MSR, len(indices))
	for i, idx := range indices {
		msrs[i].Index = idx
	}
	n, err := getMSRs(c.fd(), msrs)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_MSRS (%d MSRs): %w", len(msrs), err)
	}
	if n != len(msrs) {
		return nil, fmt.Errorf("KVM_GET_MSRS: KVM cannot read MSR %#x (read %d of %d)", msrs[n].Index, n, len(msrs))
	}
	return msrs, nil
}

// SaveableMSRs returns the MSRs among indices (usually
// System.MSRIndexList) that KVM_GET_MSRS can read on this vCPU, in the
// same order. KVM_GET_MSR_INDEX_LIST names every MSR this KVM knows, but
// whether one can be read depends on the guest's CPUID and the host (an
// MSR of a feature the guest was not given, a PMU counter the host lacks).
// KVM_GET_MSRS reads the list in order and returns how many it read before
// the first failure; that one is dropped and the rest asked again, so the
// cost is one ioctl per unreadable MSR. A snapshot then saves exactly the
// MSRs it can, and ReadMSRs on the result does not fail.
func (c *VCPU) SaveableMSRs(indices []uint32) ([]uint32, error) {
	keep := make([]uint32, 0, len(indices))
	rest := indices
	for len(rest) > 0 {
		msrs := make([]MSR, len(rest))
		for i, idx := range rest {
			msrs[i].Index = idx
		}
		n, err := getMSRs(c.fd(), msrs)
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_MSRS (%d MSRs): %w", len(msrs), err)
		}
		if n < 0 || n > len(rest) {
			return nil, fmt.Errorf("KVM_GET_MSRS: KVM says it read %d of %d", n, len(rest))
		}
		keep = append(keep, rest[:n]...)
		if n == len(rest) {
			break
		}
		rest = rest[n+1:] // rest[n] is the one KVM stopped at
	}
	return keep, nil
}

// ---------------------------------------------------------------------------
// Local APIC: KVM_GET/SET_LAPIC.

// LAPICRegsSize is KVM_APIC_REG_SIZE.
const LAPICRegsSize = 0x400

// Offsets of a few local APIC registers in LAPICState.Regs (SDM Vol. 3
// §11.4.1, Table 11-1, "Local APIC Register Address Map").
const (
	LAPICID    = 0x20  // APIC ID (bits 31-24 in xAPIC mode)
	LAPICVer   = 0x30  // version and max LVT entry
	LAPICTPR   = 0x80  // task priority
	LAPICPPR   = 0xA0  // processor priority: computed from TPR and ISR
	LAPICSVR   = 0xF0  // spurious interrupt vector; bit 8 enables the APIC
	LAPICISR   = 0x100 // in-service register, 8 × 32 bits every 0x10
	LAPICIRR   = 0x200 // interrupt request register, 8 × 32 bits every 0x10
	LAPICLVTT  = 0x320 // LVT timer
	LAPICLINT0 = 0x350 // LVT LINT0
	LAPICTMICT = 0x380 // timer initial count
	LAPICTMCCT = 0x390 // timer current count
	LAPICTDCR  = 0x3E0 // timer divide configuration
)

// LAPICState is struct kvm_lapic_state: the first 1 KiB of the local APIC's
// 4 KiB register page as the guest sees it at 0xFEE00000 (SDM Vol. 3
// §11.4.1): ID and version, task priority, the in-service, trigger-mode and
// request registers (one bit per vector: the interrupts accepted and not yet
// delivered or not yet EOIed), the local vector table (timer, LINT0/1,
// error, performance counter, thermal), the interrupt command register and
// the timer's counts. The registers sit every 16 bytes, 32 bits each, in
// little-endian order. Two are computed, not stored: KVM_SET_LAPIC ignores
// the processor priority (PPR, derived from TPR and the highest vector in
// service) and the timer's current count, and KVM_GET_LAPIC reports them as
// of the call.
type LAPICState struct {
	Regs [LAPICRegsSize]byte
}

// Reg returns the 32-bit register at offset off (one of the LAPIC*
// constants).
func (l *LAPICState) Reg(off int) uint32 {
	return binary.LittleEndian.Uint32(l.Regs[off:])
}

// SetReg sets the 32-bit register at offset off.
func (l *LAPICState) SetReg(off int, v uint32) {
	binary.LittleEndian.PutUint32(l.Regs[off:], v)
}

// GetLAPIC reads the vCPU's local APIC registers (KVM_GET_LAPIC; needs the
// in-kernel irqchip). KVM fills the timer's current count as of the call.
func (c *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	if err := ioctlPtr(c.fd(), ioGetLAPIC, ptrLAPIC(&l)); err != nil {
		return l, fmt.Errorf("KVM_GET_LAPIC: %w", err)
	}
	return l, nil
}

// SetLAPIC writes the vCPU's local APIC registers (KVM_SET_LAPIC). KVM reads
// the APIC ID the way the current APIC base MSR says (xAPIC or x2APIC), so
// the special registers (which carry APIC base) must be set first, and it
// restarts the APIC timer from the initial and current counts.
func (c *VCPU) SetLAPIC(l LAPICState) error {
	if err := ioctlPtr(c.fd(), ioSetLAPIC, ptrLAPIC(&l)); err != nil {
		return fmt.Errorf("KVM_SET_LAPIC: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Events in flight: KVM_GET/SET_VCPU_EVENTS.

// Flags of VCPUEvents.Flags (KVM_VCPUEVENT_VALID_*): on set, which of the
// optional fields KVM should take.
const (
	VCPUEventValidNMIPending  = 0x01
	VCPUEventValidSIPIVector  = 0x02
	VCPUEventValidShadow      = 0x04
	VCPUEventValidSMM         = 0x08
	VCPUEventValidPayload     = 0x10
	VCPUEventValidTripleFault = 0x20
)

// Interrupt shadow bits of VCPUEvents.InterruptShadow (KVM_X86_SHADOW_INT_*).
const (
	ShadowMovSS = 0x01
	ShadowSTI   = 0x02
)

// VCPUEvents is struct kvm_vcpu_events: what the vCPU is in the middle of
// delivering, which no register shows. An exception raised but not yet
// delivered (or being re-delivered after a VM exit interrupted its
// delivery, SDM Vol. 3 §27.2.4 "IDT-vectoring information"; APM Vol. 2
// §15.7.2 EXITINTINFO), an external interrupt the local APIC handed to the
// CPU that the guest has not taken yet (the vector has already left the
// IRR, so it is in neither the APIC page nor any register), a pending or
// in-service NMI and whether NMIs are blocked, the one-instruction
// interrupt shadow after STI or MOV SS, the SIPI vector an AP waits for,
// and SMM/SMI state. A snapshot without them loses exactly one in-flight
// event, which the guest waits for forever: a timer tick never taken, a
// disk completion never seen, a page fault never delivered.
type VCPUEvents struct {
	ExceptionInjected     uint8
	ExceptionNr           uint8
	ExceptionHasErrorCode uint8
	ExceptionPending      uint8
	ExceptionErrorCode    uint32

	InterruptInjected uint8
	InterruptNr       uint8
	InterruptSoft     uint8
	InterruptShadow   uint8 // ShadowSTI, ShadowMovSS

	NMIInjected uint8
	NMIPending  uint8
	NMIMasked   uint8
	_           uint8

	SIPIVector uint32
	Flags      uint32 // VCPUEventValid*

	SMISMM         uint8
	SMIPending     uint8
	SMIInsideNMI   uint8
	SMILatchedInit uint8

	TripleFaultPending uint8
	_                  [26]uint8

	ExceptionHasPayload uint8
	ExceptionPayload    uint64 // CR2 of a #PF or DR6 of a #DB not yet delivered
}

// GetVCPUEvents reads the events in flight (KVM_GET_VCPU_EVENTS). KVM sets
// the Flags bits of the fields it filled (NMI pending, SIPI vector, shadow,
// and SMM, payload, triple fault when those are enabled), so the result can
// be handed back to SetVCPUEvents as it is.
func (c *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	if err := ioctlPtr(c.fd(), ioGetVCPUEvents, ptrVCPUEvents(&e)); err != nil {
		return e, fmt.Errorf("KVM_GET_VCPU_EVENTS: %w", err)
	}
	return e, nil
}

// SetVCPUEvents writes the events in flight (KVM_SET_VCPU_EVENTS).
func (c *VCPU) SetVCPUEvents(e VCPUEvents) error {
	if err := ioctlPtr(c.fd(), ioSetVCPUEvents, ptrVCPUEvents(&e)); err != nil {
		return fmt.Errorf("KVM_SET_VCPU_EVENTS: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Multiprocessing state, debug registers, TSC frequency.

// SetMPState sets the vCPU's multiprocessing state (KVM_SET_MP_STATE), one
// of the MPState* constants: whether it runs, is halted (HLT, waiting for an
// interrupt), or is an application processor waiting for INIT or SIPI (SDM
// Vol. 3 §9.4, "Multiple-Processor (MP) Initialization"). With the in-kernel
// irqchip, a halted vCPU stays in KVM_RUN until an interrupt wakes it, so
// restoring "runnable" for a vCPU that was halted would run the
// instruction after its HLT early.
func (c *VCPU) SetMPState(s uint32) error {
	if err := ioctlPtr(c.fd(), ioSetMPState, ptrU32(&s)); err != nil {
		return fmt.Errorf("KVM_SET_MP_STATE %d: %w", s, err)
	}
	return nil
}

// DebugRegs is struct kvm_debugregs: the breakpoint address registers
// DR0-DR3, the debug status DR6 (which condition fired) and the debug
// control DR7 (which breakpoints are enabled, and on what) (SDM Vol. 3
// §17.2, "Debug Registers"). They are the guest's, e.g. a debugger inside
// the guest; kvmlab's own breakpoints (KVM_SET_GUEST_DEBUG) are not here.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// GetDebugRegs reads the guest's debug registers (KVM_GET_DEBUGREGS).
func (c *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	if err := ioctlPtr(c.fd(), ioGetDebugRegs, ptrDebugRegs(&d)); err != nil {
		return d, fmt.Errorf("KVM_GET_DEBUGREGS: %w", err)
	}
	return d, nil
}

// SetDebugRegs writes the guest's debug registers (KVM_SET_DEBUGREGS). KVM
// refuses Flags other than 0 and DR6/DR7 with bits set in their upper 32
// bits.
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	if err := ioctlPtr(c.fd(), ioSetDebugRegs, ptrDebugRegs(&d)); err != nil {
		return fmt.Errorf("KVM_SET_DEBUGREGS: %w", err)
	}
	return nil
}

// GetTSCKHz returns the frequency of the guest's time-stamp counter in kHz
// (KVM_GET_TSC_KHZ, KVM_CAP_GET_TSC_KHZ): the rate RDTSC counts at, which
// the guest measured once at boot and never again (SDM Vol. 3 §18.17,
// "Time-Stamp Counter").
func (c *VCPU) GetTSCKHz() (uint32, error) {
	n, err := ioctlInt(c.fd(), ioGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_TSC_KHZ: %w", err)
	}
	return uint32(n), nil
}

// SetTSCKHz sets the guest's TSC frequency (KVM_SET_TSC_KHZ on the vCPU,
// KVM_CAP_TSC_CONTROL). A rate other than the host's needs TSC scaling in
// the CPU (Intel "TSC scaling", AMD "TscRateMsr"); without it KVM accepts
// only rates within its tolerance of the host's (250 ppm by default).
func (c *VCPU) SetTSCKHz(khz uint32) error {
	if _, err := ioctlInt(c.fd(), ioSetTSCKHz, uintptr(khz)); err != nil {
		return fmt.Errorf("KVM_SET_TSC_KHZ %d: %w", khz, err)
	}
	return nil
}

// GetTSCKHz returns the TSC frequency new vCPUs of this VM get (KVM_GET_TSC_KHZ
// on the VM, KVM_CAP_VM_TSC_CONTROL, Linux 6.0).
func (v *VM) GetTSCKHz() (uint32, error) {
	n, err := ioctlInt(v.fd(), ioGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_TSC_KHZ (VM): %w", err)
	}
	return uint32(n), nil
}

// SetTSCKHz sets the TSC frequency of the vCPUs this VM will create
// (KVM_SET_TSC_KHZ on the VM, KVM_CAP_VM_TSC_CONTROL). KVM refuses it once a
// vCPU exists, so a restore calls it right after CreateVM.
func (v *VM) SetTSCKHz(khz uint32) error {
	if _, err := ioctlInt(v.fd(), ioSetTSCKHz, uintptr(khz)); err != nil {
		return fmt.Errorf("KVM_SET_TSC_KHZ %d (VM): %w", khz, err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The VM: interrupt controllers, PIT, kvm-clock.

// IRQChipSize is the size of the union in struct kvm_irqchip.
const IRQChipSize = 512

// IRQChip is struct kvm_irqchip: one in-kernel interrupt controller's
// registers, ChipID IRQChipPICMaster, IRQChipPICSlave or IRQChipIOAPIC. Chip
// holds a PICState or an IOAPICState (decode with PIC or IOAPIC).
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [IRQChipSize]byte
}

// PICState is struct kvm_pic_state: one 8259A (Intel 8259A data sheet;
// the "ICW/OCW" programming model): the request, in-service and mask
// registers (IRR, ISR, IMR: one bit per pin), the vector base the guest
// programmed with ICW2, where in its initialisation sequence the chip is,
// and the PIIX edge/level control register (ELCR).
type PICState struct {
	LastIRR                uint8 // for edge detection
	IRR                    uint8 // interrupt request register
	IMR                    uint8 // interrupt mask register
	ISR                    uint8 // interrupt service register
	PriorityAdd            uint8 // highest IRQ priority (rotation)
	IRQBase                uint8 // vector of pin 0 (ICW2)
	ReadRegSelect          uint8
	Poll                   uint8
	SpecialMask            uint8
	InitState              uint8
	AutoEOI                uint8
	RotateOnAutoEOI        uint8
	SpecialFullyNestedMode uint8
	Init4                  uint8 // true if 4 byte init
	ELCR                   uint8 // PIIX edge/trigger selection
	ELCRMask               uint8
}

// IOAPICNumPins is KVM_IOAPIC_NUM_PINS.
const IOAPICNumPins = 24

// IOAPICState is struct kvm_ioapic_state: the I/O APIC (Intel 82093AA data
// sheet): its MMIO base, the index register the guest last selected, its
// ID, the pins currently asserted, and the 24 64-bit redirection entries
// (vector bits 0-7, delivery mode 8-10, destination mode 11, delivery
// status 12, polarity 13, remote IRR 14, trigger mode 15, mask 16,
// destination 56-63).
type IOAPICState struct {
	BaseAddress uint64
	IORegSel    uint32
	ID          uint32
	IRR         uint32
	_           uint32
	RedirTbl    [IOAPICNumPins]uint64
}

// Bits of an I/O APIC redirection entry.
const (
	RedirMask       = 1 << 16
	RedirLevel      = 1 << 15
	RedirRemoteIRR  = 1 << 14
	RedirVectorMask = 0xFF
)

// PIC decodes Chip as a PICState.
func (c *IRQChip) PIC() PICState {
	var p PICState
	decodeChip(c.Chip[:], &p)
	return p
}

// SetPIC encodes p into Chip.
func (c *IRQChip) SetPIC(p PICState) { encodeChip(c.Chip[:], &p) }

// IOAPIC decodes Chip as an IOAPICState.
func (c *IRQChip) IOAPIC() IOAPICState {
	var s IOAPICState
	decodeChip(c.Chip[:], &s)
	return s
}

// SetIOAPIC encodes s into Chip.
func (c *IRQChip) SetIOAPIC(s IOAPICState) { encodeChip(c.Chip[:], &s) }

// decodeChip and encodeChip use encoding/binary, in the host's byte order,
// on structures far smaller than the 512-byte union: they cannot fail.
func decodeChip(b []byte, v any) {
	if _, err := binary.Decode(b, binary.NativeEndian, v); err != nil {
		panic("kvm: decoding irqchip state: " + err.Error())
	}
}

func encodeChip(b []byte, v any) {
	if _, err := binary.Encode(b, binary.NativeEndian, v); err != nil {
		panic("kvm: encoding irqchip state: " + err.Error())
	}
}

// GetIRQChip reads one in-kernel interrupt controller (KVM_GET_IRQCHIP), chip
// IRQChipPICMaster, IRQChipPICSlave or IRQChipIOAPIC.
func (v *VM) GetIRQChip(chip uint32) (IRQChip, error) {
	c := IRQChip{ChipID: chip}
	if err := ioctlPtr(v.fd(), ioGetIRQChip, ptrIRQChip(&c)); err != nil {
		return c, fmt.Errorf("KVM_GET_IRQCHIP %d: %w", chip, err)
	}
	return c, nil
}

// SetIRQChip writes the interrupt controller c.ChipID (KVM_SET_IRQCHIP).
func (v *VM) SetIRQChip(c IRQChip) error {
	if err := ioctlPtr(v.fd(), ioSetIRQChip, ptrIRQChip(&c)); err != nil {
		return fmt.Errorf("KVM_SET_IRQCHIP %d: %w", c.ChipID, err)
	}
	return nil
}

// PITChannelState is struct kvm_pit_channel_state: one counter of the 8254
// (Intel 8254 data sheet): its reload value (Count, 0 meaning 65536), a
// latched count or status waiting to be read, where the guest is in a
// two-byte read or write, the access mode and counting mode (0-5), BCD,
// the gate input, and when the count was last loaded (host ns), from which
// KVM computes the current count.
type PITChannelState struct {
	Count         uint32 // can be 65536
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// Flags of PITState2.Flags (KVM_PIT_FLAGS_*).
const (
	PITFlagsHPETLegacy    = 0x1
	PITFlagsSpeakerDataOn = 0x2
)

// PITState2 is struct kvm_pit_state2: the three channels of the in-kernel
// 8254 PIT (0 drives IRQ 0, 2 the PC speaker) and its flags.
type PITState2 struct {
	Channels [3]PITChannelState
	Flags    uint32
	_        [9]uint32
}

// GetPIT2 reads the in-kernel PIT (KVM_GET_PIT2, KVM_CAP_PIT_STATE2).
func (v *VM) GetPIT2() (PITState2, error) {
	var p PITState2
	if err := ioctlPtr(v.fd(), ioGetPIT2, ptrPITState2(&p)); err != nil {
		return p, fmt.Errorf("KVM_GET_PIT2: %w", err)
	}
	return p, nil
}

// SetPIT2 writes the in-kernel PIT (KVM_SET_PIT2). KVM reloads each channel
// from Count as if the guest had just written it: the time a channel had
// already counted down is lost, which for the 55 ms of a PIT period does not
// matter.
func (v *VM) SetPIT2(p PITState2) error {
	if err := ioctlPtr(v.fd(), ioSetPIT2, ptrPITState2(&p)); err != nil {
		return fmt.Errorf("KVM_SET_PIT2: %w", err)
	}
	return nil
}

// Flags of ClockData.Flags (KVM_CLOCK_*).
const (
	// ClockTSCStable: on get, every vCPU sees the same kvm-clock (the
	// host's TSC is stable and the master clock is in use). Output only:
	// kernels before 5.16 refuse it on set.
	ClockTSCStable = 1 << 1
	// ClockRealtime: Realtime holds the host's CLOCK_REALTIME at the
	// moment of Clock. On set, KVM adds the wall-clock time elapsed since
	// Realtime to Clock, so the guest's clock counts the time it spent
	// saved.
	ClockRealtime = 1 << 2
	// ClockHostTSC: HostTSC holds the host's TSC at the moment of Clock
	// (get only).
	ClockHostTSC = 1 << 3
)

// ClockData is struct kvm_clock_data: the VM's kvm-clock, the paravirtual
// clock source a Linux guest reads (Documentation/virt/kvm/x86/msr.rst,
// MSR_KVM_SYSTEM_TIME_NEW): nanoseconds since the VM was created, which the
// guest turns into its monotonic time. Unlike the TSC it does not jump
// when the VM moves to another host, if the VMM sets it back.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// GetClock reads kvm-clock (KVM_GET_CLOCK, KVM_CAP_ADJUST_CLOCK; the
// capability's answer says which Flags KVM can fill).
func (v *VM) GetClock() (ClockData, error) {
	var d ClockData
	if err := ioctlPtr(v.fd(), ioGetClock, ptrClockData(&d)); err != nil {
		return d, fmt.Errorf("KVM_GET_CLOCK: %w", err)
	}
	return d, nil
}

// SetClock sets kvm-clock (KVM_SET_CLOCK). With ClockRealtime in d.Flags,
// KVM first adds the wall-clock time elapsed since d.Realtime.
func (v *VM) SetClock(d ClockData) error {
	if err := ioctlPtr(v.fd(), ioSetClock, ptrClockData(&d)); err != nil {
		return fmt.Errorf("KVM_SET_CLOCK: %w", err)
	}
	return nil
}
