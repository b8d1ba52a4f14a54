package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"kvmlab/compare"
	"kvmlab/emuhost"
	"kvmlab/guest"
	"kvmlab/internal/userfile"
	"kvmlab/vmm"
)

// `kvmlab compare` runs the same userland twice, as a virtual machine (its
// own kernel, under kvmlab) and as a container (the host's kernel, behind
// namespaces and cgroups), with the same probe (guest/probe) as the
// workload, and turns the claims people read about VMs and containers into
// measured rows. Package compare does the work; this file checks the user's
// input, picks where it runs, and prints. docs/isolation.md explains each row.

const compareUsage = `usage: kvmlab compare [flags]

Boots the kvmlab guest as a VM and starts its root file system as a
container (and under runc, when installed), runs the same probe in both,
and prints one row per claim (own kernel, start-up, footprint, what each
sees of the host, the system calls or VM exits the workload causes, and
the blast radius of a kernel panic). Without a usable /dev/kvm it runs
inside the emulated host. Needs root (namespaces, cgroups).

--density N adds N VMs and N containers started at once (for N = 1, 2,
4 ... up to N), with the time until all are up and their memory (PSS);
--workload adds the same small programs (CPU, system calls, fork+exec,
file I/O, page faults) timed on the host, in the VM and in the containers.
--nested adds a container inside a VM: the VM boots with this kvmlab
carried into it and runs 'kvmlab container' there, on the guest's kernel,
which it then crashes under the container (the guest kernel needs
kernel-config/kvmlab.config's namespaces and cgroup controllers).
Ctrl-C or SIGTERM stops every VM and container it started and removes its
temporary files.

Flags:
`

type compareFlags struct {
	kernel, initrd, mem string
	jsonOut             bool
	html                string
	noRunc              bool
	timeout             time.Duration
	emulated, inHost    bool
	basic, workload     bool
	nested              bool
	density, runs       int
}

