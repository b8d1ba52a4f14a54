package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// UsageError is bad input from the user: one line that names the flag or
// argument at fault and the fix. A command prints it after "kvmlab: " and
// exits with status 2, before doing any work. Packages that check what a
// user asked for (a container's limits, a machine's files) return it, so
// the line they write reaches the user as it is.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef formats a UsageError.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Sprintf(format, args...)}
}

// SetUsage makes fset's --help print header, then the flags a user may set
// (internal ones hidden: [PrintFlags]).
func SetUsage(fset *flag.FlagSet, header string) {
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), header)
		PrintFlags(fset)
	}
}

// Describe, when set, receives each command's flag set from [Parse] in
// place of parsing it, and the command returns at once as if --help had
// been given. Shell completion reads the real flag sets this way
// ([FlagSetOf]): they are built inside each command, next to the
// variables they fill, and nowhere else.
var Describe func(*flag.FlagSet)

// Parse parses a command's flags. help is true when the user asked for
// --help, which is printed on standard output. A bad flag is one line
// naming it and pointing at --help (the flag package would print the whole
// usage after it). Stray arguments are an error unless positional is set.
// The errors are UsageErrors.
func Parse(fset *flag.FlagSet, args []string, positional bool) (help bool, err error) {
	if Describe != nil {
		Describe(fset)
		return true, nil
	}
	if fset.Usage == nil {
		SetUsage(fset, fmt.Sprintf("Usage: kvmlab %s [flags]\n\nFlags:\n", fset.Name()))
	}
	fset.SetOutput(io.Discard)
	err = fset.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fset.SetOutput(os.Stdout)
		fset.Usage()
		return true, nil
	case err != nil:
		return false, Usagef("%s: %v: see 'kvmlab %s --help'", fset.Name(), err, fset.Name())
	}
	if !positional && fset.NArg() > 0 {
		if fset.Lookup("kernel") != nil { // kvmlab run bzImage
			return false, Usagef("%s: unexpected argument %q: flags start with --, e.g. --kernel PATH", fset.Name(), fset.Arg(0))
		}
		return false, Usagef("%s: unexpected argument %q: see 'kvmlab %s --help'", fset.Name(), fset.Arg(0), fset.Name())
	}
	return false, nil
}

// describeProbe is the argument FlagSetOf runs a command with. A command
// that parses with Parse never sees it; one that parsed its flags some
// other way would refuse it as an unknown flag, rather than start work.
const describeProbe = "--kvmlab-describe-flags"

// FlagSetOf returns the flag set the command run parses, by running it
// with Parse in describe mode ([Describe]); nil if it has none.
func FlagSetOf(run func(args []string) error) *flag.FlagSet {
	var fset *flag.FlagSet
	Describe = func(fs *flag.FlagSet) { fset = fs }
	defer func() { Describe = nil }()
	_ = run([]string{describeProbe})
	return fset
}
