package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/internal/human"
	"kvmlab/internal/smaps"
	"kvmlab/vmm/exits"
	"kvmlab/vmm/tracepoint"
)

// The guest half of the benchmark is /bin/kvmlab-console in the kvmlab
// initramfs (guest/uinit): it prints these markers around the console
// payload. Each VMM's standard output is the guest's serial console, so the
// host sees the markers as they leave the emulated UART, whichever VMM runs.
const (
	markUser     = "KVMLAB-BENCH userspace"
	markStart    = "KVMLAB-BENCH console-start"
	markEnd      = "KVMLAB-BENCH console-end"
	markPoweroff = "KVMLAB-BENCH poweroff"
)

// peer is one VMM under test: how to start it on a kernel, initramfs and
// command line.
type peer struct {
	name string
	argv func(kernel, initrd, cmdline string, memMiB int) []string
	// extraCmdline is appended to the guest command line for this peer
	// only (gokvm's guest needs a TSC hint in the emulated host).
	extraCmdline string
	// exits says whether the VMM process ends when the guest powers off.
	exits bool
	// kmsg: the guest writes its markers and payload through /dev/kmsg
	// (kvmlab.console=kmsg, see guest/uinit) instead of the tty.
	kmsg bool
}

// kmsgCmdline is what a peer with kmsg adds to the guest's command line:
// the switch for kvmlab-console, and printk.devkmsg=on, without which the
// kernel would drop all but the first ten /dev/kmsg lines in five seconds.
const kmsgCmdline = "printk.devkmsg=on kvmlab.console=kmsg"

// sample is what one boot of one peer measured. A zero duration is "not
// reached".
type sample struct {
	peer                string
	toUser, toExit      time.Duration
	poweroffToExit      time.Duration
	console             time.Duration
	consoleBytes        int
	peakRSS             uint64       // bytes, getrusage of the child
	mem                 memBreakdown // /proc/PID/smaps at the end marker
	smapsList           string       // with --smaps: its resident mappings, one a line
	bootExits, allExits kvmCounters
	consoleExits        kvmCounters
	// Exits to user space (returns from KVM_RUN, kvm:kvm_userspace_exit)
	// by KVM_EXIT_* reason: during the boot, and for the console write.
	bootUser, consoleUser map[uint64]uint64
	haveUser              bool
	// The guest's port accesses during the boot, by port (kvm:kvm_pio).
	bootPorts map[uint64]uint64
	// kernelLog: the user-space marker came with a printk timestamp, so
	// the guest wrote it through /dev/kmsg, not the tty.
	kernelLog bool
	// marks are the boot's milestone lines (phases.go), when the kernel
	// logged to the console (no "quiet").
	marks                map[string]mark
	failure              string // why the run failed, "" when it did not
	stderrTail           string
	haveMem, haveCounter bool
}

// histograms are the kernel's counts that the bench reads for any VMM (see
// tracepoint.Hist); a nil one is not available here.
type histograms struct {
	userExits, ports *tracepoint.Hist
}

// kvmCounters are KVM's per-VM exit statistics, read from debugfs
// (/sys/kernel/debug/kvm/PID-FD/): every exit, and the port and MMIO exits
// (KVM counts every I/O intercept in io_exits, also those it completes in the
// kernel; mmio_exits are the MMIO accesses it hands to user space).
type kvmCounters struct {
	exits, io, mmio uint64
}

func (c kvmCounters) sub(d kvmCounters) kvmCounters {
	return kvmCounters{c.exits - d.exits, c.io - d.io, c.mmio - d.mmio}
}

// printkStamp matches a line of the kernel's log as its console prints it,
// "[   12.345678] text" (CONFIG_PRINTK_TIME).
var printkStamp = regexp.MustCompile(`^\[\s*\d+\.\d+\] `)

// consolePath names the path a sample's markers took.
func (s sample) consolePath() string {
	if s.kernelLog {
		return "kernel log"
	}
	return "tty"
}

// subCounts is a-b per key (a counter read later minus the same read
// earlier; a key missing from b counts from zero).
func subCounts(a, b map[uint64]uint64) map[uint64]uint64 {
	out := make(map[uint64]uint64, len(a))
	for k, v := range a {
		out[k] = v - b[k]
	}
	return out
}

