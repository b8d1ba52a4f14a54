//go:build !amd64

package container

import "golang.org/x/sys/unix"

// Counting system calls reads the syscall number from the registers at a
// syscall-entry stop, and where it lives depends on the architecture; only
// x86-64 is done (see syscalls_amd64.go). Start refuses CountSyscalls here.
const canCountSyscalls = false

func syscallNumber(*unix.PtraceRegs) uint64 { return 0 }

var syscallNames = map[uint64]string{}
