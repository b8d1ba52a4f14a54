package x86

import "kvmlab/vmm/kvm"

// RealModeSegment is a real-mode segment register holding sel: base =
// sel*16, a 64 KiB limit, present, read/write (code: execute/read), the
// hidden parts a real-mode MOV to a segment register leaves (SDM Vol. 3A
// §20.1.1, "Address Translation in Real-Address Mode").
func RealModeSegment(sel uint16, code bool) kvm.Segment {
	typ := uint8(0x3) // data: read/write, accessed
	if code {
		typ = 0xb // code: execute/read, accessed
	}
	return kvm.Segment{Base: uint64(sel) << 4, Limit: 0xffff, Selector: sel, Type: typ, Present: 1, S: 1}
}

// RealModeSregs returns s (KVM's reset state: real mode, CR0.PE clear) with
// every segment register 0, so that execution starts at linear address ip
// with CS:IP = 0000:ip, as a BIOS hands over to a boot sector. At reset
// CS.base is 0xffff0000 (SDM Vol. 3A §9.1.4, "First Instruction
// Executed"); a BIOS's far jump to 0000:7C00 is what loads 0 here.
func RealModeSregs(s kvm.Sregs) kvm.Sregs {
	s.CS = RealModeSegment(0, true)
	d := RealModeSegment(0, false)
	s.DS, s.ES, s.FS, s.GS, s.SS = d, d, d, d, d
	s.CR0 &^= CR0PE | CR0PG
	s.EFER = 0
	return s
}

// SetupRealMode puts a vCPU in real mode at 0000:ip with SP = sp and
// interrupts off: the state a boot sector starts in.
func SetupRealMode(c VCPU, ip, sp uint64) error {
	s, err := c.GetSregs()
	if err != nil {
		return err
	}
	if err := c.SetSregs(RealModeSregs(s)); err != nil {
		return err
	}
	return c.SetRegs(kvm.Regs{RIP: ip, RSP: sp, RFLAGS: RFLAGSReserved})
}
