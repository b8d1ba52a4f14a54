// Command uinit is the kvmlab guest's optional first user program. u-root's
// init runs /bin/uinit (if present) before it starts the shell.
//
// With `kvmlab.run=CMD` on the kernel command line (commas stand for spaces:
// `kvmlab.run=echo,hello`), uinit runs CMD and then powers the machine off, so
// a test or benchmark can boot, run one command and stop without typing at a
// shell. Without it, uinit does nothing and the shell starts as usual.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return
	}
	var run string
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "kvmlab.run="); ok {
			run = v
		}
	}
	if run == "" {
		return
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
