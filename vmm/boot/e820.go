package boot

import "kvmlab/guestmem"

// E820 memory types (the ACPI address range types the BIOS int 0x15,
// eax=0xe820 call reports).
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one range of the guest's physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// End returns the first address after the range.
func (e E820Entry) End() uint64 { return e.Addr + e.Size }

// E820 returns the memory map kvmlab gives the guest: every RAM region of
// mem is RAM, except [ReservedStart, 1 MiB), which is reserved the way a PC
// BIOS reserves it (EBDA, VGA window, option ROMs, BIOS). The kernel keeps
// its hands off reserved ranges, which is what protects the ACPI tables at
// ACPIStart; it finds them through the RSDP. The result is sorted; adjacent
// ranges of one type are merged.
func E820(mem *guestmem.Memory) []E820Entry {
	var out []E820Entry
	add := func(start, end uint64, typ uint32) {
		if start >= end {
			return
		}
		if n := len(out); n > 0 && out[n-1].Type == typ && out[n-1].End() == start {
			out[n-1].Size += end - start
			return
		}
		out = append(out, E820Entry{Addr: start, Size: end - start, Type: typ})
	}
	for _, r := range mem.Regions() {
		start, end := uint64(r.Base), uint64(r.End())
		// Split the region around the reserved window.
		add(start, min(end, ReservedStart), E820RAM)
		add(max(start, ReservedStart), min(end, KernelAddr), E820Reserved)
		add(max(start, KernelAddr), end, E820RAM)
	}
	return out
}
