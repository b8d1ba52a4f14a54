package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"kvmlab/labs"
	"kvmlab/vmm/kvm"
)

const labUsage = `Usage: kvmlab lab list
       kvmlab lab start N DIR
       kvmlab lab check N DIR

Guided labs, in order, each small enough for an evening (docs/labs.md):
  list          the labs, numbered, with what each teaches
  start N DIR   write lab N's task (README.md) and starting point into DIR,
                creating DIR if needed; never over files already there
  check N DIR   build and run your work in DIR and grade it from what really
                happens (the exit trace, the vCPU's registers); a hint says
                where to look when it is not right yet. Exit status 0 when
                it passes, 1 when not yet.

Flags:
`

// cmdLab is kvmlab lab: the labs themselves, their files and their checks
// live in package labs; this parses, refuses bad input in one line, and
// prints the grade.
func cmdLab(args []string) error {
	fset := flag.NewFlagSet("lab", flag.ContinueOnError)
	setUsage(fset, labUsage)
	if help, err := parseFlags(fset, args, true); help || err != nil {
		return err
	}
	rest := fset.Args()
	if len(rest) == 0 {
		return usagef("lab: say list, start N DIR or check N DIR: e.g. kvmlab lab list")
	}
	switch verb, rest := rest[0], rest[1:]; verb {
	case "list":
		if len(rest) > 0 {
			return usagef("lab list: unexpected argument %q: list takes none", rest[0])
		}
		for _, l := range labs.List() {
			fmt.Printf("%d. %s\n   %s\n", l.N, l.Title, l.Summary)
		}
		fmt.Println("\nStart one with 'kvmlab lab start N DIR'; grade it with 'kvmlab lab check N DIR'.")
		return nil
	case "start", "check":
		if len(rest) != 2 {
			return usagef("lab %s: give a lab number and a directory: kvmlab lab %s N DIR (kvmlab lab list shows the labs)", verb, verb)
		}
		l, err := labByNumber(verb, rest[0])
		if err != nil {
			return err
		}
		if verb == "start" {
			return labStart(l, rest[1])
		}
		return labCheck(l, rest[1])
	}
	return usagef("lab: unknown verb %q: say list, start N DIR or check N DIR", fset.Arg(0))
}

// labByNumber finds lab s, or says in one line that there is none.
func labByNumber(verb, s string) (*labs.Lab, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, usagef("lab %s: %q is not a lab number: kvmlab lab list shows the labs", verb, s)
	}
	l, err := labs.Get(n)
	if err != nil {
		return nil, usagef("lab %s: %v", verb, err)
	}
	return l, nil
}

func labStart(l *labs.Lab, dir string) error {
	wrote, err := l.Start(dir)
	if err != nil {
		return usagef("lab start %d: %v", l.N, err)
	}
	fmt.Printf("lab %d, %s: wrote %s in %s\nRead %s first; when you are ready: kvmlab lab check %d %s\n",
		l.N, l.Slug, strings.Join(wrote, ", "), dir, dir+"/README.md", l.N, dir)
	return nil
}

func labCheck(l *labs.Lab, dir string) error {
	if err := l.CheckDir(dir); err != nil {
		return usagef("lab check %d: %v", l.N, err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("lab check: finding kvmlab itself: %w", err)
	}
	// A /dev/kvm that cannot boot Linux (kvm_pvm) still runs the small
	// guests of most labs; each lab decides (labs.Env.Emulated).
	ok, _ := kvm.HostBackend().CanRunLinux()
	env := &labs.Env{Kvmlab: self, Emulated: !ok, Log: os.Stderr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := l.Check(ctx, env, dir)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return exitError{130}
		}
		return fmt.Errorf("lab check %d: %w", l.N, err)
	}
	for _, line := range res.Lines {
		fmt.Printf("  %s\n", line)
	}
	if res.Passed {
		fmt.Printf("PASS: lab %d, %s\n", l.N, l.Title)
		if next, err := labs.Get(l.N + 1); err == nil {
			fmt.Printf("Next: kvmlab lab start %d DIR (%s)\n", next.N, next.Slug)
		}
		return nil
	}
	fmt.Printf("NOT YET: lab %d, %s\nhint: %s\n", l.N, l.Title, res.Hint)
	return exitError{1}
}
