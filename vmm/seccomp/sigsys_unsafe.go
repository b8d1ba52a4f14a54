//go:build amd64

package seccomp

import (
	"fmt"
	"unsafe"

	"github.com/u-root/u-root/pkg/strace"
	"golang.org/x/sys/unix"
)

// The SIGSYS handler.
//
// With SECCOMP_RET_TRAP the kernel skips a forbidden call and sends the
// thread SIGSYS, with the call's number in siginfo. Go's runtime cannot
// hand that signal to the program: its signal table marks SIGSYS "throw",
// not "notify" (runtime/sigtab_linux_generic.go), so signal.Notify does
// not catch it (it only enables signals marked notify), and a seccomp
// SIGSYS ends in the runtime's crash report, "SIGSYS: bad system call" and
// every goroutine's stack, with the terminal left in raw mode. And no Go
// code could run in the handler anyway: it may interrupt a thread in the
// middle of the runtime's own code, holding its locks.
//
// So kvmlab installs its own handler with rt_sigaction, in place of the
// runtime's, written in assembly (sigsys_amd64.s) because it must run with
// no Go runtime under it: no stack growth, no allocation, no g. It does
// what a C handler would do with async-signal-safe calls only, all of them
// on the allow-list: restore the terminal (ioctl TCSETS), write one line
// naming the call and its first two arguments to stderr, and exit_group.
// Everything it needs, the text and a table of call names from u-root's
// strace package, is prepared here in Go before the filter goes on.

// nameSlots is NAME_SLOTS in sigsys_amd64.s: x86-64's call numbers are
// below 512 (the x32 ones, 512 and up with bit 30 set, are refused
// without a name).
const nameSlots = 512

// ExitStatus is the status a VMM stopped by its filter exits with: 128 +
// SIGSYS, what a shell shows for a process killed by that signal.
const ExitStatus = 128 + int(unix.SIGSYS)

// handlerData is what sigsysHandler reads (through go_asm.h's offsets of
// its fields): written only before the filter is installed.
type handlerData struct {
	termFD     int64 // -1: no terminal to restore
	termState  unix.Termios
	exitStatus int64
	prefix     string
	unnamed    string // before the number of a call with no name
	args       string
	sep        string
	suffix     string
	names      [nameSlots]string // "socket (41)"; "" when unknown
}

var trap = handlerData{
	termFD:     -1,
	exitStatus: int64(ExitStatus),
	prefix:     "\nkvmlab: seccomp: the VMM made a system call its filter forbids: ",
	unnamed:    "system call 0x",
	args:       " (arguments 0x",
	sep:        ", 0x",
	suffix:     ", ...); stopped. Rerun with --seccomp=false to run without the filter, and report this as a kvmlab bug.\n",
}

// Implemented in sigsys_amd64.s. sigsysHandler is called by the kernel,
// never from Go.
//
//lint:ignore U1000 referenced by handlerAddr in sigsys_amd64.s
func sigsysHandler()
func handlerAddr() uintptr

// sigaction is the kernel's struct sigaction for rt_sigaction on x86-64
// (arch/x86/include/uapi/asm/signal.h), not libc's.
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	saSiginfo  = 0x4        // three arguments: the signal, siginfo, ucontext
	saOnstack  = 0x08000000 // run on the thread's alternate signal stack
	saRestorer = 0x04000000 // x86-64 requires one; see below
)

// armTrap prepares the handler's data and installs it for SIGSYS.
func armTrap(f Filter, o Options) error {
	if o.Terminal != nil {
		trap.termState = *o.Terminal
		trap.termFD = int64(o.TerminalFD)
	} else {
		trap.termFD = -1
	}
	for nr := range trap.names {
		if name, err := strace.ByNumber(uintptr(nr)); err == nil {
			trap.names[nr] = fmt.Sprintf("%s (%d)", name, nr)
		}
	}
	// u-root's table lacks a few recent calls; the filter's own rules
	// name theirs (a call with a refused argument is one of them).
	for _, r := range f.Rules {
		if r.Nr < nameSlots && trap.names[r.Nr] == "" {
			trap.names[r.Nr] = fmt.Sprintf("%s (%d)", r.Name, r.Nr)
		}
	}
	h := handlerAddr()
	sa := sigaction{
		handler: h,
		flags:   saSiginfo | saOnstack | saRestorer,
		// The kernel returns from a handler through sa_restorer (the
		// rt_sigreturn trampoline libc would supply). This handler
		// never returns, so any address does; its own is used.
		restorer: h,
		// Every signal is blocked while it runs: the Go runtime's
		// handlers must not run on top of it on the same stack.
		mask: ^uint64(0),
	}
	// SAFETY: sa lives on this goroutine's stack for the whole call;
	// the kernel copies the struct and keeps no pointer to it. The
	// last argument is sizeof(sigset_t) as the kernel has it, 8 bytes.
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
		return fmt.Errorf("seccomp: rt_sigaction(SIGSYS): %w", e)
	}
	return nil
}