// sumCounts is the total of a count by key.
func sumCounts(m map[uint64]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// formatUserExits lists a per-reason count, largest first:
// "1663 (IO 1600, MMIO 62, INTR 1)".
func formatUserExits(m map[uint64]uint64) string {
	return formatCounts(m, 0, func(k uint64) string { return strings.TrimPrefix(exits.Reason(k).String(), "KVM_EXIT_") })
}

// formatPorts lists the busiest ports of a per-port count, named where
// the PC's port map gives them a name: "42240 (0x3f8 COM1 20000, ...)".
func formatPorts(m map[uint64]uint64) string {
	return formatCounts(m, 6, func(k uint64) string {
		if n := pcPortName(k); n != "" {
			return fmt.Sprintf("%#x %s", k, n)
		}
		return fmt.Sprintf("%#x", k)
	})
}

// pcPortName names the devices at the I/O ports a PC guest's boot touches:
// the legacy ones of the IBM PC/AT, PCI configuration mechanism #1, and
// the ACPI and firmware ports that kvmlab (0x600, devices/acpipm) and QEMU
// (q35's PM base 0x600, fw_cfg 0x510, the debug console at 0x402 that
// SeaBIOS and qboot write to) put there.
func pcPortName(port uint64) string {
	for _, r := range []struct {
		lo, hi uint64
		name   string
	}{
		{0x20, 0x21, "PIC"}, {0xa0, 0xa1, "PIC"}, {0x4d0, 0x4d1, "PIC ELCR"},
		{0x40, 0x43, "PIT"}, {0x61, 0x61, "port B"},
		{0x60, 0x60, "i8042"}, {0x64, 0x64, "i8042"},
		{0x70, 0x71, "CMOS/RTC"}, {0x80, 0x80, "POST"},
		{0x3f8, 0x3ff, "COM1"}, {0x2f8, 0x2ff, "COM2"}, {0x3e8, 0x3ef, "COM3"}, {0x2e8, 0x2ef, "COM4"},
		{0x378, 0x37f, "LPT1"}, {0x3c0, 0x3df, "VGA"},
		{0xcf8, 0xcfb, "PCI config address"}, {0xcfc, 0xcff, "PCI config data"},
		{0x402, 0x402, "firmware debug"}, {0x510, 0x51b, "fw_cfg"}, {0x600, 0x67f, "ACPI PM"},
	} {
		if port >= r.lo && port <= r.hi {
			return r.name
		}
	}
	return ""
}

// formatCounts lists a count by key, largest first, at most top keys (0:
// all), with the total first.
func formatCounts(m map[uint64]uint64, top int, label func(uint64) string) string {
	keys := make([]uint64, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	more := ""
	if top > 0 && len(keys) > top {
		more = fmt.Sprintf(", %d more", len(keys)-top)
		keys = keys[:top]
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %s", label(k), strconv.FormatUint(m[k], 10))
	}
	return fmt.Sprintf("%s (%s%s)", strconv.FormatUint(sumCounts(m), 10), strings.Join(parts, ", "), more)
}

// runPeer boots the guest once under p and measures it. The guest runs
// kvmlab-console and powers off; a VMM that cannot exit (gokvm) is killed
// once the figures at the console-end marker are taken.
//
// h, where its histograms are not nil, counts the exits that reach the
// VMM's user space and the guest's port accesses.
func runPeer(ctx context.Context, p peer, kernel, initrd, cmdline string, memMiB int, timeout time.Duration, listMaps bool, h histograms) sample {
	s := sample{peer: p.name}
	line := cmdline
	if p.extraCmdline != "" {
		line += " " + p.extraCmdline
	}
	if p.kmsg {
		line += " " + kmsgCmdline
	}
	argv := p.argv(kernel, initrd, line, memMiB)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil // /dev/null: no VMM here reads a terminal
	if listMaps {
		cmd.Env = append(os.Environ(), runtimeReportEnv+"=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.failure = err.Error()
		return s
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		s.failure = fmt.Sprintf("starting %s: %v", argv[0], err)
		return s
	}
	pid := cmd.Process.Pid
	var bootC, endC kvmCounters
	var tStart, tEnd, tOff time.Time
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var seen strings.Builder // the last lines, for a failure report
	for sc.Scan() {
		l := sc.Text()
		now := time.Now()
		if len(l) < 200 {
			seen.WriteString(l + "\n")
			if seen.Len() > 4000 {
				t := seen.String()
				seen.Reset()
				seen.WriteString(t[len(t)-2000:])
			}
		}
		if strings.HasPrefix(l, "[") {
			if key, stamp, ok := parseMilestone(l); ok {
				if s.marks == nil {
					s.marks = map[string]mark{}
				}
				if _, seen := s.marks[key]; !seen {
					c, _ := readKVMCounters(pid)
					s.marks[key] = mark{stamp: stamp, host: now.Sub(start), exits: c.exits}
				}
			}
		}
		switch {
		case strings.Contains(l, markUser) && s.toUser == 0:
			s.toUser = now.Sub(start)
			s.kernelLog = printkStamp.MatchString(l)
			bootC, s.haveCounter = readKVMCounters(pid)
			if h.userExits != nil {
				var err error
				s.bootUser, err = h.userExits.Read(pid)
				s.haveUser = err == nil
			}
			if h.ports != nil {
				s.bootPorts, _ = h.ports.Read(pid)
			}
			if listMaps {
				// What the boot left mapped, to compare with what the
				// console phase adds by the console-end marker.
				if m, _, ok := readSmaps(pid, uint64(memMiB)<<20, false); ok {
					s.smapsList += fmt.Sprintf("  at the user-space marker: %s outside guest RAM\n", m.outsideSummary())
				}
				if rs, err := residentSections(pid); err == nil {
					s.smapsList += formatSections(rs)
				}
			}
		case strings.Contains(l, markStart):
			tStart = now
		case strings.Contains(l, markEnd):
			tEnd = now
			if c, ok := readKVMCounters(pid); ok && s.haveCounter {
				endC = c
			}
			if s.haveUser {
				if u, err := h.userExits.Read(pid); err == nil {
					s.consoleUser = subCounts(u, s.bootUser)
				}
			}
			var list string
			s.mem, list, s.haveMem = readSmaps(pid, uint64(memMiB)<<20, listMaps)
			if listMaps {
				s.smapsList += "  at the console-end marker:\n" + list
				if rs, err := residentSections(pid); err == nil {
					s.smapsList += "  the executable's resident pages by ELF section:\n" + formatSections(rs)
				}
				if ps, err := residentTextByPackage(pid); err == nil {
					s.smapsList += "  resident code by Go package:\n" + formatPackages(ps, 16)
				}
			}
			if !p.exits {
				// Every figure such a VMM can give is taken. Its guest
				// need not reach the poweroff marker: gokvm's guest
				// clock stops (its sleeps never end), which would
				// leave the run to time out.
				_ = cmd.Process.Kill()
			}
		case strings.Contains(l, markPoweroff):
			tOff = now
		}
	}
	werr := cmd.Wait()
	end := time.Now()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.peakRSS = uint64(ru.Maxrss) << 10 // Linux reports KiB
	}
	if !tStart.IsZero() && !tEnd.IsZero() {
		s.console = tEnd.Sub(tStart)
	}
	if s.haveCounter {
		s.bootExits = bootC
		if endC != (kvmCounters{}) {
			s.allExits = endC
			s.consoleExits = endC.sub(bootC)
		}
	}
	if !tOff.IsZero() && p.exits && werr == nil {
		s.toExit = end.Sub(start)
		s.poweroffToExit = end.Sub(tOff)
	}
	s.stderrTail = human.TailLines(stderr.String(), 6)
	if listMaps {
		for _, l := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(l, "Go runtime:") {
				s.smapsList += "  at exit: " + strings.TrimSpace(l) + "\n"
			}
		}
	}
	switch {
	case ctx.Err() != nil:
		s.failure = fmt.Sprintf("timed out after %v (last console lines: %s)", timeout, human.TailLines(seen.String(), 3))
	case s.toUser == 0:
		s.failure = fmt.Sprintf("the guest never reached user space (%v); last console lines: %s; stderr: %s",
			exitStatusText(werr), human.TailLines(seen.String(), 3), s.stderrTail)
	case !p.exits && tEnd.IsZero():
		s.failure = fmt.Sprintf("the guest stopped before the console-end marker (%v); last console lines: %s; stderr: %s",
			exitStatusText(werr), human.TailLines(seen.String(), 3), s.stderrTail)
	case p.exits && tOff.IsZero():
		s.failure = fmt.Sprintf("the guest stopped before powering off (%v); last console lines: %s; stderr: %s",
			exitStatusText(werr), human.TailLines(seen.String(), 3), s.stderrTail)
	case p.exits && werr != nil:
		s.failure = fmt.Sprintf("the VMM exited with %v after the guest's poweroff; stderr: %s", werr, s.stderrTail)
	}
	return s
}

func exitStatusText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// memBreakdown is a VMM process's resident set at one moment, by the kind
// of mapping it lies in (/proc/PID/smaps). It answers "where does the
// VMM's memory go": guest RAM is the guest's, the rest is the price of the
// VMM itself, and that rest splits into the program's own file (code and
// read-only tables, shared page cache), its writable data, shared
// libraries, and anonymous memory (heap, thread stacks, the runtime).
type memBreakdown struct {
	rss, guest uint64 // all, and the guest RAM mapping
	image      uint64 // the VMM's executable, read-only mappings (text, rodata)
	data       uint64 // the VMM's executable, writable mappings (data; COW copies of it)
	libs       uint64 // other files: shared libraries, firmware, locale data
	anon       uint64 // anonymous, not guest RAM: heap, stacks, bss, runtime metadata
}

// outsideSummary is one line of what lies outside guest RAM, in KiB.
func (b memBreakdown) outsideSummary() string {
	out := b.rss - b.guest
	return fmt.Sprintf("%d KiB (code and read-only data %d, writable data %d, libraries %d, anonymous %d)",
		out>>10, b.image>>10, b.data>>10, b.libs>>10, b.anon>>10)
}

// readSmaps reads the resident set of process pid, whose guest RAM is mem
// bytes: its breakdown and, with list, the listing of formatMappings.
func readSmaps(pid int, mem uint64, list bool) (b memBreakdown, listing string, ok bool) {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return memBreakdown{}, "", false
	}
	defer f.Close()
	ms, err := smaps.Parse(f)
	if err != nil || len(ms) == 0 {
		return memBreakdown{}, "", false
	}
	if list {
		listing = formatMappings(ms)
	}
	return breakdown(ms, mem, exe), listing, true
}

