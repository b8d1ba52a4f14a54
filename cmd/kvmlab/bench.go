package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"kvmlab/emuhost"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/tracepoint"
)

// gokvmVersion is the gokvm the benchmark builds: the version go.mod pins
// (a test checks they agree). gokvm is our closest peer, a Go VMM too; it is
// built as its own program and run beside kvmlab, never linked into it.
const gokvmVersion = "v0.0.8-0.20231003020000-f53faca69d28"

// qemuFirmware are the files QEMU loads from its data directory (-L) for a
// direct kernel boot on q35 (SeaBIOS, the linuxboot option ROM, the vAPIC
// ROM) and on microvm (qboot).
var qemuFirmware = []string{"bios-256k.bin", "bios-microvm.bin", "qboot.rom", "linuxboot_dma.bin", "linuxboot.bin", "kvmvapic.bin"}

type benchFlags struct {
	runs                 int
	warmup               int
	kernel, initrd, mem  string
	appendLine           string
	vmms                 string
	consoleBytes         int
	consoleVia           string
	timeout              time.Duration
	qemu, firmware, goKV string
	jsonOut              bool
	emulated, inHost     bool
	here                 bool
	smaps                bool
	exitLoop             int
	exitFloor            string
	goVariants           bool
	io                   bool
	ioMiB, ioOps, netMiB int
}

const benchUsage = `usage: kvmlab bench [flags]

Boots one kernel + initramfs + command line under kvmlab, QEMU with KVM
(-machine q35 and -machine microvm) and gokvm, several times each,
interleaved (kvmlab, q35, microvm, gokvm, kvmlab, ...), and prints for each
the median, minimum and maximum of:

  - process start -> first line of guest user space;
  - process start -> VMM exited after the guest's poweroff (gokvm cannot exit);
  - console: time for the guest to write --console-bytes to the serial port;
  - memory: peak RSS, RSS outside guest RAM, guest RAM resident at the end;
  - exits: all VM exits during the boot, and port/MMIO ones (KVM debugfs);
    the exits that reached the VMM's user space, by KVM_EXIT_* reason (a
    histogram on kvm:kvm_userspace_exit; root and tracefs), and, on each
    boot's line, the boot's busiest I/O ports (kvm:kvm_pio);

and each peer's ratio to kvmlab.

The guest writes its markers and the console payload to the serial tty,
as programs do; gokvm's UART never raises the transmit interrupt the tty
waits for, so its guest writes through /dev/kmsg, which the kernel's
console sends by polling the UART. --console-via kmsg puts every VMM on
that path, for a console figure comparable with gokvm's.

Then the cost of one exit (--exit-loop N): a guest that writes a port N
and 2N times, under a minimal C loop (ioctl KVM_RUN and a switch), the
same loop in Go, and kvmlab's vCPU loop, all in the same VM; each prints
its own loop time. --vmms none runs this part only.

With --io it measures virtio devices instead: the guest gets a virtio-blk
disk on a raw image (and, with --net-mib N, a virtio-net card on a TAP this
command creates, which needs root) and runs /bin/kvmlab-io: sequential
1 MiB writes and reads and random 4 KiB reads and writes with O_DIRECT
(MB/s, IOPS), then the TCP stream to a sink on the host (MB/s), each with
KVM's exits per MiB. VMMs: kvmlab,
kvmlab-no-eventfds (kvmlab --no-eventfds) and qemu-q35 (virtio-blk-pci and
virtio-net-pci).

Without a usable /dev/kvm it runs inside
the emulated host (QEMU TCG with nested SVM), carrying QEMU, its firmware
and gokvm in. gokvm is built from the Go module proxy at the version
go.mod pins (needs go).

Flags:
`

