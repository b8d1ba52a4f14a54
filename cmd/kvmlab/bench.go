package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"kvmlab/bench"
	"kvmlab/emuhost"
	"kvmlab/guest"
	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
)

// `kvmlab bench`: this file parses and checks the flags, then package bench
// measures. The flag set is large, but each flag is one field of
// bench.Config, so the command keeps the parsing (and the one-line usage
// errors every subcommand gives) and the package keeps no flag of its own.

const benchUsage = `usage: kvmlab bench [flags]

` + bench.About + `
Flags:
`

// benchArgs are bench's flags: the Config fields they fill, and those that
// only choose where it runs.
type benchArgs struct {
	c              bench.Config
	vmms, mem      string
	emulated, here bool
	emulatedCPU    string // amd or intel: the emulated host's CPU, as kvmlab run's
	goFloorN       uint
	goFloorVariant string
	guest          string // --guest: default or debian
}

// addBenchFlags defines the user's flags of kvmlab bench.
func addBenchFlags(fs *flag.FlagSet, a *benchArgs) {
	f := &a.c
	fs.IntVar(&f.Runs, "runs", 3, "boots per VMM")
	fs.IntVar(&f.Warmup, "warmup", 1, "rounds of boots (one per VMM) before the measured ones, not counted: the first boots on a fresh host run cold code (in the emulated host, code QEMU has not translated yet) and would penalise whichever VMM goes first")
	fs.StringVar(&a.guest, "guest", "default", "default: kvmlab's own kernel; debian: Debian's stock kernel (linux-image-amd64, fetched with apt-get download and cached, as the emulated host's own kernel is) with kvmlab's initramfs, and unless given, --vmms kvmlab,qemu-q35,qemu-microvm and --exit-loop 0")
	fs.StringVar(&f.Kernel, "kernel", "", "guest kernel, a bzImage (default: the kvmlab guest kernel)")
	fs.StringVar(&f.Initrd, "initrd", "", "initramfs with kvmlab's guest tools (default: the kvmlab initramfs); it must have /bin/kvmlab-console")
	fs.StringVar(&a.mem, "mem", "512M", "guest RAM: MiB (512), or with a K, M or G suffix (512M)")
	fs.StringVar(&f.Append, "append", "console=ttyS0 panic=-1 quiet", "kernel command line (the bench adds kvmlab.run=kvmlab-console,N)")
	fs.StringVar(&a.vmms, "vmms", "kvmlab,qemu-q35,qemu-microvm,gokvm", "comma-separated VMMs to compare; none boots no guest and runs the exit loop only")
	fs.IntVar(&f.ConsoleBytes, "console-bytes", 64<<10, "bytes the guest writes to its serial console for the console figure")
	fs.StringVar(&f.ConsoleVia, "console-via", "tty", "how the guest writes the markers and the console payload: tty (the serial tty, interrupt-driven, as programs write) or kmsg (the kernel's log, which polls the UART) for every VMM; gokvm always gets kmsg, its UART never raises the transmit interrupt")
	fs.DurationVar(&f.Timeout, "timeout", 8*time.Minute, "limit for one boot")
	fs.StringVar(&f.QEMU, "qemu", "qemu-system-x86_64", "QEMU binary")
	fs.StringVar(&f.QEMUFirmware, "qemu-firmware", "/usr/share/qemu", "QEMU's firmware directory (-L)")
	fs.StringVar(&f.Gokvm, "gokvm", "", "gokvm binary (default: build it with go into the cache)")
	fs.IntVar(&f.ExitLoop, "exit-loop", 100000, "exits for the exit-cost benchmark (a guest looping on `out`, under a minimal C loop, the same loop in Go, and kvmlab); 0 skips it")
	fs.BoolVar(&f.GoFloorVariants, "go-floor-variants", false, "exit loop: also run the Go floor without yielding to the scheduler, with RawSyscall (what the Go runtime's system-call bookkeeping costs) and pinned to one CPU")
	fs.BoolVar(&f.IO, "io", false, "measure virtio disk and network throughput instead of boot, console and memory")
	fs.IntVar(&f.IOMiB, "io-mib", 32, "with --io: MiB for the sequential disk phases")
	fs.IntVar(&f.IOOps, "io-ops", 1000, "with --io: 4 KiB requests in each random disk phase")
	fs.IntVar(&f.NetMiB, "net-mib", 8, "with --io: MiB the guest sends to a TCP sink on the host through a TAP this command creates (root); 0 leaves the network out")
	fs.BoolVar(&f.JSON, "json", false, "print the figures as JSON instead of a table")
	fs.BoolVar(&f.Smaps, "smaps", false, "after each boot, list the VMM's resident mappings at the console-end marker (where its memory goes)")
	fs.BoolVar(&a.emulated, "emulated-host", false, "run inside the emulated host even when /dev/kvm works")
	fs.StringVar(&a.emulatedCPU, "emulated-cpu", "amd", "with --emulated-host: the emulated host's CPU: amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x: an interpreter, one CPU, 2 GiB; needs bochs, isolinux, xorriso)")
	fs.BoolVar(&a.here, "here", false, "with --vmms none: run the exit loop on this machine's /dev/kvm even when it cannot boot Linux (kvm_pvm runs the loop's few instructions natively, with no emulator in between)")
}

