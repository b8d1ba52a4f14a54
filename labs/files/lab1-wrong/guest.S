# Lab 1, a wrong answer that looks right: it writes "hello\n" and powers
# off, but to port 0x2f8, which is COM2's base, not COM1's. Nothing
# listens there in kvmlab, so the word goes nowhere.

	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	mov $msg, %si
	mov $0x2f8, %dx
next:	lodsb
	test %al, %al
	jz done
	out %al, %dx
	jmp next
done:	mov $0x604, %dx
	mov $0x3400, %ax
	out %ax, %dx
halt:	hlt
	jmp halt

msg:	.asciz "hello\n"

	.org 510
	.byte 0x55, 0xaa
