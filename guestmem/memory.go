// Package guestmem is kvmlab's one checked view of guest RAM.
//
// Guest-physical memory is host memory the VMM mapped and handed to KVM with
// KVM_SET_USER_MEMORY_REGION (Documentation/virt/kvm/api.rst §4.35): the guest
// reads and writes it directly, without exits. The VMM reads and writes the
// same bytes when it loads a kernel or serves a virtio descriptor, and every
// address it uses there came from the guest or from a file, so every access
// goes through this package, which checks it against the RAM regions and
// returns an *AccessError instead of slicing out of bounds. Nothing else in
// kvmlab slices the RAM mapping.
//
// # Why a leaf package of its own
//
// Two floors of the house use guest memory: the machine (package vmm maps it
// and hands it to KVM; vmm/boot loads the kernel into it) and the devices
// (devices/virtio walks descriptor rings in it and DMAs buffers in and out).
// Devices sit below the machine: they must not know about it, so that each
// unit-tests alone. Guest memory therefore lives below both, at the top of
// the tree next to devices/ and vmm/, and imports nothing of kvmlab's. This
// is the shape of rust-vmm, where vm-memory is a leaf crate that the VMMs
// and the device crates (virtio-queue, vm-virtio) all depend on. The name
// says whose memory it is: the guest's, addressed by guest-physical
// addresses (GPA), not the VMM's own heap.
//
// Layout (the PC "PCI hole"): RAM starts at guest-physical 0. The 1 GiB below
// 4 GiB is kept free for memory-mapped devices (the I/O APIC at 0xfec00000,
// the local APIC at 0xfee00000, PCI BARs), so RAM beyond 3 GiB continues at
// 4 GiB. The e820 map given to the guest describes exactly these regions.
package guestmem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// GPA is a guest-physical address.
type GPA uint64

const (
	// MMIOHoleStart is where RAM stops below 4 GiB.
	MMIOHoleStart GPA = 0xC000_0000
	// HighStart is where RAM resumes above the hole.
	HighStart GPA = 0x1_0000_0000
)

// Region is one contiguous stretch of guest RAM.
type Region struct {
	Base GPA
	Data []byte
}

// Size returns the length of the region.
func (r Region) Size() uint64 { return uint64(len(r.Data)) }

// End returns the first address after the region.
func (r Region) End() GPA { return r.Base + GPA(len(r.Data)) }

// ErrOutOfRange is wrapped by every AccessError.
var ErrOutOfRange = errors.New("guest address not backed by RAM")

// AccessError reports a guest-memory access that does not fit in RAM.
type AccessError struct {
	Op  string // "read", "write" or "slice"
	GPA GPA
	Len uint64
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("guest memory %s of %d bytes at %#x: %v", e.Op, e.Len, uint64(e.GPA), ErrOutOfRange)
}

// Unwrap lets errors.Is(err, ErrOutOfRange) work.
func (e *AccessError) Unwrap() error { return ErrOutOfRange }

// Memory is guest RAM: one host mapping split into regions.
type Memory struct {
	regions []Region
	mapping []byte // the whole host mapping, nil when built from slices
}

// Layout splits size bytes of RAM around the MMIO hole: the returned regions
// are (base, length) pairs.
func Layout(size uint64) []struct{ Base, Size uint64 } {
	low := size
	if low > uint64(MMIOHoleStart) {
		low = uint64(MMIOHoleStart)
	}
	out := []struct{ Base, Size uint64 }{{0, low}}
	if size > low {
		out = append(out, struct{ Base, Size uint64 }{uint64(HighStart), size - low})
	}
	return out
}

// New maps size bytes of anonymous memory and lays it out with Layout. The
// mapping is private and lazily populated: pages the guest never touches cost
// the host nothing.
func New(size uint64) (*Memory, error) {
	if size == 0 {
		return nil, errors.New("memory: zero-sized guest RAM")
	}
	if size > 1<<46 {
		return nil, fmt.Errorf("memory: %d bytes of guest RAM is beyond what x86-64 can address", size)
	}
	data, err := mapRAM(size)
	if err != nil {
		return nil, fmt.Errorf("memory: mmap %d bytes of guest RAM: %w", size, err)
	}
	// Transparent huge pages make guest page walks cheaper, and let KVM
	// map the guest's memory 2 MiB at a time (mapRAM says why the mapping
	// is aligned for it); failure is harmless (THP disabled on the host).
	_ = unix.Madvise(data, unix.MADV_HUGEPAGE)
	m := &Memory{mapping: data}
	var off uint64
	for _, l := range Layout(size) {
		m.regions = append(m.regions, Region{Base: GPA(l.Base), Data: data[off : off+l.Size : off+l.Size]})
		off += l.Size
	}
	return m, nil
}

