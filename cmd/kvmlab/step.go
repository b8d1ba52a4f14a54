package main

import (
	"flag"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"kvmlab/guest"
	"kvmlab/internal/hostcheck"
	"kvmlab/internal/rawterm"
	"kvmlab/vmm"
	"kvmlab/vmm/inspect"
	"kvmlab/vmm/stepper"
)

// cmdStep is kvmlab step: the flags of run, plus where the commands and
// the symbols come from; package vmm/stepper does the stepping.
func cmdStep(args []string) error {
	fset := flag.NewFlagSet("step", flag.ContinueOnError)
	var f runFlags
	f.register(fset)
	script := fset.String("script", "", "read stepper commands from this file instead of standard input")
	quizMode := fset.Bool("quiz", false, "before every exit, ask which exit comes next (KVM reason and VT-x/SVM reason) and score the answers; works with --script")
	symbols := fset.String("symbols", "", "kernel symbols for break and code: a System.map or an ELF vmlinux (default: the kvmlab guest's System.map with the default kernel)")
	setUsage(fset, "Usage: kvmlab step [flags]\n\nBoot a guest and stop at every VM exit that reaches kvmlab, before the vCPU resumes.\nThe guest's console output is shown at each stop, marked [console].\n\n"+stepper.Help+"\n\nFlags:\n")
	if help, err := parseFlags(fset, args, false); help || err != nil {
		return err
	}
	cfg, err := f.loadConfig()
	if err != nil {
		return err
	}
	symPath := *symbols
	if symPath == "" && f.kernel == "" {
		k, _ := guest.Default()
		symPath = strings.TrimSuffix(k, "bzImage") + "System.map"
		if _, err := os.Stat(symPath); err != nil {
			symPath = ""
		}
	}
	var sym *inspect.Symbols
	if symPath != "" {
		if sym, err = inspect.LoadSymbolFile(symPath, vmm.MaxKernelSize); err != nil {
			return usagef("--symbols %s: %v", symPath, err)
		}
	}
	// Where the commands come from: a script, a terminal (in raw mode,
	// for line editing), or whatever standard input is.
	var in stepper.LineReader
	var out io.Writer = os.Stdout
	var tty *rawterm.Term // for the seccomp handler (confine)
	switch {
	case *script != "":
		fh, err := os.Open(*script)
		if err != nil {
			return usagef("--script %s: %v", *script, err)
		}
		defer fh.Close()
		in = stepper.Lines(fh)
	case term.IsTerminal(int(os.Stdin.Fd())):
		if tty, err = rawterm.Raw(os.Stdin); err != nil {
			return err
		}
		defer tty.Restore()
		t := term.NewTerminal(struct {
			io.Reader
			io.Writer
		}{os.Stdin, os.Stdout}, "(kvmlab) ")
		in, out = t, t
	default:
		in = stepper.Lines(os.Stdin)
	}
	st := stepper.New(in, out, sym)
	if *quizMode {
		st.EnableQuiz()
	}
	st.Attach(&cfg)
	cfg.Log = os.Stderr
	if err := hostcheck.CanRunGuest(cfg.Kernel, f.anyKVM); err != nil {
		return err
	}
	m, err := vmm.New(cfg)
	if err != nil {
		return kvmError(err)
	}
	defer m.Close()
	if err := confine(&f, os.Stderr, tty.Cooked(), int(os.Stdin.Fd())); err != nil {
		return err
	}
	if !st.Run(m).Reason.Success() {
		return exitError{1}
	}
	return nil
}
