package main

// kvmlab container: the guest's userland as a container on this host's
// kernel, for comparison with `kvmlab run`. See docs/container.md.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"kvmlab/container"
	"kvmlab/vmm"
)

const containerUsage = `Usage: kvmlab container [flags] [--] COMMAND [ARGS...]

Run COMMAND in a container: new PID, mount, UTS, IPC, network and cgroup
namespaces, the guest's u-root file system as its root, and cgroup limits
(by default a memory and a task limit, below). The host's kernel runs it;
compare with 'kvmlab run', where the guest has its own. COMMAND runs as the
container's root with a few capabilities only (chown, dac_override, fowner,
fsetid, kill, setgid, setuid, net_bind_service) and no_new_privs.

Run it as root, or as any user: without root (or with --userns) the
container's root is your user, in a user namespace, and there is no cgroup
and so no limits. kvmlab exits with COMMAND's status (128+N when signal N
killed it). Each start removes what SIGKILLed kvmlab processes left behind.

Examples:
  kvmlab container -- /bin/sh
  kvmlab container --mem 32M --verbose -- sh -c 'head -c 100000000 /dev/zero | sort'
  kvmlab container --hostname box -- hostname
  kvmlab container --userns-range 1000000:65536 -- cat /proc/self/uid_map

Flags:
`

// minContainerMem is the smallest --mem: the container's init (this
// binary, a Go program) lives in the cgroup too and needs a few MiB.
const minContainerMem = 8 << 20

// minContainerPids is the smallest --pids: pids.max counts threads, the
// container's init (a Go program) has about five, and so does each of
// u-root's programs; a Go program that cannot create a thread it needs
// dies.
const minContainerPids = 16

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
// one-line errors for bad input.
func (f *containerFlags) config(args []string) (container.Config, error) {
	cfg := container.Config{Args: args, Hostname: f.hostname}
	if len(args) == 0 {
		return cfg, usagef("container: no command: name one after the flags, e.g. kvmlab container -- /bin/sh")
	}
	// Limits not given stay zero: the runtime's defaults, which it can
	// skip (with a note) where there is no cgroup; given ones must apply.
	set := map[string]bool{}
	if f.fset != nil {
		f.fset.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	}
	switch {
	case !set["mem"]:
	case f.mem == "0" || f.mem == "max" || f.mem == "none":
		cfg.Limits.Memory = container.MemoryUnlimited
	default:
		m, err := vmm.ParseMemSize(f.mem)
		if err != nil {
			return cfg, usagef("--mem %s: not a size: use a number with K, M or G, e.g. --mem 256M", f.mem)
		}
		if m < minContainerMem {
			return cfg, usagef("--mem %s: too little for the container's init to run: use at least %dM", f.mem, minContainerMem>>20)
		}
		cfg.Limits.Memory = m
	}
	if f.cpus != "" {
		c, err := strconv.ParseFloat(f.cpus, 64)
		switch {
		case err != nil || math.IsNaN(c) || math.IsInf(c, 0):
			return cfg, usagef("--cpus %s: not a number: use e.g. --cpus 1 or --cpus 0.5", f.cpus)
		case c < 0.01:
			return cfg, usagef("--cpus %s: below the kernel's smallest quota: use at least 0.01", f.cpus)
		case c > float64(runtime.NumCPU()):
			return cfg, usagef("--cpus %s: this host has %d CPUs: use at most %d", f.cpus, runtime.NumCPU(), runtime.NumCPU())
		}
		cfg.Limits.CPUs = c
	}
	if f.pids < 0 {
		return cfg, usagef("--pids %d: must be positive (0 means no limit)", f.pids)
	}
	if f.pids > 0 && f.pids < minContainerPids {
		return cfg, usagef("--pids %d: too few for the container's init and one program, whose threads count too: use at least %d", f.pids, minContainerPids)
	}
	if set["pids"] {
		cfg.Limits.Pids = f.pids
		if f.pids == 0 {
			cfg.Limits.Pids = container.PidsUnlimited
		}
	}
	if f.runc && (f.userns || f.usernsRange != "") {
		return cfg, usagef("container: --userns works with kvmlab's runtime, not --runc: drop one of them")
	}
	r, err := f.idRange()
	if err != nil {
		return cfg, err
	}
	cfg.UserNS = r
	if !validHostname(f.hostname) {
		return cfg, usagef("--hostname %q: use 1 to 64 letters, digits, dots and dashes", f.hostname)
	}
	switch {
	case f.initrd != "" && f.rootfs != "":
		return cfg, usagef("--initrd and --rootfs both given: use one")
	case f.rootfs != "":
		st, err := os.Stat(f.rootfs)
		if err != nil || !st.IsDir() {
			return cfg, usagef("--rootfs %s: not a directory: name an unpacked root file system", f.rootfs)
		}
		cfg.Rootfs = f.rootfs
	default:
		initrd, flagName := f.initrd, "--initrd"
		if initrd == "" {
			initrd, flagName = container.DefaultInitrd(), "the default initramfs"
		}
		st, err := os.Stat(initrd)
		switch {
		case errors.Is(err, fs.ErrNotExist) && f.initrd == "":
			return cfg, usagef("no guest initramfs at %s: run 'make guest' to build it, or pass --initrd CPIO or --rootfs DIR", initrd)
		case errors.Is(err, fs.ErrNotExist):
			return cfg, usagef("%s %s: no such file: check the path", flagName, initrd)
		case err != nil:
			return cfg, usagef("%s %s: %v", flagName, initrd, errors.Unwrap(err))
		case st.IsDir():
			return cfg, usagef("%s %s: is a directory: use --rootfs for an unpacked root", flagName, initrd)
		}
		cfg.Initrd = initrd
	}
	return cfg, nil
}

