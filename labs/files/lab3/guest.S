# Lab 3: into long mode. This guest starts in real mode, like lab 1's.
# Take it into 64-bit long mode and print the marker "64" from 64-bit
# code (that part is written for you, at long64). README.md walks through
# what the CPU needs; 'kvmlab lab check 3 .' grades the CPU state at each
# exit the marker makes, read from the vCPU's real registers.
#
# Memory you may use: 0x1000-0x7000 is free RAM (the code sits at 0x7C00).

	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x7c00, %sp

	# TODO 1: page tables. Build a PML4, a PDPT and a page directory
	# that identity-map at least the first 2 MiB (one 2 MiB page is
	# enough). Each entry: the next table's address | present | writable;
	# the last one also has PS (bit 7).

	# TODO 2: load the GDT below with lgdt (and fill in its descriptors).

	# TODO 3: the switch, in the order SDM Vol. 3A §10.8.5 gives:
	# CR4.PAE, CR3 = the PML4, EFER.LME (MSR 0xC0000080, bit 8; rdmsr/
	# wrmsr), then CR0.PG | CR0.PE. Then a far jump to long64 through
	# your 64-bit code selector:
	#	ljmpl $SELECTOR, $long64

	.code64
long64:
	mov $0x10, %ax			# (if your data selector is not 0x10, change it)
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x3f8, %dx			# the marker: "64\n" on COM1
	mov $'6', %al
	out %al, %dx
	mov $'4', %al
	out %al, %dx
	mov $'\n', %al
	out %al, %dx
	mov $0x604, %dx			# power off (lab 1)
	mov $0x3400, %ax
	out %ax, %dx
halt:	hlt
	jmp halt

	.p2align 3
gdt:	.quad 0				# the null descriptor
	.quad 0				# TODO: 0x08: a 64-bit code segment
	.quad 0				# TODO: 0x10: a data segment
gdt_end:
gdtr:	.word gdt_end - gdt - 1		# limit: size - 1
	.long gdt			# base

	.org 510
	.byte 0x55, 0xaa
