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
