package boot

import (
	"bytes"
	"unicode/utf8"
)

// Format is the kind of kernel file.
type Format int

const (
	// FormatBzImage is the usual distribution kernel (arch/x86/boot/bzImage,
	// /boot/vmlinuz-*): real-mode setup followed by a self-decompressing
	// protected-mode kernel.
	FormatBzImage Format = iota + 1
	// FormatELF is an uncompressed ELF64 x86-64 vmlinux, as left at the top
	// of a kernel build tree.
	FormatELF
)

func (f Format) String() string {
	switch f {
	case FormatBzImage:
		return "bzImage"
	case FormatELF:
		return "ELF vmlinux"
	case FormatBootSector:
		return "boot sector"
	}
	return "unknown format"
}

// Segment is one ELF PT_LOAD segment: Data (p_filesz bytes) goes at Paddr,
// and the rest up to Memsz is zeroed (.bss).
type Segment struct {
	Paddr, Vaddr, Memsz uint64
	Data                []byte
}

// Image is a parsed, validated kernel. Its byte slices alias the buffer
// given to Parse, which must not change while the Image is in use.
type Image struct {
	Format Format
	// Setup is the bzImage setup header; nil for ELF.
	Setup *SetupHeader
	// Payload is the bzImage protected-mode part, loaded at KernelAddr.
	Payload []byte
	// Segments are the ELF PT_LOAD segments, sorted by Paddr.
	Segments []Segment
	// EntryPoint is the physical address of the 64-bit entry: KernelAddr +
	// 0x200 for a bzImage, e_entry (made physical) for ELF.
	EntryPoint uint64
	// [KernelStart, KernelEnd) is the physical memory the kernel may use
	// before it reads the e820 map; the initrd is placed outside it.
	KernelStart, KernelEnd uint64
}

// Parse validates a kernel file, a bzImage or an ELF64 x86-64 vmlinux, and
// says where its parts go. It only reads kernel, never panics, and names
// the common wrong inputs (compressed files, text, other architectures).
// Errors are *Error values; test them with errors.Is against the Err* kinds.
func Parse(kernel []byte) (*Image, error) {
	if len(kernel) == 0 {
		return nil, errorf(ErrEmpty, "kernel file is empty")
	}
	if err := sniffWrongInput(kernel); err != nil {
		return nil, err
	}
	if bytes.HasPrefix(kernel, []byte(elfMagic)) {
		return parseELF(kernel)
	}
	if isBootSector(kernel) { // bootsector.go
		return parseBootSector(kernel)
	}
	return parseBzImage(kernel)
}

// sniffWrongInput recognises files people pass by mistake, so the error can
// say what they are instead of "bad boot flag".
func sniffWrongInput(k []byte) error {
	compressed := []struct {
		magic, name, ext string
	}{
		{"\x1f\x8b", "gzip", "gz"},
		{"\xfd7zXZ\x00", "xz", "xz"},
		{"\x28\xb5\x2f\xfd", "zstd", "zst"},
		{"BZh", "bzip2", "bz2"},
		{"\x04\x22\x4d\x18", "lz4", "lz4"},
	}
	for _, c := range compressed {
		if bytes.HasPrefix(k, []byte(c.magic)) {
			return errorf(ErrCompressed, "%s-compressed file (vmlinuz.%s or vmlinux.%s?); decompress it first: kvmlab boots a bzImage or an uncompressed vmlinux", c.name, c.ext, c.ext)
		}
	}
	if bytes.HasPrefix(k, []byte("070701")) || bytes.HasPrefix(k, []byte("070702")) {
		return errorf(ErrNotKernel, "this is a cpio archive (an initramfs?); pass it as the initrd, not as the kernel")
	}
	// arm64 and RISC-V "Image" files (Documentation/arch/arm64/booting.rst,
	// Documentation/arch/riscv/boot-image-header.rst) start with an
	// MZ/PE stub too, but carry their own magic numbers.
	if len(k) >= 0x3c && string(k[0x38:0x3c]) == "ARM\x64" {
		return errorf(ErrWrongArch, "this is an arm64 kernel image; kvmlab boots x86-64 kernels")
	}
	if len(k) >= 0x3c && string(k[0x38:0x3c]) == "RSC\x05" {
		return errorf(ErrWrongArch, "this is a RISC-V kernel image; kvmlab boots x86-64 kernels")
	}
	if first, ok := looksLikeText(k); ok {
		return errorf(ErrText, "text file, not a kernel (it starts %q); pass a bzImage or vmlinux", first)
	}
	return nil
}

// looksLikeText reports whether the first KiB of b is printable UTF-8 (a
// script, a config file, an error page saved by a download tool), and if so
// returns its first line, shortened, to quote in the error.
func looksLikeText(b []byte) (string, bool) {
	sample := b[:min(len(b), 1024)]
	for i := 0; i < len(sample); {
		r, n := utf8.DecodeRune(sample[i:])
		if r == utf8.RuneError && n <= 1 {
			// A rune cut by the sample's end is fine; anything else is binary.
			if len(sample) < len(b) && len(sample)-i < utf8.UTFMax {
				break
			}
			return "", false
		}
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' && r != '\f' || r == 0x7f {
			return "", false
		}
		i += n
	}
	line, _, _ := bytes.Cut(sample, []byte("\n"))
	if len(line) > 40 {
		line = append(bytes.ToValidUTF8(line[:40], nil), "..."...)
	}
	return string(line), true
}
