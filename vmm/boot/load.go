package boot

import (
	"encoding/binary"
	"fmt"

	"kvmlab/guestmem"
	"kvmlab/vmm/x86"
)

// Fixed guest-physical layout; the package comment draws it as a table.
const (
	GDTAddr        = 0x500   // GDT: null, null, code 0x10, data 0x18
	BootParamsAddr = 0x7000  // struct boot_params, the zero page
	StackTop       = 0x8ff0  // initial RSP; the stack grows down to 0x8000
	PML4Addr       = 0x9000  // CR3
	PDPTAddr       = 0xa000  // page-directory-pointer table
	PDAddr         = 0xb000  // four page directories, 0xb000-0xefff
	CmdlineAddr    = 0x20000 // kernel command line
	ReservedStart  = 0x9fc00 // start of the e820-reserved hole below 1 MiB
	ACPIStart      = 0xe0000 // ACPI tables (written by package acpi)
	KernelAddr     = 0x100000

	// CodeSelector and DataSelector are the protocol's __BOOT_CS and
	// __BOOT_DS (boot.rst, "64-bit Boot Protocol").
	CodeSelector = 0x10
	DataSelector = 0x18

	// CodeDescriptor is a flat 64-bit code segment and DataDescriptor a
	// flat 4 GiB data segment; package x86 explains their bits.
	CodeDescriptor = x86.FlatCode64
	DataDescriptor = x86.FlatData

	gdtEntries = 4
	// GDTLimit is the GDTR limit: size in bytes minus one.
	GDTLimit = gdtEntries*8 - 1

	// HeapEndPtr is what we write to heap_end_ptr: the real-mode setup
	// code (which we do not run) could use its segment up to 0xfe00+0x200.
	// Writing it with CAN_USE_HEAP is still the documented obligation.
	HeapEndPtr = 0xfe00

	// ELFCmdlineSize is the command line limit for a vmlinux, which has no
	// header to say: x86's COMMAND_LINE_SIZE.
	ELFCmdlineSize = 2048
	// ELFInitrdAddrMax is the initrd ceiling for a vmlinux: the value every
	// x86-64 kernel has put in initrd_addr_max since 2.6.
	ELFInitrdAddrMax = 0x7fffffff
	// ELFProtocol is the version the synthetic ELF setup header claims.
	ELFProtocol = 0x020f

	// lowRAMLimit is where RAM stops below 4 GiB (see package guestmem).
	lowRAMLimit = uint64(guestmem.MMIOHoleStart)
	// cmdlineSpace is the room for the command line and its NUL between
	// CmdlineAddr and the reserved hole.
	cmdlineSpace = ReservedStart - CmdlineAddr

	pageSize     = 0x1000
	hugePageSize = 2 << 20
)

// Offsets in struct boot_params outside the setup header
// (Documentation/arch/x86/zero-page.rst).
const (
	bootParamsSize    = 4096
	bpACPIRSDPAddr    = 0x070 // u64
	bpExtRamdiskImage = 0x0c0 // u32: ramdisk_image bits 32-63
	bpExtRamdiskSize  = 0x0c4 // u32: ramdisk_size bits 32-63
	bpExtCmdLinePtr   = 0x0c8 // u32: cmd_line_ptr bits 32-63
	bpE820Entries     = 0x1e8 // u8
	bpSentinel        = 0x1ef // u8: must stay 0, else the kernel wipes fields
	bpE820Table       = 0x2d0 // 128 x struct boot_e820_entry {u64 addr, size; u32 type}
	e820EntrySize     = 20
	// E820MaxZeroPage is how many e820 entries fit in the zero page
	// (E820_MAX_ENTRIES_ZEROPAGE).
	E820MaxZeroPage = 128
)

// Page-table entry bits (Intel SDM vol. 3, 4.5).
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // in a PDE: maps a 2 MiB page
)

