package vmm

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// How much RAM a guest is given and needs: the size syntax the command
// line uses for it, the host's RAM it must fit in, and the least a Linux
// guest boots in.

// ParseMemSize reads a size as QEMU's -m does: a bare number is MiB ("512"),
// a K, M, G or T suffix (also KiB, MB...) a power of 1024 ("4G"), and a B
// suffix alone bytes ("1048576B"). MiB is the unit a guest's RAM is counted
// in, and a bare number meaning bytes would only ever be a mistake.
func ParseMemSize(s string) (uint64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	mult := uint64(1 << 20) // a bare number
	switch {
	case strings.HasSuffix(t, "IB"): // KiB, MiB...: the letter must follow
		t = strings.TrimSuffix(t, "IB")
		mult = 0
	case strings.HasSuffix(t, "B"): // KB, MB... or bytes
		t = strings.TrimSuffix(t, "B")
		mult = 1
	}
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		case 'T':
			mult, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || v == 0 || mult == 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	if v > (1<<63)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v * mult, nil
}

// HostMemory returns the host's total RAM in bytes.
func HostMemory() uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return si.Totalram * uint64(si.Unit)
}

// MinGuestMem is the least RAM a Linux guest plus initramfs can boot in: the
// kernel's decompressed image, the initramfs twice (the cpio and the unpacked
// files), and a margin for page tables and early allocations.
func MinGuestMem(kernelSize, initrdSize int) uint64 {
	const margin = 48 << 20
	return uint64(kernelSize)*4 + uint64(initrdSize)*2 + margin
}
