package main

import (
	"errors"
	"strings"
	"testing"

	"kvmlab/emuhost"
	"kvmlab/vmm"
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
		{[]string{"--guest", "fedora"}, "--guest \"fedora\""},
		{[]string{"--guest", "debian", "--kernel", "/boot/vmlinuz"}, "--guest debian chooses the kernel itself"},
		{[]string{"--guest", "debian", "--io"}, "--guest debian chooses the kernel itself"},
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

// TestBenchEmulatedCPU: --emulated-cpu takes what kvmlab run's does (amd
// or intel), intel only with --emulated-host (or in the inner run), and a
// guest that fits the Intel host's 2 GiB; each refusal is one usage line,
// given by cmdBench before anything is built or booted.
func TestBenchEmulatedCPU(t *testing.T) {
	for _, c := range []struct {
		args    []string
		want    emuhost.Emulator
		wantErr string
	}{
		{nil, emuhost.QEMUSVM, ""},
		{[]string{"--emulated-host"}, emuhost.QEMUSVM, ""},
		{[]string{"--emulated-host", "--emulated-cpu", "amd"}, emuhost.QEMUSVM, ""},
		{[]string{"--emulated-host", "--emulated-cpu", "intel"}, emuhost.BochsVMX, ""},
		{[]string{"--emulated-host", "--emulated-cpu", "intel", "--mem", "1536M"}, emuhost.BochsVMX, ""},
		{[]string{"--in-emulated-host", "--emulated-cpu", "intel"}, emuhost.BochsVMX, ""},
		{[]string{"--emulated-host", "--emulated-cpu", "arm"}, "", "--emulated-cpu arm: use amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x)"},
		{[]string{"--emulated-host", "--emulated-cpu", "Intel"}, "", "--emulated-cpu Intel: use amd"},
		{[]string{"--emulated-host", "--emulated-cpu", ""}, "", "--emulated-cpu : use amd"},
		{[]string{"--emulated-cpu", "intel"}, "", "--emulated-cpu intel chooses the emulated host's CPU: add --emulated-host"},
		{[]string{"--emulated-cpu", "intel", "--here", "--vmms", "none"}, "", "add --emulated-host"},
		{[]string{"--emulated-host", "--emulated-cpu", "intel", "--mem", "2G"}, "", "--mem 2G: the emulated Intel host has 2048 MiB: give the guest 1536M or less"},
		{[]string{"--emulated-host", "--emulated-cpu", "intel", "--mem", "1537"}, "", "give the guest 1536M or less"},
	} {
		var a benchArgs
		fs := newBenchFlagSet(&a)
		if err := fs.Parse(c.args); err != nil {
			t.Fatalf("bench %q: %v", c.args, err)
		}
		mem, err := vmm.ParseMemSize(a.mem)
		if err != nil {
			t.Fatalf("bench %q: --mem: %v", c.args, err)
		}
		a.c.MemMiB = int(mem >> 20)
		got, err := checkBenchEmulator(&a)
		if c.wantErr == "" {
			if err != nil || got != c.want {
				t.Errorf("bench %q: emulator %q, error %v; want %q", c.args, got, err, c.want)
			}
			continue
		}
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(u.msg, c.wantErr) || strings.Contains(u.msg, "\n") {
			t.Errorf("bench %q: %v, want one usage line naming %q", c.args, err, c.wantErr)
		}
		// The same refusal from the command itself, before it builds or
		// boots anything (a test machine has no emulated host to start).
		if err := cmdBench(c.args); !errors.As(err, &u) || !strings.Contains(u.msg, c.wantErr) {
			t.Errorf("kvmlab bench %q: %v, want the usage error naming %q", c.args, err, c.wantErr)
		}
	}
}
