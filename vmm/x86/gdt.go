package x86

import "kvmlab/vmm/kvm"

// Flat segment descriptors (SDM Vol. 3A §3.4.5, Figure 3-8): base 0, limit
// 0xfffff in 4 KiB units (G=1), present, DPL 0, a code or data segment
// (S=1). The accessed bit of the type is pre-set so that the CPU never has
// to write the GDT when a selector is loaded.
const (
	// FlatCode64 is a 64-bit code segment: L=1 (§3.4.5: "64-bit code
	// segment"), D=0 as L=1 requires, type 0xb (execute/read, accessed).
	FlatCode64 = 0x00af_9b00_0000_ffff
	// FlatData is a 4 GiB read/write data segment: D/B=1, type 0x3
	// (read/write, accessed).
	FlatData = 0x00cf_9300_0000_ffff
)

// SegmentFromDescriptor unpacks a GDT descriptor (SDM Vol. 3A §3.4.5) into
// the form KVM wants for a segment register: the selector sel and the
// hidden descriptor cache, filled exactly as loading sel would fill it.
func SegmentFromDescriptor(sel uint16, d uint64) kvm.Segment {
	limit := uint32(d&0xffff) | uint32((d>>48)&0xf)<<16
	g := uint8((d >> 55) & 1)
	if g == 1 {
		// Granularity: the limit counts 4 KiB pages, and the low 12
		// bits of an offset are never checked.
		limit = limit<<12 | 0xfff
	}
	return kvm.Segment{
		Base:     (d>>16)&0xffffff | ((d>>56)&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8((d >> 40) & 0xf),
		S:        uint8((d >> 44) & 1),
		DPL:      uint8((d >> 45) & 3),
		Present:  uint8((d >> 47) & 1),
		AVL:      uint8((d >> 52) & 1),
		L:        uint8((d >> 53) & 1),
		DB:       uint8((d >> 54) & 1),
		G:        g,
	}
}
