package main

import (
	"context"
	"flag"
	"os"

	"kvmlab/internal/hostcheck"
)

const checkUsage = "Usage: kvmlab check\n\n" + hostcheck.About

// cmdCheck prints what package hostcheck finds.
func cmdCheck(args []string) error {
	fset := flag.NewFlagSet("check", flag.ContinueOnError)
	setUsage(fset, checkUsage)
	if help, err := parseFlags(fset, args, false); help || err != nil {
		return err
	}
	r := hostcheck.Check(context.Background())
	r.Print(os.Stdout)
	if !r.Direct {
		return exitError{1}
	}
	return nil
}

// kvmError turns a failure to open /dev/kvm into one line with the fix.
var kvmError = hostcheck.KVMError
