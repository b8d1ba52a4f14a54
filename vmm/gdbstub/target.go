package gdbstub

import (
	"encoding/binary"
	"fmt"
	"strings"

	"kvmlab/vmm/kvm"
)

// Registers are one vCPU's registers as KVM gives them.
type Registers struct {
	Regs  kvm.Regs
	Sregs kvm.Sregs
}

// reg is one register of the target description: its name, size in bytes,
// type (G.4 "Predefined Target Types"), and where it lives. get and set
// are nil for a register the stub cannot read (the x87 stack: its bytes
// go out as "xx", unavailable). Only the general registers can be written;
// the rest are read-only here (a write of the same value is accepted).
type reg struct {
	name, typ string
	size      int
	get       func(*Registers) uint64
	set       func(*Registers, uint64)
}

func gp(name string, p func(*kvm.Regs) *uint64) reg {
	return reg{name: name, typ: "int64", size: 8,
		get: func(r *Registers) uint64 { return *p(&r.Regs) },
		set: func(r *Registers, v uint64) { *p(&r.Regs) = v }}
}

func seg(name string, p func(*kvm.Sregs) *kvm.Segment) reg {
	return reg{name: name, typ: "int32", size: 4, get: func(r *Registers) uint64 { return uint64(p(&r.Sregs).Selector) }}
}

func sys(name, typ string, p func(*kvm.Sregs) uint64) reg {
	return reg{name: name, typ: typ, size: 8, get: func(r *Registers) uint64 { return p(&r.Sregs) }}
}

// coreRegs is GDB's feature org.gnu.gdb.i386.core for amd64, in the order
// GDB numbers them (gdb/features/i386/64bit-core.xml lists the same): the
// sixteen general registers, rip, eflags, six segment selectors, then the
// x87 registers, which GDB requires to be present.
var coreRegs = func() []reg {
	r := []reg{
		gp("rax", func(r *kvm.Regs) *uint64 { return &r.RAX }),
		gp("rbx", func(r *kvm.Regs) *uint64 { return &r.RBX }),
		gp("rcx", func(r *kvm.Regs) *uint64 { return &r.RCX }),
		gp("rdx", func(r *kvm.Regs) *uint64 { return &r.RDX }),
		gp("rsi", func(r *kvm.Regs) *uint64 { return &r.RSI }),
		gp("rdi", func(r *kvm.Regs) *uint64 { return &r.RDI }),
		gp("rbp", func(r *kvm.Regs) *uint64 { return &r.RBP }),
		gp("rsp", func(r *kvm.Regs) *uint64 { return &r.RSP }),
		gp("r8", func(r *kvm.Regs) *uint64 { return &r.R8 }),
		gp("r9", func(r *kvm.Regs) *uint64 { return &r.R9 }),
		gp("r10", func(r *kvm.Regs) *uint64 { return &r.R10 }),
		gp("r11", func(r *kvm.Regs) *uint64 { return &r.R11 }),
		gp("r12", func(r *kvm.Regs) *uint64 { return &r.R12 }),
		gp("r13", func(r *kvm.Regs) *uint64 { return &r.R13 }),
		gp("r14", func(r *kvm.Regs) *uint64 { return &r.R14 }),
		gp("r15", func(r *kvm.Regs) *uint64 { return &r.R15 }),
		gp("rip", func(r *kvm.Regs) *uint64 { return &r.RIP }),
	}
	r[6].typ, r[7].typ, r[16].typ = "data_ptr", "data_ptr", "code_ptr"
	r = append(r, reg{name: "eflags", typ: "i386_eflags", size: 4,
		get: func(r *Registers) uint64 { return r.Regs.RFLAGS },
		set: func(r *Registers, v uint64) { r.Regs.RFLAGS = v }})
	r = append(r,
		seg("cs", func(s *kvm.Sregs) *kvm.Segment { return &s.CS }),
		seg("ss", func(s *kvm.Sregs) *kvm.Segment { return &s.SS }),
		seg("ds", func(s *kvm.Sregs) *kvm.Segment { return &s.DS }),
		seg("es", func(s *kvm.Sregs) *kvm.Segment { return &s.ES }),
		seg("fs", func(s *kvm.Sregs) *kvm.Segment { return &s.FS }),
		seg("gs", func(s *kvm.Sregs) *kvm.Segment { return &s.GS }))
	for i := range 8 {
		r = append(r, reg{name: fmt.Sprintf("st%d", i), typ: "i387_ext", size: 10})
	}
	for _, n := range []string{"fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"} {
		r = append(r, reg{name: n, typ: "int", size: 4})
	}
	return r
}()

