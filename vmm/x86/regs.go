package x86

import "kvmlab/vmm/kvm"

// Control-register and EFER bits for 64-bit entry (SDM Vol. 3A §2.5, Figure
// 2-7; §2.2.1, Figure 2-4).
const (
	CR0PE   = 1 << 0  // protection enable: protected mode
	CR0MP   = 1 << 1  // monitor coprocessor: WAIT honours TS
	CR0ET   = 1 << 4  // extension type: always 1 since the i486
	CR0NE   = 1 << 5  // native x87 error reporting, not the PC's IRQ 13
	CR0WP   = 1 << 16 // write protect: read-only pages bind the kernel too
	CR0PG   = 1 << 31 // paging
	CR4PAE  = 1 << 5  // physical address extension: 64-bit page-table entries
	EFERLME = 1 << 8  // long mode enable
	EFERLMA = 1 << 10 // long mode active: set by the CPU once PG is on
	// RFLAGSReserved is bit 1 of RFLAGS, which always reads 1; with IF
	// clear, interrupts are off as the boot protocol requires.
	RFLAGSReserved = 1 << 1
)

// LongModeEntry is the state the 64-bit boot protocol enters a kernel with,
// as a loader (package boot) describes it.
type LongModeEntry struct {
	RIP, RSP, RSI uint64 // RSI: the address of boot_params
	CR3           uint64 // the PML4 of an identity map
	GDT           kvm.DTable
	// The selectors loaded into CS and into DS, ES, FS, GS and SS, and
	// the GDT descriptors they select.
	CodeSelector, DataSelector     uint16
	CodeDescriptor, DataDescriptor uint64
}

// LongModeSregs returns s with the segment, descriptor-table and control
// registers of e: what the firmware's walk from reset to long mode (SDM
// Vol. 3A §9.8.5) would have left, done in one KVM_SET_SREGS. The fields
// of s that long mode does not concern (TR, LDT, APIC base, CR8, the
// interrupt bitmap) keep KVM's reset values.
func LongModeSregs(s kvm.Sregs, e LongModeEntry) kvm.Sregs {
	code := SegmentFromDescriptor(e.CodeSelector, e.CodeDescriptor)
	data := SegmentFromDescriptor(e.DataSelector, e.DataDescriptor)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = e.GDT
	// No IDT: interrupts stay off until the kernel loads its own.
	s.IDT = kvm.DTable{}
	s.CR0 = CR0PE | CR0MP | CR0ET | CR0NE | CR0WP | CR0PG
	s.CR3 = e.CR3
	s.CR4 = CR4PAE
	// KVM_SET_SREGS takes LMA as given rather than deriving it, so it is
	// set here together with LME.
	s.EFER = EFERLME | EFERLMA
	return s
}

// LongModeRegs returns the general registers of e: every other register 0,
// interrupts off.
func LongModeRegs(e LongModeEntry) kvm.Regs {
	return kvm.Regs{RIP: e.RIP, RSP: e.RSP, RSI: e.RSI, RFLAGS: RFLAGSReserved}
}

// VCPU is what SetupLongMode needs of a vCPU (*kvm.VCPU has it).
type VCPU interface {
	GetSregs() (kvm.Sregs, error)
	SetSregs(kvm.Sregs) error
	SetRegs(kvm.Regs) error
}

// SetupLongMode puts a vCPU straight into 64-bit long mode at e, as the
// "64-bit Boot Protocol" describes: paging on with CR3, flat segments from
// the GDT, RSI = boot_params. It reads the special registers first so that
// what it does not set keeps KVM's reset state.
func SetupLongMode(c VCPU, e LongModeEntry) error {
	s, err := c.GetSregs()
	if err != nil {
		return err
	}
	if err := c.SetSregs(LongModeSregs(s, e)); err != nil {
		return err
	}
	return c.SetRegs(LongModeRegs(e))
}