// idRange turns --userns and --userns-range into the user namespace's ID
// map, nil for none.
func (f *containerFlags) idRange() (*container.IDRange, error) {
	root := os.Geteuid() == 0
	switch {
	case f.usernsRange != "":
		a, n, ok := strings.Cut(f.usernsRange, ":")
		first, err1 := strconv.ParseUint(a, 10, 32)
		count, err2 := strconv.ParseUint(n, 10, 32)
		switch {
		case !ok || err1 != nil || err2 != nil || count == 0:
			return nil, usagef("--userns-range %s: want FIRST:COUNT, two numbers, e.g. --userns-range 1000000:65536", f.usernsRange)
		case !root:
			return nil, usagef("--userns-range: mapping a range of IDs needs root; without root, kvmlab maps your own user (--userns)")
		case first == 0:
			return nil, usagef("--userns-range %s: host ID 0 is root: start the range at unused IDs, e.g. 1000000:65536", f.usernsRange)
		case first+count > 1<<32-1:
			return nil, usagef("--userns-range %s: goes past the largest ID (4294967294)", f.usernsRange)
		}
		return &container.IDRange{HostUID: uint32(first), HostGID: uint32(first), Size: uint32(count)}, nil
	case f.userns && root:
		r, err := container.SubordinateRange("root", 0)
		if err != nil {
			return nil, usagef("--userns as root: %v: add a line such as root:1000000:65536 to /etc/subuid and /etc/subgid, or pass --userns-range 1000000:65536", err)
		}
		return &r, nil
	case f.userns:
		r := container.CallerRange()
		return &r, nil
	}
	return nil, nil
}

// validHostname accepts what sethostname(2) takes (at most 64 bytes) and
// the resolver expects: letters, digits, dots and dashes.
func validHostname(h string) bool {
	if h == "" || len(h) > 64 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return true
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

	var res container.Result
	if f.runc {
		res, err = runWithRunc(cfg)
	} else {
		res, err = container.Foreground(cfg, printNotes)
	}
	if errors.Is(err, container.ErrNoRunc) {
		return usagef("--runc: runc is not installed: install it (apt-get install runc) or leave out --runc")
	}
	if err != nil {
		return err // "container setup failed: ..." or a host error
	}
	if f.runc {
		printNotes(res.Notes) // Foreground printed its own at the start
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

// runWithRunc runs cfg through runc; SIGINT, SIGTERM and SIGHUP kill it.
func runWithRunc(cfg container.Config) (container.Result, error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	return container.RunRunc(ctx, cfg)
}

// printNotes prints the runtime's notes (or its report), one line each.
func printNotes(notes []string) {
	for _, n := range notes {
		fmt.Fprintf(os.Stderr, "kvmlab: container: %s\n", n)
	}
}
