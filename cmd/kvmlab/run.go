package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"kvmlab/internal/cli"
	"kvmlab/internal/footprint"
	"kvmlab/internal/hostcheck"
	"kvmlab/internal/rawterm"
	"kvmlab/vmm"
	"kvmlab/vmm/control"
	"kvmlab/vmm/gdbstub"
	"kvmlab/vmm/observatory"
)

// DefaultCmdline is what the guest gets without --append: the console on
// COM1, and a panic that reboots at once (which ends the VMM) instead of
// hanging.
const DefaultCmdline = "console=ttyS0 panic=-1"

// runFlags are shared by run (and later step): the interface people and
// scripts call, so the names are fixed.
type runFlags struct {
	kernel, initrd, appendLine string
	mem                        string
	cpus                       int
	quiet                      bool
	stats                      bool
	emulated                   bool
	emulatedCPU                string // amd or intel: the emulated host's CPU (emulated.go)
	traceFile, traceFormat     string
	tracepoints                bool
	disks, nets                listFlag
	rng, noEventFDs            bool
	anyKVM                     bool
	seccomp                    bool
	guestDecompress            bool // --guest-decompress: boot the bzImage as it is

	resolvedKernel, resolvedInitrd string // after defaults, set by loadConfig

	control   string            // --control PATH (run only)
	controlLn *control.Listener // its socket, listening before the machine is built (cmdRun)
	gdb       string            // --gdb ADDR (run only; gdb.go)
	gdbWait   bool              // --gdb-wait
	gdbLn     net.Listener      // its socket, listening before the machine is built
	gdbStub   *gdbstub.Machine  // the stub, attached to the config

	restore string          // --restore FILE (run only)
	snap    *snapshotSource // its file, checked (restore.go)
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel: a bzImage or an ELF vmlinux, or a boot sector run in real mode at 0x7c00 (default: the kvmlab guest kernel, built by 'make guest')")
	fs.StringVar(&f.initrd, "initrd", "", "initial ramdisk (cpio, optionally compressed) (default: the kvmlab u-root initramfs when --kernel is not given)")
	fs.StringVar(&f.appendLine, "append", DefaultCmdline, "kernel command line")
	fs.StringVar(&f.mem, "mem", "512M", "guest RAM: MiB as in QEMU's -m (512), or with a K, M, G or T suffix (512M, 4G)")
	fs.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fs.BoolVar(&f.quiet, "quiet", false, "do not print kvmlab's own status lines (the guest console is unaffected)")
	fs.BoolVar(&f.emulated, "emulated-host", false, "boot inside an emulated host (QEMU TCG with nested KVM) for machines without /dev/kvm; needs qemu-system-x86 and the kvmlab source tree")
	fs.StringVar(&f.emulatedCPU, "emulated-cpu", "amd", "with --emulated-host: the emulated host's CPU: amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x: slower, one CPU, 2 GiB; needs bochs, isolinux, xorriso)")
	fs.BoolVar(&f.stats, "stats", false, "when the guest stops, print VM exit statistics (by KVM reason, hardware reason, vCPU and device, with handling times; and KVM's in-kernel exit counters) and memory use, on stderr")
	fs.BoolVar(&f.tracepoints, "kvm-exit-tracepoint", false, "with --stats: also count every VM exit by hardware reason from the kernel's kvm:kvm_exit tracepoint, and check the hardware reason kvmlab derives for each exit against it (root and tracefs needed; experimental: it has locked up the QEMU-emulated test host)")
	fs.StringVar(&f.traceFile, "trace", "", "write every VM exit that reaches kvmlab to this file (see --trace-format)")
	fs.Var(&f.disks, "disk", "virtio-blk disk on a raw image: PATH or PATH,ro (read-only); repeat for more disks (/dev/vda, /dev/vdb, ...)")
	fs.Var(&f.nets, "net", "virtio-net interface on an existing host TAP: tap=NAME[,mac=52:54:00:12:34:56]; repeatable (create the TAP first: ip tuntap add NAME mode tap)")
	fs.BoolVar(&f.rng, "rng", false, "virtio-rng entropy device fed by the host's getrandom (/dev/hwrng in the guest)")
	fs.BoolVar(&f.noEventFDs, "no-eventfds", false, "virtio without ioeventfd/irqfd: every queue doorbell becomes a user-space MMIO exit and every interrupt a KVM_SIGNAL_MSI ioctl (to compare exit counts)")
	fs.BoolVar(&f.seccomp, "seccomp", true, "confine the running VMM to the system calls it needs with a seccomp filter, installed once the machine is built (--seccomp=false turns it off, for debugging)")
	fs.BoolVar(&f.guestDecompress, "guest-decompress", false, "boot a compressed bzImage as it is and let the guest decompress it, as QEMU and a bootloader do; by default kvmlab decompresses it once on the host (gzip, bzip2, lzma, xz, lz4, zstd), caches the kernel ELF in ~/.cache/kvmlab/vmlinux and enters it at its 64-bit entry (docs/boot.md)")
	fs.BoolVar(&f.anyKVM, "any-kvm", false, "internal: skip the check that /dev/kvm stands on VT-x or AMD SVM (kvmlab bench --here runs its tiny exit-loop guest on kvm_pvm)")
	fs.StringVar(&f.traceFormat, "trace-format", "json", "trace format: json (one JSON object per exit, read by 'kvmlab stat') or chrome (Chrome Trace Event JSON for Perfetto / chrome://tracing)")
}

