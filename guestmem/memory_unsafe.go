package guestmem

import (
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
