package guestmem

// Atomic access to guest RAM.
//
// Some guest memory is shared with a running guest as a protocol, not as
// data: the index words of a virtio ring (virtio 1.2 §2.7.6, §2.7.8) are
// written by one side while the other polls them. Copying such a word with
// ReadAt is not enough. The compiler may keep a plain load in a register
// across a loop (the DESIGN notes record gokvm hitting exactly that), a
// plain store may be split or reordered before the ring entries it
// publishes, and a 2-byte copy is not guaranteed to be one instruction. The
// methods here go through sync/atomic instead, whose operations are never
// elided and are sequentially consistent: every store to guest RAM made
// before an atomic store is visible to a guest that observes the stored
// value (the release virtio needs before it bumps used->idx), and nothing
// after an atomic load is read before it (the acquire needed after reading
// avail->idx).
//
// sync/atomic has no 16-bit operations, and virtio's indices are 16-bit. A
// 16-bit access therefore works on the naturally aligned 32-bit word that
// contains it: a load reads the word and keeps the right half, a store
// replaces its half with a compare-and-swap loop, which leaves the other
// half exactly as the guest last wrote it. That word must lie in RAM too;
// for RAM laid out by New (regions start on a page boundary and have a size
// that is a multiple of 4) it always does when the two bytes do.
//
// Values are little-endian, the byte order of x86 and of virtio 1.x,
// whatever the host's order.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// ErrUnaligned is wrapped by an AlignmentError.
var ErrUnaligned = errors.New("guest address not naturally aligned for an atomic access")

// AlignmentError reports an atomic access at an address that is not a
// multiple of its size.
type AlignmentError struct {
	Op  string // "atomic load" or "atomic store"
	GPA GPA
	Len uint64
}

func (e *AlignmentError) Error() string {
	return fmt.Sprintf("guest memory %s of %d bytes at %#x: %v", e.Op, e.Len, uint64(e.GPA), ErrUnaligned)
}

// Unwrap lets errors.Is(err, ErrUnaligned) work.
func (e *AlignmentError) Unwrap() error { return ErrUnaligned }

// ErrContended is returned by StoreUint16 when the other half of the 32-bit
// word it updates kept changing under it: only a guest writing that memory
// in a tight loop can cause it, and giving up beats spinning.
var ErrContended = errors.New("guest memory word kept changing during an atomic store")

// casAttempts bounds StoreUint16's compare-and-swap loop. A well-behaved
// guest never writes the neighbouring half of a ring index, so the first
// attempt succeeds; the bound only matters against a hostile one.
const casAttempts = 1000

// word32 returns the aligned 32-bit word of guest RAM at gpa, which the
// caller has checked to be a multiple of 4.
func (m *Memory) word32(op string, gpa GPA) (*uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return nil, &AccessError{Op: op, GPA: gpa, Len: 4}
	}
	// SAFETY: s comes from Slice, so its 4 bytes are inside one RAM region
	// whose backing array is host memory that stays mapped (or, for
	// FromRegions, referenced by the Memory) while the Memory is open;
	// &s[0] is valid because len(s) == 4. Converting it to *uint32 is
	// only sound when the host address is 4-aligned, which is checked
	// right below before the pointer is used (and always holds for New,
	// whose regions are page-aligned).
	p := (*uint32)(unsafe.Pointer(&s[0]))
	if uintptr(unsafe.Pointer(p))%4 != 0 {
		// Only FromRegions over an oddly placed slice gets here: the
		// guest address is aligned but the host byte is not.
		return nil, &AlignmentError{Op: op, GPA: gpa, Len: 4}
	}
	return p, nil
}

// toLE turns a word as the host CPU loaded it into the little-endian value
// its bytes encode in guest memory, and back (the mapping is its own
// inverse).
func toLE(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.LittleEndian.Uint32(b[:])
}

// LoadUint32 atomically reads the little-endian 32-bit value at gpa, which
// must be a multiple of 4.
func (m *Memory) LoadUint32(gpa GPA) (uint32, error) {
	if gpa%4 != 0 {
		return 0, &AlignmentError{Op: "atomic load", GPA: gpa, Len: 4}
	}
	p, err := m.word32("atomic load", gpa)
	if err != nil {
		return 0, err
	}
	return toLE(atomic.LoadUint32(p)), nil
}

// StoreUint32 atomically writes v, little-endian, at gpa, which must be a
// multiple of 4. Every earlier write to guest RAM is visible before it.
func (m *Memory) StoreUint32(gpa GPA, v uint32) error {
	if gpa%4 != 0 {
		return &AlignmentError{Op: "atomic store", GPA: gpa, Len: 4}
	}
	p, err := m.word32("atomic store", gpa)
	if err != nil {
		return err
	}
	atomic.StoreUint32(p, toLE(v))
	return nil
}

// half16 checks a 16-bit access at gpa and returns the 32-bit word that
// contains it and the shift of the 16-bit value inside the word's
// little-endian value.
func (m *Memory) half16(op string, gpa GPA) (*uint32, uint, error) {
	if gpa%2 != 0 {
		return nil, 0, &AlignmentError{Op: op, GPA: gpa, Len: 2}
	}
	// The two bytes themselves must be RAM: report a failure on them
	// rather than on the containing word whenever they are the problem.
	if _, err := m.Slice(gpa, 2); err != nil {
		return nil, 0, &AccessError{Op: op, GPA: gpa, Len: 2}
	}
	p, err := m.word32(op, gpa&^3)
	if err != nil {
		return nil, 0, err
	}
	return p, uint(gpa&2) * 8, nil
}

// LoadUint16 atomically reads the little-endian 16-bit value at gpa, which
// must be even. The aligned 4-byte word around it must be RAM as well.
func (m *Memory) LoadUint16(gpa GPA) (uint16, error) {
	p, shift, err := m.half16("atomic load", gpa)
	if err != nil {
		return 0, err
	}
	return uint16(toLE(atomic.LoadUint32(p)) >> shift), nil
}

// StoreUint16 atomically writes v, little-endian, at gpa, which must be
// even, and leaves the other half of the aligned 4-byte word around it
// (which must be RAM as well) as it was. Every earlier write to guest RAM
// is visible before it. It returns ErrContended if that other half changed
// under it casAttempts times in a row.
func (m *Memory) StoreUint16(gpa GPA, v uint16) error {
	p, shift, err := m.half16("atomic store", gpa)
	if err != nil {
		return err
	}
	mask := uint32(0xffff) << shift
	for range casAttempts {
		old := atomic.LoadUint32(p)
		neu := toLE(toLE(old)&^mask | uint32(v)<<shift)
		if atomic.CompareAndSwapUint32(p, old, neu) {
			return nil
		}
	}
	return fmt.Errorf("guest memory atomic store of 2 bytes at %#x: %w", uint64(gpa), ErrContended)
}
