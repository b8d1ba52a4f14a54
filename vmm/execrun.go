package vmm

// The host's side of `kvmlab run --exec` before and after the machine runs
// (exec.go has the devices while it runs): the command put on the kernel
// command line, and the exit status made of how the run ended.

import (
	"io"
	"strings"

	"kvmlab/guest/runexec"
	"kvmlab/internal/cli"
	"kvmlab/vmm/boot"
)

// SetExec makes c an exec run of the shell command cmd (package
// guest/runexec encodes it): cmd goes on the kernel command line after
// base, the console is discarded (the console watch keeps its tail), the
// guest reads no input, and cmd's output goes to stdout and stderr. The
// whole line must fit the kernel's own limit (the setup header's
// cmdline_size), checked here so that a line too long is one line of bad
// input (a cli.UsageError), not a failed boot.
func (c *Config) SetExec(cmd, base string, stdout, stderr io.Writer) error {
	param, err := runexec.Encode(cmd)
	if err != nil {
		return cli.Usagef("--exec: %v", err)
	}
	line := strings.TrimSpace(base + " " + param)
	limit := boot.ELFCmdlineSize
	if img, err := boot.Parse(c.Kernel); err == nil && img.Format == boot.FormatBzImage {
		limit = int(img.Setup.CmdlineSize)
	}
	if len(line) > limit {
		return cli.Usagef("--exec: the kernel command line would be %d bytes (CMD takes %d of them, encoded), and this kernel takes at most %d: shorten CMD or --append", len(line), len(param), limit)
	}
	c.Cmdline = line
	c.Console = io.Discard
	c.Input = nil
	c.Exec = &ExecConfig{Stdout: stdout, Stderr: stderr}
	return nil
}

// ExecStatus maps how an exec run (Config.Exec) ended to the status
// `kvmlab run --exec` exits with (package guest/runexec numbers them), and
// a line saying why when it is not the command's own: the command's status
// only when the guest reported one at the exit port.
func (o Outcome) ExecStatus() (code int, why string) {
	switch o.Reason {
	case StopExit:
		return o.Status, ""
	case StopTimeout:
		return runexec.StatusTimeout, "--timeout: " + o.Detail + ", before CMD finished"
	case StopGuestPanic:
		return runexec.StatusPanic, o.Detail
	case StopReboot, StopTripleFault:
		return runexec.StatusPanic, "the guest kernel reset before CMD finished (" + o.Detail + "; panic=-1 turns a panic into a reset)"
	case StopPoweroff:
		return runexec.StatusFailed, "the guest powered off without reporting CMD's status (" + o.Detail + "; is the initramfs kvmlab's?)"
	}
	if o.Detail == "" {
		return runexec.StatusFailed, "the machine stopped: " + o.Reason.String()
	}
	return runexec.StatusFailed, o.Detail
}

// ConsoleTail returns the last n lines of the console the exec run's
// watch kept (Outcome.Console), without carriage returns.
func (o Outcome) ConsoleTail(n int) string {
	s := strings.TrimRight(strings.ReplaceAll(o.Console, "\r", ""), "\n")
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
