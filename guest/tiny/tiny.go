// Package tiny holds guests small enough to write by hand: a few x86-64
// instructions, assembled into bytes here, wrapped in the smallest ELF64
// executable that kvmlab's loader (vmm/boot, which follows the ELF-64
// Object File Format and enters a 64-bit kernel in long mode with the low
// 4 GiB identity-mapped) accepts as a kernel.
//
// A guest of a dozen instructions makes one kind of VM exit over and over,
// and nothing else: the exit-cost loop of kvmlab bench (PortLoopCode, run
// by kvmlab, a C floor and a Go floor), the tests that flood the VMM with
// unclaimed MMIO (MMIOLoadLoopCode), and the tests of the debugger, the
// snapshot and bad input, which need a guest that boots in microseconds
// and does exactly what the test says. Each loop ends by writing the ACPI
// PM1a control register kvmlab's devices/acpipm puts at port 0x604 with
// SLP_TYP=5 and SLP_EN (ACPI 6.5, 4.8.3.2.1 "PM1 Control Registers"): a
// poweroff, so that the VMM exits with status 0.
package tiny

import "encoding/binary"

// Base is where ELF loads its code and enters it: 1 MiB, the
// usual load address of a kernel.
const Base = 0x100000

// ELF wraps raw x86-64 code in the smallest ELF64 executable kvmlab's
// loader (vmm/boot) accepts: the 64-byte file header, one PT_LOAD program
// header, and the code at file offset 0x1000, loaded at Base and
// entered there in 64-bit mode (see vmm/boot/elf.go). Tests and benchmarks use it to
// run a few hand-assembled instructions as a guest.
func ELF(code []byte) []byte {
	const off = 0x1000
	b := make([]byte, off+len(code))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)    // EV_CURRENT
	le.PutUint64(b[24:], Base) // e_entry
	le.PutUint64(b[32:], 64)   // e_phoff: right after this header
	le.PutUint16(b[52:], 64)   // e_ehsize
	le.PutUint16(b[54:], 56)   // e_phentsize
	le.PutUint16(b[56:], 1)    // e_phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[8:], off)
	le.PutUint64(ph[16:], Base) // p_vaddr
	le.PutUint64(ph[24:], Base) // p_paddr
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	le.PutUint64(ph[48:], 0x1000) // p_align
	copy(b[off:], code)
	return b
}

// PortLoopCode is 64-bit code that writes port 0x80 (the POST-code port)
// n times, each write one KVM_EXIT_IO to user space, then writes SLP_EN
// with SLP_TYP=5 to port 0x604 (kvmlab's ACPI PM1a control register: a
// poweroff) and halts. It only jumps relative to itself, so it runs
// wherever it is loaded. It is the guest of kvmlab bench's exit-cost loop,
// under kvmlab (PortLoopELF) and under the C and Go floors, which load
// the same bytes themselves.
func PortLoopCode(n uint32) []byte {
	code := []byte{0xb9, 0, 0, 0, 0, // mov ecx, n
		0xe6, 0x80, // 1: out 0x80, al
		0xff, 0xc9, // dec ecx
		0x75, 0xfa, // jnz 1b
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xb8, 0x00, 0x34, // mov ax, SLP_EN | 5<<10
		0x66, 0xef, // out dx, ax
		0xf4, 0xeb, 0xfd} // 2: hlt; jmp 2b
	binary.LittleEndian.PutUint32(code[1:], n)
	return code
}

// PortLoopELF is PortLoopCode as an ELF kernel for kvmlab run.
func PortLoopELF(n uint32) []byte { return ELF(PortLoopCode(n)) }

// MMIOLoadLoopCode is 64-bit code that makes n 32-bit loads, the first at
// addr and each next one stride bytes further, then writes "ok\n" to COM1
// and powers off like PortLoopCode. Aimed at guest-physical addresses no
// memory slot covers (ELF's page tables identity-map the low 4 GiB),
// every load is a KVM_EXIT_MMIO read: with stride 0 one address over and
// over (a flood of one unclaimed access), with a stride a scan of
// addresses. addr must be below 4 GiB (it is loaded zero-extended).
func MMIOLoadLoopCode(addr uint32, stride int32, n uint32) []byte {
	code := []byte{
		0xb8, 0, 0, 0, 0, // mov eax, addr (zero-extends into rax)
		0xb9, 0, 0, 0, 0, // mov ecx, n
		0x8b, 0x10, // 1: mov edx, [rax]
		0x48, 0x05, 0, 0, 0, 0, // add rax, stride
		0xff, 0xc9, // dec ecx
		0x75, 0xf4, // jnz 1b
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8 (COM1)
		0xb0, 'o', 0xee, // mov al, 'o'; out dx, al
		0xb0, 'k', 0xee, // mov al, 'k'; out dx, al
		0xb0, '\n', 0xee, // mov al, '\n'; out dx, al
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xb8, 0x00, 0x34, // mov ax, SLP_EN | 5<<10
		0x66, 0xef, // out dx, ax
		0xf4, 0xeb, 0xfd} // 2: hlt; jmp 2b
	binary.LittleEndian.PutUint32(code[1:], addr)
	binary.LittleEndian.PutUint32(code[6:], n)
	binary.LittleEndian.PutUint32(code[14:], uint32(stride))
	return code
}
