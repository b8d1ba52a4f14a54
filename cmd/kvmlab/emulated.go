package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"kvmlab/tests/harness"
)

// runEmulated boots the guest inside the emulated host: a Debian kernel under
// QEMU's software emulation (TCG), which emulates AMD SVM well enough for
// kvm_amd to load, so that this same kvmlab binary finds a working /dev/kvm
// inside it. The guest's console, typed at and read through two layers of
// serial port, is this terminal. It is slow (the host CPU is emulated
// instruction by instruction) but it is real KVM. See tests/harness.
func runEmulated(f *runFlags, kernelPath, initrdPath string, mem uint64) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	files := []harness.File{
		{HostPath: self, Path: "/kvmlab/kvmlab", Mode: 0o755},
		{HostPath: kernelPath, Path: "/kvmlab/kernel", Mode: 0o644},
	}
	argv := []string{"/kvmlab/kvmlab", "run", "--kernel", "/kvmlab/kernel", "--mem", f.mem,
		"--cpus", strconv.Itoa(f.cpus), "--append", f.appendLine}
	if initrdPath != "" {
		files = append(files, harness.File{HostPath: initrdPath, Path: "/kvmlab/initrd", Mode: 0o644})
		argv = append(argv, "--initrd", "/kvmlab/initrd")
	}
	if f.quiet {
		argv = append(argv, "--quiet")
	}
	if f.stats {
		argv = append(argv, "--stats")
	}
	// The emulated host needs the guest's RAM plus room for itself.
	hostMB := max(2048, int(mem>>20)+1536)
	fmt.Fprintln(os.Stderr, "kvmlab: starting the emulated host (QEMU TCG, nested KVM); the guest console follows. Ctrl-A x quits.")
	spec := harness.Spec{
		Files: files, Argv: argv, MemMB: hostMB, CPUs: max(2, f.cpus),
		Interactive: true, Output: os.Stdout,
	}
	res, err := harness.Run(context.Background(), spec)
	if err != nil {
		return fmt.Errorf("emulated host: %w", err)
	}
	if res.ExitCode != 0 {
		return exitError{res.ExitCode}
	}
	return nil
}
