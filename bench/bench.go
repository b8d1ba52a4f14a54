package bench

import (
	"cmp"
	"context"
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
	"kvmlab/internal/cli"
	"kvmlab/internal/human"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/tracepoint"
)

// gokvmVersion is the gokvm the benchmark builds (buildGokvm), the commit
// BENCHMARKS.md's figures were measured at. gokvm is our closest peer, a Go
// VMM too; it is built as its own program and run beside kvmlab, never
// linked into it, so kvmlab's go.mod does not list it.
const gokvmVersion = "v0.0.8-0.20231003020000-f53faca69d28"

// qemuFirmware are the files QEMU loads from its data directory (-L) for a
// direct kernel boot on q35 (SeaBIOS, the linuxboot option ROM, the vAPIC
// ROM) and on microvm (qboot).
var qemuFirmware = []string{"bios-256k.bin", "bios-microvm.bin", "qboot.rom", "linuxboot_dma.bin", "linuxboot.bin", "kvmvapic.bin"}

// Config is one benchmark run (cmd/kvmlab parses `kvmlab bench`'s flags
// into it; Check bounds them).
type Config struct {
	Runs, Warmup   int    // measured boots per VMM; uncounted rounds before them
	Kernel, Initrd string // the guest (a bzImage and an initramfs with kvmlab's guest tools)
	Mem            string // guest RAM as given (--mem), passed on to an inner run
	MemMiB         int    // the same in MiB
	Append         string // the kernel command line; the bench adds its own switches
	// VMMs are the peers to boot, in order (SelectPeers); none: the exit
	// loop only.
	VMMs         []string
	ConsoleBytes int    // bytes the guest writes for the console figure
	ConsoleVia   string // tty or kmsg
	Timeout      time.Duration
	QEMU         string // QEMU binary
	QEMUFirmware string // its firmware directory (-L)
	Gokvm        string // gokvm binary; "" builds it into CacheDir
	CacheDir     string // kvmlab's cache, where gokvm is built
	// Kvmlab is the kvmlab binary under test; it is also the program
	// the exit loop's Go floor runs in.
	Kvmlab         string
	JSON           bool // the report as JSON (passed on to an inner run)
	InEmulatedHost bool // this is the run inside the emulated host
	// Emulator is the emulated host the bench runs in, or is to start:
	// emuhost.QEMUSVM ("" too) or emuhost.BochsVMX (--emulated-cpu).
	Emulator        emuhost.Emulator
	Smaps           bool // list each VMM's resident mappings
	ExitLoop        int  // exits for the exit-cost loop; 0 skips it
	ExitFloor       string
	GoFloorVariants bool
	IO              bool // virtio disk and network instead of boot figures
	IOMiB, IOOps    int
	NetMiB          int
}

// UsageError is a problem with what the user asked for (a VMM that is not
// installed, firmware that is missing): one line that names it and its fix,
// as the command line reports every refusal of its input.
type UsageError = cli.UsageError

var usagef = cli.Usagef

