package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"kvmlab/guestmem"
	"kvmlab/internal/cli"
	"kvmlab/internal/footprint"
	"kvmlab/internal/userfile"
	"kvmlab/vmm"
	"kvmlab/vmm/boot"
	"kvmlab/vmm/control"
	"kvmlab/vmm/gdbstub"
	"kvmlab/vmm/inspect"
	"kvmlab/vmm/kvm"
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

// cacheDir is where built guest artifacts live.
func cacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kvmlab")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "kvmlab")
	}
	return filepath.Join(os.TempDir(), "kvmlab-cache")
}

// defaultGuest returns the default kernel and initramfs, written by
// 'make guest' into the cache.
func defaultGuest() (kernel, initrd string) {
	d := filepath.Join(cacheDir(), "default")
	return filepath.Join(d, "bzImage"), filepath.Join(d, "initramfs.cpio")
}

// maxKernelSize bounds --kernel. A bzImage is about 10 MiB; an ELF vmlinux
// with debug information a few hundred MiB. Anything larger is not a kernel
// (and would need four times its size in guest RAM: vmm.MinGuestMem).
const maxKernelSize = 1 << 30

// readUserFile reads a file named on the command line (internal/userfile:
// a regular file, at most max bytes, read with that bound), with one-line
// errors naming the flag.
func readUserFile(flagName, path, what string, max int64) ([]byte, error) {
	b, err := userfile.ReadFile(path, userfile.Spec{What: what, Max: max})
	if err != nil {
		return nil, usagef("--%s %s: %v", flagName, path, err)
	}
	return b, nil
}