// Entry is the CPU state that enters the loaded kernel through the 64-bit
// boot protocol: long mode, paging on with CR3, CS = CodeSelector,
// DS = ES = SS = DataSelector, interrupts off, RSI = boot_params.
type Entry struct {
	RIP, RSP, RSI uint64 // RSI = boot_params address
	CR3           uint64 // PML4
	GDTBase       uint64
	GDTLimit      uint16
	CodeSelector  uint16 // 0x10
	DataSelector  uint16 // 0x18
	// Raw GDT descriptors, so the VMM can fill the hidden parts of the
	// KVM segment registers exactly as a far jump would have.
	CodeDescriptor, DataDescriptor uint64
	// RealMode enters at 0000:RIP in real mode, SP = RSP, instead of
	// long mode (a boot sector: bootsector.go); the fields above it are
	// unused then.
	RealMode bool
	// Where the initrd went (0, 0 without one), for logging.
	InitrdAddr, InitrdSize uint64
}

// Load places img, the command line, the initrd, the zero page with its
// e820 map, the GDT and identity-mapped page tables into guest memory, and
// returns the register state that enters the kernel. rsdp is the ACPI RSDP
// address (0 if none: the kernel then scans 0xe0000-0xfffff for it itself).
// Every write goes through mem, so a layout that does not fit in RAM is an
// error, never a stray write.
func Load(mem *guestmem.Memory, img *Image, initrd []byte, cmdline string, rsdp guestmem.GPA) (*Entry, error) {
	if mem == nil {
		return nil, errorf(ErrLayout, "no guest memory")
	}
	if img != nil && img.Format == FormatBootSector {
		return loadBootSector(mem, img, initrd) // bootsector.go
	}
	if err := checkImage(img); err != nil {
		return nil, err
	}
	lowEnd, err := lowRAMEnd(mem)
	if err != nil {
		return nil, err
	}
	if img.KernelEnd > lowEnd {
		return nil, errorf(ErrTooBig, "kernel needs RAM up to %#x (%d MiB) but the guest has %d MiB below 4 GiB; use a bigger --mem", img.KernelEnd, mib(img.KernelEnd), mib(lowEnd))
	}

	maxCmdline := uint64(ELFCmdlineSize)
	if img.Setup != nil { // a bzImage, or the ELF kernel decompressed from one (decompress.go)
		maxCmdline = uint64(img.Setup.CmdlineSize)
	}
	if err := checkCmdline(cmdline, maxCmdline); err != nil {
		return nil, err
	}

	var initrdAddr uint64
	if len(initrd) > 0 {
		maxByte := uint64(ELFInitrdAddrMax)
		if img.Setup != nil {
			maxByte = uint64(img.Setup.InitrdAddrMax)
		}
		initrdAddr, err = placeInitrd(uint64(len(initrd)), img.KernelEnd, maxByte, lowEnd)
		if err != nil {
			return nil, err
		}
	}

	e820 := E820(mem)
	if len(e820) > E820MaxZeroPage {
		return nil, errorf(ErrTooManyRanges, "guest RAM needs %d e820 entries; the zero page holds %d", len(e820), E820MaxZeroPage)
	}

	// The kernel first: it is the biggest write and the likeliest to fail.
	switch img.Format {
	case FormatBzImage:
		if err := write(mem, "bzImage payload", img.Payload, KernelAddr); err != nil {
			return nil, err
		}
	case FormatELF:
		for _, s := range img.Segments {
			if err := write(mem, "ELF segment", s.Data, s.Paddr); err != nil {
				return nil, err
			}
			// The part of the segment not in the file is .bss: zero it,
			// guest RAM may hold anything.
			if bssLen := s.Memsz - uint64(len(s.Data)); bssLen > 0 {
				bssAddr := s.Paddr + uint64(len(s.Data))
				bss, err := mem.Slice(guestmem.GPA(bssAddr), bssLen)
				if err != nil {
					return nil, wrapWrite("ELF .bss", bssAddr, err)
				}
				clear(bss)
			}
		}
	}
	if len(initrd) > 0 {
		if err := write(mem, "initrd", initrd, initrdAddr); err != nil {
			return nil, err
		}
	}
	cl := make([]byte, len(cmdline)+1) // NUL-terminated
	copy(cl, cmdline)
	if err := write(mem, "command line", cl, CmdlineAddr); err != nil {
		return nil, err
	}
	bp := bootParams(img, initrdAddr, uint64(len(initrd)), e820, uint64(rsdp))
	if err := write(mem, "boot_params", bp, BootParamsAddr); err != nil {
		return nil, err
	}
	if err := write(mem, "GDT", gdt(), GDTAddr); err != nil {
		return nil, err
	}
	if err := write(mem, "page tables", pageTables(), PML4Addr); err != nil {
		return nil, err
	}

	return &Entry{
		RIP:            img.EntryPoint,
		RSP:            StackTop,
		RSI:            BootParamsAddr,
		CR3:            PML4Addr,
		GDTBase:        GDTAddr,
		GDTLimit:       GDTLimit,
		CodeSelector:   CodeSelector,
		DataSelector:   DataSelector,
		CodeDescriptor: CodeDescriptor,
		DataDescriptor: DataDescriptor,
		InitrdAddr:     initrdAddr,
		InitrdSize:     uint64(len(initrd)),
	}, nil
}