// loadConfig validates flags and files into a vmm.Config (vmm.Spec).
func (f *runFlags) loadConfig() (vmm.Config, error) {
	cfg, kernel, initrd, err := vmm.Spec{Kernel: f.kernel, Initrd: f.initrd, Cmdline: f.appendLine, Mem: f.mem, CPUs: f.cpus,
		Disks: f.disks, Nets: f.nets, RNG: f.rng, NoEventFDs: f.noEventFDs, GuestDecompress: f.guestDecompress}.Load()
	if err != nil {
		return cfg, asUsage(err)
	}
	f.resolvedKernel, f.resolvedInitrd = kernel, initrd
	return cfg, nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func cmdRun(args []string) error {
	fset := flag.NewFlagSet("run", flag.ContinueOnError)
	var f runFlags
	f.register(fset)
	fset.StringVar(&f.control, "control", "", "listen on a Unix socket at this path (mode 0600, removed on exit) for 'kvmlab control PATH pause|resume|snapshot FILE|stats|quit'")
	fset.StringVar(&f.restore, "restore", "", "restore the machine saved in this snapshot file (written by 'kvmlab control SOCKET snapshot FILE') and let it continue where it stopped, instead of booting a kernel")
	var ex execFlags // --exec, --timeout (exec.go)
	ex.register(fset)
	fset.StringVar(&f.gdb, "gdb", "", gdbUsage)
	fset.BoolVar(&f.gdbWait, "gdb-wait", false, gdbWaitUsage)
	setUsage(fset, "Usage: kvmlab run [flags]\n\nBoot a Linux guest with its serial console on this terminal. Ctrl-A x quits.\nThe guest's poweroff or reboot ends kvmlab with status 0.\n\n"+execUsage+"Flags:\n")
	if help, err := parseFlags(fset, args, false); help || err != nil {
		return err
	}
	if err := ex.check(&f); err != nil {
		return err
	}
	vmm.Version = cli.Version("kvmlab")
	var cfg vmm.Config
	var err error
	if f.restore != "" {
		if f.snap, err = openSnapshot(fset, f.restore); err != nil {
			return err
		}
		defer f.snap.file.Close()
		cfg = f.snap.cfg
	} else if cfg, err = f.loadConfig(); err != nil {
		return err
	}
	if ex.set {
		if err := ex.apply(&cfg, fset); err != nil {
			return err
		}
	}
	if f.emulated && f.traceFile != "" {
		return usagef("--trace with --emulated-host: the trace would stay inside the emulated host; use --stats there, or trace on a host with /dev/kvm")
	}
	if f.control != "" && (f.emulated || f.emulatedCPU != "amd") {
		return usagef("--control with --emulated-host: the socket would be inside the emulated host; run kvmlab there with --control")
	}
	if err := gdbCheck(&f); err != nil {
		return err
	}
	if f.emulated || f.emulatedCPU != "amd" { // runEmulated refuses --emulated-cpu without --emulated-host
		return runEmulated(&f, &ex, f.resolvedKernel, f.resolvedInitrd, cfg.MemBytes)
	}
	cfg.Stats = f.stats
	if f.tracepoints && !f.stats {
		return usagef("--kvm-exit-tracepoint adds a table to --stats: use both")
	}
	// Every check before the trace file is created, the KVM check last
	// of them, so that a refused run leaves an old trace as it was and a
	// user on any host learns about bad input first.
	if err := checkTraceFlags(f.traceFile, f.traceFormat); err != nil {
		return err
	}
	if err := hostcheck.CanRun(cfg.Kernel, cfg.CPUs, f.anyKVM); err != nil {
		return err
	}
	if f.control != "" {
		// Listening before anything is built or written: a path in use
		// refuses the run at once, and the socket exists before the
		// seccomp filter, which allows no socket(2) or bind(2).
		ln, err := control.Listen(f.control)
		if err != nil {
			return usagef("--control %s: %v", f.control, err)
		}
		f.controlLn = ln
		defer ln.Close() // removes the socket, however the run ends
	}
	if err := gdbListen(&f); err != nil {
		return err
	}
	if f.gdbLn != nil {
		defer f.gdbLn.Close()
	}
	obs, err := setupObservation(&cfg, f.traceFile, f.traceFormat, f.stats, f.tracepoints)
	if err != nil {
		return err
	}
	if ex.set {
		return ex.run(cfg, &f, obs)
	}
	return runMachine(cfg, &f, obs)
}

// runMachine boots cfg on this terminal and maps the outcome to an exit
// status. The caller has run hostcheck.CanRun, before the terminal is touched.
func runMachine(cfg vmm.Config, f *runFlags, obs *observation) error {

	cfg.Console = os.Stdout
	cfg.Log = os.Stderr
	cfg.Input = os.Stdin
	cfg.Escapes = true
	status := io.Discard
	if !f.quiet {
		status = os.Stderr
	}

	// Raw mode: every key goes to the guest, including Ctrl-C; the
	// guest's own tty does line editing and echo (package rawterm).
	t, _ := rawterm.Raw(os.Stdin) // when it fails, the terminal stays as it is
	if t != nil {
		fmt.Fprint(status, "kvmlab: console attached; Ctrl-A x quits\r\n")
	}
	restore := t.Restore
	defer restore()
	// Restore the terminal even when killed by a signal.
	defer t.ExitOnSignal(func() {
		if f.controlLn != nil {
			_ = f.controlLn.Close() // os.Exit skips the deferred removal
		}
	})()

	var m *vmm.Machine
	var err error
	gdbAttach(f, &cfg) // --gdb: the stub is the machine's debugger (gdb.go)
	if f.snap != nil {
		m, err = vmm.Restore(cfg, f.snap.snap)
		if err != nil {
			err = restoreError(f.restore, err)
		}
		_ = f.snap.file.Close() // RAM is loaded: the file is not needed again
		if err == nil {
			rt := m.Restored()
			fmt.Fprintf(status, "kvmlab: restored %s: machine built in %v, %.1f MiB of RAM checked and mapped from the file in %v, state set in %v (%v after kvmlab started)\r\n", f.restore,
				rt.Build.Round(time.Millisecond), float64(rt.RAMBytes)/(1<<20), rt.RAM.Round(time.Millisecond), rt.State.Round(time.Millisecond), time.Since(processStart).Round(time.Millisecond))
		}
	} else if m, err = vmm.New(cfg); err != nil {
		err = kvmError(err)
	}
	if err != nil {
		restore()
		obs.Abort() // the old trace file stays as it was
		return err
	}
	defer m.Close()
	// The kernel and initrd now live in guest RAM; the copies read from
	// the files are garbage, and so are the binary's pages start-up
	// mapped (package footprint).
	cfg.Kernel, cfg.Initrd = nil, nil
	defer footprint.Settle(os.Stderr)()
	// kill -USR1 <pid>: where is the guest right now (vmm/snapshot.go, vmm/observatory)?
	snapSigs := make(chan os.Signal, 1)
	signal.Notify(snapSigs, syscall.SIGUSR1)
	defer signal.Stop(snapSigs)
	observatory.Snapshots(snapSigs, m, f.resolvedKernel, t.Writer(os.Stderr)) // symbol files opened before the seccomp filter
	// The control socket (--control): served from here until the
	// machine stops, and closed before m.Close (deferred after it).
	defer control.ServeMachine(f.controlLn, m)()
	obs.Start(m)
	if err := confine(f, status, t.Cooked(), int(os.Stdin.Fd())); err != nil {
		restore()
		return err
	}
	stopGDB := gdbStart(f, m, status)
	out := m.Run()
	stopGDB()
	restore()
	if err := obs.Finish(m, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "kvmlab: trace: %v\n", err)
	}
	if os.Getenv(runtimeReportEnv) != "" {
		fmt.Fprintf(os.Stderr, "kvmlab: %s\n", vmm.RuntimeSummary())
		fmt.Fprintf(os.Stderr, "kvmlab: the machine ran for %d ns\n", out.Ran.Nanoseconds())
	}
	nl := "\n"
	if !out.Reason.Success() {
		fmt.Fprintf(os.Stderr, "%skvmlab: %s%s", nl, out.Detail, nl)
		if out.Dump != "" {
			fmt.Fprintln(os.Stderr, out.Dump)
		}
		return exitError{1}
	}
	fmt.Fprintf(status, "%skvmlab: %s%s", nl, out.Detail, nl)
	return nil
}
