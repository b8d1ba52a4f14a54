package cli

import (
	"errors"
	"flag"
	"testing"
)

// TestParse: bad input is one UsageError line naming the flag or argument
// and pointing at --help.
func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		kernelFlag bool // the set has --kernel, as run's does
		positional bool
		args       []string
		wantErr    string // "" for none
		wantArgs   int
	}{
		{"no flags", false, false, nil, "", 0},
		{"a flag", false, false, []string{"--n", "3"}, "", 0},
		{"unknown flag", false, false, []string{"--nope"}, "x: flag provided but not defined: -nope: see 'kvmlab x --help'", 0},
		{"bad value", false, false, []string{"--n", "many"}, `x: invalid value "many" for flag -n: parse error: see 'kvmlab x --help'`, 0},
		{"stray argument", false, false, []string{"file"}, `x: unexpected argument "file": see 'kvmlab x --help'`, 0},
		{"a kernel given as an argument", true, false, []string{"bzImage"}, `x: unexpected argument "bzImage": flags start with --, e.g. --kernel PATH`, 0},
		{"positional arguments", false, true, []string{"--n", "1", "a", "b"}, "", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.Int("n", 0, "a number")
			if tc.kernelFlag {
				fs.String("kernel", "", "a kernel")
			}
			help, err := Parse(fs, tc.args, tc.positional)
			var ue UsageError
			switch {
			case help:
				t.Errorf("help = true")
			case tc.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tc.wantErr != "" && (!errors.As(err, &ue) || ue.Msg != tc.wantErr):
				t.Errorf("err = %v; want UsageError %q", err, tc.wantErr)
			case tc.wantErr == "" && fs.NArg() != tc.wantArgs:
				t.Errorf("%d arguments left, want %d", fs.NArg(), tc.wantArgs)
			}
		})
	}
}

// TestFlagSetOf: a command's flag set is read by running it in describe
// mode, in which Parse parses nothing and the command stops.
func TestFlagSetOf(t *testing.T) {
	ran := false
	cmd := func(args []string) error {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.Bool("quiet", false, "say less")
		if help, err := Parse(fs, args, false); help || err != nil {
			return err
		}
		ran = true
		return nil
	}
	fs := FlagSetOf(cmd)
	if fs == nil || fs.Lookup("quiet") == nil || ran {
		t.Fatalf("FlagSetOf = %v, command ran on: %v", fs, ran)
	}
	if Describe != nil {
		t.Error("Describe left set")
	}
	if err := cmd(nil); err != nil || !ran {
		t.Errorf("the command, run normally: %v, ran %v", err, ran)
	}
}