// checkImage re-checks what Load relies on, for an Image that did not come
// from Parse (or was changed after).
func checkImage(img *Image) error {
	if img == nil {
		return errorf(ErrInvalidImage, "nil Image")
	}
	if img.KernelStart < KernelAddr || img.KernelEnd < img.KernelStart || img.KernelEnd > lowRAMLimit {
		return errorf(ErrInvalidImage, "kernel range [%#x, %#x) is not inside [1 MiB, 3 GiB)", img.KernelStart, img.KernelEnd)
	}
	inKernel := func(addr, n uint64) bool {
		return addr >= img.KernelStart && addr <= img.KernelEnd && n <= img.KernelEnd-addr
	}
	if img.Setup != nil && len(img.Setup.Raw) > headerMaxEnd-offSetupSects {
		return errorf(ErrInvalidImage, "setup header of %d bytes is larger than its place in boot_params", len(img.Setup.Raw))
	}
	switch img.Format {
	case FormatBzImage:
		if img.Setup == nil || len(img.Payload) == 0 {
			return errorf(ErrInvalidImage, "bzImage without setup header or payload")
		}
		if len(img.Setup.Raw) > headerMaxEnd-offSetupSects {
			return errorf(ErrInvalidImage, "setup header of %d bytes is larger than its place in boot_params", len(img.Setup.Raw))
		}
		if img.KernelStart != KernelAddr || !inKernel(KernelAddr, uint64(len(img.Payload))) {
			return errorf(ErrInvalidImage, "bzImage payload does not fit its kernel range")
		}
	case FormatELF:
		if len(img.Segments) == 0 {
			return errorf(ErrInvalidImage, "ELF image without segments")
		}
		for _, s := range img.Segments {
			if uint64(len(s.Data)) > s.Memsz || !inKernel(s.Paddr, s.Memsz) {
				return errorf(ErrInvalidImage, "ELF segment at %#x+%#x outside the kernel range", s.Paddr, s.Memsz)
			}
		}
	default:
		return errorf(ErrInvalidImage, "unknown image format %d", int(img.Format))
	}
	if !inKernel(img.EntryPoint, 1) {
		return errorf(ErrInvalidImage, "entry point %#x outside the kernel", img.EntryPoint)
	}
	return nil
}

// lowRAMEnd returns the end of the RAM region at address 0, which must
// reach past 1 MiB: the fixed layout lives there.
func lowRAMEnd(mem *guestmem.Memory) (uint64, error) {
	for _, r := range mem.Regions() {
		if r.Base == 0 {
			end := uint64(r.End())
			if end <= KernelAddr {
				return 0, errorf(ErrLayout, "guest has %d KiB of RAM at address 0; the boot layout needs more than 1 MiB", end>>10)
			}
			return min(end, lowRAMLimit), nil
		}
	}
	return 0, errorf(ErrLayout, "guest RAM does not start at address 0, where the boot layout lives")
}