// FromRegions builds a Memory over caller-owned slices (tests and fuzzers).
// Regions must be sorted and must not overlap.
func FromRegions(rs ...Region) (*Memory, error) {
	for i := range rs {
		if rs[i].Base+GPA(len(rs[i].Data)) < rs[i].Base {
			return nil, fmt.Errorf("memory: region %d wraps the address space", i)
		}
		if i > 0 && rs[i].Base < rs[i-1].End() {
			return nil, fmt.Errorf("memory: region %d overlaps or is out of order", i)
		}
	}
	return &Memory{regions: append([]Region(nil), rs...)}, nil
}

// Close unmaps guest RAM. The Memory must not be used afterwards.
func (m *Memory) Close() error {
	if m.mapping == nil {
		return nil
	}
	err := unmapRAM(m.mapping)
	m.mapping, m.regions = nil, nil
	return err
}

// Regions returns the RAM regions in address order.
func (m *Memory) Regions() []Region { return m.regions }

// Size returns the total RAM size.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += r.Size()
	}
	return n
}

// Slice returns the n bytes at gpa as a slice of guest RAM, or an
// *AccessError when they are not all inside one region (overflow, beyond the
// end of RAM, or straddling the MMIO hole). The slice aliases guest memory:
// the guest may change it at any moment, so callers copy what they validate.
func (m *Memory) Slice(gpa GPA, n uint64) ([]byte, error) {
	if gpa+GPA(n) < gpa {
		return nil, &AccessError{Op: "slice", GPA: gpa, Len: n}
	}
	for _, r := range m.regions {
		if gpa >= r.Base && gpa < r.End() {
			off := uint64(gpa - r.Base)
			if n > r.Size()-off {
				break
			}
			return r.Data[off : off+n : off+n], nil
		}
	}
	if n == 0 && m.Contains(gpa) {
		return []byte{}, nil
	}
	return nil, &AccessError{Op: "slice", GPA: gpa, Len: n}
}

// Contains reports whether gpa is RAM.
func (m *Memory) Contains(gpa GPA) bool {
	for _, r := range m.regions {
		if gpa >= r.Base && gpa < r.End() {
			return true
		}
	}
	return false
}

// ReadAt copies len(p) bytes at gpa into p.
func (m *Memory) ReadAt(p []byte, gpa GPA) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return &AccessError{Op: "read", GPA: gpa, Len: uint64(len(p))}
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest RAM at gpa.
func (m *Memory) WriteAt(p []byte, gpa GPA) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return &AccessError{Op: "write", GPA: gpa, Len: uint64(len(p))}
	}
	copy(s, p)
	return nil
}

// Resident returns how many bytes of guest RAM are backed by host pages right
// now (mincore(2) over the mapping): RAM the guest never touched costs the
// host nothing, and this shows how much it did touch.
func (m *Memory) Resident() (uint64, error) {
	if m.mapping == nil {
		return 0, nil
	}
	page := uint64(unix.Getpagesize())
	vec := make([]byte, (uint64(len(m.mapping))+page-1)/page)
	if err := mincore(m.mapping, vec); err != nil {
		return 0, fmt.Errorf("memory: mincore: %w", err)
	}
	var n uint64
	for _, v := range vec {
		n += uint64(v & 1)
	}
	return n * page, nil
}

// ResidentPages returns, for each host page of r (which must be one of
// m's regions), whether it is backed by host memory now (mincore(2)). A
// page the guest never touched is not: it reads as zeros and costs nothing,
// which is what lets a snapshot leave it out.
func (m *Memory) ResidentPages(r Region) ([]bool, error) {
	page := unix.Getpagesize()
	vec := make([]byte, (len(r.Data)+page-1)/page)
	if err := mincore(r.Data, vec); err != nil {
		return nil, fmt.Errorf("memory: mincore: %w", err)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out, nil
}
