package emuhost

// The Bochs host's interactive console (Spec.Interactive).
//
// QEMU can put a serial port on its own stdio; Bochs cannot. Its "term" mode
// connects COM1 to a terminal device it opens by name, for input and output.
// So this process makes a pseudo-terminal (pty(7)): Bochs gets the slave
// side, /dev/pts/N, as COM1; this process copies its own terminal to the
// master side and back, which also lets it find hostinit's exit marker in
// the output and offer QEMU's Ctrl-A x to quit.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// openPTY opens a new pseudo-terminal: the master, and the slave opened too
// (a master whose slave no process holds open reads EIO), in raw mode so
// that the bytes pass unchanged.
func openPTY() (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	// unlockpt(3) and ptsname(3), as ioctls.
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlocking the pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("naming the pty: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, fmt.Errorf("pty raw mode: %w", err)
	}
	return master, slave, nil
}

// ctrlA starts QEMU's escape sequences; Ctrl-A x quits, as under QEMU.
const ctrlA = 0x01

// runBochsInteractive runs Bochs once with COM1 on a pty connected to this
// process's standard input and output.
func runBochsInteractive(ctx context.Context, dir string, k *Kernel, initrd string, spec Spec) (*Result, error) {
	master, slave, err := openPTY()
	if err != nil {
		return nil, err
	}
	defer master.Close()
	defer slave.Close()
	m, err := bochsMachine(ctx, dir, k, initrd, spec, "term", slave.Name())
	if err != nil {
		return nil, err
	}
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		if old, err := term.MakeRaw(fd); err == nil {
			defer func() { _ = term.Restore(fd, old) }()
		}
	}
	var chatter lockedBuffer
	cmd := exec.CommandContext(ctx, m.path, m.args...)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = &chatter, &chatter
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", m.path, err)
	}
	scan := &markerScanner{w: os.Stdout}
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(scan, master)
		close(copied)
	}()
	go forwardKeys(os.Stdin, master, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	waitErr := cmd.Wait()
	// The output still in the pty: the master reads EIO once the slave
	// is closed by all, so close ours and give the copy a moment.
	slave.Close()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	res := &Result{Attempts: 1, Duration: time.Since(start), Output: scan.tail.String()}
	code, ok := exitCodeFromOutput(strings.ReplaceAll(res.Output, "\r", ""))
	if !ok {
		if waitErr != nil && ctx.Err() == nil {
			return res, fmt.Errorf("emulated Intel host stopped without reporting an exit code (%s: %v); its log:\n%s", m.name(), waitErr, tail(chatter.String(), 1500))
		}
		return res, errors.New("emulated Intel host stopped without reporting an exit code")
	}
	res.ExitCode = code
	return res, nil
}

// forwardKeys copies keystrokes from in to the console, except Ctrl-A x,
// which calls quit; Ctrl-A Ctrl-A sends one Ctrl-A.
func forwardKeys(in io.Reader, console io.Writer, quit func()) {
	buf := make([]byte, 256)
	escaped := false
	for {
		n, err := in.Read(buf)
		out := make([]byte, 0, n)
		for _, b := range buf[:n] {
			switch {
			case escaped && (b == 'x' || b == 'X'):
				if len(out) > 0 {
					_, _ = console.Write(out) // what was typed before it
				}
				quit()
				return
			case escaped:
				escaped = false
				out = append(out, b)
			case b == ctrlA:
				escaped = true
			default:
				out = append(out, b)
			}
		}
		if len(out) > 0 {
			if _, werr := console.Write(out); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
