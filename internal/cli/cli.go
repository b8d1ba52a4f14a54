// Package cli holds the conventions kvmlab's command line keeps, the ones
// people expect of a well-kept Go tool (go(1), gofmt, and the POSIX utility
// conventions before them):
//
//   - --help prints the command's usage on standard output and succeeds: the
//     user asked for it, and may pipe it into a pager;
//   - a usage error is one line on standard error naming the bad flag and
//     pointing at --help, with exit status 2, not the whole usage (which hides
//     the one line that matters);
//   - flags that exist only for kvmlab's own tools (a re-run of itself inside
//     the emulated host, a benchmark helper) are not shown to people
//     ([Hidden], [PrintFlags]);
//   - --version names the build: module version, VCS revision and Go
//     toolchain, read from the binary itself ([Version]);
//   - shell completion scripts are generated from the same flag sets the
//     commands parse, so they cannot drift from them ([WriteBash],
//     [WriteZsh]).
//
// [Parse] parses a command's flags in this manner, and [UsageError] is the
// one-line refusal, returned by the packages that check what a user asked
// for as much as by the command itself. The flag sets are the standard
// library's (package flag): this package only decides how they are parsed
// and shown.
package cli

import (
	"flag"
	"strings"
)

// InternalPrefix starts the usage text of a flag meant for kvmlab's own tools
// only. Such a flag still parses; it is left out of --help and of shell
// completion. Writing "internal: what it does" as a flag's usage is all it
// takes to hide it, wherever the flag is registered: the convention reads as
// documentation in the source, and needs no registry shared between packages.
const InternalPrefix = "internal:"

// Hidden reports whether f is an internal flag (see [InternalPrefix]).
func Hidden(f *flag.Flag) bool { return strings.HasPrefix(f.Usage, InternalPrefix) }

// Visible returns the flags of fs a user may be shown, in lexical order.
func Visible(fs *flag.FlagSet) []*flag.Flag {
	var out []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !Hidden(f) {
			out = append(out, f)
		}
	})
	return out
}

// PrintFlags writes the visible flags of fs to fs.Output(), in the format of
// flag.PrintDefaults. It copies them into a scratch set and lets that set
// print them, so that the layout (the value's name taken from back-quotes,
// defaults left out when zero) stays the standard library's.
func PrintFlags(fs *flag.FlagSet) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	for _, f := range Visible(fs) {
		shown.Var(f.Value, f.Name, f.Usage)
		// Var takes the default from the value as it is now, which is
		// what the user gave when --help comes after other flags.
		shown.Lookup(f.Name).DefValue = f.DefValue
	}
	shown.PrintDefaults()
}

// takesValue reports whether f needs a value (--kernel PATH), as opposed to
// a boolean switch (--quiet), in the flag package's own terms.
func takesValue(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}
