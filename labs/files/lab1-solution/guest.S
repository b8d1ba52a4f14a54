# Lab 1, a reference solution: "hello\n" through COM1, then a poweroff.

	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds			# msg is addressed through DS: base 0
	mov $msg, %si
	mov $0x3f8, %dx			# COM1 base: THR (write) / RBR (read)
next:	lodsb				# AL = [DS:SI++]
	test %al, %al
	jz done
	out %al, %dx			# one byte to the transmit holding register: one exit
	jmp next
done:	mov $0x604, %dx			# kvmlab's ACPI PM1a_CNT
	mov $0x3400, %ax		# SLP_EN (bit 13) | SLP_TYP=5 (bits 10-12): S5, soft-off
	out %ax, %dx
halt:	hlt
	jmp halt

msg:	.asciz "hello\n"

	.org 510
	.byte 0x55, 0xaa
