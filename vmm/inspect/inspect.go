// Package inspect turns raw vCPU state into what a learner can read: the CPU
// mode (real, protected, long; the privilege level), control registers and
// RFLAGS decoded bit by bit, disassembly in the mode the CPU is in, and kernel
// symbols.
//
// The mode comes from the architecture's own switches (Intel SDM Vol. 3A
// §2.5 "Control Registers", §9.8 "Switching to protected mode", §10.8.5
// "Initializing IA-32e mode"): CR0.PE turns on protected mode; EFER.LMA (set
// by the CPU when paging is enabled with EFER.LME) means IA-32e mode, where
// the code segment's L bit chooses 64-bit or compatibility mode and CS.D
// chooses 32- or 16-bit operands otherwise. The current privilege level
// (CPL) is the low two bits of CS (SS.DPL, strictly).
package inspect

import (
	"fmt"
	"strings"

	"kvmlab/internal/human"
	"kvmlab/vmm/kvm"
)

// Mode is a CPU operating mode.
type Mode struct {
	Name string // "real", "protected (32-bit)", "long (64-bit)", ...
	Bits int    // operand size for disassembly: 16, 32 or 64
	CPL  int
}

// CPUMode derives the operating mode from the special registers.
func CPUMode(s kvm.Sregs) Mode {
	const cr0PE = 1
	const eferLMA = 1 << 10
	cpl := int(s.CS.Selector & 3)
	switch {
	case s.CR0&cr0PE == 0:
		return Mode{Name: "real mode", Bits: 16, CPL: 0}
	case s.EFER&eferLMA != 0 && s.CS.L == 1:
		return Mode{Name: "long mode (64-bit)", Bits: 64, CPL: cpl}
	case s.EFER&eferLMA != 0 && s.CS.DB == 1:
		return Mode{Name: "long mode (compatibility, 32-bit)", Bits: 32, CPL: cpl}
	case s.EFER&eferLMA != 0:
		return Mode{Name: "long mode (compatibility, 16-bit)", Bits: 16, CPL: cpl}
	case s.CS.DB == 1:
		return Mode{Name: "protected mode (32-bit)", Bits: 32, CPL: cpl}
	default:
		return Mode{Name: "protected mode (16-bit)", Bits: 16, CPL: cpl}
	}
}

// The bits of CR0, CR4, EFER and RFLAGS by number, as the Intel SDM (Vol.
// 3A §2.5, Vol. 1 §3.4.3) and the AMD APM (Vol. 2 §3.1.7, EFER) name them.
var (
	cr0Bits = []string{0: "PE", 1: "MP", 2: "EM", 3: "TS", 4: "ET", 5: "NE", 16: "WP", 18: "AM", 29: "NW", 30: "CD", 31: "PG"}
	cr4Bits = []string{0: "VME", 1: "PVI", 2: "TSD", 3: "DE", 4: "PSE", 5: "PAE", 6: "MCE", 7: "PGE", 8: "PCE", 9: "OSFXSR",
		10: "OSXMMEXCPT", 11: "UMIP", 12: "LA57", 13: "VMXE", 14: "SMXE", 16: "FSGSBASE", 17: "PCIDE", 18: "OSXSAVE",
		20: "SMEP", 21: "SMAP", 22: "PKE", 23: "CET", 24: "PKS"}
	eferBits   = []string{0: "SCE", 8: "LME", 10: "LMA", 11: "NXE", 12: "SVME", 13: "LMSLE", 14: "FFXSR", 15: "TCE", 21: "AUTOIBRS"}
	rflagsBits = []string{0: "CF", 2: "PF", 4: "AF", 6: "ZF", 7: "SF", 8: "TF", 9: "IF", 10: "DF", 11: "OF", 14: "NT",
		16: "RF", 17: "VM", 18: "AC", 19: "VIF", 20: "VIP", 21: "ID"}
)

