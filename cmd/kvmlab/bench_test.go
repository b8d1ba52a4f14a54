package main

import (
	"errors"
	"strings"
	"testing"
)

// TestBenchFlagsRefused: out-of-range counts are one usage line naming the
// flag, before anything boots.
func TestBenchFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--runs", "0"}, "--runs 0"},
		{[]string{"--warmup", "-1"}, "--warmup -1"},
		{[]string{"--warmup", "11"}, "--warmup 11"},
		{[]string{"--here"}, "--here runs the exit loop only"},
		{[]string{"--here", "--vmms", "none", "--exit-loop", "0"}, "leaves nothing to measure"},
		{[]string{"--here", "--vmms", "none", "--emulated-host"}, "--here runs the exit loop only"},
		{[]string{"--console-via", "uart"}, "--console-via \"uart\""},
	} {
		err := cmdBench(c.args)
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(u.msg, c.want) {
			t.Errorf("bench %v: %v, want a usage error naming %q", c.args, err, c.want)
		}
	}
}

// TestBenchHelpHidesInternalFlags: --help lists the user's flags and none
// of those the bench passes to itself, which are still accepted.
func TestBenchHelpHidesInternalFlags(t *testing.T) {
	var a benchArgs
	fs := newBenchFlagSet(&a)
	var out strings.Builder
	fs.SetOutput(&out)
	fs.Usage()
	for _, want := range []string{"-runs", "-vmms", "-go-floor-variants", "-here"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench --help lacks %s", want)
		}
	}
	if err := fs.Parse([]string{"--exitfloor", "/x", "--in-emulated-host", "--go-floor", "7", "--go-floor-variant", "raw"}); err != nil {
		t.Fatalf("internal flags refused: %v", err)
	}
	if a.c.ExitFloor != "/x" || !a.c.InEmulatedHost || a.goFloorN != 7 || a.goFloorVariant != "raw" {
		t.Errorf("internal flags parsed into %+v", a)
	}
	for _, hidden := range []string{"-exitfloor", "-in-emulated-host", "-go-floor int", "-go-floor uint", "-go-floor-variant string", "internal:"} {
		if strings.Contains(out.String(), hidden) {
			t.Errorf("bench --help lists %q", hidden)
		}
	}
}