func cmdBench(args []string) error {
	var f benchFlags
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), benchUsage); fs.PrintDefaults() }
	fs.IntVar(&f.runs, "runs", 3, "boots per VMM")
	fs.IntVar(&f.warmup, "warmup", 1, "rounds of boots (one per VMM) before the measured ones, not counted: the first boots on a fresh host run cold code (in the emulated host, code QEMU has not translated yet) and would penalise whichever VMM goes first")
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel, a bzImage (default: the kvmlab guest kernel)")
	fs.StringVar(&f.initrd, "initrd", "", "initramfs with kvmlab's guest tools (default: the kvmlab initramfs); it must have /bin/kvmlab-console")
	fs.StringVar(&f.mem, "mem", "512M", "guest RAM")
	fs.StringVar(&f.appendLine, "append", "console=ttyS0 panic=-1 quiet", "kernel command line (the bench adds kvmlab.run=kvmlab-console,N)")
	fs.StringVar(&f.vmms, "vmms", "kvmlab,qemu-q35,qemu-microvm,gokvm", "comma-separated VMMs to compare; none boots no guest and runs the exit loop only")
	fs.IntVar(&f.consoleBytes, "console-bytes", 64<<10, "bytes the guest writes to its serial console for the console figure")
	fs.StringVar(&f.consoleVia, "console-via", "tty", "how the guest writes the markers and the console payload: tty (the serial tty, interrupt-driven, as programs write) or kmsg (the kernel's log, which polls the UART) for every VMM; gokvm always gets kmsg, its UART never raises the transmit interrupt")
	fs.DurationVar(&f.timeout, "timeout", 8*time.Minute, "limit for one boot")
	fs.StringVar(&f.qemu, "qemu", "qemu-system-x86_64", "QEMU binary")
	fs.StringVar(&f.firmware, "qemu-firmware", "/usr/share/qemu", "QEMU's firmware directory (-L)")
	fs.StringVar(&f.goKV, "gokvm", "", "gokvm binary (default: build it with go into the cache)")
	fs.IntVar(&f.exitLoop, "exit-loop", 100000, "exits for the exit-cost benchmark (a guest looping on `out`, under a minimal C loop, the same loop in Go, and kvmlab); 0 skips it")
	fs.StringVar(&f.exitFloor, "exitfloor", "", "internal: the compiled C floor of the exit benchmark")
	fs.BoolVar(&f.goVariants, "go-floor-variants", false, "exit loop: also run the Go floor without yielding to the scheduler, with RawSyscall (what the Go runtime's system-call bookkeeping costs) and pinned to one CPU")
	fs.BoolVar(&f.io, "io", false, "measure virtio disk and network throughput instead of boot, console and memory")
	fs.IntVar(&f.ioMiB, "io-mib", 32, "with --io: MiB for the sequential disk phases")
	fs.IntVar(&f.ioOps, "io-ops", 1000, "with --io: 4 KiB requests in each random disk phase")
	fs.IntVar(&f.netMiB, "net-mib", 8, "with --io: MiB the guest sends to a TCP sink on the host through a TAP this command creates (root); 0 leaves the network out")
	fs.BoolVar(&f.jsonOut, "json", false, "print the figures as JSON instead of a table")
	fs.BoolVar(&f.smaps, "smaps", false, "after each boot, list the VMM's resident mappings at the console-end marker (where its memory goes)")
	fs.BoolVar(&f.emulated, "emulated-host", false, "run inside the emulated host even when /dev/kvm works")
	fs.BoolVar(&f.here, "here", false, "with --vmms none: run the exit loop on this machine's /dev/kvm even when it cannot boot Linux (kvm_pvm runs the loop's few instructions natively, with no emulator in between)")
	fs.BoolVar(&f.inHost, "in-emulated-host", false, "internal: this is the run inside the emulated host")
	goFloorN := fs.Uint("go-floor", 0, "internal: run the Go floor of the exit benchmark for N exits and print its time")
	goFloorV := fs.String("go-floor-variant", string(goFloorPlain), "internal: how the Go floor enters the guest: syscall, no-yield, raw or pinned")
	if help, err := parseFlags(fs, args, false); help || err != nil {
		return err
	}
	if *goFloorN > 0 {
		d, err := goFloor(uint32(*goFloorN), goFloorVariant(*goFloorV))
		if err != nil {
			return fmt.Errorf("go floor: %w", err)
		}
		fmt.Printf("exitfloor: %d exits in %d ns\n", *goFloorN, d.Nanoseconds())
		return nil
	}
	if f.runs < 1 || f.runs > 100 {
		return usagef("bench: --runs %d: give 1 to 100 boots per VMM", f.runs)
	}
	if f.warmup < 0 || f.warmup > 10 {
		return usagef("bench: --warmup %d: give 0 to 10 uncounted rounds", f.warmup)
	}
	if f.exitLoop < 0 || f.exitLoop > 100_000_000 {
		return usagef("bench: --exit-loop %d: give 0 (skip) to 100000000 exits", f.exitLoop)
	}
	if f.consoleVia != "tty" && f.consoleVia != "kmsg" {
		return usagef("bench: --console-via %q: give tty or kmsg", f.consoleVia)
	}
	if f.consoleBytes < 0 || f.consoleBytes > 16<<20 {
		return usagef("bench: --console-bytes %d: give 0 to 16777216", f.consoleBytes)
	}
	if f.ioMiB < 1 || f.ioMiB > 1024 || f.ioOps < 0 || f.ioOps > 1_000_000 || f.netMiB < 0 || f.netMiB > 4096 {
		return usagef("bench: --io-mib %d, --io-ops %d, --net-mib %d: give 1-1024 MiB, 0-1000000 requests, 0-4096 MiB", f.ioMiB, f.ioOps, f.netMiB)
	}
	if f.io {
		vmmsSet := false
		fs.Visit(func(fl *flag.Flag) { vmmsSet = vmmsSet || fl.Name == "vmms" })
		if !vmmsSet {
			f.vmms = "kvmlab,kvmlab-no-eventfds,qemu-q35"
		}
	}
	mem, err := parseSize(f.mem)
	if err != nil || mem < 64<<20 || mem > 3<<30 {
		return usagef("bench: --mem %q: give 64M to 3G (one RAM region below the PCI hole, for every VMM)", f.mem)
	}
	peers, err := selectPeers(f.vmms, f.io)
	if err != nil {
		return err
	}
	if len(peers) == 0 && f.exitLoop == 0 {
		return usagef("bench: --vmms none --exit-loop 0 leaves nothing to measure: name a VMM or give --exit-loop N")
	}
	if f.here {
		// The exit loop's guest is a few instructions in long mode, which
		// a /dev/kvm that cannot boot Linux (kvm_pvm) still runs; a boot
		// there would only hang.
		if len(peers) > 0 || f.exitLoop == 0 || f.emulated {
			return usagef("bench: --here runs the exit loop only: give --vmms none and --exit-loop N, without --emulated-host")
		}
		sys, err := kvm.Open()
		if err != nil {
			return kvmError(err)
		}
		sys.Close()
		return benchHere(&f, nil, int(mem>>20))
	}
	if err := resolveGuest("bench", &f.kernel, &f.initrd); err != nil {
		return err
	}
	ok, why := emuhost.KVMUsable()
	if f.inHost || (ok && !f.emulated) {
		return benchHere(&f, peers, int(mem>>20))
	}
	if !f.emulated {
		fmt.Fprintf(os.Stderr, "kvmlab bench: %s: running inside the emulated host (QEMU TCG, nested SVM)\n", why)
	}
	return benchEmulated(&f, peers, int(mem>>20))
}