// parseSmaps is the breakdown of an smaps text, exe the executable's path
// ("" when unknown) and mem the size of guest RAM.
func parseSmaps(r io.Reader, mem uint64, exe string) (memBreakdown, bool) {
	ms, err := smaps.Parse(r)
	if err != nil || len(ms) == 0 {
		return memBreakdown{}, false
	}
	return breakdown(ms, mem, exe), true
}

// breakdown sorts the resident pages of mappings ms by kind. Guest RAM is
// recognised by size: every VMM here maps a guest's RAM (below 3 GiB) as
// one region of exactly its size, give or take alignment, and nothing else
// in these processes is that big.
func breakdown(ms []smaps.Mapping, mem uint64, exe string) memBreakdown {
	var b memBreakdown
	for _, m := range ms {
		n, size := m.RssKiB<<10, m.End-m.Start
		b.rss += n
		switch {
		case size >= mem && size <= mem+mem/4:
			b.guest += n
		case exe != "" && m.Path == exe && strings.Contains(m.Perms, "w"):
			b.data += n
		case exe != "" && m.Path == exe:
			b.image += n
		case strings.HasPrefix(m.Path, "/"):
			b.libs += n
		default: // anonymous, [heap], [stack], [vdso], [vvar]
			b.anon += n
		}
	}
	return b
}