// segmentRegs is org.gnu.gdb.i386.segments: the bases of FS and GS,
// which hold the per-CPU area in a Linux kernel (GS) and thread-local
// storage in user space (FS).
var segmentRegs = []reg{
	sys("fs_base", "int", func(s *kvm.Sregs) uint64 { return s.FS.Base }),
	sys("gs_base", "int", func(s *kvm.Sregs) uint64 { return s.GS.Base }),
}

// controlRegs are kvmlab's own feature: the control registers that decide
// the CPU's mode (docs/exits.md; vmm/inspect decodes them for `kvmlab
// step`). GDB shows registers of a feature it does not know as they are.
var controlRegs = []reg{
	sys("cr0", "int", func(s *kvm.Sregs) uint64 { return s.CR0 }),
	sys("cr2", "int", func(s *kvm.Sregs) uint64 { return s.CR2 }),
	sys("cr3", "int", func(s *kvm.Sregs) uint64 { return s.CR3 }),
	sys("cr4", "int", func(s *kvm.Sregs) uint64 { return s.CR4 }),
	sys("cr8", "int", func(s *kvm.Sregs) uint64 { return s.CR8 }),
	sys("efer", "int", func(s *kvm.Sregs) uint64 { return s.EFER }),
}

// allRegs is every register in GDB's numbering: the order of target.xml.
var allRegs = append(append(append([]reg{}, coreRegs...), segmentRegs...), controlRegs...)

// targetXML is the target description (G.2), built from the tables above
// so that the XML and the g packet cannot disagree.
var targetXML = func() string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
  <architecture>i386:x86-64</architecture>
`)
	feature := func(name string, regs []reg) {
		fmt.Fprintf(&b, "  <feature name=%q>\n", name)
		if name == "org.gnu.gdb.i386.core" {
			// The flags type GDB's i386 code expects for eflags.
			b.WriteString(`    <flags id="i386_eflags" size="4">
      <field name="CF" start="0" end="0"/>
      <field name="PF" start="2" end="2"/>
      <field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/>
      <field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/>
      <field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/>
      <field name="OF" start="11" end="11"/>
      <field name="RF" start="16" end="16"/>
      <field name="VM" start="17" end="17"/>
      <field name="AC" start="18" end="18"/>
    </flags>
`)
		}
		for _, r := range regs {
			fmt.Fprintf(&b, "    <reg name=%q bitsize=\"%d\" type=%q/>\n", r.name, 8*r.size, r.typ)
		}
		b.WriteString("  </feature>\n")
	}
	feature("org.gnu.gdb.i386.core", coreRegs)
	feature("org.gnu.gdb.i386.segments", segmentRegs)
	feature("org.kvmlab.x86.control", controlRegs)
	b.WriteString("</target>\n")
	return b.String()
}()

// encodeReg appends register r's bytes in the target's byte order (little
// endian), as hex; "xx" for each byte of an unavailable one.
func encodeReg(b *strings.Builder, r reg, regs *Registers) {
	if r.get == nil {
		b.WriteString(strings.Repeat("xx", r.size))
		return
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], r.get(regs))
	fmt.Fprintf(b, "%x", buf[:r.size])
}

// encodeRegs is the g reply: every register in order.
func encodeRegs(regs *Registers) string {
	var b strings.Builder
	for _, r := range allRegs {
		encodeReg(&b, r, regs)
	}
	return b.String()
}

// decodeReg sets register r from its bytes p (len r.size). A register
// without a setter accepts only its current value.
func decodeReg(r reg, p []byte, regs *Registers) error {
	if len(p) != r.size {
		return fmt.Errorf("register %s has %d bytes, got %d", r.name, r.size, len(p))
	}
	var buf [8]byte
	copy(buf[:], p)
	v := binary.LittleEndian.Uint64(buf[:])
	switch {
	case r.set != nil:
		r.set(regs, v)
	case r.get != nil && r.get(regs) == v:
	case r.get == nil:
		// The x87 registers are not kvmlab's to set: ignore, as
		// GDB writes them back with G whatever they are.
	default:
		return fmt.Errorf("register %s is read-only here", r.name)
	}
	return nil
}

// decodeRegs applies a G packet: every register, in order. Bytes written
// as xx (unavailable) are skipped.
func decodeRegs(s string, regs *Registers) error {
	for _, r := range allRegs {
		if len(s) < 2*r.size {
			break // a shorter G sets the first registers only
		}
		field := s[:2*r.size]
		s = s[2*r.size:]
		if strings.Contains(field, "x") {
			continue
		}
		p, err := decodeHex(field)
		if err != nil {
			return err
		}
		if r.get == nil {
			continue
		}
		if err := decodeReg(r, p, regs); err != nil && r.set != nil {
			return err
		}
	}
	return nil
}