// selectPeers turns --vmms into peers, in the given order (kvmlab first
// makes the ratios read naturally, but any order works).
func selectPeers(list string, io bool) ([]string, error) {
	known, choice := map[string]bool{"kvmlab": true, "qemu-q35": true, "qemu-microvm": true, "gokvm": true}, "kvmlab, qemu-q35, qemu-microvm, gokvm"
	if io {
		known, choice = map[string]bool{"kvmlab": true, "kvmlab-no-eventfds": true, "qemu-q35": true}, "kvmlab, kvmlab-no-eventfds, qemu-q35 (with --io)"
	}
	if strings.TrimSpace(list) == "none" && !io {
		return nil, nil // the exit loop only
	}
	var out []string
	for _, v := range strings.Split(list, ",") {
		v = strings.TrimSpace(v)
		if !known[v] {
			if !io {
				choice += ", or none (the exit loop only)"
			}
			return nil, usagef("bench: --vmms: unknown VMM %q: choose from %s", v, choice)
		}
		out = append(out, v)
	}
	return out, nil
}

// buildGokvm builds the pinned gokvm into the cache (once per version) and
// returns its path.
func buildGokvm() (string, error) {
	dir := filepath.Join(cacheDir(), "peers", "gokvm-"+gokvmVersion)
	bin := filepath.Join(dir, "gokvm")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if _, err2 := os.Stat("/usr/local/go/bin/go"); err2 == nil {
			goBin = "/usr/local/go/bin/go"
		} else {
			return "", fmt.Errorf("building gokvm needs the go tool: %w", err)
		}
	}
	cmd := exec.Command(goBin, "install", "github.com/bobuhiro11/gokvm@"+gokvmVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir() // outside any module: go install pkg@version
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install gokvm@%s: %w\n%s", gokvmVersion, err, out)
	}
	return bin, nil
}