// addBenchInternalFlags defines the flags the bench gives itself: the
// outer bench to the inner one in the emulated host, the exit loop to the
// Go floor it runs as its own process. Their usage starts with "internal:",
// so they parse but --help and completion leave them out (package cli).
func addBenchInternalFlags(fs *flag.FlagSet, a *benchArgs) {
	fs.StringVar(&a.c.ExitFloor, "exitfloor", "", "internal: the compiled C floor of the exit benchmark")
	fs.BoolVar(&a.c.InEmulatedHost, "in-emulated-host", false, "internal: this is the run inside the emulated host")
	fs.UintVar(&a.goFloorN, "go-floor", 0, "internal: run the Go floor of the exit benchmark for N exits and print its time")
	fs.StringVar(&a.goFloorVariant, "go-floor-variant", string(bench.GoFloorPlain), "internal: how the Go floor enters the guest: syscall, no-yield, raw or pinned")
}

// newBenchFlagSet is bench's flag set, filling a.
func newBenchFlagSet(a *benchArgs) *flag.FlagSet {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	addBenchFlags(fs, a)
	addBenchInternalFlags(fs, a)
	setUsage(fs, benchUsage)
	return fs
}

func cmdBench(args []string) error {
	var a benchArgs
	fs := newBenchFlagSet(&a)
	if help, err := parseFlags(fs, args, false); help || err != nil {
		return err
	}
	f := &a.c
	if a.goFloorN > 0 {
		d, err := bench.GoFloor(uint32(a.goFloorN), bench.GoFloorVariant(a.goFloorVariant))
		if err != nil {
			return fmt.Errorf("go floor: %w", err)
		}
		fmt.Printf("exitfloor: %d exits in %d ns\n", a.goFloorN, d.Nanoseconds())
		return nil
	}
	if err := f.Check(); err != nil {
		return asUsage(err)
	}
	if err := benchGuest(fs, &a); err != nil {
		return err
	}
	if f.IO {
		vmmsSet := false
		fs.Visit(func(fl *flag.Flag) { vmmsSet = vmmsSet || fl.Name == "vmms" })
		if !vmmsSet {
			a.vmms = "kvmlab,kvmlab-no-eventfds,qemu-q35"
		}
	}
	mem, err := vmm.ParseMemSize(a.mem)
	if err != nil || mem < 64<<20 || mem > 3<<30 {
		return usagef("bench: --mem %q: give 64M to 3G (one RAM region below the PCI hole, for every VMM)", a.mem)
	}
	f.Mem, f.MemMiB = a.mem, int(mem>>20)
	if f.Emulator, err = checkBenchEmulator(&a); err != nil {
		return err
	}
	if f.VMMs, err = bench.SelectPeers(a.vmms, f.IO); err != nil {
		return asUsage(err)
	}
	if len(f.VMMs) == 0 && f.ExitLoop == 0 {
		return usagef("bench: --vmms none --exit-loop 0 leaves nothing to measure: name a VMM or give --exit-loop N")
	}
	if f.Kvmlab, err = os.Executable(); err != nil {
		return err
	}
	f.CacheDir = guest.CacheDir()
	if a.here {
		// The exit loop's guest is a few instructions in long mode, which
		// a /dev/kvm that cannot boot Linux (kvm_pvm) still runs; a boot
		// there would only hang.
		if len(f.VMMs) > 0 || f.ExitLoop == 0 || a.emulated {
			return usagef("bench: --here runs the exit loop only: give --vmms none and --exit-loop N, without --emulated-host")
		}
		sys, err := kvm.Open()
		if err != nil {
			return kvmError(err)
		}
		sys.Close()
		return benchHere(f)
	}
	if err := guest.Resolve("bench", &f.Kernel, &f.Initrd); err != nil {
		return asUsage(err)
	}
	ok, why := emuhost.KVMUsable()
	if f.InEmulatedHost || (ok && !a.emulated) {
		return benchHere(f)
	}
	if !a.emulated {
		fmt.Fprintf(os.Stderr, "kvmlab bench: %s: running inside the emulated host (QEMU TCG, nested SVM)\n", why)
	}
	if f.Emulator == emuhost.BochsVMX {
		if err := emuhost.CheckBochs(context.Background()); err != nil {
			return usagef("bench: --emulated-cpu intel: %v", err)
		}
	}
	spec, cleanup, err := bench.EmulatedSpec(f, emuhost.KVMLabFiles(f.Kvmlab, f.Kernel, f.Initrd))
	defer cleanup()
	if err != nil {
		return asUsage(err)
	}
	return runEmulatedSpec(spec)
}

