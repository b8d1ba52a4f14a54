package boot

import (
	"bytes"

	"kvmlab/guestmem"
)

// A boot sector is the smallest guest there is: raw 16-bit code, no
// header, no protocol. A PC BIOS reads the first 512-byte sector of the
// boot disk to 0000:7C00 and jumps there in real mode if the sector ends
// with the bytes 0x55 0xAA (the "boot signature"; the same word a bzImage
// carries at 0x1fe, because a bzImage began life as a floppy boot sector).
// kvmlab has no BIOS and no disk, so it plays the BIOS's last step itself:
// it copies the file to BootSectorAddr and starts the boot CPU in real
// mode there (Intel SDM Vol. 3A §9.1.1, "Processor State After Reset",
// with CS:IP moved from the reset vector to 0000:7C00). Unlike a BIOS it
// loads the whole file, not only the first sector, so a guest of a few
// pages (the labs' long-mode guest with its page tables) needs no disk
// driver. This is how `kvmlab lab` runs the learner's hand-written guests:
// GNU as with .code16 and `ld --oformat binary -Ttext 0x7c00` make one.
//
// Nothing else is written to guest memory for a boot sector: no zero page,
// no GDT, no page tables, no command line. The guest builds what it needs.

// FormatBootSector is a flat real-mode image with the 0x55 0xAA boot
// signature at offset 510, entered at 0000:7C00.
const FormatBootSector Format = 100

const (
	// BootSectorAddr is where a BIOS puts the boot sector, and kvmlab the
	// whole image.
	BootSectorAddr = 0x7c00
	// BootSectorMax bounds the image: it must end below the EBDA at
	// ReservedStart, in the conventional memory real mode can reach.
	BootSectorMax = ReservedStart - BootSectorAddr
	bootSigOffset = 510
)

// isBootSector says whether k is a flat boot image: the boot signature at
// 510, and not the start of a bzImage, which has the signature too and
// then, at 0x200, the setup header's short jump (0xEB) and "HdrS"
// (Documentation/arch/x86/boot.rst). Either one is taken for a bzImage,
// so that a damaged kernel is reported as one rather than run as 16-bit
// code; a boot sector with a short jump at 0x200 is told so by the
// bzImage parser's error, which names offset 0x202.
func isBootSector(k []byte) bool {
	if len(k) < bootSigOffset+2 || k[bootSigOffset] != 0x55 || k[bootSigOffset+1] != 0xaa {
		return false
	}
	if len(k) > 0x200 && k[0x200] == 0xeb {
		return false
	}
	return len(k) < 0x206 || !bytes.Equal(k[0x202:0x206], []byte("HdrS"))
}

func parseBootSector(k []byte) (*Image, error) {
	if len(k) > BootSectorMax {
		return nil, errorf(ErrTooBig, "boot sector image of %d bytes: at most %d fit between 0x7c00 and the EBDA at %#x", len(k), BootSectorMax, ReservedStart)
	}
	return &Image{Format: FormatBootSector, Payload: k, EntryPoint: BootSectorAddr,
		KernelStart: BootSectorAddr, KernelEnd: BootSectorAddr + uint64(len(k))}, nil
}

// loadBootSector copies the image to 0x7c00 and returns a real-mode entry.
// A boot sector takes no initrd (it could not find one) and ignores the
// command line.
func loadBootSector(mem *guestmem.Memory, img *Image, initrd []byte) (*Entry, error) {
	if len(img.Payload) == 0 || len(img.Payload) > BootSectorMax || img.EntryPoint != BootSectorAddr {
		return nil, errorf(ErrInvalidImage, "boot sector image of %d bytes entered at %#x", len(img.Payload), img.EntryPoint)
	}
	if len(initrd) > 0 {
		return nil, errorf(ErrLayout, "a boot sector image takes no initrd: leave out --initrd")
	}
	if err := write(mem, "boot sector", img.Payload, BootSectorAddr); err != nil {
		return nil, err
	}
	// SP just below the code, where a BIOS leaves it by convention; the
	// stack grows down through free conventional memory.
	return &Entry{RealMode: true, RIP: BootSectorAddr, RSP: BootSectorAddr}, nil
}
