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
func runEmulated(f *runFlags, ex *execFlags, kernelPath, initrdPath string, mem uint64) error {
	emu, err := emuhost.ChooseEmulator(f.emulatedCPU, f.emulated, mem>>20, f.mem)
	if err != nil {
		return usagef("%v", err)
	}
	if emu == emuhost.BochsVMX {
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
	if ex.set {
		return ex.runEmulated(r, emu) // CMD's output, not the console (exec.go)
	}
	what := "QEMU TCG, AMD SVM, nested KVM"
	if emu == emuhost.BochsVMX {
		what = "Bochs, Intel VT-x, nested KVM; about two minutes to boot"
	}
	fmt.Fprintf(os.Stderr, "kvmlab: starting the emulated host (%s); the guest console follows. Ctrl-A x quits.\n", what)
	return runEmulatedSpec(r.Spec(emu, os.Stdout))
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
