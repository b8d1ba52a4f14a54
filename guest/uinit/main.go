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
// The same binary is installed as /bin/reboot, which u-root's core set lacks:
// it syncs and asks the kernel to restart, which on kvmlab ends the VMM.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
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
	if run == "" {
		supervise()
	}
	argv := strings.Split(run, ",")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "kvmlab uinit: %s: %v\n", run, err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
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
