// Package x86 sets up an x86-64 CPU the way firmware and a boot loader would
// leave it for a Linux kernel, and names the fixed addresses of the PC
// platform: everything kvmlab does to a vCPU before its first KVM_RUN.
//
// A CPU comes out of reset in real mode (Intel SDM Vol. 3A §9.1.1, Table 9-1:
// CR0 = 0x60000010, CS.base = 0xffff0000, RIP = 0xfff0), and on a PC the
// firmware then walks it through protected mode into long mode (§9.8,
// "Software Initialization for Protected-Mode Operation", and §9.8.5,
// "Initializing IA-32e Mode"). kvmlab has no firmware, so it does that walk
// itself, at once, by loading the end state with KVM_SET_SREGS and
// KVM_SET_REGS. That end state is the one the Linux x86 boot protocol asks
// for at the 64-bit entry point (Documentation/arch/x86/boot.rst, "64-bit
// Boot Protocol"): long mode with paging on and an identity map, a GDT with
// flat __BOOT_CS (0x10) and __BOOT_DS (0x18) segments, interrupts off and
// RSI pointing at boot_params. Package boot writes the tables into guest
// RAM and says where they are; this package turns that into registers.
//
// # The pieces, and where the SDM explains them
//
//   - Segmentation and the GDT (SDM Vol. 3A ch. 3; §3.4.5 "Segment
//     Descriptors", Figure 3-8): a segment register has a visible selector
//     and a hidden descriptor cache that the CPU fills from the GDT when the
//     selector is loaded. KVM_SET_SREGS writes both halves directly, so the
//     VMM must unpack each GDT descriptor into the hidden part itself
//     (SegmentFromDescriptor). In 64-bit mode base and limit are ignored
//     for CS, DS, ES and SS, but L=1 in CS is what makes the code 64-bit
//     (§3.4.5.1, §5.2.1). gdt.go.
//   - Control registers and EFER (SDM Vol. 3A §2.5 "Control Registers",
//     §2.2.1 "Extended Feature Enable Register"): CR0.PE turns on protected
//     mode, CR0.PG paging; CR4.PAE selects the 64-bit page-table format and
//     EFER.LME asks for long mode, which becomes active (EFER.LMA) once
//     paging is on (§9.8.5). CR3 holds the PML4's physical address (ch. 4
//     "Paging", §4.5 "4-Level Paging"); package boot builds the identity
//     map of 2 MiB pages it points at. regs.go.
//   - Model-specific registers (SDM Vol. 4, "Model-Specific Registers";
//     AMD APM Vol. 2 Appendix A): the SYSCALL/SYSENTER MSRs start at zero,
//     fast strings are on and the MTRRs make RAM write-back, as firmware
//     would leave them (SDM Vol. 3A §11.11 "Memory Type Range Registers").
//     msr.go.
//   - CPUID (SDM Vol. 2A, CPUID; AMD APM Vol. 3 Appendix E): KVM's
//     supported list, trimmed of what kvmlab does not emulate and given
//     each vCPU's APIC ID. cpuid.go.
//   - The PC platform's fixed guest-physical addresses and I/O ports (the
//     local and I/O APICs, the VT-x TSS and identity-map pages, COM1, the
//     i8042, the CMOS RTC, the POST port). layout.go.
//
// Only the boot CPU is set up this way; application processors stay in
// KVM's wait-for-SIPI state until the boot CPU starts them through its local
// APIC (SDM Vol. 3A §9.4 "Multiple-Processor (MP) Initialization").
//
// This is the shape of Firecracker's arch/x86_64 (regs, gdt, msr, layout):
// the machine (package vmm) calls it and holds no CPU details of its own.
package x86
