package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options says what Install restores before the SIGSYS message.
type Options struct {
	// Terminal, when not nil, is the console's state before raw mode;
	// the handler puts it back on TerminalFD before it writes, so the
	// shell the user returns to is usable.
	Terminal   *unix.Termios
	TerminalFD int
}

// ErrUnsupported wraps the error of a kernel without seccomp filters
// (CONFIG_SECCOMP_FILTER off) or without SECCOMP_FILTER_FLAG_TSYNC (Linux
// before 3.17).
var ErrUnsupported = errors.New("seccomp filters unsupported by this kernel")

// Install confines the whole process to f, for the rest of its life: a
// filter cannot be removed or loosened, only joined by stricter ones. It
// first installs the SIGSYS handler that reports a trapped call, then sets
// no_new_privs, then loads the program on every thread at once.
func Install(f Filter, o Options) error {
	prog, err := f.Assemble()
	if err != nil {
		return err
	}
	if err := armTrap(f, o); err != nil {
		return err
	}
	// prctl and seccomp act on the calling thread (TSYNC then spreads
	// the filter and no_new_privs to the others): both must run on the
	// same one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Without CAP_SYS_ADMIN the kernel takes a filter only from a
	// thread that can never gain privileges again (no_new_privs: execve
	// of a set-uid program does not raise them), so that a filter cannot
	// trick a privileged program into misbehaving. kvmlab sets it even
	// as root: the VMM has no business gaining privileges.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// SAFETY: fprog and the prog array it points to stay alive until
	// the call returns (KeepAlive below); the kernel copies the program
	// and keeps no pointer to either.
	r, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	switch {
	case e == unix.EINVAL || e == unix.ENOSYS:
		return fmt.Errorf("%w: seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): %w", ErrUnsupported, e)
	case e != 0:
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): %w", e)
	case r != 0:
		// TSYNC names the thread that could not take the filter (one
		// already under an unrelated filter); none was changed.
		return fmt.Errorf("seccomp: thread %d cannot take the filter (SECCOMP_FILTER_FLAG_TSYNC)", r)
	}
	return nil
}
