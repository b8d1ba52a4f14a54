// Package boot loads a Linux x86-64 kernel into guest memory the way a boot
// loader would, and says how to enter it.
//
// # What a Linux x86 kernel file is
//
// The Linux/x86 boot protocol (Documentation/arch/x86/boot.rst; in older
// trees Documentation/x86/boot.rst) grew out of the PC BIOS boot sequence,
// and a bzImage still carries the marks of it. The file has two parts:
//
//   - The real-mode setup: a legacy 512-byte boot sector followed by
//     setup_sects more 512-byte sectors of 16-bit code. On a BIOS machine a
//     boot loader copies it below 1 MiB and jumps into it in real mode; it
//     asks the BIOS for the memory map (int 0x15, e820) and the video mode,
//     switches the CPU to protected mode and jumps to the kernel proper.
//     Inside the boot sector, at offset 0x1f1, lies the setup header: the
//     table through which the kernel tells the loader what it needs and the
//     loader tells the kernel what it did ("The Real-Mode Kernel Header",
//     "Details of Header Fields").
//   - The protected-mode kernel: everything after the setup sectors, loaded
//     at 1 MiB ("Loading The Rest of The Kernel"). For a bzImage this is a
//     small decompressor plus the compressed kernel; the decompressor moves
//     itself out of the way, unpacks vmlinux and jumps into it.
//
// The loader and the kernel talk through struct boot_params, the "zero page"
// (Documentation/arch/x86/zero-page.rst): one 4 KiB page holding a copy of
// the setup header at 0x1f1, plus fields the real-mode setup code would
// otherwise have filled from the BIOS, most importantly the e820 memory map
// at 0x2d0.
//
// # Why kvmlab skips the real-mode part
//
// kvmlab has no BIOS, so the real-mode setup code would have nobody to ask.
// The protocol allows for that: the "32-bit Boot Protocol" and
// "64-bit Boot Protocol" sections describe loaders (EFI, kexec, hypervisors)
// that build the zero page themselves and enter the protected-mode kernel
// directly. The 64-bit variant, used here, requires (boot.rst,
// "64-bit Boot Protocol"):
//
//   - the CPU in 64-bit long mode with paging on;
//   - the kernel, its init_size working area, the zero page and the command
//     line identity-mapped (virtual address == physical address);
//   - a GDT with flat 4 GiB segments at selectors 0x10 (__BOOT_CS,
//     execute/read) and 0x18 (__BOOT_DS, read/write), CS = 0x10 and
//     DS = ES = SS = 0x18;
//   - interrupts disabled and RSI holding the zero page's address;
//   - the entry point at the load address plus 0x200 (startup_64 sits 512
//     bytes after startup_32 in the decompressor). A kernel advertises this
//     entry with xloadflags bit XLF_KERNEL_64, which exists from protocol
//     2.12 (Linux 3.8), so that is the oldest protocol kvmlab accepts.
//
// Long mode needs page tables, so Load writes a small set: one PML4 entry,
// four PDPT entries and four page directories of 2 MiB pages that
// identity-map the first 4 GiB. That covers every byte the protocol asks to
// be mapped (all of it is placed in low RAM, below 3 GiB) and the local APIC
// and I/O APIC pages below 4 GiB. The kernel replaces these tables with its
// own almost at once. The VMM then only has to load the registers in Entry
// (CR0.PE|PG, CR4.PAE, EFER.LME|LMA, CR3, the segment registers from the
// raw descriptors) and run.
//
// An uncompressed ELF vmlinux (what the kernel build leaves at the top of the
// tree) can be booted the same way: its program headers say where each
// segment goes physically and e_entry is startup_64's physical address.
// With no setup header in the file, Load writes a synthetic one that carries
// what startup_64 reads: the magic numbers, the protocol version, the
// command line pointer, the initrd and the e820 map.
//
// # Guest-physical layout
//
// Everything is placed at fixed addresses, all in the first megabyte except
// the kernel and the initrd. Every write goes through package guestmem, which
// checks it against the RAM regions.
//
//	address range          contents
//	---------------------  ----------------------------------------------------
//	0x00000 - 0x004ff      unused (real-mode IVT and BIOS data area on a PC)
//	0x00500 - 0x0051f      GDT: null, null, 64-bit code (0x10), data (0x18)
//	0x07000 - 0x07fff      struct boot_params, the zero page (RSI)
//	0x08000 - 0x08fef      boot stack, growing down from RSP = 0x8ff0
//	0x09000 - 0x09fff      PML4 (CR3)
//	0x0a000 - 0x0afff      PDPT: entries 0-3 point at the page directories
//	0x0b000 - 0x0efff      4 page directories, 2 MiB pages, identity 0-4 GiB
//	0x20000 - ...          kernel command line, NUL-terminated
//	0x9fc00 - 0xfffff      reserved in e820 (EBDA, VGA hole, BIOS area); ACPI
//	                       tables live at 0xe0000-0xfffff (package acpi)
//	0x100000 -             bzImage: protected-mode payload, entry at +0x200;
//	                       ELF vmlinux: PT_LOAD segments at p_paddr, e_entry
//	top of low RAM, down   initrd, page-aligned, as high as allowed
//
// The e820 map handed to the guest is E820(mem): [0, 0x9fc00) RAM,
// [0x9fc00, 0x100000) reserved, [0x100000, end of low RAM) RAM, and the RAM
// above 4 GiB if any (see package guestmem for the MMIO hole).
//
// # Trust
//
// The kernel file is input, not code we trust: every number taken from it
// (setup header fields, ELF offsets and sizes) is bounds- and
// overflow-checked before use, and Parse is a pure function over bytes that
// never panics; FuzzParse checks that.
package boot
