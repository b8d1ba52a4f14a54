package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/guest/iobench"
	"kvmlab/internal/human"
)

// The I/O benchmark (`kvmlab bench --io`) boots the guest with one virtio
// disk and one virtio network card under each VMM and runs /bin/kvmlab-io
// (package guest/iobench) in it: sequential 1 MiB and random 4 KiB requests
// on /dev/vda with O_DIRECT, then a TCP stream to a sink this process runs
// on the host side of a TAP. The guest times each phase; the host samples
// KVM's exit counters at each phase's start and end marker, so every figure
// also gets its exits per MiB.
//
// Peers: kvmlab as it runs by default (queue notifications caught by an
// ioeventfd inside KVM, interrupts injected through an irqfd), kvmlab with
// --no-eventfds (every notification a user-space MMIO exit, every interrupt
// an ioctl: the difference those two mechanisms make), and QEMU q35 with
// virtio-blk-pci and virtio-net-pci (modern only, like kvmlab's), which
// also uses ioeventfd and irqfd.

// Network of the benchmark: the host end of the TAP and the guest.
const (
	ioTap      = "kvlbench0"
	ioHostAddr = "10.0.2.1"
	ioGuest    = "10.0.2.15/24"
	ioSinkPort = 5201
	ioMAC      = "52:54:00:12:34:56"
)

// ioPhases in the order the guest runs them, with the unit of the figure
// each gives: MB/s for throughput, IOPS for single 4 KiB requests.
var ioPhases = []struct{ name, unit string }{
	{"seqwrite", "MB/s"}, {"seqread", "MB/s"}, {"randread", "IOPS"}, {"randwrite", "IOPS"}, {"net", "MB/s"},
}

// ioSample is one boot's figures: per phase, the guest's bytes, requests
// and nanoseconds, and the exits KVM counted between the markers.
type ioSample struct {
	peer    string
	phases  map[string]ioPhase
	failure string
}

type ioPhase struct {
	bytes, ops, ns int64
	exits          kvmCounters
	haveExits      bool
}

var ioEndLine = regexp.MustCompile(`KVMLAB-IO end (\w+) bytes=(\d+) ops=(\d+) ns=(\d+)`)

// ioPeer returns the argv of one VMM for the I/O benchmark.
func ioPeer(name, self string, f *Config, img string) (peer, error) {
	switch name {
	case "kvmlab", "kvmlab-no-eventfds":
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			a := []string{self, "run", "--quiet", "--kernel", k, "--initrd", i, "--mem", fmt.Sprintf("%dM", m), "--append", c,
				"--disk", img}
			if f.NetMiB > 0 {
				a = append(a, "--net", "tap="+ioTap+",mac="+ioMAC)
			}
			if name == "kvmlab-no-eventfds" {
				a = append(a, "--no-eventfds")
			}
			return a
		}}, nil
	case "qemu-q35":
		q, err := exec.LookPath(f.QEMU)
		if err != nil {
			return peer{}, usagef("bench: %s: %v: install qemu-system-x86 or leave it out with --vmms", f.QEMU, err)
		}
		return peer{name: name, exits: true, argv: func(k, i, c string, m int) []string {
			a := []string{q, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", fmt.Sprintf("%dM", m), "-smp", "1",
				"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-L", f.QEMUFirmware, "-no-reboot",
				"-kernel", k, "-initrd", i, "-append", c,
				// Host page cache, as kvmlab's pread/pwrite use.
				"-drive", "file=" + img + ",format=raw,if=none,id=d0,cache=writeback",
				"-device", "virtio-blk-pci,drive=d0,disable-legacy=on"}
			if f.NetMiB > 0 {
				a = append(a, "-netdev", "tap,id=n0,ifname="+ioTap+",script=no,downscript=no",
					"-device", "virtio-net-pci,netdev=n0,mac="+ioMAC+",disable-legacy=on,romfile=")
			}
			return a
		}}, nil
	}
	return peer{}, usagef("bench --io: --vmms: %q cannot take part; choose from kvmlab, kvmlab-no-eventfds, qemu-q35", name)
}

