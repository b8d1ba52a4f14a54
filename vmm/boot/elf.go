package boot

import (
	"fmt"
	"sort"
)

// ELF64 constants (System V gABI; include/uapi/linux/elf.h). The parser is
// hand-written over encoding/binary rather than debug/elf because it reads
// only the few fields a loader needs and must check every one of them
// against the file; debug/elf does far more and is not meant for hostile
// input.
const (
	elfMagic      = "\x7fELF"
	elfHeaderSize = 64
	elfPhdrSize   = 56

	elfClass32 = 1
	elfClass64 = 2
	elfDataLSB = 1

	etRel  = 1
	etExec = 2
	etDyn  = 3
	etCore = 4

	emX86_64 = 62

	ptLoad = 1

	// pnXNum in e_phnum means the real count is elsewhere; no kernel
	// has that many program headers.
	pnXNum = 0xffff

	// x86-64 kernels link at virtual addresses from __START_KERNEL_map
	// (arch/x86/include/asm/page_64_types.h); an entry at or above it is
	// virtual and must be translated through its segment.
	startKernelMap = 0xffffffff80000000
)

var elfMachines = map[uint16]string{
	2:   "SPARC",
	3:   "i386 (32-bit x86)",
	8:   "MIPS",
	18:  "SPARC32+",
	20:  "PowerPC",
	21:  "PowerPC64",
	22:  "s390",
	40:  "ARM (32-bit)",
	43:  "SPARC64",
	50:  "IA-64",
	62:  "x86-64",
	183: "arm64 (AArch64)",
	243: "RISC-V",
	258: "LoongArch",
}

func machineName(m uint16) string {
	if n, ok := elfMachines[m]; ok {
		return n
	}
	return fmt.Sprintf("machine %d", m)
}