// CR0, CR4, EFER and RFLAGS decoded into flag names (human.Bits: set bits
// by name, lowest first). RFLAGS's bit 1 always reads 1 and says nothing;
// its two-bit I/O privilege level prints as a number.
func CR0(v uint64) string  { return human.Bits(v, cr0Bits) }
func CR4(v uint64) string  { return human.Bits(v, cr4Bits) }
func EFER(v uint64) string { return human.Bits(v, eferBits) }
func RFLAGS(v uint64) string {
	const reserved1, iopl = 1 << 1, 3 << 12
	return human.Bits(v&^(reserved1|iopl), rflagsBits) + fmt.Sprintf(" IOPL=%d", (v&iopl)>>12)
}

// State is a snapshot of the registers a stepper shows.
type State struct {
	Regs  kvm.Regs
	Sregs kvm.Sregs
}

type field struct {
	name string
	val  uint64
	text string
}

func (s State) fields() []field {
	r := s.Regs
	return []field{
		{"RAX", r.RAX, ""}, {"RBX", r.RBX, ""}, {"RCX", r.RCX, ""}, {"RDX", r.RDX, ""},
		{"RSI", r.RSI, ""}, {"RDI", r.RDI, ""}, {"RBP", r.RBP, ""}, {"RSP", r.RSP, ""},
		{"R8", r.R8, ""}, {"R9", r.R9, ""}, {"R10", r.R10, ""}, {"R11", r.R11, ""},
		{"R12", r.R12, ""}, {"R13", r.R13, ""}, {"R14", r.R14, ""}, {"R15", r.R15, ""},
		{"RIP", r.RIP, ""}, {"RFLAGS", r.RFLAGS, RFLAGS(r.RFLAGS)},
		{"CR0", s.Sregs.CR0, CR0(s.Sregs.CR0)}, {"CR2", s.Sregs.CR2, ""}, {"CR3", s.Sregs.CR3, ""},
		{"CR4", s.Sregs.CR4, CR4(s.Sregs.CR4)}, {"EFER", s.Sregs.EFER, EFER(s.Sregs.EFER)},
	}
}

// Format prints the registers; fields that differ from prev (if not nil)
// are marked with '*'.
func Format(s State, prev *State, sym *Symbols) string {
	var b strings.Builder
	mode := CPUMode(s.Sregs)
	fmt.Fprintf(&b, "mode: %s, CPL %d\n", mode.Name, mode.CPL)
	var pf []field
	if prev != nil {
		pf = prev.fields()
	}
	for i, f := range s.fields() {
		mark := " "
		if pf != nil && pf[i].val != f.val {
			mark = "*"
		}
		fmt.Fprintf(&b, "%s%-6s %016x", mark, f.name, f.val)
		if f.text != "" {
			fmt.Fprintf(&b, "  %s", f.text)
		}
		if f.name == "RIP" && sym != nil {
			if n := sym.Describe(f.val); n != "" {
				fmt.Fprintf(&b, "  <%s>", n)
			}
		}
		b.WriteByte('\n')
	}
	segs := []struct {
		name string
		seg  kvm.Segment
	}{{"CS", s.Sregs.CS}, {"DS", s.Sregs.DS}, {"ES", s.Sregs.ES}, {"FS", s.Sregs.FS}, {"GS", s.Sregs.GS}, {"SS", s.Sregs.SS}, {"TR", s.Sregs.TR}}
	for i, sg := range segs {
		mark := " "
		if prev != nil {
			p := []kvm.Segment{prev.Sregs.CS, prev.Sregs.DS, prev.Sregs.ES, prev.Sregs.FS, prev.Sregs.GS, prev.Sregs.SS, prev.Sregs.TR}[i]
			if p.Selector != sg.seg.Selector || p.Base != sg.seg.Base || p.L != sg.seg.L || p.DB != sg.seg.DB {
				mark = "*"
			}
		}
		fmt.Fprintf(&b, "%s%-3s sel=%04x base=%016x limit=%08x type=%x dpl=%d L=%d D=%d P=%d\n", mark, sg.name,
			sg.seg.Selector, sg.seg.Base, sg.seg.Limit, sg.seg.Type, sg.seg.DPL, sg.seg.L, sg.seg.DB, sg.seg.Present)
	}
	fmt.Fprintf(&b, " GDT base=%016x limit=%04x  IDT base=%016x limit=%04x", s.Sregs.GDT.Base, s.Sregs.GDT.Limit, s.Sregs.IDT.Base, s.Sregs.IDT.Limit)
	return b.String()
}
