// Command kvmlab is an educational hypervisor: it boots a Linux guest on its
// own kernel through /dev/kvm, and lets a learner watch how that works.
//
//	kvmlab run    [flags]   boot a guest with an interactive serial console
//	kvmlab check            can this host run guests? what is missing?
//	kvmlab help             every command (commandTable)
//
// The command is thin: it parses flags, turns bad input into one clear line
// and a non-zero exit status, and calls the packages that do the work (vmm
// with vmm/stepper and vmm/observatory, container, compare, bench,
// emuhost). It keeps the conventions of a well-kept Go tool (package
// internal/cli): --help on standard output, one-line usage errors naming
// the flag, internal flags hidden, --version, and shell completion
// generated from the flag sets themselves.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"kvmlab/compare"
	"kvmlab/container"
	"kvmlab/internal/cli"
	"kvmlab/internal/footprint"
	"kvmlab/internal/rawterm"
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

// command is one subcommand: what it is called, what it takes and does (the
// usage and zsh's completion show both), and the function that runs it.
type command struct {
	name, args, summary string
	run                 func(args []string) error
	words               []string // what its first argument may be, for completion
}

// commandTable lists kvmlab's commands, in the order the usage shows them.
// A function rather than a variable: help and completion read the table
// from inside commands the table names.
func commandTable() []command {
	table := []command{
		{"run", "[flags]", "boot a Linux guest (default: the kvmlab guest) with a serial console", cmdRun, nil},
		{"step", "[flags]", "boot a guest and stop at every VM exit: registers, code, explanations", cmdStep, nil},
		{"stat", "TRACE", "exit statistics from a trace written by run --trace", cmdStat, nil},
		{"check", "", "tell whether this host can run guests, and what to do if not", cmdCheck, nil},
		{"container", "[flags] -- CMD", "run CMD in a container with the guest's userland, on this kernel", cmdContainer, nil},
		{"bench", "[flags]", "boot the same guest under kvmlab, QEMU (q35, microvm) and gokvm; compare", cmdBench, nil},
		{"compare", "[flags]", "the same userland as a VM and as a container, measured side by side", cmdCompare, nil},
		{"lab", "list|start N DIR|check N DIR", "guided labs: start one in a directory, and have your work graded from real exits", cmdLab, []string{"list", "start", "check"}},
		{"control", "PATH COMMAND", "pause, resume, snapshot, stats or quit the kvmlab run --control PATH", cmdControl, nil},
		{"help", "COMMAND", "show a command's flags", cmdHelp, nil},
		{"version", "", "print kvmlab's version, VCS revision and Go version", cmdVersion, nil},
		{"completion", "bash|zsh", "print a shell completion script: source <(kvmlab completion bash)", cmdCompletion, []string{"bash", "zsh"}},
	}
	for i := range table {
		if table[i].name == "help" { // help takes a command's name
			for _, c := range table {
				table[i].words = append(table[i].words, c.name)
			}
		}
	}
	return table
}

// printUsage writes the list of commands.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "kvmlab: an educational hypervisor\n\nUsage:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, c := range commandTable() {
		fmt.Fprintf(tw, "  kvmlab %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, "\nRun 'kvmlab COMMAND --help' for the flags of a command, e.g. 'kvmlab run --help'.\n")
}

// processStart is when kvmlab started, as near as Go lets a program see it
// (package initialisation): restore reports its time from here.
var processStart = time.Now()

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		// kill -USR1 asks for a snapshot, but by default it kills: until
		// the machine can answer (run.go), a request is dropped, not fatal.
		signal.Ignore(syscall.SIGUSR1)
		// Once, before anything is allocated: a Go heap without
		// transparent huge pages (see package footprint). Here, not in realMain,
		// so that tests calling realMain stay in their process.
		// Not for a restore, whose point is to be running soon: the
		// second start of the binary costs about 105 ms in the emulated
		// Intel host, a tenth of what a clone takes to answer at its
		// shell there (docs/snapshot.md), against a huge page or two
		// more in the clone's heap.
		if !restoring(os.Args[2:]) {
			footprint.ReexecWithoutHeapTHP()
		}
		// No heap profile is ever written by kvmlab run, so no
		// allocation needs sampling: each sample unwinds the stack
		// through the runtime's function tables, which the image trim has
		// just dropped (see package footprint). Set as early as main can.
		runtime.MemProfileRate = 0
	}
	code := realMain(os.Args[1:])
	// All of kvmlab's output out of a slow terminal before it goes
	// (rawterm.Drain: a session leader's exit would discard the rest).
	rawterm.Drain(os.Stdout)
	rawterm.Drain(os.Stderr)
	os.Exit(code)
}

