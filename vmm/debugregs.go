package vmm

import (
	"errors"
	"fmt"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/kvm"
)

// The debug registers and INT3, shared by the exit stepper (vmm/stepper)
// and the GDB stub (vmm/gdbstub): both stop a guest between exits through
// KVM_SET_GUEST_DEBUG, and the encodings below have one owner.

// HWKind is what a debug register watches: the R/Wn field of DR7 (Intel
// SDM Vol. 3B §18.2.4, "Debug Control Register (DR7)"; AMD APM Vol. 2
// §13.1.1.5).
type HWKind uint8

// The R/Wn encodings. x86 has no read-only data breakpoint: 10b is I/O
// (with CR4.DE), so a debugger that wants reads watches reads and writes.
const (
	HWExec      HWKind = 0 // 00b: instruction execution (LENn must be 00b)
	HWWrite     HWKind = 1 // 01b: data writes
	HWReadWrite HWKind = 3 // 11b: data reads and writes
)

// HWBreakpoint is one of the four debug-register breakpoints: a linear
// address, what to watch there, and for data how many bytes (1, 2, 4 or 8,
// aligned to their size: the CPU compares the address with its low bits
// masked by LENn).
type HWBreakpoint struct {
	Addr uint64
	Kind HWKind
	Len  int
}

// ErrDebugRegs is wrapped by the errors of DebugRegisters: a request the
// four debug registers cannot hold.
var ErrDebugRegs = errors.New("debug registers")

// DebugRegisters encodes up to four breakpoints into DR0-DR3 and DR7 (the
// other entries of the array, DR4-DR6, stay zero: KVM ignores them). Each
// breakpoint i sets Li (local enable, bit 2i), R/Wi (bits 16+4i) and LENi
// (bits 18+4i); LEN is 00b for 1 byte, 01b for 2, 11b for 4 and 10b for 8.
func DebugRegisters(bps []HWBreakpoint) ([8]uint64, error) {
	var dr [8]uint64
	if len(bps) > 4 {
		return dr, fmt.Errorf("%w: at most 4 hardware breakpoints (DR0-DR3), got %d", ErrDebugRegs, len(bps))
	}
	for i, b := range bps {
		var lenBits uint64
		switch {
		case b.Kind == HWExec:
			// Execution breakpoints must have LEN 00b (SDM §18.2.5).
		case b.Kind != HWWrite && b.Kind != HWReadWrite:
			return dr, fmt.Errorf("%w: breakpoint kind %d", ErrDebugRegs, b.Kind)
		default:
			switch b.Len {
			case 1:
				lenBits = 0
			case 2:
				lenBits = 1
			case 4:
				lenBits = 3
			case 8:
				lenBits = 2
			default:
				return dr, fmt.Errorf("%w: a data breakpoint covers 1, 2, 4 or 8 bytes, not %d", ErrDebugRegs, b.Len)
			}
			if b.Addr%uint64(b.Len) != 0 {
				return dr, fmt.Errorf("%w: %#x is not aligned to %d bytes", ErrDebugRegs, b.Addr, b.Len)
			}
		}
		dr[i] = b.Addr
		dr[7] |= 1<<(2*i) | uint64(b.Kind)<<(16+4*i) | lenBits<<(18+4*i)
	}
	return dr, nil
}

// SetDebugRegisters programs the stopped vCPU's debug registers with up to
// four breakpoints (DebugRegisters) and makes the #DB they raise an exit,
// KVM_GUESTDBG_USE_HW_BP. An execution breakpoint stops the vCPU before the
// instruction (a fault); a data breakpoint after the access (a trap), so
// the guest's memory already holds the new value. The guest's own memory
// is not modified, unlike INT3 breakpoints.
func (c *Control) SetDebugRegisters(bps []HWBreakpoint) error {
	dr, err := DebugRegisters(bps)
	if err != nil {
		return err
	}
	c.v.debug.DebugReg = dr
	if len(bps) > 0 {
		c.v.debug.Control |= kvm.GuestDebugEnable | kvm.GuestDebugUseHWBP
	} else {
		c.v.debug.Control &^= kvm.GuestDebugUseHWBP
	}
	return c.applyDebug()
}

// DebugStatus is DR6 as the KVM_EXIT_DEBUG this vCPU stopped on reported
// it: bits B0-B3 say which debug register matched, BS (bit 14) that a
// single step ended (SDM §18.2.3). ok is false for any other exit.
func (c *Control) DebugStatus() (dr6 uint64, ok bool) {
	if c.v.exit.Debug == nil || c.v.exit.Reason != exits.Debug {
		return 0, false
	}
	return c.v.exit.Debug.DR6, true
}

// INT3 is a software breakpoint planted in guest memory: where, and the
// byte the 0xCC covers.
type INT3 struct {
	GVA, GPA uint64
	Orig     byte
}

// int3Memory is what planting an INT3 needs of a stopped vCPU (*Control,
// or a fake in a unit test).
type int3Memory interface {
	Sregs() (kvm.Sregs, error)
	Translate(gva uint64) (kvm.Translation, error)
	ReadPhys(gpa uint64, n int) ([]byte, error)
	WritePhys(gpa uint64, p []byte) error
}

// PlantINT3 writes INT3 (0xCC, the one-byte breakpoint instruction, SDM
// Vol. 2 "INT n/INTO/INT3/INT1") over the first byte of the instruction at
// guest address a: guest-virtual when the vCPU has paging on (translated
// through the guest's page tables, so the byte lands in the frame the
// guest executes from), guest-physical otherwise. It refuses an address
// that is not mapped and one where the guest has an INT3 of its own.
func PlantINT3(c int3Memory, a uint64) (INT3, error) {
	sr, err := c.Sregs()
	if err != nil {
		return INT3{}, err
	}
	gpa := a
	if sr.CR0&(1<<31) != 0 {
		t, err := c.Translate(a)
		if err != nil {
			return INT3{}, err
		}
		if t.Valid == 0 {
			return INT3{}, fmt.Errorf("%#x is not mapped by the guest's page tables yet: use a hardware breakpoint, which needs no memory", a)
		}
		gpa = t.PhysicalAddress
	}
	orig, err := c.ReadPhys(gpa, 1)
	if err != nil {
		return INT3{}, fmt.Errorf("guest-physical %#x: %w", gpa, err)
	}
	if orig[0] == 0xCC {
		return INT3{}, fmt.Errorf("the guest has an INT3 at %#x itself", a)
	}
	if err := c.WritePhys(gpa, []byte{0xCC}); err != nil {
		return INT3{}, fmt.Errorf("guest-physical %#x: %w", gpa, err)
	}
	return INT3{GVA: a, GPA: gpa, Orig: orig[0]}, nil
}

// Lift puts back the byte an INT3 covered.
func (b INT3) Lift(c interface{ WritePhys(uint64, []byte) error }) error {
	return c.WritePhys(b.GPA, []byte{b.Orig})
}
