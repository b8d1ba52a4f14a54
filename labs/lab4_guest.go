package labs

import (
	"encoding/binary"
	"fmt"

	"kvmlab/guest/tiny"
)

// Lab 4's guest: a few dozen hand-assembled x86-64 instructions (the
// guest/tiny way: no kernel, entered in 64-bit mode at tiny.Base) that
// talk to the learner's device at lab4Port through IN and OUT, compare
// each answer with what the device's specification says, print
// "lab4: PASS" or "lab4: FAIL <step>" on COM1 and power off through
// kvmlab's ACPI PM1a control register.

const (
	// lab4Port is the accumulator register (32-bit); lab4Port+4 the
	// control register (8-bit: a write resets, a read is the ID byte).
	// 0x700 is free in kvmlab's port map (vmm/x86, devices/acpipm at
	// 0x600, PCI configuration at 0xcf8).
	lab4Port = 0x700
	lab4Size = 8
	lab4ID   = 'K'
)

// lab4Step is one check the guest makes: a human description for hints,
// and what the guest expects to read.
type lab4Step struct {
	what string
	want uint32
}

// lab4Steps are the guest's checks, in order; the guest prints the
// 1-based number of the first that fails.
var lab4Steps = []lab4Step{
	{"reading the control register (port 0x704, 1 byte) returns the ID byte 'K' (0x4b)", lab4ID},
	{"after a reset (any byte written to port 0x704) the accumulator (port 0x700, 4 bytes) reads 0", 0},
	{"after writing 5 and then 7 to port 0x700, it reads 12 (writes add, they do not replace)", 12},
	{"after then writing 0xfffffffe, it reads 10 (the sum wraps around at 32 bits)", 10},
	{"after another reset, it reads 0 again", 0},
}

// asm is a tiny x86-64 assembler: the instructions the lab guest needs,
// with forward jumps patched once their label is placed.
type asm struct {
	b      []byte
	labels map[string]int
	fixups map[int]string // offset of a rel32 -> label
}

func newAsm() *asm { return &asm{labels: map[string]int{}, fixups: map[int]string{}} }

func (a *asm) emit(b ...byte) { a.b = append(a.b, b...) }
func (a *asm) imm32(v uint32) { a.b = binary.LittleEndian.AppendUint32(a.b, v) }
func (a *asm) movDX(port uint16) {
	a.emit(0x66, 0xba) // mov dx, imm16
	a.b = binary.LittleEndian.AppendUint16(a.b, port)
}
func (a *asm) movEAX(v uint32) { a.emit(0xb8); a.imm32(v) } // mov eax, imm32
func (a *asm) movAL(v byte)    { a.emit(0xb0, v) }          // mov al, imm8
func (a *asm) outAL()          { a.emit(0xee) }             // out dx, al
func (a *asm) outEAX()         { a.emit(0xef) }             // out dx, eax
func (a *asm) inAL()           { a.emit(0xec) }             // in al, dx
func (a *asm) inEAX()          { a.emit(0xed) }             // in eax, dx
func (a *asm) label(name string) {
	a.labels[name] = len(a.b)
}

// jne jumps to label when the last compare found a difference.
func (a *asm) jne(label string) {
	a.emit(0x0f, 0x85) // jne rel32
	a.fixups[len(a.b)] = label
	a.imm32(0)
}

func (a *asm) jmp(label string) {
	a.emit(0xe9) // jmp rel32
	a.fixups[len(a.b)] = label
	a.imm32(0)
}

// print writes s to COM1's transmit register, one OUT per byte.
func (a *asm) print(s string) {
	a.movDX(0x3f8)
	for i := 0; i < len(s); i++ {
		a.movAL(s[i])
		a.outAL()
	}
}

// poweroff writes SLP_TYP=5|SLP_EN to PM1a_CNT (ACPI 6.5 §4.8.3.2.1) and
// halts, as guest/tiny's loops do.
func (a *asm) poweroff() {
	a.emit(0x66, 0xba, 0x04, 0x06) // mov dx, 0x604
	a.emit(0x66, 0xb8, 0x00, 0x34) // mov ax, SLP_EN | 5<<10
	a.emit(0x66, 0xef)             // out dx, ax
	a.emit(0xf4, 0xeb, 0xfd)       // 1: hlt; jmp 1b
}

func (a *asm) link() []byte {
	for at, name := range a.fixups {
		to, ok := a.labels[name]
		if !ok {
			panic("lab4 guest: no label " + name) // a bug in this file, not input
		}
		binary.LittleEndian.PutUint32(a.b[at:], uint32(int32(to-(at+4))))
	}
	return a.b
}

// lab4GuestCode assembles the guest.
func lab4GuestCode() []byte {
	a := newAsm()
	fail := func(step int) string { return fmt.Sprintf("fail%d", step) }
	// Step 1: the ID byte.
	a.movDX(lab4Port + 4)
	a.inAL()
	a.emit(0x3c, lab4ID) // cmp al, 'K'
	a.jne(fail(1))
	// Step 2: reset, then the accumulator reads 0.
	a.outAL()
	a.movDX(lab4Port)
	a.inEAX()
	a.emit(0x3d) // cmp eax, imm32
	a.imm32(lab4Steps[1].want)
	a.jne(fail(2))
	// Step 3: 5 + 7.
	for _, v := range []uint32{5, 7} {
		a.movEAX(v)
		a.outEAX()
	}
	a.inEAX()
	a.emit(0x3d)
	a.imm32(lab4Steps[2].want)
	a.jne(fail(3))
	// Step 4: + 0xfffffffe wraps to 10.
	a.movEAX(0xfffffffe)
	a.outEAX()
	a.inEAX()
	a.emit(0x3d)
	a.imm32(lab4Steps[3].want)
	a.jne(fail(4))
	// Step 5: reset again.
	a.movDX(lab4Port + 4)
	a.movAL(1)
	a.outAL()
	a.movDX(lab4Port)
	a.inEAX()
	a.emit(0x3d)
	a.imm32(lab4Steps[4].want)
	a.jne(fail(5))
	a.print("lab4: PASS\n")
	a.poweroff()
	for i := range lab4Steps {
		a.label(fail(i + 1))
		a.print(fmt.Sprintf("lab4: FAIL %d\n", i+1))
		a.jmp("off")
	}
	a.label("off")
	a.poweroff()
	return a.link()
}

// lab4GuestELF is the guest as a kernel for `kvmlab run --kernel`.
func lab4GuestELF() []byte { return tiny.ELF(lab4GuestCode()) }
