# Lab 2: the guest whose exits you predict. Do not change it: the check
# builds its own copy of this file. Read it, and for each instruction
# decide whether it leaves the guest, and if so how, on both layers.

	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds

	mov $0x3f8, %dx			# COM1: transmit holding register
	mov $'Q', %al
	out %al, %dx

	mov $0x3fd, %dx			# COM1: line status register
	in %dx, %al

	cpuid				# which CPU is this?

	lgdt gdtr			# into 32-bit protected mode, no paging
	mov %cr0, %eax
	or $1, %eax			# CR0.PE
	mov %eax, %cr0
	ljmpl $0x08, $prot32

	.code32
prot32:
	mov $0x10, %ax
	mov %ax, %ds
	mov $0xd0000000, %ebx		# 3.25 GiB: in the PCI window, where no RAM is
	mov (%ebx), %eax		# a load from there
	movl $1, (%ebx)			# a store to there

	mov $0x604, %dx			# ACPI PM1a_CNT: power off
	mov $0x3400, %ax
	out %ax, %dx
halt:	hlt
	jmp halt

	.p2align 3
gdt:	.quad 0				# null
	.quad 0x00cf9a000000ffff	# 0x08: flat 4 GiB code, 32-bit
	.quad 0x00cf92000000ffff	# 0x10: flat 4 GiB data
gdt_end:
gdtr:	.word gdt_end - gdt - 1
	.long gdt

	.org 510
	.byte 0x55, 0xaa