func realMain(args []string) int {
	if len(args) == 0 {
		printUsage(os.Stderr)
		return 2
	}
	var err error
	switch name := args[0]; name {
	case container.InitCommand:
		// Hidden: kvmlab re-run by the container runtime as a
		// container's init (see package container).
		return container.Init()
	case compare.NestedGuestCommand:
		// Hidden: kvmlab carried into the guest by kvmlab compare
		// --nested, run there by the guest's uinit (compare/nested_guest.go).
		return compare.NestedGuestMain(args[1:])
	case "-h", "-help", "--help":
		err = cmdHelp(args[1:])
	case "-version", "--version":
		err = cmdVersion(args[1:])
	default:
		c, ok := lookupCommand(name)
		if !ok {
			fmt.Fprintf(os.Stderr, "kvmlab: unknown command %q: run 'kvmlab help' for the list\n", name)
			return 2
		}
		err = c.run(args[1:])
	}
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue usageError
	if errors.As(asUsage(err), &ue) {
		fmt.Fprintf(os.Stderr, "kvmlab: %s\n", ue.msg)
		return 2
	}
	fmt.Fprintf(os.Stderr, "kvmlab: %v\n", err)
	return 1
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commandTable() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// cmdHelp prints the list of commands, or with a command's name, its flags
// (kvmlab help run is kvmlab run --help).
func cmdHelp(args []string) error {
	fset := flag.NewFlagSet("help", flag.ContinueOnError)
	setUsage(fset, "Usage: kvmlab help [COMMAND]\n\nList kvmlab's commands, or show one command's flags.\n")
	if help, err := parseFlags(fset, args, true); help || err != nil {
		return err
	}
	switch fset.NArg() {
	case 0:
		printUsage(os.Stdout)
		return nil
	case 1:
		c, ok := lookupCommand(fset.Arg(0))
		if !ok {
			return usagef("help: unknown command %q: run 'kvmlab help' for the list", fset.Arg(0))
		}
		return c.run([]string{"--help"})
	}
	return usagef("help: name one command, e.g. kvmlab help run")
}

// cmdVersion prints what the binary knows of its own build (cli.Version).
func cmdVersion(args []string) error {
	fset := flag.NewFlagSet("version", flag.ContinueOnError)
	setUsage(fset, "Usage: kvmlab version (or kvmlab --version)\n\nPrint kvmlab's module version, the VCS revision it was built from (+dirty when\nthe work tree had changes) and the Go toolchain that built it.\n")
	if help, err := parseFlags(fset, args, false); help || err != nil {
		return err
	}
	fmt.Println(cli.Version("kvmlab"))
	return nil
}

// setUsage makes fset's --help print header, then the user's flags.
var setUsage = cli.SetUsage

// parseFlags parses a subcommand's flags (cli.Parse): help is true when
// the user asked for --help; a bad flag or a stray argument (unless
// positional) is one usage line.
func parseFlags(fset *flag.FlagSet, args []string, positional bool) (help bool, err error) {
	help, err = cli.Parse(fset, args, positional)
	return help, asUsage(err)
}

// asUsage turns a package's refusal of the user's input (cli.UsageError,
// the bench's included) into the command's usage error.
func asUsage(err error) error {
	var ue cli.UsageError
	if errors.As(err, &ue) {
		return usageError{ue.Msg}
	}
	return err
}

// restoring tells whether run's arguments ask for --restore, before the
// flags are parsed (a value that happens to read "--restore" only costs
// the re-exec, see main).
func restoring(args []string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "restore" {
			return true
		}
	}
	return false
}