// checkCmdline enforces the kernel's limit (cmdline_size, without the NUL:
// boot.rst "cmdline_size") and the room before the reserved hole.
func checkCmdline(cmdline string, limit uint64) error {
	n := uint64(len(cmdline))
	if n > limit {
		return errorf(ErrCmdline, "kernel command line is %d bytes; this kernel accepts at most %d (cmdline_size)", n, limit)
	}
	if n+1 > cmdlineSpace {
		return errorf(ErrCmdline, "kernel command line is %d bytes; kvmlab has room for %d", n, cmdlineSpace-1)
	}
	for i := 0; i < len(cmdline); i++ {
		if cmdline[i] == 0 {
			return errorf(ErrCmdline, "kernel command line contains a NUL byte at %d; the kernel would ignore the rest", i)
		}
	}
	return nil
}

// placeInitrd puts the initrd page-aligned as high as possible: below
// maxByte+1 (the kernel's initrd_addr_max: boot.rst calls it the highest
// byte the initrd may occupy) and the end of low RAM, above the kernel.
// High placement is what every loader does: it keeps the initrd out of the
// way of the kernel's early allocations, which start low. Kernels with
// XLF_CAN_BE_LOADED_ABOVE_4G would accept it above 4 GiB, but low RAM is
// always identity-mapped by our tables and big enough in practice.
func placeInitrd(size, kernelEnd, maxByte, lowEnd uint64) (uint64, error) {
	ceiling := min(maxByte+1, lowEnd) // maxByte is at most 32 bits: no overflow
	floor := alignUp(kernelEnd, pageSize)
	var free uint64
	if top := alignDown(ceiling, pageSize); top > floor {
		free = top - floor
	}
	if size > free {
		limit, advice := fmt.Sprintf("the end of low RAM %#x", ceiling), "use a bigger --mem"
		if maxByte+1 < lowEnd {
			limit, advice = fmt.Sprintf("the kernel's initrd_addr_max %#x", maxByte), "use a smaller initrd"
		}
		return 0, errorf(ErrInitrdTooBig, "initrd is %d bytes (%s) but only %d bytes (%s) are free between the kernel's end %#x and %s; %s", size, human(size), free, human(free), floor, limit, advice)
	}
	return alignDown(ceiling-size, pageSize), nil
}

// human formats a byte count for error messages.
func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
}