// parseELF validates an ELF64 x86-64 executable and collects its PT_LOAD
// segments. A vmlinux is linked with physical load addresses in p_paddr and
// e_entry = phys_startup_64 (arch/x86/kernel/vmlinux.lds.S), which is what
// the 64-bit boot protocol enters.
func parseELF(k []byte) (*Image, error) {
	if len(k) < 20 {
		return nil, errorf(ErrBadELF, "ELF file truncated: %d bytes, shorter than an ELF header", len(k))
	}
	class, data := k[4], k[5]
	machine := le16(k, 18) // e_machine sits at 18 in both ELF32 and ELF64
	if data != elfDataLSB {
		return nil, errorf(ErrWrongArch, "big-endian ELF for %s; kvmlab boots x86-64 kernels", machineName(machine))
	}
	if class == elfClass32 {
		return nil, errorf(ErrWrongArch, "32-bit ELF for %s; kvmlab boots 64-bit x86-64 kernels (vmlinux or bzImage)", machineName(machine))
	}
	if class != elfClass64 {
		return nil, errorf(ErrBadELF, "ELF file with unknown class %d", class)
	}
	if machine != emX86_64 {
		return nil, errorf(ErrWrongArch, "ELF for %s; kvmlab boots x86-64 kernels", machineName(machine))
	}
	if len(k) < elfHeaderSize {
		return nil, errorf(ErrBadELF, "ELF file truncated: %d bytes, shorter than the 64-byte ELF64 header", len(k))
	}
	switch typ := le16(k, 16); typ {
	case etExec:
	case etRel:
		return nil, errorf(ErrBadELF, "ELF relocatable object (a .o or .ko?), not a linked kernel; pass vmlinux or bzImage")
	case etDyn:
		return nil, errorf(ErrBadELF, "ELF shared object or PIE, not a kernel; pass vmlinux or bzImage")
	case etCore:
		return nil, errorf(ErrBadELF, "ELF core dump, not a kernel")
	default:
		return nil, errorf(ErrBadELF, "ELF file of type %d, not an executable kernel", typ)
	}

	entry := le64(k, 24)
	phoff := le64(k, 32)
	phentsize := uint64(le16(k, 54))
	phnum := uint64(le16(k, 56))
	if phnum == 0 || phnum == pnXNum {
		return nil, errorf(ErrBadELF, "ELF kernel has no usable program headers (e_phnum %d)", phnum)
	}
	if phentsize < elfPhdrSize {
		return nil, errorf(ErrBadELF, "ELF program header entry size %d, want at least %d", phentsize, elfPhdrSize)
	}
	size := uint64(len(k))
	// phnum and phentsize are 16-bit, so the product cannot overflow.
	if phoff > size || phnum*phentsize > size-phoff {
		return nil, errorf(ErrBadELF, "ELF program headers (%d x %d bytes at %#x) run past the end of the %d-byte file", phnum, phentsize, phoff, size)
	}

	img := &Image{Format: FormatELF}
	for i := uint64(0); i < phnum; i++ {
		ph := k[phoff+i*phentsize:][:elfPhdrSize]
		if le32(ph, 0) != ptLoad {
			continue
		}
		off, vaddr, paddr := le64(ph, 8), le64(ph, 16), le64(ph, 24)
		filesz, memsz := le64(ph, 32), le64(ph, 40)
		if memsz == 0 {
			continue
		}
		if filesz > memsz {
			return nil, errorf(ErrBadELF, "ELF segment %d: p_filesz %#x larger than p_memsz %#x", i, filesz, memsz)
		}
		if off > size || filesz > size-off {
			return nil, errorf(ErrBadELF, "ELF segment %d: %#x bytes at file offset %#x run past the end of the %d-byte file", i, filesz, off, size)
		}
		if vaddr+memsz < vaddr {
			return nil, errorf(ErrBadELF, "ELF segment %d: virtual range %#x+%#x wraps around", i, vaddr, memsz)
		}
		if paddr < KernelAddr {
			return nil, errorf(ErrBadELF, "ELF segment %d loads at physical %#x, below 1 MiB where kvmlab keeps the zero page and page tables", i, paddr)
		}
		if paddr > lowRAMLimit || memsz > lowRAMLimit-paddr {
			return nil, errorf(ErrTooBig, "ELF segment %d: physical %#x+%#x reaches beyond the %d GiB of RAM below the MMIO hole", i, paddr, memsz, lowRAMLimit>>30)
		}
		img.Segments = append(img.Segments, Segment{Paddr: paddr, Vaddr: vaddr, Memsz: memsz, Data: k[off : off+filesz]})
	}
	if len(img.Segments) == 0 {
		return nil, errorf(ErrBadELF, "ELF file has no PT_LOAD segments: nothing to load")
	}
	sort.Slice(img.Segments, func(a, b int) bool { return img.Segments[a].Paddr < img.Segments[b].Paddr })
	for i := 1; i < len(img.Segments); i++ {
		prev, s := img.Segments[i-1], img.Segments[i]
		if s.Paddr < prev.Paddr+prev.Memsz {
			return nil, errorf(ErrBadELF, "ELF segments overlap physically: %#x+%#x and %#x", prev.Paddr, prev.Memsz, s.Paddr)
		}
	}
	last := img.Segments[len(img.Segments)-1]
	img.KernelStart, img.KernelEnd = img.Segments[0].Paddr, last.Paddr+last.Memsz

	phys, err := elfEntry(img.Segments, entry)
	if err != nil {
		return nil, err
	}
	img.EntryPoint = phys
	return img, nil
}

// elfEntry turns e_entry into the physical address to jump to, and checks
// that it points into loaded bytes.
func elfEntry(segs []Segment, entry uint64) (uint64, error) {
	phys := entry
	if entry >= startKernelMap {
		found := false
		for _, s := range segs {
			if entry >= s.Vaddr && entry-s.Vaddr < s.Memsz {
				phys, found = s.Paddr+(entry-s.Vaddr), true
				break
			}
		}
		if !found {
			return 0, errorf(ErrBadELF, "ELF entry point %#x (virtual) is in no loadable segment", entry)
		}
	}
	for _, s := range segs {
		if phys >= s.Paddr && phys-s.Paddr < uint64(len(s.Data)) {
			return phys, nil
		}
	}
	return 0, errorf(ErrBadELF, "ELF entry point %#x is outside the loaded bytes of every segment", phys)
}