// loadConfig validates flags and files into a vmm.Config.
func (f *runFlags) loadConfig() (vmm.Config, error) {
	var cfg vmm.Config
	mem, err := vmm.ParseMemSize(f.mem)
	if err != nil {
		return cfg, usagef("--mem %s: not a size: use a number with K, M or G, e.g. --mem 512M", f.mem)
	}
	if f.cpus < 1 {
		return cfg, usagef("--cpus %d: a guest needs at least one vCPU: use --cpus 1 or more", f.cpus)
	}
	if f.cpus > 255 {
		return cfg, usagef("--cpus %d: kvmlab's ACPI tables describe at most 255 vCPUs: use fewer (KVM's own limit is shown by 'kvmlab check')", f.cpus)
	}
	kernelPath, initrdPath := f.kernel, f.initrd
	if kernelPath == "" {
		k, i := defaultGuest()
		if _, err := os.Stat(k); err != nil {
			return cfg, usagef("the default guest kernel is not built (%s): run 'make guest', or pass --kernel PATH", k)
		}
		kernelPath = k
		if initrdPath == "" {
			initrdPath = i
		}
	}
	kernel, err := readUserFile("kernel", kernelPath, "kernel", maxKernelSize)
	if err != nil {
		return cfg, err
	}
	if _, err := boot.Parse(kernel); err != nil {
		return cfg, usagef("--kernel %s: %v", kernelPath, err)
	}
	if host := vmm.HostMemory(); host > 0 && mem > host {
		return cfg, usagef("--mem %s: more than this host's %d MiB of RAM: use a smaller --mem", f.mem, host>>20)
	}
	var initrd []byte
	if initrdPath != "" {
		// The size is checked on the opened file before reading: a huge
		// file is refused without costing its read.
		lowRAM := min(mem, uint64(guestmem.MMIOHoleStart))
		initrd, err = userfile.ReadFile(initrdPath, userfile.Spec{What: "initrd", Max: int64(lowRAM / 2)})
		var ue *userfile.Error
		if errors.As(err, &ue) && errors.Is(err, userfile.ErrTooLarge) {
			return cfg, usagef("--initrd %s: %d MiB is too large for %d MiB of guest RAM: raise --mem to at least %d MiB",
				initrdPath, ue.Size>>20, mem>>20, (vmm.MinGuestMem(len(kernel), int(min(ue.Size, 1<<40)))>>20)+1)
		}
		if err != nil {
			return cfg, usagef("--initrd %s: %v", initrdPath, err)
		}
	}
	if need := vmm.MinGuestMem(len(kernel), len(initrd)); mem < need {
		return cfg, usagef("--mem %s: too little RAM for this kernel and initrd (need about %d MiB): raise --mem", f.mem, (need>>20)+1)
	}
	f.resolvedKernel, f.resolvedInitrd = kernelPath, initrdPath
	cfg = vmm.Config{Kernel: kernel, Initrd: initrd, Cmdline: f.appendLine, MemBytes: mem, CPUs: f.cpus,
		RNG: f.rng, NoEventFDs: f.noEventFDs}
	if !f.guestDecompress {
		cfg.DecompressCache = filepath.Join(cacheDir(), "vmlinux") // vmm/hostdecompress.go
	}
	for _, d := range f.disks {
		dc, err := vmm.ParseDisk(d)
		if err != nil {
			return cfg, usagef("--disk %s: %v", d, err)
		}
		cfg.Disks = append(cfg.Disks, dc)
	}
	for _, n := range f.nets {
		nc, err := vmm.ParseNet(n)
		if err != nil {
			return cfg, usagef("--net %s: %v", n, err)
		}
		cfg.Nets = append(cfg.Nets, nc)
	}
	if len(cfg.Disks)+len(cfg.Nets)+btoi(cfg.RNG) > 31 {
		return cfg, usagef("too many virtio devices: PCI bus 0 has 31 free slots")
	}
	return cfg, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// kvmError turns a failure to open /dev/kvm into one line with the fix.
func kvmError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usagef("%s does not exist: load the KVM module (modprobe kvm_intel or kvm_amd; enable virtualisation in the firmware or nested virtualisation on a VM host), or use the emulated host: 'make run'", kvm.DevicePath)
	case errors.Is(err, fs.ErrPermission):
		return usagef("%s: permission denied: add yourself to the kvm group (sudo usermod -aG kvm $USER, then log in again) or run as root", kvm.DevicePath)
	case errors.Is(err, vmm.ErrConfig):
		return usagef("%v", err)
	case errors.Is(err, kvm.ErrMissingCap):
		return usagef("this host's KVM lacks a capability kvmlab needs: %v: use a newer host kernel", err)
	}
	return err
}

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
		return runEmulated(&f, f.resolvedKernel, f.resolvedInitrd, cfg.MemBytes)
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
	if err := checkKVM(cfg, &f); err != nil {
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

// crlfWriter ends lines with CR LF, for a terminal in raw mode.
type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// checkBackend refuses a /dev/kvm without VT-x or AMD SVM behind it (see
// kvm.Backend): a Linux boot there hangs or fails in ways that would only
// puzzle, so say so at once.
func checkBackend() error {
	if ok, why := kvm.HostBackend().CanRunLinux(); !ok {
		return usagef("%s: boot inside the emulated host instead (kvmlab run --emulated-host, as 'make run' does)", why)
	}
	return nil
}

// checkKVM refuses a host whose /dev/kvm cannot run cfg, in one line.
func checkKVM(cfg vmm.Config, f *runFlags) error {
	max, err := kvm.Probe()
	if err != nil {
		return kvmError(err)
	}
	if err := checkBackend(); err != nil && !f.anyKVM && !bootSectorGuest(cfg.Kernel) {
		return err
	}
	if cfg.CPUs > max {
		return usagef("--cpus %d: KVM on this host allows at most %d vCPUs per VM: use fewer", cfg.CPUs, max)
	}
	return nil
}

// runMachine boots cfg on this terminal and maps the outcome to an exit
// status. The caller has run checkKVM, before the terminal is touched.
func runMachine(cfg vmm.Config, f *runFlags, obs *observation) error {

	cfg.Console = os.Stdout
	cfg.Log = os.Stderr
	cfg.Input = os.Stdin
	cfg.Escapes = true
	status := io.Discard
	if !f.quiet {
		status = os.Stderr
	}

	restore := func() {}
	var snapOut io.Writer = os.Stderr
	var cooked *unix.Termios // the terminal before raw mode, for the seccomp handler
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		cooked, _ = unix.IoctlGetTermios(fd, unix.TCGETS)
		// Raw mode: every key goes to the guest, including Ctrl-C; the
		// guest's own tty does line editing and echo.
		old, err := term.MakeRaw(fd)
		if err == nil {
			restore = func() { _ = term.Restore(fd, old) }
			snapOut = crlfWriter{os.Stderr}
			fmt.Fprint(status, "kvmlab: console attached; Ctrl-A x quits\r\n")
		}
	}
	defer restore()
	// Restore the terminal even when killed by a signal.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			restore()
			if f.controlLn != nil {
				_ = f.controlLn.Close() // os.Exit skips the deferred removal
			}
			fmt.Fprintf(os.Stderr, "\r\nkvmlab: %v: stopping\r\n", s)
			os.Exit(128 + int(s.(syscall.Signal)))
		}
	}()

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
	// the files are garbage. Hand their memory back to the host so the
	// VMM's own footprint is what it needs to run, not what it loaded.
	cfg.Kernel, cfg.Initrd = nil, nil
	debug.FreeOSMemory()
	// And drop the pages of kvmlab's own binary that start-up mapped, now
	// and every few seconds, so that only the code and tables the running
	// VMM uses stay mapped (package footprint).
	trim := footprint.StartImageTrimmer(footprint.ImageTrimPeriod, os.Stderr)
	defer trim.Stop()
	// kill -USR1 <pid>: where is the guest right now (vmm/snapshot.go)?
	snapSigs := make(chan os.Signal, 1)
	signal.Notify(snapSigs, syscall.SIGUSR1)
	defer signal.Stop(snapSigs)
	symSrc := inspect.SymbolSources(f.resolvedKernel) // opened before the seccomp filter
	go func() {
		// The symbols are read at the first snapshot, not before: a
		// kernel's System.map is about 2.5 MiB of live heap (and the Go
		// runtime's metadata for it), which would more than double the
		// VMM's own memory for a feature most runs never use. Only the
		// files are open already, for the seccomp filter's sake.
		var sym *inspect.Symbols
		loaded := false
		for range snapSigs {
			if !loaded {
				sym, loaded = inspect.FirstSymbols(symSrc), true
			}
			_, _ = io.WriteString(snapOut, formatSnapshot(m.Snapshot(), sym))
		}
	}()
	// The control socket (--control): served from here until the
	// machine stops, and closed before m.Close (deferred after it).
	defer startControl(f.controlLn, m)()
	obs.Start(m)
	if err := confine(f, status, cooked, int(os.Stdin.Fd())); err != nil {
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