// SelectPeers turns --vmms into peers, in the given order (kvmlab first
// makes the ratios read naturally, but any order works).
func SelectPeers(list string, io bool) ([]string, error) {
	known, choice := map[string]bool{"kvmlab": true, "kvmlab-guest-decompress": true, "qemu-q35": true, "qemu-microvm": true, "gokvm": true}, "kvmlab, kvmlab-guest-decompress, qemu-q35, qemu-microvm, gokvm"
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

// buildGokvm builds gokvm at gokvmVersion into the cache (once per
// version) and returns its path. `go install pkg@version` run outside any
// module resolves gokvm and its dependencies from gokvm's own go.mod, so
// kvmlab's go.mod names no peer.
func buildGokvm(cache string) (string, error) {
	dir := filepath.Join(cache, "peers", "gokvm-"+gokvmVersion)
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

// EmulatedSpec is the emulated host that runs this same benchmark inside
// it: files (kvmlab, the kernel and the initramfs) and QEMU (binary,
// libraries, firmware), gokvm and the C floor carried in. The caller runs
// it, then calls cleanup.
func EmulatedSpec(f *Config, files []emuhost.File) (spec emuhost.Spec, cleanup func(), err error) {
	cleanup = func() {}
	peers, memMiB := f.VMMs, f.MemMiB
	argv := []string{"/kvmlab/kvmlab", "bench", "--in-emulated-host", "--runs", strconv.Itoa(f.Runs), "--warmup", strconv.Itoa(f.Warmup),
		"--kernel", "/kvmlab/kernel", "--initrd", "/kvmlab/initrd", "--mem", f.Mem, "--append", f.Append,
		"--vmms", cmp.Or(strings.Join(peers, ","), "none"), "--console-bytes", strconv.Itoa(f.ConsoleBytes), "--console-via", f.ConsoleVia, "--timeout", f.Timeout.String(),
		"--emulated-cpu", f.Emulator.Vendor()} // so that the inner bench names its host
	if f.JSON {
		argv = append(argv, "--json")
	}
	if f.Smaps {
		argv = append(argv, "--smaps")
	}
	if f.IO {
		argv = append(argv, "--io", "--io-mib", strconv.Itoa(f.IOMiB), "--io-ops", strconv.Itoa(f.IOOps), "--net-mib", strconv.Itoa(f.NetMiB))
	}
	argv = append(argv, "--exit-loop", strconv.Itoa(f.ExitLoop))
	if f.GoFloorVariants {
		argv = append(argv, "--go-floor-variants")
	}
	if f.ExitLoop > 0 && !f.IO {
		dir, err := os.MkdirTemp("", "kvmlab-exitfloor-")
		if err != nil {
			return spec, cleanup, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		floor, err := buildExitFloor(dir)
		if err != nil {
			return spec, cleanup, err
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
			qf, err := emuhost.Programs(f.QEMU)
			if err != nil {
				return spec, cleanup, usagef("bench: %v: install QEMU (apt-get install qemu-system-x86) or leave qemu out with --vmms", err)
			}
			files = append(files, qf...)
			for _, fw := range qemuFirmware {
				p := findFirmware(f.QEMUFirmware, fw)
				if p == "" {
					return spec, cleanup, usagef("bench: QEMU firmware %s is not in %s or Debian's seabios/ipxe directories: install qemu-system-x86 and seabios, or pass --qemu-firmware DIR", fw, f.QEMUFirmware)
				}
				files = append(files, emuhost.File{HostPath: p, Path: "/kvmlab/qemu-fw/" + fw, Mode: 0o644})
			}
			argv = append(argv, "--qemu", qf[0].Path, "--qemu-firmware", "/kvmlab/qemu-fw")
		case "gokvm":
			bin := f.Gokvm
			if bin == "" {
				if bin, err = buildGokvm(f.CacheDir); err != nil {
					return spec, cleanup, err
				}
			}
			files = append(files, emuhost.File{HostPath: bin, Path: "/kvmlab/gokvm", Mode: 0o755})
			argv = append(argv, "--gokvm", "/kvmlab/gokvm")
		}
	}
	spec = emuhost.Spec{
		// Bochs gives its host one CPU and at most 2 GiB, whatever
		// MemMB and CPUs say; the CLI keeps --mem within that.
		Emulator: f.Emulator,
		Files:    files, Argv: argv, MemMB: max(2048, memMiB+1536), CPUs: 2,
		Timeout: time.Duration(f.Runs*len(peers))*f.Timeout + 5*time.Minute + exitLoopLimit(f),
		// The bench prints a line per boot and per exit-loop round, and
		// each program it runs has --timeout (a round's may be retried):
		// a host silent for longer than that has stopped (about one
		// emulated host in 16 hangs), and is noticed now rather than at
		// the end of Timeout, which for a full bench is most of an hour.
		Quiet:  3*f.Timeout + 2*time.Minute,
		Output: os.Stdout,
	}
	return spec, cleanup, nil
}

// exitLoopLimit is the most the exit loop may take: two programs (N and
// 2N exits) per side and round, each tried at most twice within --timeout.
func exitLoopLimit(f *Config) time.Duration {
	if f.ExitLoop == 0 || f.IO {
		return 0
	}
	sides := 3
	if f.GoFloorVariants {
		sides += 3
	}
	return time.Duration(f.Runs*2*2*sides) * f.Timeout
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

// Here runs the benchmark on this machine's /dev/kvm and returns its
// report; each boot's figures go to standard error as they come.
func Here(f *Config) (*Report, error) {
	self, names, memMiB := f.Kvmlab, f.VMMs, f.MemMiB
	host := "/dev/kvm on this machine"
	if be := kvm.HostBackend(); be.PVM && be.Extension == "" {
		host = "/dev/kvm on this machine: kvm_pvm, a software KVM whose guest code runs natively on the CPU, no emulator between"
	}
	if f.InEmulatedHost {
		host = "the emulated host (QEMU " + runtime.GOARCH + " TCG -cpu max, nested SVM, 2 vCPUs)"
		if f.Emulator == emuhost.BochsVMX {
			// An interpreter: every instruction of the host, VMX ones
			// included, is decoded and executed in C++, so its times
			// compare with nothing but each other (ratios).
			host = "the emulated Intel host (Bochs, an interpreter emulating a Haswell Core i7 with VT-x and EPT, nested kvm_intel, 1 CPU)"
		}
		_ = os.MkdirAll("/sys/kernel/debug", 0o755)
	}
	if os.Geteuid() == 0 {
		// KVM's per-VM statistics live in debugfs, which a minimal
		// host (the emulated one, a container) may not have mounted.
		_ = mountDebugfs()
	}
	if f.IO {
		return benchIOHere(f, names, memMiB, host)
	}
	var peers []peer
	for _, n := range names {
		p, err := makePeer(n, self, f)
		if err != nil {
			return nil, err
		}
		p.kmsg = p.kmsg || f.ConsoleVia == "kmsg"
		peers = append(peers, p)
	}
	cmdline := fmt.Sprintf("%s kvmlab.run=kvmlab-console,%d", f.Append, f.ConsoleBytes)
	if len(names) > 0 {
		fmt.Fprintf(os.Stderr, "kvmlab bench: %d boot(s) each of %s, interleaved, on %s\n", f.Runs, strings.Join(names, ", "), host)
		fmt.Fprintf(os.Stderr, "kvmlab bench: guest %s + %s, %d MiB, 1 vCPU, command line %q\n", f.Kernel, f.Initrd, memMiB, cmdline)
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
	for r := 1 - f.Warmup; r <= f.Runs; r++ {
		for _, p := range peers {
			s := runPeer(context.Background(), p, f.Kernel, f.Initrd, cmdline, memMiB, f.Timeout, f.Smaps, hists)
			s.consoleBytes = f.ConsoleBytes
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
	addPhaseFigures(&rep, all, names)
	for _, p := range peers {
		if p.kmsg {
			rep.ViaKmsg = append(rep.ViaKmsg, p.name)
		}
	}
	if f.ExitLoop > 0 {
		floor := f.ExitFloor
		if floor == "" {
			dir, err := os.MkdirTemp("", "kvmlab-exitfloor-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			if floor, err = buildExitFloor(dir); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(os.Stderr, "kvmlab bench: exit loop: %d and %d exits, under the C floor, the Go floor and kvmlab, %d times\n", f.ExitLoop, 2*f.ExitLoop, f.Runs)
		el := runExitLoop(self, floor, uint32(f.ExitLoop), f.Runs, f.Timeout, f.GoFloorVariants)
		rep.ExitLoop = &el
	}
	return &rep, nil
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
func makePeer(name, self string, f *Config) (peer, error) {
	switch name {
	case "kvmlab":
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			return []string{self, "run", "--quiet", "--kernel", k, "--initrd", i, "--mem", fmt.Sprintf("%dM", m), "--append", c}
		}}, nil
	case "kvmlab-guest-decompress":
		// kvmlab as it booted before it decompressed bzImages on the
		// host (vmm/hostdecompress.go): the guest runs the kernel's own
		// decompressor, as under QEMU. The same run then shows what the
		// host decompression saves.
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			return []string{self, "run", "--quiet", "--guest-decompress", "--kernel", k, "--initrd", i, "--mem", fmt.Sprintf("%dM", m), "--append", c}
		}}, nil
	case "qemu-q35", "qemu-microvm":
		q, err := exec.LookPath(f.QEMU)
		if err != nil {
			return peer{}, usagef("bench: %s: %v: install qemu-system-x86 or leave it out with --vmms", f.QEMU, err)
		}
		machine := strings.TrimPrefix(name, "qemu-")
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			return []string{q, "-machine", machine + ",accel=kvm", "-cpu", "host", "-m", fmt.Sprintf("%dM", m), "-smp", "1",
				"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-L", f.QEMUFirmware,
				// A guest reset (triple fault) ends QEMU, as it ends kvmlab,
				// instead of booting again unnoticed.
				"-no-reboot",
				"-kernel", k, "-initrd", i, "-append", c}
		}}, nil
	case "gokvm":
		bin := f.Gokvm
		if bin == "" {
			var err error
			if bin, err = buildGokvm(f.CacheDir); err != nil {
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
		if f.InEmulatedHost {
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

// Report is what a benchmark measured: one figure per quantity and VMM,
// with the guest, the host and the failures; Print renders it as a table,
// and it marshals as the JSON of --json.
type Report struct {
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
	{"peak RSS", "MiB", func(s sample) (float64, bool) { return human.MiB(s.peakRSS), s.peakRSS > 0 }},
	{"RSS outside guest RAM", "MiB", func(s sample) (float64, bool) { return human.MiB(s.mem.rss - s.mem.guest), s.haveMem }},
	{"  in it: code+rodata (file)", "MiB", func(s sample) (float64, bool) { return human.MiB(s.mem.image), s.haveMem }},
	{"  in it: data (file)", "MiB", func(s sample) (float64, bool) { return human.MiB(s.mem.data), s.haveMem }},
	{"  in it: libraries", "MiB", func(s sample) (float64, bool) { return human.MiB(s.mem.libs), s.haveMem }},
	{"  in it: heap, stacks (anon)", "MiB", func(s sample) (float64, bool) { return human.MiB(s.mem.anon), s.haveMem }},
	{"guest RAM resident", "MiB", func(s sample) (float64, bool) { return human.MiB(s.mem.guest), s.haveMem }},
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

// runLabel names round r of a bench: "run 1" and on, "warm-up" for the
// uncounted rounds before (r <= 0).
func runLabel(r int) string {
	if r <= 0 {
		return "warm-up (not counted)"
	}
	return fmt.Sprintf("run %d", r)
}

func summarize(all []sample, names []string, f *Config, host string, memMiB int, cmdline string) Report {
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
func newReport(f *Config, host string, memMiB int, cmdline string) Report {
	return Report{Host: host, Kernel: f.Kernel, Initrd: f.Initrd, MemMiB: memMiB, Cmdline: cmdline, Runs: f.Runs,
		Failures: map[string]int{}, Notes: map[string]string{}}
}

// addFigures adds one figure per VMM in names: the median, minimum and
// maximum of values(VMM) over the runs, and the ratio of its median to
// kvmlab's (kvmlab comes first in names when it takes part).
func (r *Report) addFigures(name, unit string, names []string, values func(peer string) []float64) {
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
func (r *Report) noteFailure(peer, failure string) {
	if failure != "" {
		r.Failures[peer]++
		r.Notes[peer] = failure
	}
}

// Print writes the report as a table.
func (r Report) Print(w io.Writer) {
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
		fmt.Fprintf(w, "%-36s %-13s %10s %10s %10s %9s\n", name, f.VMM, human.Num(f.Median), human.Num(f.Min), human.Num(f.Max), ratio)
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
func (r Report) vmms() []string {
	var out []string
	for _, f := range r.Figures {
		if !slices.Contains(out, f.VMM) {
			out = append(out, f.VMM)
		}
	}
	return out
}