func cmdCompare(args []string) error {
	var f compareFlags
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	setUsage(fs, compareUsage)
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel (default: the kvmlab guest kernel)")
	fs.StringVar(&f.initrd, "initrd", "", "the userland both sides run: a u-root initramfs with /bin/kvmlab-probe (default: the kvmlab initramfs)")
	fs.StringVar(&f.mem, "mem", "256M", "the VM's RAM, and the container's memory limit: MiB (256), or with a K, M or G suffix (256M)")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.StringVar(&f.html, "html", "", "also write a self-contained HTML report with charts to this file")
	fs.BoolVar(&f.noRunc, "no-runc", false, "leave runc out even when it is installed")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Minute, "limit for each side")
	fs.BoolVar(&f.emulated, "emulated-host", false, "run inside the emulated host even when /dev/kvm works")
	fs.BoolVar(&f.inHost, "in-emulated-host", false, "internal: this is the run inside the emulated host")
	fs.IntVar(&f.density, "density", 0, "also start N VMs and N containers at once, for N = 1, 2, 4 ... N, and measure start time and memory (PSS) per instance (0: off)")
	fs.BoolVar(&f.workload, "workload", false, "also time the same small programs (cpu, syscall, spawn, file, memory) on the host, in the VM and in the containers")
	fs.IntVar(&f.runs, "workload-runs", 5, "how often --workload runs each program on each side (1 to 50)")
	// Off by default: one more boot, which ends in a guest kernel
	// panic, and a guest kernel with kernel-config/kvmlab.config's
	// namespaces and cgroup controllers (an older build fails the
	// column with the option to add).
	fs.BoolVar(&f.nested, "nested", false, "also run the probe in a container inside a VM (kvmlab container in the guest, on its kernel), then crash that kernel under it")
	fs.BoolVar(&f.basic, "basic", true, "run the basic comparison (kernel, start-up, memory, isolation, boundary, blast radius); --basic=false with --density or --workload runs only those")
	if help, err := parseFlags(fs, args, false); help || err != nil {
		return err
	}
	mem, err := vmm.ParseMemSize(f.mem)
	if err != nil || mem < 128<<20 || mem > 3<<30 {
		return usagef("compare: --mem %q: give 128M to 3G", f.mem)
	}
	densitySet := false
	fs.Visit(func(fl *flag.Flag) { densitySet = densitySet || fl.Name == "density" })
	if densitySet {
		// Given (--density 0 is a mistake, not "off"): checked against
		// the memory of where the VMs will run.
		if err := compare.CheckDensityWhere(f.density, mem, f.inHost, f.emulated); err != nil {
			return err
		}
	}
	if f.runs < 1 || f.runs > 50 {
		return usagef("compare: --workload-runs %d: give 1 to 50", f.runs)
	}
	if !f.basic && f.density == 0 && !f.workload {
		return usagef("compare: --basic=false leaves nothing to run: add --density N or --workload")
	}
	if f.nested && !f.basic {
		return usagef("compare: --nested adds a column to the basic comparison: drop --basic=false")
	}
	if err := guest.Resolve("compare", &f.kernel, &f.initrd); err != nil {
		return asUsage(err)
	}
	if f.html != "" {
		// Checked now, written at the end (whole, or not at all).
		if err := userfile.CheckOutput(f.html); err != nil {
			return usagef("compare: --html %s: %v", f.html, err)
		}
	}
	if os.Geteuid() != 0 && !f.emulated {
		if ok, _ := emuhost.KVMUsable(); ok {
			return usagef(compare.NeedsRoot)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if f.nested {
		if err := compare.CheckNested(self, f.initrd, mem); err != nil {
			return err
		}
	}
	// Ctrl-C and SIGTERM cancel the comparison: every VM and container
	// it started is stopped and its temporary files removed before the
	// command exits (compare.ErrInterrupted).
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			fmt.Fprintf(os.Stderr, "kvmlab compare: %v: stopping every VM and container it started\n", s)
			cancel(signalCause{s.(syscall.Signal)})
		}
	}()
	o := compare.Options{Kernel: f.kernel, Initrd: f.initrd, Mem: f.mem, MemBytes: mem, NoRunc: f.noRunc,
		Timeout: f.timeout, Inner: f.inHost, Progress: os.Stderr, Ctx: ctx, NoBasic: !f.basic,
		Density: f.density, Self: self, Workload: f.workload, WorkloadRuns: f.runs, Nested: f.nested,
		// The VM is read and checked as `kvmlab run` would (run.go).
		VMConfig: func(cmdline string) (vmm.Config, error) {
			rf := runFlags{kernel: f.kernel, initrd: f.initrd, appendLine: cmdline, mem: f.mem, cpus: 1}
			return rf.loadConfig()
		},
		VMError: kvmError,
	}
	rep, err := compare.Where(o, f.emulated)
	if errors.Is(err, compare.ErrInterrupted) {
		sig := syscall.SIGINT
		var sc signalCause
		if errors.As(context.Cause(ctx), &sc) {
			sig = sc.sig
		}
		fmt.Fprintf(os.Stderr, "kvmlab compare: stopped by %v: every VM and container it started is gone, its temporary files removed\n", sig)
		return exitError{128 + int(sig)}
	}
	if err != nil {
		return err
	}
	if f.inHost {
		// The outer kvmlab renders; send it the data.
		return rep.WriteMarked(os.Stdout)
	}
	return renderCompare(rep, &f)
}

// signalCause is the signal that cancelled a comparison.
type signalCause struct{ sig syscall.Signal }

func (s signalCause) Error() string { return "stopped by " + s.sig.String() }

func renderCompare(rep *compare.Report, f *compareFlags) error {
	if f.html != "" {
		var b bytes.Buffer
		if err := rep.WriteHTML(&b); err != nil {
			return err
		}
		// A failed write leaves an old report as it was.
		if err := userfile.WriteOutput(f.html, b.Bytes()); err != nil {
			return fmt.Errorf("--html %s: %w", f.html, err)
		}
		fmt.Fprintf(os.Stderr, "kvmlab compare: wrote %s\n", f.html)
	}
	return printReport(f.jsonOut, rep, rep.Print)
}
