package inspect

import (
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// Line is one disassembled instruction.
type Line struct {
	Addr  uint64
	Bytes []byte
	Text  string // Intel syntax
	Err   error
}

// Disassemble decodes up to n instructions from code, which starts at addr,
// in the given mode (16, 32 or 64 bits).
func Disassemble(code []byte, addr uint64, bits, n int) []Line {
	var out []Line
	for len(code) > 0 && len(out) < n {
		inst, err := x86asm.Decode(code, bits)
		if err != nil || inst.Len == 0 {
			out = append(out, Line{Addr: addr, Bytes: code[:1], Text: "(bad)", Err: err})
			code, addr = code[1:], addr+1
			continue
		}
		out = append(out, Line{Addr: addr, Bytes: code[:inst.Len], Text: x86asm.IntelSyntax(inst, addr, nil)})
		code, addr = code[inst.Len:], addr+uint64(inst.Len)
	}
	return out
}

// PreviousIO looks for an IN/OUT/INS/OUTS instruction that ends exactly at
// addr within the bytes before it (before holds the bytes ending at addr):
// after an I/O exit KVM reports RIP past the instruction that trapped.
func PreviousIO(before []byte, addr uint64, bits int) (Line, bool) {
	for k := 1; k <= len(before) && k <= 15; k++ {
		seg := before[len(before)-k:]
		inst, err := x86asm.Decode(seg, bits)
		if err != nil || inst.Len != k {
			continue
		}
		switch inst.Op {
		case x86asm.IN, x86asm.OUT, x86asm.INSB, x86asm.INSW, x86asm.INSD, x86asm.OUTSB, x86asm.OUTSW, x86asm.OUTSD:
			return Line{Addr: addr - uint64(k), Bytes: seg, Text: x86asm.IntelSyntax(inst, addr-uint64(k), nil)}, true
		}
	}
	return Line{}, false
}

// FormatLines renders lines with their bytes, marking the one at mark.
func FormatLines(lines []Line, mark uint64, sym *Symbols) string {
	var b strings.Builder
	for _, l := range lines {
		m := "  "
		if l.Addr == mark {
			m = "=>"
		}
		where := ""
		if s := sym.Describe(l.Addr); s != "" {
			where = " <" + s + ">"
		}
		fmt.Fprintf(&b, "%s %016x%s  %-30s %s\n", m, l.Addr, where, fmt.Sprintf("% x", l.Bytes), l.Text)
	}
	return strings.TrimRight(b.String(), "\n")
}
