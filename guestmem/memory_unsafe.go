package guestmem

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore wraps mincore(2), which golang.org/x/sys/unix does not.
func mincore(b []byte, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	// SAFETY: b is our own page-aligned mmap of len(b) bytes and vec holds
	// one byte per page of it, as mincore(2) requires; both stay alive
	// for the duration of the call.
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}

// MapFile puts n bytes of file f, from offset off, in place of guest RAM at
// gpa: a private, copy-on-write mapping (mmap(2) MAP_PRIVATE|MAP_FIXED over
// the anonymous RAM). Nothing is read now. The guest's first access to a
// page reads it from the page cache; its first write copies it, so the file
// never changes. This is how a restore from a snapshot avoids copying RAM it
// may never touch again. gpa, n and off must be page-aligned, and the range
// must lie in one region of m. The file must not shrink while the machine
// runs: a page past its new end would no longer be readable.
func (m *Memory) MapFile(gpa GPA, n uint64, f *os.File, off int64) error {
	if m.mapping == nil {
		return errors.New("memory: MapFile on memory built from slices")
	}
	page := uint64(unix.Getpagesize())
	if n == 0 || uint64(gpa)%page != 0 || n%page != 0 || off < 0 || uint64(off)%page != 0 {
		return fmt.Errorf("memory: MapFile %#x+%d from offset %d: not whole pages", uint64(gpa), n, off)
	}
	s, err := m.Slice(gpa, n)
	if err != nil {
		return err
	}
	// SAFETY: s is n bytes of our own mapping (Slice checked that gpa..gpa+n
	// lies inside one region of it), page-aligned at both ends, so
	// MAP_FIXED replaces exactly those pages of the mapping and nothing
	// else; every slice of guest RAM stays valid, backed by the new pages.
	_, err = unix.MmapPtr(int(f.Fd()), off, unsafe.Pointer(&s[0]), uintptr(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
	if err != nil {
		return fmt.Errorf("memory: map %d bytes of %s over RAM at %#x: %w", n, f.Name(), uint64(gpa), err)
	}
	return nil
}

// IsRAMFault reports whether r, a value recovered from a panic, is a memory
// fault at an address inside m's RAM mapping. A goroutine that has called
// debug.SetPanicOnFault gets such a panic instead of a crash when RAM it
// reads is gone: RAM mapped from a snapshot file (MapFile) whose file was
// truncated under the running machine. Any other panic is not ours to
// recover.
func (m *Memory) IsRAMFault(r any) bool {
	e, ok := r.(interface{ Addr() uintptr })
	if !ok || len(m.mapping) == 0 {
		return false
	}
	// SAFETY: only the address of the mapping's first byte is taken, to
	// compare numbers; nothing is read or written through it.
	base := uintptr(unsafe.Pointer(&m.mapping[0]))
	a := e.Addr()
	return a >= base && a-base < uintptr(len(m.mapping))
}

// hugePageSize is the size of an x86-64 large page (a 2 MiB page-directory
// entry), the unit in which transparent huge pages back guest RAM.
const hugePageSize = 2 << 20

// mapRAM maps size bytes of private anonymous memory starting at a 2 MiB
// boundary of the host's address space.
//
// Why the boundary matters: KVM maps guest memory into the second-level page
// tables (EPT, NPT) with a 2 MiB entry only where a 2 MiB-aligned range of
// guest-physical addresses is backed by a 2 MiB-aligned range of host
// virtual addresses (the memory slot's base_gfn and userspace_addr must
// agree modulo 2 MiB; otherwise KVM disallows large pages in the whole slot:
// kvm_alloc_memslot_metadata in arch/x86/kvm/x86.c). Without that, every
// 4 KiB page the guest touches first costs an exit (an EPT violation or NPT
// fault that KVM fixes in the kernel): unpacking a 34 MB initramfs touches
// the archive and the pages it is copied into, some 17,000 of them. Linux
// before 6.7 places a large anonymous mmap at any page boundary, so the
// alignment is made here: map 2 MiB more than asked, then unmap the
// unaligned head and the tail. QEMU aligns its RAM the same way
// (QEMU_VMALLOC_ALIGN in include/qemu/osdep.h).
func mapRAM(size uint64) ([]byte, error) {
	page := uint64(unix.Getpagesize())
	length := (size + page - 1) &^ (page - 1)
	span := uintptr(length) + hugePageSize
	p, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	head := (hugePageSize - uintptr(p)%hugePageSize) % hugePageSize
	tail := span - head - uintptr(length)
	// SAFETY: p is the start of the span bytes mmap just returned, and
	// head+length+tail == span, so both pointers stay inside that mapping;
	// the head and the tail are whole pages of it (p and length are
	// page-aligned, hugePageSize is a multiple of the page size) that
	// nothing refers to, unmapped before anyone sees the mapping.
	start := unsafe.Add(p, head)
	if head > 0 {
		_ = unix.MunmapPtr(p, head)
	}
	if tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(start, length), tail)
	}
	// SAFETY: start..start+length is mapped, readable and writable, and
	// stays mapped until unmapRAM; size <= length.
	return unsafe.Slice((*byte)(start), size), nil
}

// unmapRAM unmaps a mapping made by mapRAM.
func unmapRAM(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	page := uintptr(unix.Getpagesize())
	// SAFETY: b is a whole mapping from mapRAM (its first byte is the
	// mapping's start, its length rounded up to a page the mapping's
	// length); the caller drops every slice of it.
	return unix.MunmapPtr(unsafe.Pointer(&b[0]), (uintptr(len(b))+page-1)&^(page-1))
}
