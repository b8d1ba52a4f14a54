// Package acpi builds the ACPI tables that kvmlab hands to its x86-64 Linux
// guests.
//
// # What ACPI tables are
//
// A PC has hardware the operating system cannot discover by probing: how many
// CPUs there are and what their local APIC IDs are, where the I/O APIC lives,
// which I/O ports turn the machine off. Firmware describes that hardware in
// memory, in a tree of tables defined by the ACPI specification (we follow
// version 6.4). Every table except the RSDP and the FACS starts with the same
// 36-byte header: a four-character signature ("FACP", "APIC", "DSDT", ...),
// the table length, a revision, a checksum byte chosen so that all bytes of
// the table add up to zero (mod 256), and some OEM identification.
//
// The tree kvmlab builds is
//
//	RSDP ("RSD PTR ", at Base)
//	 ├─ XSDT: 64-bit pointers to ─┬─ FADT ("FACP") ─┬─ DSDT (AML byte code)
//	 │                            │                 └─ FACS
//	 └─ RSDT: 32-bit pointers to ─┴─ MADT ("APIC")
//
// In turn:
//
//   - The RSDP (Root System Description Pointer) is the entry point. It is
//     not a normal table: it has its own 36-byte layout with two checksums
//     (one over the first 20 bytes for ACPI 1.0 readers, one over all of
//     it) and points to the XSDT (and, for old readers, the RSDT).
//   - The XSDT (eXtended System Description Table) is just a header followed
//     by 64-bit addresses of the other tables; the RSDT is the same with
//     32-bit addresses. An ACPI 2.0+ OS uses the XSDT; Linux falls back to
//     the RSDT only with acpi=rsdt. All our tables live below 1 MiB, so the
//     two lists are identical.
//   - The FADT (Fixed ACPI Description Table, signature "FACP") describes
//     the "fixed hardware": the SCI interrupt, the PM1 event and control
//     register blocks, the reset register, boot architecture flags, and
//     points to the DSDT and FACS.
//   - The FACS (Firmware ACPI Control Structure) is a 64-byte, 64-byte
//     aligned scratch area shared by OS and firmware (waking vector, global
//     lock). It has no checksum. We never sleep or share a lock, but a
//     non-"hardware-reduced" platform must provide one and ACPICA (the ACPI
//     interpreter inside Linux) complains without it.
//   - The DSDT (Differentiated System Description Table) holds AML, a byte
//     code that the OS's interpreter loads into a namespace of named
//     objects. Ours defines \_S5_ (see below) and \_SB.PCI0, the PCI root
//     bridge (bus 0, reached through configuration mechanism #1 at ports
//     0xCF8/0xCFC): with ACPI enabled, Linux enumerates PCI only below
//     root bridges the DSDT describes.
//   - The MADT (Multiple APIC Description Table, signature "APIC") lists the
//     interrupt controllers: one Processor Local APIC entry per vCPU, the I/O
//     APIC, and an Interrupt Source Override for the SCI.
//
// # How the guest finds the RSDP
//
// The Linux boot protocol (2.14+, kernels since 5.0) has a field
// boot_params.acpi_rsdp_addr (offset 0x070 of the zero page); when the VMM
// fills it in with the address Build returns, the kernel uses it directly.
// Without it (an older kernel, or a VMM that leaves it zero) the kernel
// does what it would on a BIOS PC: it scans the first KiB of the Extended
// BIOS Data Area and then the BIOS ROM area 0xE0000-0xFFFFF, on 16-byte
// boundaries, for the 8 bytes "RSD PTR " followed by a valid checksum. That
// is why Base is 0xE0000 and the RSDP sits at its start: both methods find
// it. The whole window [Base, Base+MaxSize) must be reported as reserved in
// the e820 map so that the guest never treats the tables as free RAM (the
// FACS in particular must not be AddressRangeMemory, says the spec).
//
// # Why poweroff and reboot work through these tables
//
// With KVM's in-kernel irqchip, a HLT instruction is handled inside the
// kernel (the vCPU simply sleeps until an interrupt) and never exits to
// user space, so the VMM cannot notice a guest that has "halted" after
// shutting down. The guest must instead touch an I/O port, which does exit
// (KVM_EXIT_IO). ACPI names those ports:
//
//   - Poweroff (S5, "soft off"): the OS evaluates the DSDT object \_S5_, a
//     package whose first two elements are the SLP_TYP values for the PM1a
//     and PM1b control registers. It then writes SLP_TYP into bits 10-12 of
//     the 16-bit PM1a control register (FADT PM1a_CNT_BLK) and, in a second
//     write, sets SLP_EN (bit 13). On real hardware the chipset cuts power;
//     the VMM sees an OUT to PM1aCntBlk with SLP_EN set and
//     SLP_TYP == SlpTypS5, and stops the VM. (The first write, without
//     SLP_EN, must be ignored.)
//   - Reboot: the FADT RESET_REG names an 8-bit I/O port and RESET_VALUE the
//     byte to write there. We use the i8042 keyboard controller's "pulse
//     reset line" command, 0xFE written to port 0x64, which the VMM already
//     has to understand because it is also Linux's fallback reboot method.
//
// The rest of the PM1 hardware the VMM must emulate, minimally, so that
// ACPICA initialises: the PM1a event block is two 16-bit registers,
// PM1_STS at PM1aEvtBlk+0 (write 1 to clear) and PM1_EN at PM1aEvtBlk+2;
// reads of PM1_CNT should report SCI_EN (bit 0) set, since SMI_CMD is zero
// and the platform therefore claims to be in ACPI mode from power-on. The SCI
// is an active-high, level-triggered line on SCIIRQ: the VMM asserts it
// while (PM1_STS & PM1_EN) != 0 and never otherwise; with no fixed-feature
// buttons and no GPE blocks that is never, in practice.
//
// # Choices worth knowing
//
// IAPC_BOOT_ARCH sets LEGACY_DEVICES (COM1, the RTC and the PIT exist
// without being described in the DSDT) and VGA_NOT_PRESENT, and leaves the
// 8042 flag clear. With the flag clear Linux marks the i8042 as "firmware
// absent" and its i8042 driver does not probe ports 0x60/0x64 (there is no
// keyboard or mouse to find, and probing a half-emulated controller only
// costs boot time). The controller still exists as far as the reset line is
// concerned; RESET_REG names it explicitly.
//
// The MADT has an Interrupt Source Override for the SCI only, to make its
// GSI level-triggered and active-high (ISA IRQs default to edge). Real PCs
// and QEMU also override IRQ0 to GSI 2, because there the PIT is wired to
// I/O APIC pin 2. KVM's default GSI routing (used unless the VMM installs
// its own with KVM_SET_GSI_ROUTING) maps GSI n to I/O APIC pin n, and the
// in-kernel PIT raises GSI 0, so the timer arrives on pin 0: the identity
// mapping Linux assumes when there is no override. An IRQ0->2 override
// would point Linux at a pin that never fires, leaving it to its "8254 timer
// not connected to IO-APIC" fallbacks.
package acpi
