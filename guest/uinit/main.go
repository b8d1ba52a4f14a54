// Command uinit is the kvmlab guest's first user program. u-root's init runs
// /bin/uinit (if present) before it starts the shell.
//
// With `kvmlab.run=CMD` on the kernel command line (commas stand for spaces:
// `kvmlab.run=echo,hello`), uinit runs CMD and then powers the machine off, so
// a test or benchmark can boot, run one command and stop without typing at a
// shell.
//
// Without it, uinit is the console's supervisor: it runs the shell and starts
// a new one whenever the shell exits (after `exit`, or a syntax error, which
// ends u-root's simple gosh). Why not just return and let init start the
// shell: init starts uinit as a session leader with the console as its
// controlling terminal, and when a session leader exits the kernel hangs up
// its terminal (disassociate_ctty), after which every open file of that
// terminal reads end-of-file, including the descriptor init would hand to the
// next shell. Staying alive keeps the session, and the console, usable.
//
// The same binary has other names, each a symlink to /bin/uinit in the
// guest image (guest/build.sh), and it picks what to be from argv[0]. It is
// /bin/reboot, which u-root's core set lacks:
// it syncs and asks the kernel to restart, which on kvmlab ends the VMM.
//
// It is also /bin/kvmlab-console, the guest half of `kvmlab bench`'s console
// figure: `kvmlab-console N` prints a start marker, N bytes of text and an
// end marker, so the host can time the bytes between the markers as they
// come out of the VMM's serial port, for kvmlab and its peers alike.
//
// And it is /bin/kvmlab-probe, the isolation probe (package guest/probe):
// it prints what it can see of the machine as one JSON line, the same
// binary in a VM and in a container, for `kvmlab compare`.
//
// And /bin/kvmlab-io, the guest half of `kvmlab bench --io` (package
// guest/iobench): sequential and random disk requests on /dev/vda and a TCP
// stream to the host, between markers.
//
// And /bin/kvmlab-hostile (package guest/hostile): a driver that attacks
// a virtio device the way a hostile guest would, for tests/hostile_test.go.
//
// With `kvmlab.exec=ENCODED` (what `kvmlab run --exec CMD` adds), uinit
// runs CMD with the shell, its output on COM2 and COM4, and reports its exit
// status to the VMM through the exit-status port (exec.go; the contract is
// package guest/runexec).
//
// `kvmlab.run=kvmlab-crash` panics the guest kernel on purpose through sysrq
// (the blast-radius row of `kvmlab compare`). It is not a program in PATH,
// only a word uinit itself understands on the kernel command line, and it
// refuses to act unless the CPU says it is a virtual machine.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/guest/hostile"
	"kvmlab/guest/iobench"
	"kvmlab/guest/probe"
	"kvmlab/guest/runexec"
)

func main() {
	if filepath.Base(os.Args[0]) == probe.Name {
		os.Exit(probe.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	if filepath.Base(os.Args[0]) == iobench.Name {
		os.Exit(iobench.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	if filepath.Base(os.Args[0]) == hostile.Name {
		os.Exit(hostile.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	if filepath.Base(os.Args[0]) == "kvmlab-console" {
		os.Exit(consoleBench(os.Args[1:]))
	}
	if filepath.Base(os.Args[0]) == "reboot" {
		unix.Sync()
		err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		fmt.Fprintf(os.Stderr, "reboot: %v\n", err)
		os.Exit(1)
	}
	b, _ := os.ReadFile("/proc/cmdline")
	var run string
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "kvmlab.run="); ok {
			run = v
		}
	}
	if strings.Contains(string(b), runexec.Param+"=") {
		runExec(string(b)) // kvmlab run --exec (exec.go)
	}
	if run == "" {
		supervise()
	}
	if run == "kvmlab-crash" {
		crashGuest()
	}
	// u-root's init hands uinit a pipe as standard output (it copies
	// it to the console itself), so output still in that pipe is lost
	// when the machine powers off. The command writes to the console
	// device directly instead, which can be drained before powering off.
	out := os.Stdout
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		out = c
	}
	argv := strings.Split(run, ",")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, out, out
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(out, "kvmlab uinit: %s: %v\n", run, err)
	}
	drainConsole(out)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// drainConsole waits until the serial port has sent everything written to
// the console (tcdrain: TCSBRK with a non-zero argument). Writes to a tty
// only fill the kernel's buffer, which the UART empties at its own pace;
// powering off without waiting cuts the guest's last lines off.
func drainConsole(f *os.File) {
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}

// supervise runs the shell forever. The shell shares uinit's process group,
// so Ctrl-C reaches both: uinit catches SIGINT and SIGQUIT (a caught signal,
// unlike an ignored one, is reset to the default in the child at exec).
func supervise() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGQUIT)
	for {
		start := time.Now()
		cmd := exec.Command("/bin/defaultsh")
		cmd.Args[0] = "gosh" // u-root's busybox dispatches on argv[0]
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		err := cmd.Run()
		if err != nil {
			fmt.Fprintf(os.Stderr, "kvmlab uinit: shell: %v; starting a new one\n", err)
		}
		if time.Since(start) < time.Second {
			// Don't spin if the shell cannot start at all.
			time.Sleep(time.Second)
		}
	}
}

// consoleBench writes n bytes of printable text to standard output (the
// serial console), in 64-byte lines, between two marker lines. Markers are
// what the host waits for: "KVMLAB-BENCH userspace" first (the first line
// kvmlab's code prints in user space), then "console-start" and
// "console-end". After the end marker it waits a moment before returning, so
// the host can read the VMM's memory figures while the guest is still up
// (after draining the console: the markers must have left the UART);
// "KVMLAB-BENCH poweroff" then marks the start of the power-off.
func consoleBench(args []string) int {
	n := 64 << 10
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 0 {
			fmt.Fprintf(os.Stderr, "kvmlab-console: %q is not a byte count\n", args[0])
			return 2
		}
		n = v
	}
	var sink io.Writer = os.Stdout
	kmsg := consoleViaKmsg()
	if kmsg {
		f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kvmlab-console: kvmlab.console=kmsg: %v\n", err)
			return 1
		}
		defer f.Close()
		sink = &kmsgWriter{w: f}
	}
	w := bufio.NewWriterSize(sink, 4096)

	fmt.Fprintln(w, "KVMLAB-BENCH userspace")
	fmt.Fprintln(w, "KVMLAB-BENCH console-start")
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n")
	for n > 0 {
		k := min(n, len(line))
		if k < len(line) {
			// A short last line still ends the line.
			_, _ = w.Write(line[len(line)-k:])
		} else {
			_, _ = w.Write(line)
		}
		n -= k
	}
	// Through the tty, a marker has left the guest only once the UART
	// has sent it; a /dev/kmsg line sits in no tty buffer, so has nothing
	// to drain.
	flush := func() {
		_ = w.Flush()
		if !kmsg {
			drainConsole(os.Stdout)
		}
	}
	fmt.Fprintln(w, "KVMLAB-BENCH console-end")
	flush()
	time.Sleep(300 * time.Millisecond)
	fmt.Fprintln(w, "KVMLAB-BENCH poweroff")
	flush()
	return 0
}