// benchIOHere runs the I/O benchmark on this machine's /dev/kvm (which is
// the emulated host's when kvmlab bench carried itself in there).
func benchIOHere(f *Config, names []string, memMiB int, host string) (*Report, error) {
	self := f.Kvmlab
	dir, err := os.MkdirTemp("", "kvmlab-iobench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(img, int64(f.IOMiB+1)<<20); err != nil {
		return nil, err
	}
	if f.NetMiB > 0 {
		if err := makeTap(ioTap, ioHostAddr, 24); err != nil {
			return nil, fmt.Errorf("bench --io: the TAP for the network phase: %w (it needs root; --net-mib 0 leaves the network out)", err)
		}
		defer removeTap(ioTap)
		l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ioHostAddr, ioSinkPort))
		if err != nil {
			return nil, fmt.Errorf("bench --io: the TCP sink: %w", err)
		}
		defer l.Close()
		go func() { _ = iobench.Sink(l) }()
	}
	var peers []peer
	for _, n := range names {
		p, err := ioPeer(n, self, f, img)
		if err != nil {
			return nil, err
		}
		peers = append(peers, p)
	}
	run := fmt.Sprintf("kvmlab.run=%s,-mib,%d,-ops,%d,-net-mib,%d,-addr,%s,-sink,%s:%d",
		iobench.Name, f.IOMiB, f.IOOps, f.NetMiB, ioGuest, ioHostAddr, ioSinkPort)
	if f.NetMiB == 0 {
		run += ",-iface,"
	}
	cmdline := f.Append + " " + run
	fmt.Fprintf(os.Stderr, "kvmlab bench --io: %d boot(s) each of %s, interleaved, on %s\n", f.Runs, strings.Join(names, ", "), host)
	fmt.Fprintf(os.Stderr, "kvmlab bench --io: guest %s + %s, %d MiB, 1 vCPU, a %d MiB raw image, command line %q\n",
		f.Kernel, f.Initrd, memMiB, f.IOMiB+1, cmdline)
	var all []ioSample
	for r := 1 - f.Warmup; r <= f.Runs; r++ {
		for _, p := range peers {
			s := runIOPeer(context.Background(), p, f.Kernel, f.Initrd, cmdline, memMiB, f.Timeout)
			if r > 0 {
				all = append(all, s)
			}
			if s.failure != "" {
				fmt.Fprintf(os.Stderr, "kvmlab bench --io: %s %s FAILED: %s\n", runLabel(r), p.name, s.failure)
				continue
			}
			var b strings.Builder
			for _, ph := range ioPhases {
				if x, ok := s.phases[ph.name]; ok {
					fmt.Fprintf(&b, " %s %s %s", ph.name, human.Num(ioFigure(x, ph.unit)), ph.unit)
				}
			}
			fmt.Fprintf(os.Stderr, "kvmlab bench --io: %s %-18s%s\n", runLabel(r), p.name, b.String())
		}
	}
	rep := summarizeIO(all, names, f, host, memMiB, cmdline)
	return &rep, nil
}

// ioFigure is a phase's throughput (MB/s, 10^6 bytes per second, as fio and
// dd print it) or request rate (IOPS).
func ioFigure(p ioPhase, unit string) float64 {
	if p.ns <= 0 {
		return 0
	}
	s := float64(p.ns) / 1e9
	if unit == "IOPS" {
		return float64(p.ops) / s
	}
	return float64(p.bytes) / 1e6 / s
}

