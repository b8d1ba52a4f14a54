package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"time"

	"kvmlab/compare"
	"kvmlab/emuhost"
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

Flags:
`

type compareFlags struct {
	kernel, initrd, mem string
	jsonOut             bool
	html                string
	noRunc              bool
	timeout             time.Duration
	emulated, inHost    bool
}

const compareNeedsRoot = "compare: the container side needs root (namespaces, cgroups): run it with sudo"

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
	if help, err := parseFlags(fs, args, false); help || err != nil {
		return err
	}
	mem, err := vmm.ParseMemSize(f.mem)
	if err != nil || mem < 128<<20 || mem > 3<<30 {
		return usagef("compare: --mem %q: give 128M to 3G", f.mem)
	}
	if err := resolveGuest("compare", &f.kernel, &f.initrd); err != nil {
		return err
	}
	if f.html != "" {
		// Checked now, written at the end (whole, or not at all).
		if err := userfile.CheckOutput(f.html); err != nil {
			return usagef("compare: --html %s: %v", f.html, err)
		}
	}
	if os.Geteuid() != 0 && !f.emulated {
		if ok, _ := emuhost.KVMUsable(); ok {
			return usagef(compareNeedsRoot)
		}
	}
	o := compare.Options{Kernel: f.kernel, Initrd: f.initrd, Mem: f.mem, MemBytes: mem, NoRunc: f.noRunc,
		Timeout: f.timeout, Inner: f.inHost, Progress: os.Stderr,
		// The VM is read and checked as `kvmlab run` would (run.go).
		VMConfig: func(cmdline string) (vmm.Config, error) {
			rf := runFlags{kernel: f.kernel, initrd: f.initrd, appendLine: cmdline, mem: f.mem, cpus: 1}
			return rf.loadConfig()
		},
		VMError: kvmError,
	}
	rep, err := compareWhere(&f, o)
	if err != nil {
		return err
	}
	if f.inHost {
		// The outer kvmlab renders; send it the data.
		return rep.WriteMarked(os.Stdout)
	}
	return renderCompare(rep, &f)
}

// compareWhere runs the comparison here, on /dev/kvm, when it can boot
// Linux, and inside the emulated host otherwise (or when asked).
func compareWhere(f *compareFlags, o compare.Options) (*compare.Report, error) {
	ok, why := emuhost.KVMUsable()
	if f.inHost || (ok && !f.emulated) {
		if os.Geteuid() != 0 {
			return nil, usagef(compareNeedsRoot)
		}
		return compare.Here(o)
	}
	if !f.emulated {
		fmt.Fprintf(os.Stderr, "kvmlab compare: %s: running inside the emulated host (QEMU TCG, nested SVM)\n", why)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return compare.InEmulatedHost(o, emuhost.KVMLabFiles(self, f.kernel, f.initrd))
}

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