// consoleViaKmsg says whether the command line asks kvmlab-console to write
// through the kernel's log (kvmlab.console=kmsg) instead of the tty.
//
// Why a second path: a tty write only fills the tty's buffer; the 8250
// driver sends 16 bytes and then waits for the UART's "transmitter empty"
// interrupt (IIR THRE, 16550 datasheet) before it sends more. A VMM whose
// UART never raises that interrupt (gokvm's) shows no user-space output at
// all. The kernel's console, by contrast, polls the line status register
// and writes each character itself (serial8250_console_write), so a line
// written to /dev/kmsg reaches the port with no interrupt involved. The
// bench uses it to get figures from such a VMM, and can use it for every VMM
// to compare them on the same path. Each line then carries printk's
// timestamp, and the console driver polls the line status register before
// each burst: a FIFO's worth of characters on a 16550A, one character on a
// UART without a FIFO.
func consoleViaKmsg() bool {
	b, _ := os.ReadFile("/proc/cmdline")
	return slices.Contains(strings.Fields(string(b)), "kvmlab.console=kmsg")
}

// kmsgWriter writes whole lines to /dev/kmsg, one record per line, at
// level 3 (KERN_ERR) so that "quiet" (console_loglevel 4) still prints
// them. A partial line waits for its newline. The kernel rate-limits
// /dev/kmsg writers unless the command line says printk.devkmsg=on, which
// the bench adds with kvmlab.console=kmsg.
type kmsgWriter struct {
	w       io.Writer
	partial []byte
}

func (k *kmsgWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			k.partial = append(k.partial, p...)
			break
		}
		rec := append(append([]byte("<3>"), k.partial...), p[:i+1]...)
		k.partial = k.partial[:0]
		p = p[i+1:]
		if _, err := k.w.Write(rec); err != nil {
			return n - len(p), err
		}
	}
	return n, nil
}

// crashGuest writes 'c' to /proc/sysrq-trigger: the kernel dereferences a
// NULL pointer on purpose and panics. With panic=-1 on the command line the
// guest then resets, which ends the VMM; the host carries on. Guard: only
// where /proc/cpuinfo shows the hypervisor flag, i.e. inside a VM.
func crashGuest() {
	b, _ := os.ReadFile("/proc/cpuinfo")
	if !strings.Contains(" "+string(b)+" ", " hypervisor ") {
		fmt.Fprintln(os.Stderr, "kvmlab-crash: no hypervisor flag in /proc/cpuinfo: not a VM, refusing to crash this kernel")
		return
	}
	unix.Sync()
	f, err := os.OpenFile("/proc/sysrq-trigger", os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvmlab-crash: %v\n", err)
		return
	}
	fmt.Fprintln(os.Stderr, "kvmlab-crash: writing c to /proc/sysrq-trigger")
	drainConsole(os.Stderr)
	_, err = f.Write([]byte("c"))
	fmt.Fprintf(os.Stderr, "kvmlab-crash: still running after sysrq c: %v\n", err)
}
