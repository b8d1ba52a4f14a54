package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"kvmlab/emuhost"
	"kvmlab/vmm"
)

// runEmulated boots the guest inside the emulated host: a Debian kernel under
// QEMU's software emulation (TCG), which emulates AMD SVM well enough for
// kvm_amd to load, or with --emulated-cpu intel under Bochs, which emulates
// Intel VT-x for kvm_intel; so that this same kvmlab binary finds a working
// /dev/kvm inside it. The guest's console, typed at and read through two
// layers of serial port, is this terminal. It is slow (the host CPU is
// emulated instruction by instruction) but it is real KVM. See package
// emuhost.
func runEmulated(f *runFlags, kernelPath, initrdPath string, mem uint64) error {
	emu, err := emuhost.EmulatorFor(f.emulatedCPU)
	if err != nil {
		return usagef("--emulated-cpu %s: use amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x)", f.emulatedCPU)
	}
	if !f.emulated {
		return usagef("--emulated-cpu %s chooses the emulated host's CPU: add --emulated-host", f.emulatedCPU)
	}
	if emu == emuhost.BochsVMX {
		// The Bochs host has 2 GiB; the guest's RAM plus room for the
		// host itself (its kernel, and kvmlab and the guest's files in
		// its RAM disk: 512 MiB is ample) must fit.
		if maxMB := uint64(emuhostIntelMemMB - 512); mem>>20 > maxMB {
			return usagef("--mem %s: the emulated Intel host has %d MiB: give the guest %dM or less", f.mem, emuhostIntelMemMB, maxMB)
		}
		if err := emuhost.CheckBochs(context.Background()); err != nil {
			return usagef("--emulated-cpu intel: %v", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if len(f.nets) > 0 {
		return usagef("--net with --emulated-host: a TAP on this machine cannot reach a guest inside the emulated host; use --net on a host with /dev/kvm")
	}
	r := emuhost.KVMLabRun{Self: self, Kernel: kernelPath, Initrd: initrdPath, Mem: f.mem, Append: f.appendLine,
		MemBytes: mem, CPUs: f.cpus, Quiet: f.quiet, Stats: f.stats, RNG: f.rng, NoEventFDs: f.noEventFDs, GuestDecompress: f.guestDecompress}
	for _, d := range f.disks {
		dc, err := vmm.ParseDisk(d)
		if err != nil {
			return usagef("--disk %s: %v", d, err)
		}
		r.Disks = append(r.Disks, emuhost.Disk{Path: dc.Path, ReadOnly: dc.ReadOnly})
		if !dc.ReadOnly {
			fmt.Fprintf(os.Stderr, "kvmlab: --disk %s is copied into the emulated host: the guest's writes will not reach the file here\n", dc.Path)
		}
	}
	what := "QEMU TCG, AMD SVM, nested KVM"
	if emu == emuhost.BochsVMX {
		what = "Bochs, Intel VT-x, nested KVM; about two minutes to boot"
	}
	fmt.Fprintf(os.Stderr, "kvmlab: starting the emulated host (%s); the guest console follows. Ctrl-A x quits.\n", what)
	return runEmulatedSpec(r.Spec(emu, os.Stdout))
}

// emuhostIntelMemMB is the memory of the emulated Intel host (Bochs
// boots with at most 2 GiB; see emuhost.BochsVMX).
const emuhostIntelMemMB = 2048

// resolveGuest fills in the default guest when neither --kernel nor
// --initrd was given, and checks both exist; cmd names the subcommand in
// the one-line error.
func resolveGuest(cmd string, kernel, initrd *string) error {
	if *kernel == "" && *initrd == "" {
		*kernel, *initrd = defaultGuest()
	}
	for _, p := range []struct{ flag, path string }{{"--kernel", *kernel}, {"--initrd", *initrd}} {
		if p.path == "" {
			return usagef("%s: %s is missing: give both --kernel and --initrd, or neither for the default guest", cmd, p.flag)
		}
		if _, err := os.Stat(p.path); err != nil {
			return usagef("%s: %s %s: %v (run 'make guest' for the default guest)", cmd, p.flag, p.path, err)
		}
	}
	return nil
}

// runEmulatedSpec runs spec in the emulated host and passes the inner
// command's exit status on as kvmlab's.
func runEmulatedSpec(spec emuhost.Spec) error {
	res, err := emuhost.Run(context.Background(), spec)
	if err != nil {
		return fmt.Errorf("emulated host: %w", err)
	}
	if res.ExitCode != 0 {
		return exitError{res.ExitCode}
	}
	return nil
}

// printReport prints a report as indented JSON or as its table.
func printReport(jsonOut bool, v any, table func(io.Writer)) error {
	if jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	table(os.Stdout)
	return nil
}