// bootParams builds the zero page.
func bootParams(img *Image, initrdAddr, initrdSize uint64, e820 []E820Entry, rsdp uint64) []byte {
	bp := make([]byte, bootParamsSize)
	le := binary.LittleEndian
	var version uint16
	if img.Setup != nil { // also an ELF kernel decompressed from a bzImage
		// boot.rst, "64-bit Boot Protocol": copy the kernel's setup
		// header, 0x1f1 to 0x202 + the jump offset, into the zero page,
		// then fill in the loader's fields.
		copy(bp[offSetupSects:], img.Setup.Raw)
		version = img.Setup.Version
	} else {
		// A vmlinux has no header, so write the fields the kernel's
		// startup code looks at; everything else stays zero.
		version = ELFProtocol
		le.PutUint16(bp[offBootFlag:], bootFlagMagic)
		bp[offJump], bp[offJump+1] = jumpOpcode, offKernelInfo+4-offHeaderMagic
		le.PutUint32(bp[offHeaderMagic:], hdrSMagic)
		le.PutUint16(bp[offVersion:], version)
		bp[offLoadFlags] = LoadFlagLoadedHigh
		le.PutUint16(bp[offXLoadFlags:], XLFKernel64)
		le.PutUint32(bp[offInitrdAddrMax:], ELFInitrdAddrMax)
		le.PutUint32(bp[offKernelAlignment:], hugePageSize)
		le.PutUint32(bp[offCmdlineSize:], ELFCmdlineSize)
		le.PutUint64(bp[offPrefAddress:], img.KernelStart)
		le.PutUint32(bp[offInitSize:], uint32(img.KernelEnd-img.KernelStart)) // < 3 GiB
	}
	// bp[bpSentinel] stays 0: a nonzero sentinel tells the kernel the
	// loader copied stale bytes and makes it wipe fields (sanitize_boot_params).

	// Loader fields ("Details of Header Fields", "write (obligatory)").
	le.PutUint16(bp[offVidMode:], 0xffff) // "normal": no mode switch
	bp[offTypeOfLoader] = 0xff            // no assigned loader id
	bp[offLoadFlags] |= LoadFlagCanUseHeap
	le.PutUint16(bp[offHeapEndPtr:], HeapEndPtr)
	le.PutUint32(bp[offCmdLinePtr:], CmdlineAddr)
	le.PutUint32(bp[bpExtCmdLinePtr:], 0)
	le.PutUint32(bp[offRamdiskImage:], uint32(initrdAddr))
	le.PutUint32(bp[offRamdiskSize:], uint32(initrdSize))
	le.PutUint32(bp[bpExtRamdiskImage:], uint32(initrdAddr>>32))
	le.PutUint32(bp[bpExtRamdiskSize:], uint32(initrdSize>>32))

	// The memory map the BIOS would have given the real-mode setup code.
	bp[bpE820Entries] = byte(len(e820)) // Load checked len <= 128
	for i, e := range e820 {
		b := bp[bpE820Table+i*e820EntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], e.Type)
	}

	// acpi_rsdp_addr was added in Linux 5.0, the protocol 2.14 era; older
	// kernels find the RSDP by scanning 0xe0000-0xfffff, which works too.
	if rsdp != 0 && version >= 0x020e {
		le.PutUint64(bp[bpACPIRSDPAddr:], rsdp)
	}
	return bp
}

// gdt returns the boot GDT: two null entries (the protocol fixes the
// selectors at 0x10 and 0x18, so slot 1 is unused), code and data.
func gdt() []byte {
	b := make([]byte, gdtEntries*8)
	binary.LittleEndian.PutUint64(b[CodeSelector:], CodeDescriptor)
	binary.LittleEndian.PutUint64(b[DataSelector:], DataDescriptor)
	return b
}

// pageTables returns the six pages from PML4Addr to PDAddr+0x3fff: a PML4
// whose entry 0 covers the low 512 GiB, a PDPT whose entries 0-3 cover
// 0-4 GiB, and four page directories of 2 MiB pages, each mapping virtual
// address X to physical X. Long mode cannot be entered without paging, and
// the 64-bit protocol asks for the identity mapping.
func pageTables() []byte {
	const pages = PDAddr + 4*pageSize - PML4Addr
	b := make([]byte, pages)
	le := binary.LittleEndian
	pml4 := b[0:pageSize]
	pdpt := b[PDPTAddr-PML4Addr:][:pageSize]
	pds := b[PDAddr-PML4Addr:][:4*pageSize]
	le.PutUint64(pml4, PDPTAddr|ptePresent|pteWritable)
	for i := uint64(0); i < 4; i++ {
		le.PutUint64(pdpt[i*8:], (PDAddr+i*pageSize)|ptePresent|pteWritable)
	}
	for i := uint64(0); i < 4*512; i++ {
		le.PutUint64(pds[i*8:], i*hugePageSize|ptePresent|pteWritable|ptePageSize)
	}
	return b
}

func write(mem *guestmem.Memory, what string, p []byte, addr uint64) error {
	if err := mem.WriteAt(p, guestmem.GPA(addr)); err != nil {
		return wrapWrite(what, addr, err)
	}
	return nil
}

// wrapWrite keeps the *guestmem.AccessError reachable for errors.Is/As.
func wrapWrite(what string, addr uint64, err error) error {
	return fmt.Errorf("boot: placing %s at %#x: %w", what, addr, err)
}

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }
func mib(v uint64) uint64          { return v >> 20 }
