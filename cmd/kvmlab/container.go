package main

// kvmlab container: the guest's userland as a container on this host's
// kernel, for comparison with `kvmlab run`. See docs/container.md.

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"kvmlab/container"
	"kvmlab/vmm"
)

const containerUsage = `Usage: kvmlab container [flags] [--] COMMAND [ARGS...]

` + container.About + `
Flags:
`

type containerFlags struct {
	mem, cpus, initrd, rootfs, hostname string
	usernsRange                         string
	pids                                int
	runc, verbose, countSyscalls        bool
	userns                              bool
	fset                                *flag.FlagSet // to tell defaults from values given
}

func (f *containerFlags) register(fset *flag.FlagSet) {
	f.fset = fset
	fset.StringVar(&f.mem, "mem", fmt.Sprintf("%dM", container.DefaultMemory>>20),
		"memory limit (RAM, no swap beyond it): MiB as in QEMU's -m (256), or with a K, M or G suffix (256M); 0 for none")
	fset.StringVar(&f.cpus, "cpus", "", "CPU time limit in CPUs, e.g. 1 or 0.5; default: none")
	fset.IntVar(&f.pids, "pids", container.DefaultPids, "most tasks (processes and threads, the container's init included) at once; 0 for none")
	fset.BoolVar(&f.userns, "userns", false, "run in a user namespace: the container's root is your user (always so without root); "+
		"as root, a range of unused IDs from root's line in /etc/subuid and /etc/subgid")
	fset.StringVar(&f.usernsRange, "userns-range", "", "as root: run in a user namespace in which IDs 0 to COUNT-1 are host IDs FIRST onwards, as FIRST:COUNT, e.g. 1000000:65536")
	fset.StringVar(&f.hostname, "hostname", container.DefaultHostname, "the container's hostname")
	fset.StringVar(&f.initrd, "initrd", "", "newc cpio archive to unpack as the root (default: the guest's, from 'make guest')")
	fset.StringVar(&f.rootfs, "rootfs", "", "an already unpacked root directory, used as is (instead of --initrd)")
	fset.BoolVar(&f.runc, "runc", false, "run it with runc (an OCI bundle) instead of kvmlab's own runtime, to compare")
	fset.BoolVar(&f.countSyscalls, "count-syscalls", false, "count the system calls the workload makes into the host kernel (ptrace; slows it down) and print the most frequent on stderr")
	fset.BoolVar(&f.verbose, "verbose", false, "afterwards, print the cgroup version and files used, memory peak and timings on stderr")
}

// config turns the flags and the command into a container.Config, with
// one-line errors for bad input (container.Options checks them).
func (f *containerFlags) config(args []string) (container.Config, error) {
	if len(args) == 0 {
		return container.Config{}, usagef("container: no command: name one after the flags, e.g. kvmlab container -- /bin/sh")
	}
	o := container.Options{Args: args, MemoryText: f.mem, CPUs: f.cpus, Pids: f.pids, Hostname: f.hostname,
		UserNS: f.userns, UserNSRange: f.usernsRange, Initrd: f.initrd, Rootfs: f.rootfs, Runc: f.runc}
	// Limits not given stay zero: the runtime's defaults.
	set := map[string]bool{}
	if f.fset != nil {
		f.fset.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	}
	switch {
	case !set["mem"]:
	case f.mem == "0" || f.mem == "max" || f.mem == "none":
		o.Memory = container.MemoryUnlimited
	default:
		m, err := vmm.ParseMemSize(f.mem)
		if err != nil {
			return container.Config{}, usagef("--mem %s: not a size: use a number with K, M or G, e.g. --mem 256M", f.mem)
		}
		o.Memory = m
	}
	o.PidsSet = set["pids"]
	cfg, err := o.Config()
	return cfg, asUsage(err)
}

func cmdContainer(args []string) error {
	fset := flag.NewFlagSet("container", flag.ContinueOnError)
	var f containerFlags
	f.register(fset)
	setUsage(fset, containerUsage)
	if help, err := parseFlags(fset, args, true); help || err != nil {
		return err
	}
	cfg, err := f.config(fset.Args())
	if err != nil {
		return err
	}
	cfg.CountSyscalls = f.countSyscalls
	if f.countSyscalls && f.runc {
		return usagef("container: --count-syscalls works with kvmlab's runtime, not --runc: drop one of them")
	}
	if os.Geteuid() != 0 && (cfg.Limits.Explicit() != container.Limits{}) {
		return usagef("container: limits (--mem, --cpus, --pids) need root to create a cgroup: run as root, or leave them out (the defaults are then skipped, with a note)")
	}

	run := container.Foreground
	if f.runc {
		run = container.ForegroundRunc
	}
	res, err := run(cfg, printNotes)
	if errors.Is(err, container.ErrNoRunc) {
		return usagef("--runc: runc is not installed: install it (apt-get install runc) or leave out --runc")
	}
	if err != nil {
		return err // "container setup failed: ..." or a host error
	}
	if res.OOMKilled {
		fmt.Fprintf(os.Stderr, "kvmlab: container: the kernel's OOM killer killed the workload (memory limit %s)\n", f.mem)
	}
	if f.verbose {
		printNotes(res.Report())
	}
	if f.countSyscalls {
		fmt.Fprintf(os.Stderr, "kvmlab: container: the workload made %d system calls into the host kernel; most frequent: %s\n",
			res.Syscalls, container.TopSyscalls(res.SyscallsByName, 10))
	}
	if res.ExitCode != 0 {
		return exitError{res.ExitCode}
	}
	return nil
}

// printNotes prints the runtime's notes (or its report), one line each.
func printNotes(notes []string) {
	for _, n := range notes {
		fmt.Fprintf(os.Stderr, "kvmlab: container: %s\n", n)
	}
}
