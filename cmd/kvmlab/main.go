// Command kvmlab is an educational hypervisor: it boots a Linux guest on its
// own kernel through /dev/kvm, and lets a learner watch how that works.
//
//	kvmlab run    [flags]   boot a guest with an interactive serial console
//	kvmlab check            can this host run guests? what is missing?
//
// The command is thin: it parses flags, turns bad input into one clear line
// and a non-zero exit status, and calls the vmm package.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"

	"kvmlab/container"
)

// usageError is bad user input: one line, exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// exitError carries an exit status chosen by a subcommand.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const topUsage = `kvmlab: an educational hypervisor

Usage:
  kvmlab run   [flags]   boot a Linux guest (default: the kvmlab guest) with a serial console
  kvmlab step  [flags]   boot a guest and stop at every VM exit: registers, code, explanations
  kvmlab stat  TRACE     exit statistics from a trace written by run --trace
  kvmlab check           tell whether this host can run guests, and what to do if not
  kvmlab container [flags] -- CMD   run CMD in a container with the guest's userland, on this kernel
  kvmlab bench [flags]   boot the same guest under kvmlab, QEMU (q35, microvm) and gokvm; compare
  kvmlab compare [flags] the same userland as a VM and as a container, measured side by side
  kvmlab help COMMAND    show a command's flags

Run 'kvmlab run --help' for the flags of run.
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		// Once, before anything is allocated: a Go heap without
		// transparent huge pages (see trim.go). Here, not in realMain,
		// so that tests calling realMain stay in their process.
		reexecWithoutHeapTHP()
		// No heap profile is ever written by kvmlab run, so no
		// allocation needs sampling: each sample unwinds the stack
		// through the runtime's function tables, which the image trim has
		// just dropped (see trim.go). Set as early as main can.
		runtime.MemProfileRate = 0
	}
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, topUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:])
	case "check":
		err = cmdCheck(args[1:])
	case "step":
		err = cmdStep(args[1:])
	case "stat":
		err = cmdStat(args[1:])
	case "container":
		err = cmdContainer(args[1:])
	case container.InitCommand:
		// Hidden: kvmlab re-run by the container runtime as a
		// container's init (see package container).
		return container.Init()
	case "bench":
		err = cmdBench(args[1:])
	case "compare":
		err = cmdCompare(args[1:])
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return realMain([]string{args[1], "--help"})
		}
		fmt.Print(topUsage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "kvmlab: unknown command %q: run 'kvmlab help' for the list\n", args[0])
		return 2
	}
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "kvmlab: %s\n", ue.msg)
		return 2
	}
	fmt.Fprintf(os.Stderr, "kvmlab: %v\n", err)
	return 1
}

// parseFlags parses a subcommand's flags. help is true when the user asked
// for --help (already printed). Stray arguments are an error unless
// positional is set.
func parseFlags(fset *flag.FlagSet, args []string, positional bool) (help bool, err error) {
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, exitError{2}
	}
	if !positional && fset.NArg() > 0 {
		return false, usagef("%s: unexpected argument %q: flags start with --, e.g. --kernel PATH", fset.Name(), fset.Arg(0))
	}
	return false, nil
}
