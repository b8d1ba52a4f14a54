// Package bus models the two address spaces through which an x86 guest talks
// to devices: the 64 KiB I/O port space (IN/OUT instructions, Intel SDM Vol. 1
// §18 "Input/Output") and the memory-mapped I/O space (guest-physical
// addresses that are not backed by RAM).
//
// When the guest touches either space, KVM returns to user space with
// KVM_EXIT_IO or KVM_EXIT_MMIO; the VMM hands the access to a Bus, which finds
// the device that owns the address and calls it with an offset relative to the
// start of the device's range. Devices therefore never know where they were
// placed, so the same UART model serves COM1 at 0x3f8 and COM2 at 0x2f8.
//
// Ranges may not overlap: Register rejects an overlapping range with an error
// instead of letting two devices fight over one address. An access that hits no
// device reads as all ones (what an open bus returns on real hardware, and
// what Linux expects when it probes for absent hardware) and is counted.
package bus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Space names an address space.
type Space uint8

const (
	// PIO is the x86 I/O port space, 0x0000-0xffff.
	PIO Space = iota
	// MMIO is guest-physical memory not backed by RAM.
	MMIO
)

func (s Space) String() string {
	switch s {
	case PIO:
		return "pio"
	case MMIO:
		return "mmio"
	}
	return fmt.Sprintf("space(%d)", uint8(s))
}

// Device is one emulated device, seen through one address range. Offsets are
// relative to the start of the range the device was registered at; len(data)
// is the access width (1, 2, 4 or 8 bytes for PIO and ordinary MMIO).
//
// Read fills data. Write consumes data. Both are called on a vCPU goroutine
// and must not block for long. An error means the guest did something the
// device does not accept (a bad width, a reserved register); the access is
// still complete and the VMM carries on, it only reports the error.
type Device interface {
	Read(offset uint64, data []byte) error
	Write(offset uint64, data []byte) error
}

// Describer is implemented by devices that can say what an access means in
// device terms ("THR write 'H'"), for the exit tracer and the stepper.
type Describer interface {
	Describe(offset uint64, write bool, data []byte) string
}

// ErrOverlap is returned by Register when a range overlaps one already
// registered.
var ErrOverlap = errors.New("address range overlaps a registered device")

// ErrEmptyRange is returned by Register for a zero-length or wrapping range.
var ErrEmptyRange = errors.New("empty or wrapping address range")

// Range is one registered device range.
type Range struct {
	Space Space
	Base  uint64
	Size  uint64
	Name  string
	Dev   Device
}

// End returns the first address after the range.
func (r Range) End() uint64 { return r.Base + r.Size }

func (r Range) contains(addr uint64) bool { return addr >= r.Base && addr-r.Base < r.Size }

// Bus routes accesses in both address spaces. It is safe for concurrent use by
// several vCPU goroutines: registration takes a write lock, dispatch a read
// lock. Devices do their own locking.
type Bus struct {
	mu     sync.RWMutex
	ranges [2][]Range // per space, sorted by Base

	unhandledReads  atomic.Uint64
	unhandledWrites atomic.Uint64
}

// New returns an empty bus.
func New() *Bus { return &Bus{} }

// Register places dev at [base, base+size) in space, under name.
func (b *Bus) Register(space Space, base, size uint64, name string, dev Device) error {
	if space != PIO && space != MMIO {
		return fmt.Errorf("bus: register %s: unknown %v", name, space)
	}
	if size == 0 || base+size < base {
		return fmt.Errorf("bus: register %s at %#x+%#x: %w", name, base, size, ErrEmptyRange)
	}
	if space == PIO && base+size > 0x10000 {
		return fmt.Errorf("bus: register %s at port %#x+%#x: beyond the 64 KiB port space: %w", name, base, size, ErrEmptyRange)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	rs := b.ranges[space]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Base >= base })
	// Only the neighbours can overlap a sorted, non-overlapping list.
	if i > 0 && rs[i-1].End() > base {
		return fmt.Errorf("bus: register %s at %v %#x+%#x: %w (%s at %#x+%#x)", name, space, base, size, ErrOverlap, rs[i-1].Name, rs[i-1].Base, rs[i-1].Size)
	}
	if i < len(rs) && base+size > rs[i].Base {
		return fmt.Errorf("bus: register %s at %v %#x+%#x: %w (%s at %#x+%#x)", name, space, base, size, ErrOverlap, rs[i].Name, rs[i].Base, rs[i].Size)
	}
	rs = append(rs, Range{})
	copy(rs[i+1:], rs[i:])
	rs[i] = Range{Space: space, Base: base, Size: size, Name: name, Dev: dev}
	b.ranges[space] = rs
	return nil
}

// Lookup returns the range that holds addr, if any.
func (b *Bus) Lookup(space Space, addr uint64) (Range, bool) {
	if space != PIO && space != MMIO {
		return Range{}, false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	rs := b.ranges[space]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End() > addr })
	if i < len(rs) && rs[i].contains(addr) {
		return rs[i], true
	}
	return Range{}, false
}

// Ranges returns a copy of the registered ranges of a space, sorted by base.
func (b *Bus) Ranges(space Space) []Range {
	if space != PIO && space != MMIO {
		return nil
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return append([]Range(nil), b.ranges[space]...)
}

// Result says who handled an access.
type Result struct {
	// Handled is false when no device owns the address.
	Handled bool
	// Name of the device, and the offset inside its range.
	Name   string
	Offset uint64
	// Dev is the device (nil when unhandled), so a tracer can ask it to
	// Describe the access.
	Dev Device
}

// Read performs a read of len(data) bytes at addr. Unclaimed addresses read as
// all ones and are counted. The returned error is the device's.
func (b *Bus) Read(space Space, addr uint64, data []byte) (Result, error) {
	r, ok := b.Lookup(space, addr)
	if !ok || addr-r.Base+uint64(len(data)) > r.Size {
		// An access that starts in a device but runs past its end is
		// treated as unclaimed: devices never see offsets outside their
		// range.
		for i := range data {
			data[i] = 0xff
		}
		b.unhandledReads.Add(1)
		return Result{}, nil
	}
	off := addr - r.Base
	return Result{Handled: true, Name: r.Name, Offset: off, Dev: r.Dev}, r.Dev.Read(off, data)
}

// Write performs a write of data at addr. Writes to unclaimed addresses are
// dropped and counted.
func (b *Bus) Write(space Space, addr uint64, data []byte) (Result, error) {
	r, ok := b.Lookup(space, addr)
	if !ok || addr-r.Base+uint64(len(data)) > r.Size {
		b.unhandledWrites.Add(1)
		return Result{}, nil
	}
	off := addr - r.Base
	return Result{Handled: true, Name: r.Name, Offset: off, Dev: r.Dev}, r.Dev.Write(off, data)
}

// Unhandled returns how many reads and writes hit no device.
func (b *Bus) Unhandled() (reads, writes uint64) {
	return b.unhandledReads.Load(), b.unhandledWrites.Load()
}
