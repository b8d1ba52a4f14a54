package tests

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a new pseudo-terminal pair (pty(7)): what a terminal
// emulator gives a shell.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	if _, err := os.Stat("/dev/pts/ptmx"); err != nil {
		// The emulated host mounts no devpts; we are root there.
		_ = os.MkdirAll("/dev/pts", 0o755)
		if err := unix.Mount("devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666"); err != nil {
			t.Fatalf("mount devpts: %v", err)
		}
	}
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pts: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestInteractiveTerminal runs kvmlab on a real (pseudo) terminal, as a
// person would: the terminal goes to raw mode, typed keys reach the guest
// shell, Ctrl-A x quits with status 0, and the terminal's settings are
// restored afterwards.
func TestInteractiveTerminal(t *testing.T) {
	master, slave := openPTY(t)
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ICANON == 0 {
		t.Fatal("a new pty should start in canonical mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout+2*time.Minute)
	g := &guestConsole{t: t, done: make(chan struct{}), start: time.Now(), cancel: cancel}
	g.cmd = exec.CommandContext(ctx, kvmlabBin(t), "run", "--kernel", guestFile(t, "bzImage"),
		"--initrd", guestFile(t, "initramfs.cpio"), "--mem", "256M", "--append", quietCmdline)
	g.cmd.Stdin, g.cmd.Stdout = slave, slave
	g.cmd.Stderr = lockedWriter{&g.mu, &g.errb, nil, nil, nil}
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	g.stdin = master
	go func() { _, _ = io.Copy(lockedWriter{&g.mu, &g.out, nil, &g.last, &g.first}, master) }()
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.err = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		cancel()
		<-g.done
		if t.Failed() {
			t.Logf("console:\n%s\nstderr:\n%s", tailStr(g.output(), 3000), g.stderr())
		}
	})

	// kvmlab switched the terminal to raw mode while it runs.
	deadline := time.Now().Add(30 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err == nil && tio.Lflag&(unix.ICANON|unix.ECHO) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kvmlab did not put the terminal in raw mode")
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.waitShell(bootTimeout)
	if v := g.value("PTY", "echo $((2+3))", cmdTimeout); v != "5" {
		t.Errorf("guest shell answered %q, want 5", v)
	}
	// Ctrl-A x: quit, as in QEMU.
	g.send("\x01x")
	if code := g.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d after Ctrl-A x, want 0", code)
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Errorf("terminal not restored: lflag %#x->%#x iflag %#x->%#x oflag %#x->%#x",
			before.Lflag, after.Lflag, before.Iflag, after.Iflag, before.Oflag, after.Oflag)
	}
	if !regexp.MustCompile(`Ctrl-A x`).MatchString(g.stderr()) {
		t.Errorf("kvmlab did not say how it stopped: %q", g.stderr())
	}
}