// benchEmulated runs this same command inside the emulated host, with QEMU
// (binary, libraries, firmware), gokvm, the kernel and the initramfs
// carried in.
func benchEmulated(f *benchFlags, peers []string, memMiB int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	files := emulatedGuestFiles(self, f.kernel, f.initrd)
	argv := []string{"/kvmlab/kvmlab", "bench", "--in-emulated-host", "--runs", strconv.Itoa(f.runs), "--warmup", strconv.Itoa(f.warmup),
		"--kernel", "/kvmlab/kernel", "--initrd", "/kvmlab/initrd", "--mem", f.mem, "--append", f.appendLine,
		"--vmms", cmp.Or(strings.Join(peers, ","), "none"), "--console-bytes", strconv.Itoa(f.consoleBytes), "--console-via", f.consoleVia, "--timeout", f.timeout.String()}
	if f.jsonOut {
		argv = append(argv, "--json")
	}
	if f.smaps {
		argv = append(argv, "--smaps")
	}
	if f.io {
		argv = append(argv, "--io", "--io-mib", strconv.Itoa(f.ioMiB), "--io-ops", strconv.Itoa(f.ioOps), "--net-mib", strconv.Itoa(f.netMiB))
	}
	argv = append(argv, "--exit-loop", strconv.Itoa(f.exitLoop))
	if f.goVariants {
		argv = append(argv, "--go-floor-variants")
	}
	if f.exitLoop > 0 && !f.io {
		dir, err := os.MkdirTemp("", "kvmlab-exitfloor-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		floor, err := buildExitFloor(dir)
		if err != nil {
			return err
		}
		files = append(files, emuhost.File{HostPath: floor, Path: "/kvmlab/exitfloor", Mode: 0o755})
		argv = append(argv, "--exitfloor", "/kvmlab/exitfloor")
	}
	for _, p := range peers {
		switch p {
		case "qemu-q35", "qemu-microvm":
			if slices.Contains(argv, "--qemu") {
				continue
			}
			qf, err := emuhost.Programs(f.qemu)
			if err != nil {
				return usagef("bench: %v: install QEMU (apt-get install qemu-system-x86) or leave qemu out with --vmms", err)
			}
			files = append(files, qf...)
			for _, fw := range qemuFirmware {
				p := findFirmware(f.firmware, fw)
				if p == "" {
					return usagef("bench: QEMU firmware %s is not in %s or Debian's seabios/ipxe directories: install qemu-system-x86 and seabios, or pass --qemu-firmware DIR", fw, f.firmware)
				}
				files = append(files, emuhost.File{HostPath: p, Path: "/kvmlab/qemu-fw/" + fw, Mode: 0o644})
			}
			argv = append(argv, "--qemu", qf[0].Path, "--qemu-firmware", "/kvmlab/qemu-fw")
		case "gokvm":
			bin := f.goKV
			if bin == "" {
				if bin, err = buildGokvm(); err != nil {
					return err
				}
			}
			files = append(files, emuhost.File{HostPath: bin, Path: "/kvmlab/gokvm", Mode: 0o755})
			argv = append(argv, "--gokvm", "/kvmlab/gokvm")
		}
	}
	spec := emuhost.Spec{
		Files: files, Argv: argv, MemMB: max(2048, memMiB+1536), CPUs: 2,
		Timeout: time.Duration(f.runs*len(peers))*f.timeout + 5*time.Minute + exitLoopLimit(f),
		// The bench prints a line per boot and per exit-loop round, and
		// each program it runs has --timeout (a round's may be retried):
		// a host silent for longer than that has stopped (about one
		// emulated host in 16 hangs), and is noticed now rather than at
		// the end of Timeout, which for a full bench is most of an hour.
		Quiet:  3*f.timeout + 2*time.Minute,
		Output: os.Stdout,
	}
	return runEmulatedSpec(spec)
}

// exitLoopLimit is the most the exit loop may take: two programs (N and
// 2N exits) per side and round, each tried at most twice within --timeout.
func exitLoopLimit(f *benchFlags) time.Duration {
	if f.exitLoop == 0 || f.io {
		return 0
	}
	sides := 3
	if f.goVariants {
		sides += 3
	}
	return time.Duration(f.runs*2*2*sides) * f.timeout
}

// findFirmware looks for a QEMU firmware file in dir, then where Debian's
// seabios and ipxe packages put theirs (QEMU searches those too).
func findFirmware(dir, name string) string {
	for _, d := range []string{dir, "/usr/share/seabios", "/usr/lib/ipxe/qemu"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// benchHere runs the benchmark on this machine's /dev/kvm.
func benchHere(f *benchFlags, names []string, memMiB int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	host := "/dev/kvm on this machine"
	if be := kvm.HostBackend(); be.PVM && be.Extension == "" {
		host = "/dev/kvm on this machine: kvm_pvm, a software KVM whose guest code runs natively on the CPU, no emulator between"
	}
	if f.inHost {
		host = "the emulated host (QEMU " + runtime.GOARCH + " TCG -cpu max, nested SVM, 2 vCPUs)"
		_ = os.MkdirAll("/sys/kernel/debug", 0o755)
	}
	if os.Geteuid() == 0 {
		// KVM's per-VM statistics live in debugfs, which a minimal
		// host (the emulated one, a container) may not have mounted.
		_ = mountDebugfs()
	}
	if f.io {
		return benchIOHere(f, names, memMiB, host)
	}
	var peers []peer
	for _, n := range names {
		p, err := makePeer(n, self, f)
		if err != nil {
			return err
		}
		p.kmsg = p.kmsg || f.consoleVia == "kmsg"
		peers = append(peers, p)
	}
	cmdline := fmt.Sprintf("%s kvmlab.run=kvmlab-console,%d", f.appendLine, f.consoleBytes)
	if len(names) > 0 {
		fmt.Fprintf(os.Stderr, "kvmlab bench: %d boot(s) each of %s, interleaved, on %s\n", f.runs, strings.Join(names, ", "), host)
		fmt.Fprintf(os.Stderr, "kvmlab bench: guest %s + %s, %d MiB, 1 vCPU, command line %q\n", f.kernel, f.initrd, memMiB, cmdline)
	}
	// Exits to user space and port accesses, counted by the kernel for any
	// VMM (histograms on kvm:kvm_userspace_exit and kvm:kvm_pio); without
	// root or tracefs these figures are n/a.
	var hists histograms
	if len(peers) > 0 {
		if u, err := tracepoint.StartUserExits(); err != nil {
			fmt.Fprintf(os.Stderr, "kvmlab bench: exits to user space will be n/a: %v\n", err)
		} else {
			hists.userExits = u
			defer u.Close()
		}
		if pa, err := tracepoint.StartPortAccesses(); err == nil {
			hists.ports = pa
			defer pa.Close()
		}
	}
	var all []sample
	for r := 1 - f.warmup; r <= f.runs; r++ {
		for _, p := range peers {
			s := runPeer(context.Background(), p, f.kernel, f.initrd, cmdline, memMiB, f.timeout, f.smaps, hists)
			s.consoleBytes = f.consoleBytes
			label := runLabel(r)
			if s.smapsList != "" {
				fmt.Fprintf(os.Stderr, "kvmlab bench: %s %s resident mappings at the console-end marker (KiB):\n%s", label, p.name, s.smapsList)
			}
			if r > 0 {
				all = append(all, s)
			}
			if s.failure != "" {
				fmt.Fprintf(os.Stderr, "kvmlab bench: %s %s FAILED: %s\n", label, p.name, s.failure)
				continue
			}
			fmt.Fprintf(os.Stderr, "kvmlab bench: %s %-12s user space %6.2fs, console %6.2fs, exit %s [through the %s]\n",
				label, p.name, s.toUser.Seconds(), s.console.Seconds(), durOrNA(s.toExit), s.consolePath())
			if s.haveUser {
				fmt.Fprintf(os.Stderr, "kvmlab bench: %s %-12s exits to user space: boot %s; console %s\n",
					label, p.name, formatUserExits(s.bootUser), formatUserExits(s.consoleUser))
			}
			if len(s.bootPorts) > 0 {
				fmt.Fprintf(os.Stderr, "kvmlab bench: %s %-12s port accesses during boot: %s\n", label, p.name, formatPorts(s.bootPorts))
			}
		}
	}
	rep := summarize(all, names, f, host, memMiB, cmdline)
	for _, p := range peers {
		if p.kmsg {
			rep.ViaKmsg = append(rep.ViaKmsg, p.name)
		}
	}
	if f.exitLoop > 0 {
		floor := f.exitFloor
		if floor == "" {
			dir, err := os.MkdirTemp("", "kvmlab-exitfloor-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if floor, err = buildExitFloor(dir); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "kvmlab bench: exit loop: %d and %d exits, under the C floor, the Go floor and kvmlab, %d times\n", f.exitLoop, 2*f.exitLoop, f.runs)
		el := runExitLoop(self, floor, uint32(f.exitLoop), f.runs, f.timeout, f.goVariants)
		rep.ExitLoop = &el
	}
	return printReport(f.jsonOut, rep, rep.print)
}

func durOrNA(d time.Duration) string {
	if d == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// makePeer builds the command line of each VMM. Every VMM gets the same
// kernel, initramfs, command line, RAM and one vCPU, its console on
// standard output.
func makePeer(name, self string, f *benchFlags) (peer, error) {
	switch name {
	case "kvmlab":
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			return []string{self, "run", "--quiet", "--kernel", k, "--initrd", i, "--mem", fmt.Sprintf("%dM", m), "--append", c}
		}}, nil
	case "qemu-q35", "qemu-microvm":
		q, err := exec.LookPath(f.qemu)
		if err != nil {
			return peer{}, usagef("bench: %s: %v: install qemu-system-x86 or leave it out with --vmms", f.qemu, err)
		}
		machine := strings.TrimPrefix(name, "qemu-")
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			return []string{q, "-machine", machine + ",accel=kvm", "-cpu", "host", "-m", fmt.Sprintf("%dM", m), "-smp", "1",
				"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-L", f.firmware,
				// A guest reset (triple fault) ends QEMU, as it ends kvmlab,
				// instead of booting again unnoticed.
				"-no-reboot",
				"-kernel", k, "-initrd", i, "-append", c}
		}}, nil
	case "gokvm":
		bin := f.goKV
		if bin == "" {
			var err error
			if bin, err = buildGokvm(); err != nil {
				return peer{}, err
			}
		}
		// kmsg: gokvm's UART raises no transmit interrupt, so nothing
		// written to the tty ever leaves the guest (see gokvm in
		// BENCHMARKS.md); the kernel's console polls, so the guest writes
		// through /dev/kmsg instead.
		p := peer{name: name, exits: false, kmsg: true, argv: func(k, i, c string, m int) []string {
			return []string{bin, "boot", "-k", k, "-i", i, "-m", fmt.Sprintf("%dM", m), "-c", "1", "-p", c}
		}}
		if f.inHost {
			// gokvm's guest cannot calibrate its TSC under nested
			// SVM in TCG (it offers no KVM clock or TSC frequency);
			// tell the kernel instead.
			cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
			p.extraCmdline = gokvmTSCHint(string(cpuinfo))
			fmt.Fprintf(os.Stderr, "kvmlab bench: gokvm's guest gets %q\n", p.extraCmdline)
		}
		return p, nil
	}
	return peer{}, usagef("bench: unknown VMM %q", name)
}

// gokvmTSCHint is the command-line addition that lets gokvm's guest keep
// time in the emulated host. gokvm offers the guest no KVM clock and no
// CPUID leaf with the TSC frequency, and calibrating the TSC against the
// PIT fails under nested SVM in TCG. The nested guest's TSC runs at the
// emulated host's, which the host's kernel reports as "cpu MHz", so that
// is what the guest is told (tsc_early_khz). With it, gokvm's guest clock
// keeps time (u-root's init started at 1.4 s of guest time); with the
// earlier fixed guess of 2 MHz, the guest clock ran hundreds of times too
// fast and the boot took minutes. Without a figure, the old guess stays.
func gokvmTSCHint(cpuinfo string) string {
	for _, l := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && mhz >= 1 {
			return fmt.Sprintf("tsc_early_khz=%d", int64(mhz*1000))
		}
		break
	}
	return "notsc tsc_early_khz=2000"
}

// figure is one row of the report: one measured quantity for one VMM.
type figure struct {
	VMM     string  `json:"vmm"`
	Figure  string  `json:"figure"`
	Unit    string  `json:"unit"`
	N       int     `json:"n"`
	Median  float64 `json:"median"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	Ratio   float64 `json:"ratio_to_kvmlab,omitempty"`
	Missing string  `json:"missing,omitempty"`
}

type benchReport struct {
	Host     string            `json:"host"`
	Kernel   string            `json:"kernel"`
	Initrd   string            `json:"initrd"`
	MemMiB   int               `json:"mem_mib"`
	Cmdline  string            `json:"cmdline"`
	Runs     int               `json:"runs"`
	Figures  []figure          `json:"figures"`
	Failures map[string]int    `json:"failures"`
	Notes    map[string]string `json:"failure_reasons,omitempty"`
	// ViaKmsg lists the VMMs whose guest wrote its markers and payload
	// through /dev/kmsg (the polled kernel console) instead of the tty.
	ViaKmsg  []string        `json:"console_via_kmsg,omitempty"`
	ExitLoop *exitLoopResult `json:"exit_loop,omitempty"`
}

// metric names one figure and reads it from a sample (ok false: not
// measured in that run).
type metric struct {
	name, unit string
	get        func(s sample) (float64, bool)
}

var metrics = []metric{
	{"start -> user space", "s", func(s sample) (float64, bool) { return s.toUser.Seconds(), s.toUser > 0 }},
	{"start -> VMM exit after poweroff", "s", func(s sample) (float64, bool) { return s.toExit.Seconds(), s.toExit > 0 }},
	{"poweroff -> VMM exit", "ms", func(s sample) (float64, bool) { return float64(s.poweroffToExit.Microseconds()) / 1000, s.toExit > 0 }},
	{"console write", "ms", func(s sample) (float64, bool) { return float64(s.console.Microseconds()) / 1000, s.console > 0 }},
	{"console per KiB", "ms", func(s sample) (float64, bool) {
		return float64(s.console.Microseconds()) / 1000 / (float64(s.consoleBytes) / 1024), s.console > 0 && s.consoleBytes > 0
	}},
	{"peak RSS", "MiB", func(s sample) (float64, bool) { return mib(s.peakRSS), s.peakRSS > 0 }},
	{"RSS outside guest RAM", "MiB", func(s sample) (float64, bool) { return mib(s.mem.rss - s.mem.guest), s.haveMem }},
	{"  in it: code+rodata (file)", "MiB", func(s sample) (float64, bool) { return mib(s.mem.image), s.haveMem }},
	{"  in it: data (file)", "MiB", func(s sample) (float64, bool) { return mib(s.mem.data), s.haveMem }},
	{"  in it: libraries", "MiB", func(s sample) (float64, bool) { return mib(s.mem.libs), s.haveMem }},
	{"  in it: heap, stacks (anon)", "MiB", func(s sample) (float64, bool) { return mib(s.mem.anon), s.haveMem }},
	{"guest RAM resident", "MiB", func(s sample) (float64, bool) { return mib(s.mem.guest), s.haveMem }},
	{"exits during boot (all)", "", func(s sample) (float64, bool) { return float64(s.bootExits.exits), s.haveCounter }},
	{"port+MMIO exits during boot", "", func(s sample) (float64, bool) { return float64(s.bootExits.io + s.bootExits.mmio), s.haveCounter }},
	{"exits to user space during boot", "", func(s sample) (float64, bool) { return float64(sumCounts(s.bootUser)), s.haveUser }},
	{"exits for the console write (all)", "", func(s sample) (float64, bool) {
		return float64(s.consoleExits.exits), s.haveCounter && s.allExits != (kvmCounters{})
	}},
	{"exits to user space, console write", "", func(s sample) (float64, bool) {
		return float64(sumCounts(s.consoleUser)), s.haveUser && s.consoleUser != nil
	}},
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// runLabel names round r of a bench: "run 1" and on, "warm-up" for the
// uncounted rounds before (r <= 0).
func runLabel(r int) string {
	if r <= 0 {
		return "warm-up (not counted)"
	}
	return fmt.Sprintf("run %d", r)
}

func summarize(all []sample, names []string, f *benchFlags, host string, memMiB int, cmdline string) benchReport {
	rep := newReport(f, host, memMiB, cmdline)
	for _, m := range metrics {
		rep.addFigures(m.name, m.unit, names, func(peer string) []float64 {
			var v []float64
			for _, s := range all {
				if s.peer != peer || s.failure != "" {
					continue
				}
				if x, ok := m.get(s); ok {
					v = append(v, x)
				}
			}
			return v
		})
	}
	for _, s := range all {
		rep.noteFailure(s.peer, s.failure)
	}
	return rep
}

// newReport starts a report with what every figure in it shares.
func newReport(f *benchFlags, host string, memMiB int, cmdline string) benchReport {
	return benchReport{Host: host, Kernel: f.kernel, Initrd: f.initrd, MemMiB: memMiB, Cmdline: cmdline, Runs: f.runs,
		Failures: map[string]int{}, Notes: map[string]string{}}
}

// addFigures adds one figure per VMM in names: the median, minimum and
// maximum of values(VMM) over the runs, and the ratio of its median to
// kvmlab's (kvmlab comes first in names when it takes part).
func (r *benchReport) addFigures(name, unit string, names []string, values func(peer string) []float64) {
	var base float64
	for _, n := range names {
		sp := spreadOf(values(n))
		fg := figure{VMM: n, Figure: name, Unit: unit, N: sp.n, Median: sp.median, Min: sp.min, Max: sp.max}
		if sp.n == 0 {
			fg.Missing = "n/a"
		}
		if n == "kvmlab" && sp.n > 0 {
			base = sp.median
		}
		if base != 0 && sp.n > 0 {
			fg.Ratio = sp.median / base
		}
		r.Figures = append(r.Figures, fg)
	}
}

// noteFailure counts a failed run of peer and keeps its reason ("" is a run
// that did not fail).
func (r *benchReport) noteFailure(peer, failure string) {
	if failure != "" {
		r.Failures[peer]++
		r.Notes[peer] = failure
	}
}

func (r benchReport) print(w io.Writer) {
	if len(r.Figures) == 0 {
		fmt.Fprintf(w, "\n=== kvmlab bench: the exit loop on %s ===\n\n", r.Host)
	} else {
		fmt.Fprintf(w, "\n=== kvmlab bench: %d boot(s) per VMM on %s ===\n", r.Runs, r.Host)
		fmt.Fprintf(w, "guest: %s + %s, %d MiB, 1 vCPU\ncommand line: %s\n\n", r.Kernel, r.Initrd, r.MemMiB, r.Cmdline)
		fmt.Fprintf(w, "%-36s %-13s %10s %10s %10s %9s\n", "figure", "VMM", "median", "min", "max", "×kvmlab")
	}
	last := ""
	for _, f := range r.Figures {
		name := f.Figure
		if f.Unit != "" {
			name += " (" + f.Unit + ")"
		}
		if f.Figure == last {
			name = ""
		} else if last != "" {
			fmt.Fprintln(w)
		}
		last = f.Figure
		if f.Missing != "" {
			fmt.Fprintf(w, "%-36s %-13s %10s %10s %10s %9s\n", name, f.VMM, "n/a", "", "", "")
			continue
		}
		ratio := ""
		if f.Ratio != 0 && f.VMM != "kvmlab" {
			ratio = fmt.Sprintf("%.2f", f.Ratio)
		}
		fmt.Fprintf(w, "%-36s %-13s %10s %10s %10s %9s\n", name, f.VMM, num(f.Median), num(f.Min), num(f.Max), ratio)
	}
	fmt.Fprintln(w)
	if e := r.ExitLoop; e != nil {
		if e.Error != "" {
			fmt.Fprintf(w, "exit loop: failed: %s\n\n", e.Error)
		} else {
			fmt.Fprintf(w, "exit loop (one user-space KVM_EXIT_IO per iteration, medians of %d):\n", r.Runs)
			fmt.Fprintf(w, "  C floor (ioctl KVM_RUN + switch)  %9.0f ns/exit  %10.0f exits/s\n", e.FloorNsPerExit, e.FloorExitsPerSecond)
			for _, g := range []struct {
				name string
				ns   float64
			}{
				{"Go floor (the same loop in Go)", e.GoFloorNsPerExit},
				{"  without yielding", e.GoFloorNoYieldNsPerExit},
				{"  with RawSyscall", e.GoFloorRawNsPerExit},
				{"  pinned to one CPU", e.GoFloorPinnedNsPerExit},
			} {
				if g.ns > 0 {
					fmt.Fprintf(w, "  %-32s %9.0f ns/exit  %10.0f exits/s  (%.2f× the floor's time)\n", g.name, g.ns, 1e9/g.ns, g.ns/e.FloorNsPerExit)
				}
			}
			fmt.Fprintf(w, "  kvmlab vCPU loop                  %9.0f ns/exit  %10.0f exits/s  (%.2f× the floor's time)\n\n",
				e.KvmlabNsPerExit, e.KvmlabExitsPerSecond, e.KvmlabNsPerExit/e.FloorNsPerExit)
		}
	}
	if len(r.ViaKmsg) > 0 {
		others := "; the others through the serial tty (interrupt-driven)"
		if len(r.ViaKmsg) == len(r.vmms()) {
			others = ""
		}
		fmt.Fprintf(w, "console path: %s wrote the markers and the payload through /dev/kmsg (the kernel's console polls the UART's status register, then writes a FIFO's worth on a 16550A, one character on a UART without a FIFO; and each line gets a timestamp)%s. Compare console figures only between VMMs on the same path.\n",
			strings.Join(r.ViaKmsg, ", "), others)
	}
	for _, n := range slices.Sorted(maps.Keys(r.Failures)) {
		fmt.Fprintf(w, "%s: %d of %d boot(s) failed; the last: %s\n", n, r.Failures[n], r.Runs, r.Notes[n])
	}
}

// vmms lists the VMMs of the report's figures, once each.
func (r benchReport) vmms() []string {
	var out []string
	for _, f := range r.Figures {
		if !slices.Contains(out, f.VMM) {
			out = append(out, f.VMM)
		}
	}
	return out
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