// runIOPeer boots the guest once under p and collects the phases.
func runIOPeer(ctx context.Context, p peer, kernel, initrd, cmdline string, memMiB int, timeout time.Duration) ioSample {
	s := ioSample{peer: p.name, phases: map[string]ioPhase{}}
	argv := p.argv(kernel, initrd, cmdline, memMiB)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.failure = err.Error()
		return s
	}
	if err := cmd.Start(); err != nil {
		s.failure = fmt.Sprintf("starting %s: %v", argv[0], err)
		return s
	}
	pid := cmd.Process.Pid
	starts := map[string]kvmCounters{}
	var last []string
	done := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if last = append(last, l); len(last) > 4 {
			last = last[1:]
		}
		if i := strings.Index(l, iobench.MarkStart); i >= 0 {
			name := strings.TrimSpace(l[i+len(iobench.MarkStart):])
			if c, ok := readKVMCounters(pid); ok {
				starts[name] = c
			}
			continue
		}
		if m := ioEndLine.FindStringSubmatch(l); m != nil {
			ph := ioPhase{}
			ph.bytes, _ = strconv.ParseInt(m[2], 10, 64)
			ph.ops, _ = strconv.ParseInt(m[3], 10, 64)
			ph.ns, _ = strconv.ParseInt(m[4], 10, 64)
			if c, ok := readKVMCounters(pid); ok {
				if st, ok := starts[m[1]]; ok {
					ph.exits, ph.haveExits = c.sub(st), true
				}
			}
			s.phases[m[1]] = ph
			continue
		}
		if strings.Contains(l, iobench.MarkFail) {
			s.failure = "the guest workload failed: " + l[strings.Index(l, iobench.MarkFail)+len(iobench.MarkFail):]
		}
		if strings.Contains(l, iobench.MarkPoweroff) {
			done = true
		}
	}
	werr := cmd.Wait()
	switch {
	case s.failure != "":
	case ctx.Err() != nil:
		s.failure = fmt.Sprintf("timed out after %v (last console lines: %s)", timeout, strings.Join(last, " | "))
	case !done:
		s.failure = fmt.Sprintf("the guest stopped before the end (%v); last console lines: %s; stderr: %s",
			exitStatusText(werr), strings.Join(last, " | "), human.TailLines(stderr.String(), 4))
	case werr != nil:
		s.failure = fmt.Sprintf("the VMM exited with %v; stderr: %s", werr, human.TailLines(stderr.String(), 4))
	}
	return s
}

// summarizeIO turns the samples into the bench report's rows: per phase the
// figure, all exits per MiB moved, and MMIO exits to user space per MiB.
func summarizeIO(all []ioSample, names []string, f *Config, host string, memMiB int, cmdline string) Report {
	rep := newReport(f, host, memMiB, cmdline)
	type row struct {
		name, unit string
		get        func(ioPhase) (float64, bool)
	}
	for _, ph := range ioPhases {
		unit := ph.unit
		perMiB := func(n uint64, p ioPhase) float64 { return float64(n) / (float64(p.bytes) / (1 << 20)) }
		for _, r := range []row{
			{ph.name, unit, func(p ioPhase) (float64, bool) { return ioFigure(p, unit), p.ns > 0 }},
			{ph.name + ": exits per MiB", "", func(p ioPhase) (float64, bool) { return perMiB(p.exits.exits, p), p.haveExits && p.bytes > 0 }},
			{ph.name + ": user MMIO exits per MiB", "", func(p ioPhase) (float64, bool) { return perMiB(p.exits.mmio, p), p.haveExits && p.bytes > 0 }},
		} {
			rep.addFigures(r.name, r.unit, names, func(peer string) []float64 {
				var v []float64
				for _, s := range all {
					if s.peer != peer || s.failure != "" {
						continue
					}
					if p, ok := s.phases[ph.name]; ok {
						if x, ok := r.get(p); ok {
							v = append(v, x)
						}
					}
				}
				return v
			})
		}
	}
	for _, s := range all {
		rep.noteFailure(s.peer, s.failure)
	}
	return rep
}

// makeTap creates a persistent TAP interface with an IPv4 address and
// brings it up, with the tun driver's and the classic interface ioctls (what
// `ip tuntap add` and `ip addr add` do), so no host tool is needed.
func makeTap(name, addr string, bits int) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("%q is not an IPv4 address", addr)
	}
	return iobench.IfUp(name, netip.PrefixFrom(ip, bits))
}

// removeTap deletes a persistent TAP: attach to it and clear persistence;
// the interface goes when the last file descriptor closes.
func removeTap(name string) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr) == nil {
		_ = unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0)
	}
}
