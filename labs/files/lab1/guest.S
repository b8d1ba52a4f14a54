# Lab 1: the first exit. Make this guest write the word
#
#     hello
#
# followed by a newline, through the serial port COM1, and then power the
# machine off. README.md explains the hardware; 'kvmlab lab check 1 .'
# builds this file and grades it from the exits it really makes.
#
# The CPU starts here in real mode (16-bit code, CS:IP = 0000:7C00), as a
# PC's BIOS starts a boot sector. There is no BIOS: nothing has been set
# up for you, and nothing but you will ever talk to the hardware.

	.code16
	.globl _start
_start:
	cli				# no interrupts: there is no handler for them

	# TODO: write 'h', 'e', 'l', 'l', 'o', '\n' to COM1's transmit
	# holding register, one byte at a time (the OUT instruction).

	# TODO: power off: write SLP_EN | SLP_TYP=5 to the ACPI PM1a
	# control register (a 16-bit OUT).

halt:	hlt				# (a HLT alone does not end the VM: README.md says why)
	jmp halt

	# A boot sector ends with the signature 0x55 0xAA at offset 510.
	.org 510
	.byte 0x55, 0xaa
