package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"kvmlab/guest/runexec"
)

// runExec is uinit's half of `kvmlab run --exec CMD` (the contract is
// package guest/runexec): decode CMD from the kernel command line, run it
// with u-root's shell, copy its standard output to COM2 and its standard
// error to COM4, wait until both UARTs have sent everything, and report the
// shell's exit status through the exit-status port, which ends the
// machine. It does not return.
func runExec(cmdline string) {
	console := os.Stdout
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		console = c
	}
	stdout := openChannel(runexec.StdoutTTY, console)
	stderr := openChannel(runexec.StderrTTY, console)
	var status int
	if cmd, _, err := runexec.Decode(cmdline); err != nil {
		fmt.Fprintf(stderr, "kvmlab uinit: %v\n", err)
		status = runexec.StatusFailed
	} else {
		status = runCommand(cmd, stdout, stderr)
	}
	for _, f := range []*os.File{stdout, stderr, console} {
		drainConsole(f)
	}
	unix.Sync()
	err := reportStatus(status)
	// Still running: there is no exit-status port (not kvmlab --exec), or
	// /dev/port is missing. kvmlab then sees a power-off without a status.
	fmt.Fprintf(console, "kvmlab uinit: could not report exit status %d through port %#x (%v): powering off\n", status, runexec.StatusPort, err)
	drainConsole(console)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// openChannel opens one of the UARTs that carry CMD's output, in raw mode:
// without it the tty's output processing would turn every "\n" into "\r\n"
// (termios OPOST|ONLCR) and CMD's bytes would not arrive as written. A
// kernel without the port gets the console instead, so the output is not
// lost, only mixed with the kernel's.
func openChannel(path string, console *os.File) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		fmt.Fprintf(console, "kvmlab uinit: %v: using the console\n", err)
		return console
	}
	if _, err := term.MakeRaw(int(f.Fd())); err != nil {
		fmt.Fprintf(console, "kvmlab uinit: %s: raw mode: %v\n", path, err)
	}
	return f
}

// pipeDelay bounds how long runCommand waits, after the shell has exited,
// for programs it left in the background to close its output.
const pipeDelay = time.Second

// runCommand runs cmd with the guest's shell and returns its exit status as
// a shell reports it: the status, or 128+N for a command killed by signal
// N. The command gets /dev/null as input and pipes as output, as a CI job
// does, not the UARTs themselves: a program that sees a terminal changes
// its output (columns, colours, buffering). Go's exec copies each pipe to
// its UART as bytes arrive, so output streams while CMD runs.
func runCommand(cmd string, stdout, stderr io.Writer) int {
	c := exec.Command(runexec.Shell, "-c", cmd)
	c.Args[0] = "gosh" // u-root's busybox dispatches on argv[0]
	c.Dir = "/"
	c.Stdout = struct{ io.Writer }{stdout} // not an *os.File: Go makes a pipe
	c.Stderr = struct{ io.Writer }{stderr}
	c.WaitDelay = pipeDelay
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay):
		return 0 // the shell exited 0; a background program kept the output open
	}
	fmt.Fprintf(stderr, "kvmlab uinit: %s: %v\n", runexec.Shell, err)
	return 127
}

// reportStatus writes status to the exit-status port through /dev/port:
// a one-byte write at offset N is an OUT to port N (drivers/char/mem.c).
// Under kvmlab --exec the machine stops during the write.
func reportStatus(status int) error {
	f, err := os.OpenFile(runexec.PortDevice, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt([]byte{byte(status)}, runexec.StatusPort)
	return err
}