// formatResident lists the mappings of an smaps text that have resident
// pages (formatMappings); "" when the text does not parse.
func formatResident(r io.Reader) string {
	ms, err := smaps.Parse(r)
	if err != nil {
		return ""
	}
	return formatMappings(ms)
}

// formatMappings lists the mappings that have resident pages, one a line:
// Rss and the anonymous part of it in KiB, permissions, size in KiB, and
// the file or kind ("" for anonymous memory).
func formatMappings(ms []smaps.Mapping) string {
	var b strings.Builder
	for _, m := range ms {
		if m.RssKiB == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %8d rss %8d anon  %s %9d KiB  %s\n", m.RssKiB, m.AnonKiB, m.Perms, (m.End-m.Start)>>10, m.Path)
	}
	return b.String()
}

// readKVMCounters reads KVM's debugfs statistics of the VM that process pid
// created: the directory /sys/kernel/debug/kvm/TID-FD. KVM names it after
// the thread that called KVM_CREATE_VM (task_pid_nr(current)), which in a
// Go VMM is whichever OS thread the goroutine ran on, not the process's
// main thread, so every thread of pid is a candidate. It needs root and a
// mounted debugfs; ok is false otherwise.
func readKVMCounters(pid int) (kvmCounters, bool) {
	tids := map[string]bool{strconv.Itoa(pid): true}
	if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		for _, t := range tasks {
			tids[t.Name()] = true
		}
	}
	return readKVMCountersIn("/sys/kernel/debug/kvm", tids)
}

// readKVMCountersIn is readKVMCounters on a debugfs directory root and the
// thread IDs tids.
func readKVMCountersIn(root string, tids map[string]bool) (kvmCounters, bool) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return kvmCounters{}, false
	}
	for _, e := range ents {
		tid, _, ok := strings.Cut(e.Name(), "-")
		if !e.IsDir() || !ok || !tids[tid] {
			continue
		}
		d := filepath.Join(root, e.Name())
		var c kvmCounters
		for _, v := range []struct {
			file string
			dst  *uint64
		}{{"exits", &c.exits}, {"io_exits", &c.io}, {"mmio_exits", &c.mmio}} {
			b, err := os.ReadFile(filepath.Join(d, v.file))
			if err != nil {
				return kvmCounters{}, false
			}
			n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return kvmCounters{}, false
			}
			*v.dst = n
		}
		return c, true
	}
	return kvmCounters{}, false
}

// spread is the median, minimum and maximum of some figures.
type spread struct {
	n                int
	median, min, max float64
}

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{n: len(s), median: m, min: s[0], max: s[len(s)-1]}
}

// mountDebugfs mounts debugfs where KVM publishes its statistics (inside the
// emulated host, whose init mounts only /proc, /sys and /dev).
func mountDebugfs() error {
	if _, err := os.Stat("/sys/kernel/debug/kvm"); err == nil {
		return nil
	}
	return unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "")
}
