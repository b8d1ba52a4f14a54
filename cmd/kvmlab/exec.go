package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"kvmlab/emuhost"
	"kvmlab/guest/runexec"
	"kvmlab/vmm"
)

// execUsage is the part of `kvmlab run --help` about --exec: what it does
// and what kvmlab's exit status then means (package guest/runexec holds the
// numbers and the guest's half).
var execUsage = fmt.Sprintf(`With --exec CMD the guest (kvmlab's initramfs, with any kernel) runs CMD once
with its shell, and the machine stops when CMD ends. CMD's standard output and
standard error stream to kvmlab's as it writes them; the kernel's console is
kept off both (its last lines are shown if the run fails); CMD reads
/dev/null. kvmlab then exits with:
  0-255  CMD's exit status (127: not found in the guest; 128+N: killed by signal N)
  %d      bad input, refused before the guest starts (one line on stderr)
  %d    the guest kernel panicked or reset before CMD finished
  %d    --timeout expired
  %d    kvmlab or the machine failed, or the guest stopped without a status
Without --append the kernel command line is the default one plus quiet.
Files go in and out on a --disk image (docs/ci.md). With --emulated-host the
guest runs inside the emulated host: the same streams and statuses, slower
(--timeout counts the emulated host's boot too).

`, runexec.StatusUsage, runexec.StatusPanic, runexec.StatusTimeout, runexec.StatusFailed)

// execFlags are --exec and --timeout.
type execFlags struct {
	cmd     string
	set     bool // --exec given, even as --exec ''
	timeout string
	limit   time.Duration // --timeout parsed; 0: none
	start   time.Time     // when the flags were checked: --timeout counts from here
	// appendSet: --append was given; otherwise the default line and
	// quiet (apply), in the emulated host too.
	appendSet bool
}

func (e *execFlags) register(fs *flag.FlagSet) {
	fs.Func("exec", fmt.Sprintf("run the shell command `CMD` in the guest, stream its output, and exit with its status (see above; at most %d bytes)", runexec.MaxCommand), func(s string) error {
		e.cmd, e.set = s, true
		return nil
	})
	fs.StringVar(&e.timeout, "timeout", "", "with --exec: stop the run after `DURATION`, boot included, and exit with status 124 (a Go duration: 90s, 5m; a bare number is seconds)")
}

// check refuses bad --exec and --timeout input in one line, before any
// work (nothing has been read yet).
func (e *execFlags) check(f *runFlags) error {
	e.start = time.Now()
	if e.timeout != "" {
		d, err := parseTimeout(e.timeout)
		if err != nil {
			return err
		}
		if !e.set {
			return usagef("--timeout %s bounds an --exec run: add --exec CMD, or leave --timeout out", e.timeout)
		}
		e.limit = d
	}
	if !e.set {
		return nil
	}
	if _, err := runexec.Encode(e.cmd); err != nil {
		switch {
		case errors.Is(err, runexec.ErrEmpty):
			return usagef("--exec %q: empty command: give the shell command to run in the guest, e.g. --exec 'uname -a'", e.cmd)
		case errors.Is(err, runexec.ErrTooLong):
			return usagef("--exec: %v: put a longer script in a file on a --disk image and run that", err)
		}
		return usagef("--exec: %v: remove it", err)
	}
	switch {
	case f.restore != "":
		return usagef("--exec with --restore: a restored machine is already running its own programs: boot a kernel for --exec")
	case f.control != "":
		return usagef("--exec with --control: an --exec run is not managed through a socket: leave --control out")
	}
	return nil
}

// parseTimeout reads a --timeout: a Go duration, or a number of seconds.
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, nerr := strconv.ParseFloat(s, 64)
		if nerr != nil || secs != secs { // NaN
			return 0, usagef("--timeout %q: not a duration: use e.g. --timeout 90s or --timeout 5m", s)
		}
		if secs > float64(1<<63-1)/float64(time.Second) {
			return 0, usagef("--timeout %q: too long: use at most a few hours, e.g. --timeout 2h", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return 0, usagef("--timeout %s: must be more than zero: use e.g. --timeout 90s, or leave it out for no limit", s)
	}
	return d, nil
}

// apply puts CMD on the kernel command line and adds the exec devices
// (vmm.Config.SetExec): without --append, the default line with quiet (the
// kernel's messages only slow the boot down: nobody reads them).
func (e *execFlags) apply(cfg *vmm.Config, fset *flag.FlagSet) error {
	base := cfg.Cmdline
	fset.Visit(func(fl *flag.Flag) { e.appendSet = e.appendSet || fl.Name == "append" })
	if !e.appendSet {
		base = DefaultCmdline + " quiet"
	}
	return asUsage(cfg.SetExec(e.cmd, base, os.Stdout, os.Stderr))
}

// run boots the machine, waits for CMD's status (or a panic, or the
// timeout) and maps the outcome to kvmlab's exit status.
func (e *execFlags) run(cfg vmm.Config, f *runFlags, obs *observation) error {
	cfg.Log = os.Stderr
	m, err := vmm.New(cfg)
	if err != nil {
		obs.Abort()
		return kvmError(err)
	}
	defer m.Close()
	obs.Start(m)
	if err := confine(f, io.Discard, nil, int(os.Stdin.Fd())); err != nil {
		return err
	}
	if e.limit > 0 {
		// From the start of the run, boot included: the deadline may
		// have passed already (a fire at once stops Run at once).
		t := time.AfterFunc(time.Until(e.start.Add(e.limit)), func() { m.StopTimeout(e.limit) })
		defer t.Stop()
	}
	out := m.Run()
	if err := obs.Finish(m, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "kvmlab: trace: %v\n", err)
	}
	code, why := out.ExecStatus()
	if why != "" {
		fmt.Fprintf(os.Stderr, "kvmlab: %s (exit status %d)\n", why, code)
		if tail := out.ConsoleTail(30); tail != "" {
			fmt.Fprintf(os.Stderr, "kvmlab: the guest console's last lines:\n%s\n", tail)
		}
		if out.Dump != "" {
			fmt.Fprintln(os.Stderr, out.Dump)
		}
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// runEmulated runs the --exec run r inside the emulated host (package
// emuhost, exec.go): CMD's output streams out through two serial ports of
// the host, and the inner kvmlab's status becomes this one's.
func (e *execFlags) runEmulated(r emuhost.KVMLabRun, emu emuhost.Emulator) error {
	r.DefaultAppend = !e.appendSet
	code := emuhost.Exec(context.Background(), emuhost.ExecRun{Run: r, Emulator: emu, Cmd: e.cmd, Limit: e.limit, Start: e.start,
		Stdout: os.Stdout, Stderr: os.Stderr})
	if code != 0 {
		return exitError{code}
	}
	return nil
}