// checkBenchEmulator reads --emulated-cpu as kvmlab run does
// (emuhost.ChooseEmulator).
func checkBenchEmulator(a *benchArgs) (emuhost.Emulator, error) {
	mem := uint64(a.c.MemMiB)
	if a.c.InEmulatedHost {
		mem = 0 // checked by the outer run, which started this one
	}
	emu, err := emuhost.ChooseEmulator(a.emulatedCPU, a.emulated || a.c.InEmulatedHost, mem, a.mem)
	if err != nil {
		return "", usagef("bench: %v", err)
	}
	return emu, nil
}

// benchHere runs the bench on this machine's /dev/kvm and prints its report.
func benchHere(f *bench.Config) error {
	rep, err := bench.Here(f)
	if err != nil {
		return asUsage(err)
	}
	return printReport(f.JSON, rep, rep.Print)
}

// benchGuest applies --guest: debian puts Debian's stock kernel under the
// kvmlab initramfs, the case issue 19 measures (a stock kernel boots
// slower than kvmlab's small one: more drivers, more initcalls, an xz
// payload three times as large), and compares kvmlab with QEMU only.
func benchGuest(fs *flag.FlagSet, a *benchArgs) error {
	switch a.guest {
	case "default":
		return nil
	case "debian":
	default:
		return usagef("bench: --guest %q: give default (kvmlab's kernel) or debian (Debian's stock kernel)", a.guest)
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["kernel"] || a.c.IO {
		return usagef("bench: --guest debian chooses the kernel itself: leave out --kernel and --io")
	}
	if !set["vmms"] {
		a.vmms = "kvmlab,qemu-q35,qemu-microvm"
	}
	if !set["exit-loop"] {
		a.c.ExitLoop = 0
	}
	k, err := emuhost.HostKernel(context.Background())
	if err != nil {
		return fmt.Errorf("bench: --guest debian: Debian's kernel package: %w", err)
	}
	a.c.Kernel = k.Vmlinuz
	if a.c.Initrd == "" {
		_, a.c.Initrd = guest.Default()
	}
	return nil
}
