# Lab 3, a reference solution: from real mode into 64-bit long mode.

	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x7c00, %sp

	# The page tables: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000.
	# Zero the three pages, then link them. PD entry 0 maps the first
	# 2 MiB with one large page (PS), identity: virtual = physical, so
	# this code keeps running at the same address when paging comes on.
	mov $0x1000, %di
	xor %ax, %ax
	mov $(3*4096/2), %cx
	cld
	rep stosw
	movl $0x2003, 0x1000		# PML4[0] -> PDPT, present | writable
	movl $0x3003, 0x2000		# PDPT[0] -> PD, present | writable
	movl $0x0083, 0x3000		# PD[0] -> 2 MiB at 0, present | writable | PS

	lgdt gdtr

	mov %cr4, %eax
	or $(1 << 5), %eax		# CR4.PAE: long mode needs PAE-format tables
	mov %eax, %cr4
	mov $0x1000, %eax		# CR3: the PML4
	mov %eax, %cr3
	mov $0xc0000080, %ecx		# IA32_EFER
	rdmsr
	or $(1 << 8), %eax		# EFER.LME
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax		# CR0.PG | CR0.PE: long mode is now active (EFER.LMA)
	mov %eax, %cr0
	ljmpl $0x08, $long64		# load CS from the GDT: a 64-bit code segment

	.code64
long64:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x3f8, %dx			# the marker, from 64-bit code
	mov $'6', %al
	out %al, %dx
	mov $'4', %al
	out %al, %dx
	mov $'\n', %al
	out %al, %dx
	mov $0x604, %dx			# power off
	mov $0x3400, %ax
	out %ax, %dx
halt:	hlt
	jmp halt

	.p2align 3
gdt:	.quad 0				# the null descriptor
	.quad 0x00af9a000000ffff	# 0x08: code: P, DPL 0, S, execute/read, L=1, D=0, G
	.quad 0x00cf92000000ffff	# 0x10: data: P, DPL 0, S, read/write, D=1, G
gdt_end:
gdtr:	.word gdt_end - gdt - 1		# limit: size - 1
	.long gdt			# base

	.org 510
	.byte 0x55, 0xaa
