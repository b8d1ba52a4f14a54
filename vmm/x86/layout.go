package x86

// Fixed guest-physical addresses of the PC platform.
const (
	// IOAPICAddr is the I/O APIC's MMIO page (the 82093AA datasheet's
	// default, which the ACPI MADT announces).
	IOAPICAddr = 0xfec0_0000
	// LAPICAddr is the local APIC's MMIO page (SDM Vol. 3A §10.4.1, the
	// IA32_APIC_BASE reset value).
	LAPICAddr = 0xfee0_0000
	// IdentityMapAddr and TSSAddr: Intel VT-x needs a 3-page TSS and a
	// 1-page identity map somewhere in guest-physical space that is
	// neither RAM nor a device (KVM_SET_TSS_ADDR,
	// KVM_SET_IDENTITY_MAP_ADDR); the top of the MMIO hole, below the
	// BIOS ROM area QEMU uses, is the usual spot. Where they are used and
	// which tests run them: see New in package vmm (machine.go).
	IdentityMapAddr = 0xfeff_c000
	TSSAddr         = 0xfeff_d000
)

// Fixed I/O ports and ISA interrupt lines of the PC platform.
const (
	// COM1Port is the first 16550A UART's 8 ports; COM1IRQ its ISA line.
	COM1Port = 0x3f8
	COM1IRQ  = 4
	// COM2 and COM4 (used by `run --exec` for a command's output) share
	// ISA line 3, as on the PC/AT: Linux's 8250 driver chains the ports
	// of one line (arch/x86/include/asm/serial.h lists the four).
	COM2Port = 0x2f8
	COM2IRQ  = 3
	COM4Port = 0x2e8
	COM4IRQ  = 3
	// SCIIRQ is the ACPI System Control Interrupt's ISA line (the FADT's
	// SCI_INT).
	SCIIRQ = 9
	// I8042DataPort and I8042CommandPort are the keyboard controller's
	// data and command/status ports.
	I8042DataPort    = 0x60
	I8042CommandPort = 0x64
	// ResetPort and ResetValue: writing 0xfe to the i8042 command port
	// pulses the CPU reset line; the FADT's reset register names it.
	ResetPort  = I8042CommandPort
	ResetValue = 0xfe
	// CMOSPort is the RTC/CMOS index port; the data port follows it.
	CMOSPort = 0x70
	// POSTPort is the BIOS power-on self-test code port, which Linux
	// writes as an I/O delay.
	POSTPort = 0x80
)
