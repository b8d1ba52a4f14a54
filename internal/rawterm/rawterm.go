// Package rawterm attaches a guest's serial console to the terminal kvmlab
// runs in, as a terminal program does (QEMU's -serial stdio, screen,
// minicom): the terminal goes into raw mode and comes back as it was,
// however the program ends.
//
// A terminal in its usual, cooked mode (termios(3), the Linux tty's line
// discipline) edits a line before the program sees it, echoes what is
// typed, and turns Ctrl-C into SIGINT. The guest's own tty does all of that
// for the guest's programs, so the host's must not: raw mode (cfmakeraw)
// passes every key through as it is, Ctrl-C included, and the VMM keeps one
// escape for itself (Ctrl-A x, vmm.Config.Escapes). Output is raw too: a
// line the VMM prints itself must end with CR LF (Writer), since the
// terminal no longer adds the CR. And the cooked state must come back on
// every way out: a normal end (Restore), a fatal signal (ExitOnSignal), or
// the seccomp filter's SIGSYS handler, which gets the state from Cooked.
package rawterm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Term is a terminal in raw mode. A nil *Term is no terminal: its methods
// do nothing, and Writer passes lines through as they are.
type Term struct {
	fd     int
	cooked *unix.Termios // the state before raw mode
	old    *term.State
}

// Raw puts f, when it is a terminal, into raw mode. It returns nil, nil
// when f is not a terminal, and nil and the error when raw mode failed.
func Raw(f *os.File) (*Term, error) {
	fd := int(f.Fd())
	if !term.IsTerminal(fd) {
		return nil, nil
	}
	cooked, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	return &Term{fd: fd, cooked: cooked, old: old}, nil
}

// Restore puts the terminal back as it was before Raw. It may be called
// more than once.
func (t *Term) Restore() {
	if t != nil {
		_ = term.Restore(t.fd, t.old)
	}
}

// Cooked is the terminal's state before raw mode, for a handler that must
// restore it without Go's help (seccomp.Options.Terminal); nil without a
// terminal.
func (t *Term) Cooked() *unix.Termios {
	if t == nil {
		return nil
	}
	return t.cooked
}

// Writer returns w with lines ended by CR LF while t is raw, and w itself
// without a terminal.
func (t *Term) Writer(w io.Writer) io.Writer {
	if t == nil {
		return w
	}
	return CRLF(w)
}

// ExitOnSignal restores the terminal when SIGTERM, SIGHUP or SIGINT
// arrives, runs cleanup (for what os.Exit would skip: deferred calls do
// not run), says so on standard error, and exits with 128 plus the
// signal's number, as a shell reports a death by signal. stop ends the
// watch.
func (t *Term) ExitOnSignal(cleanup func()) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	go func() {
		if s, ok := <-sigs; ok {
			t.Restore()
			cleanup()
			fmt.Fprintf(os.Stderr, "\r\nkvmlab: %v: stopping\r\n", s)
			os.Exit(128 + int(s.(syscall.Signal)))
		}
	}()
	return func() { signal.Stop(sigs) }
}

// crlf ends lines with CR LF, for a terminal in raw mode.
type crlf struct{ w io.Writer }

// CRLF returns w with every LF written as CR LF.
func CRLF(w io.Writer) io.Writer { return crlf{w} }

func (c crlf) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Drain waits until everything written to f has left it, when f is a
// terminal (tcdrain(3): TCSBRK with a non-zero argument), and does nothing
// otherwise. A program that exits with output still queued for a slow
// line may lose it: if it leads the terminal's session, its exit hangs the
// terminal up and the tty layer throws the queue away. That is what the
// emulated Intel host's console did, a serial port Bochs sends at a
// UART's pace, to the last tables of `kvmlab run --stats`; a terminal
// window drains in no time.
func Drain(f *os.File) {
	if f == nil || !term.IsTerminal(int(f.Fd())) {
		return
	}
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}
