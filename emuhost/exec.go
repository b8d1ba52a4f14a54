package emuhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"kvmlab/guest/runexec"
)

// This file is `kvmlab run --exec CMD --emulated-host`: the inner kvmlab,
// inside the emulated host, boots the guest and runs CMD in it (its own
// --exec, package guest/runexec), and what it prints and its exit status
// cross one more machine boundary to the outer kvmlab:
//
//	outer kvmlab ── QEMU (TCG) or Bochs ──────── emulated host ───────────── guest
//	  stdout  <── pipe <── COM2 /dev/ttyS1 <── inner kvmlab's stdout <── COM2, CMD's stdout
//	  stderr  <── pipe <── COM3 /dev/ttyS2 <── inner kvmlab's stderr <── COM4, CMD's stderr
//	  (kept)  <── stdout <── COM1 console:  host kernel, hostinit, "KVMLAB-HOST-EXIT <status>"
//
// Each stream has a serial port of its own in the host as in the guest, so
// nothing the host's kernel or hostinit prints can reach CMD's standard
// output, and the status travels on the console, apart from anything CMD
// prints (Spec.Stdout).

// ExecRun is one `kvmlab run --exec` to repeat inside the emulated host.
type ExecRun struct {
	// Run is the inner kvmlab run: binary, kernel, initramfs, flags.
	Run KVMLabRun
	// Emulator is the emulated host's: QEMUSVM ("": the default) or
	// BochsVMX. Both wire COM2 and COM3 to pipes of their own.
	Emulator Emulator
	// Cmd is the command for the guest's shell (--exec), already checked
	// by the caller.
	Cmd string
	// Limit is --timeout (0: none), counted from Start: the emulated
	// host's boot, and building it, count too, as the guest's boot does.
	Limit time.Duration
	Start time.Time
	// Stdout and Stderr receive CMD's standard output and standard
	// error; Stderr also receives kvmlab's own lines (why the run failed).
	Stdout, Stderr io.Writer
}

// Spec is the emulated host that runs e, and its console is kept in out:
// not interactive, with CMD's streams on their own serial ports. Each attempt
// may last until the deadline, or without one as long as CMD runs: a host
// that stops answering is noticed by --timeout, as a guest that does.
func (e ExecRun) Spec(out io.Writer) Spec {
	emu := e.Emulator
	if emu == "" {
		emu = QEMUSVM
	}
	s := e.Run.Spec(emu, out)
	s.Argv = append(s.Argv, "--exec", e.Cmd)
	s.Interactive = false
	s.Stdout, s.Stderr = e.Stdout, e.Stderr
	s.Timeout = 1 << 62 // no limit of its own: the context's deadline is --timeout
	if e.Limit > 0 {
		s.Timeout = max(time.Until(e.Start.Add(e.Limit)), time.Millisecond)
	}
	return s
}

// Exec runs e in the emulated host and returns kvmlab's exit status: CMD's
// own, or those of package guest/runexec when the guest panicked (123),
// --timeout expired (124) or kvmlab failed (125), the emulated host
// included. A line on e.Stderr says why whenever the status is not CMD's.
func Exec(ctx context.Context, e ExecRun) int {
	if e.Limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, e.Start.Add(e.Limit))
		defer cancel()
	}
	console := &execConsole{stderr: e.Stderr}
	res, err := Run(ctx, e.Spec(console))
	code, why := execStatus(res, err, ctx.Err(), e.Limit)
	if why != "" {
		fmt.Fprintf(e.Stderr, "kvmlab: %s (exit status %d)\n", why, code)
	}
	return code
}

// execStatus maps how the emulated host's run ended to kvmlab's exit status
// and, when the status is not the inner kvmlab's own, a line saying why.
// ctxErr is the context's error after Run.
func execStatus(res *Result, err, ctxErr error, limit time.Duration) (code int, why string) {
	output := ""
	if res != nil {
		output = strings.ReplaceAll(res.Output, "\r", "")
	}
	started := strings.Contains(output, hostinitPrefix+"running ")
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded):
		where := "the emulated host was still starting (its boot counts)"
		if started {
			where = "the guest was booting or running CMD in the emulated host"
		}
		return runexec.StatusTimeout, fmt.Sprintf("--timeout: %s passed before CMD finished: %s", limit, where)
	case errors.Is(err, ErrHostFlake):
		// Loud: this is the emulator failing (a known flake), not
		// CMD, the guest or kvmlab; a CI job reading only the status
		// would take it for one of them.
		return runexec.StatusFailed, "\n" + strings.Repeat("!", 78) + "\n" +
			"kvmlab: THE EMULATED HOST FAILED: a known flake of the emulator (QEMU's software SVM),\n" +
			"kvmlab: not a failure of CMD, of the guest or of kvmlab: run the job again.\n" +
			"kvmlab: " + firstLine(err.Error()) + "\n" +
			"kvmlab: the emulated host's console, last lines:\n" + indent(tail(output, 1500)) +
			strings.Repeat("!", 78) + "\nkvmlab: the emulated host failed"
	case err != nil:
		return runexec.StatusFailed, "the emulated host failed: " + err.Error()
	}
	for _, l := range strings.Split(output, "\n") {
		if rest, ok := strings.CutPrefix(l, hostinitPrefix+"FAILED: "); ok {
			return runexec.StatusFailed, "the emulated host failed: " + rest
		}
		if rest, ok := strings.CutPrefix(l, hostinitPrefix+"command killed by "); ok {
			return runexec.StatusFailed, "kvmlab inside the emulated host was killed by " + rest
		}
	}
	return res.ExitCode, ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("kvmlab:   " + l + "\n")
	}
	return b.String()
}

// execConsole takes the emulated host's console during an --exec run: it
// stays off kvmlab's output (Run keeps it for execStatus), except for Run's
// own "harness: " lines, which say that a hung host is started again, and
// go to standard error so that the wait is explained.
type execConsole struct {
	mu     sync.Mutex
	stderr io.Writer
}

func (c *execConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range bytes.SplitAfter(p, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("harness: ")); ok {
			_, _ = fmt.Fprintf(c.stderr, "kvmlab: %s", rest)
		}
	}
	return len(p), nil
}
