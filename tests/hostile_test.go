package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmlab/guest/hostile"
	"kvmlab/guest/tiny"
)

// The hostile-guest suite (issue 16, item 7): guests that abuse what a
// guest controls, and the host watching what the VMM does about it. For
// every attack the VMM must stay up (or stop with one clear line), keep its
// resident memory under a fixed bound over guest RAM, keep its standard
// error under a fixed bound however long the attack goes on, leave the
// device in the state virtio 1.2 prescribes, and the next guest must boot.

const (
	// maxAttackStderr bounds what one attack may make the VMM write.
	maxAttackStderr = 64 << 10
	// rssOverGuest bounds the VMM's resident memory beyond guest RAM
	// (guest RAM counts once the guest has touched it).
	rssOverGuest = 128 << 20
	// hostileFlood is the size of each flood the guest program makes.
	hostileFlood = 10000
)

// rssSampler reads VmRSS of a process every 100 ms and keeps the largest.
type rssSampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	max  uint64 // bytes
	n    int    // samples taken
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			if v, ok := vmRSS(pid); ok {
				s.mu.Lock()
				s.max, s.n = max(s.max, v), s.n+1
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return s
}

// finish stops sampling and returns the largest VmRSS seen and how many
// samples there were.
func (s *rssSampler) finish() (uint64, int) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max, s.n
}

// vmRSS reads VmRSS (proc(5): resident set size, in kB) of pid.
func vmRSS(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0, false
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// checkBounded checks what one attack cost the VMM: stderr bytes written
// during it and the largest resident set seen.
func checkBounded(t *testing.T, what string, stderr string, rss uint64, samples int, guestRAM uint64) {
	t.Helper()
	if len(stderr) > maxAttackStderr {
		t.Errorf("%s: the VMM wrote %d bytes to stderr, want at most %d; it starts:\n%s", what, len(stderr), maxAttackStderr, tailStr(firstN(stderr, 600), 600))
	}
	if samples == 0 {
		// Only a VMM that ended before the first sample (a fast host
		// and a short guest): nothing to judge.
		t.Logf("%s: the VMM ended before its VmRSS could be sampled", what)
	} else if rss > guestRAM+rssOverGuest {
		t.Errorf("%s: the VMM's VmRSS reached %d MiB, want at most %d MiB (guest RAM + %d MiB)", what, rss>>20, (guestRAM+rssOverGuest)>>20, rssOverGuest>>20)
	}
	t.Logf("%s: %d bytes of VMM stderr, VmRSS at most %d MiB over %d samples", what, len(stderr), rss>>20, samples)
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// goCrash matches the first line of a Go runtime crash: a panic, a fatal
// error, or a goroutine's stack header.
var goCrash = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[).*$`)

// checkCleanEnd checks a finished kvmlab: exit status want, and a last
// line of stderr that is one line of kvmlab's, not a Go panic.
func checkCleanEnd(t *testing.T, code, want int, stderr string) {
	t.Helper()
	if code != want {
		t.Errorf("kvmlab exited %d, want %d", code, want)
	}
	if m := goCrash.FindString(stderr); m != "" {
		t.Errorf("kvmlab's stderr holds %q: it crashed instead of stopping cleanly:\n%s", m, tailStr(stderr, 2000))
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if last := lines[len(lines)-1]; len(last) > 400 {
		t.Errorf("kvmlab's last stderr line is %d bytes long, want one readable line: %.200q...", len(last), last)
	}
}

// hostileStep is what virtio 1.2 says about one step of kvmlab-hostile
// (package guest/hostile prints the facts; the expectations live here).
type hostileStep struct {
	needsReset bool   // DEVICE_NEEDS_RESET (0x40) set after the step
	served     string // the live queue still answers without a reset: "1", or "-" when there is none
	note       string // a substring the step's note must hold
}

// refused: §2.1.2, the device sets DEVICE_NEEDS_RESET when the driver
// broke the protocol, and stops using the queue.
var refused = hostileStep{needsReset: true, served: "-"}

// hostileSteps is every step of every attack. Each step also reports
// works=: after a reset the device must serve again (§2.4, a reset
// returns the device to its initial state), which is checked for all.
var hostileSteps = map[string]map[string]hostileStep{
	"flood": {
		// The accesses are refused one by one; the device is untouched.
		"window-loads":     {served: "1", note: "read=0xffffffff"}, // nothing claims them: all ones (PCI master abort)
		"msix-byte-writes": {served: "1"},
		"common-overrun":   {served: "1"},
	},
	"doorbells": {
		"absent-queues-and-widths": {served: "1"},
		// §3.1.1: the device must not use a queue before DRIVER_OK,
		// and then serves what was posted.
		"before-driver-ok":   {served: "1", note: "answered-after-driver-ok=1"},
		"empty-flood":        {served: "1"},
		"reset-device-flood": {served: "-"},
	},
	"reconfig": {
		// §4.1.4.3.2: the driver must not touch an enabled queue; the
		// device ignores it and goes on with the queue it was given.
		"queue-after-driver-ok": {served: "1"},
		// §2.1: NEEDS_RESET is the device's bit: a driver cannot set it.
		"status-games":           {served: "1"},
		"rings-outside-ram":      refused,
		"used-ring-in-mmio-hole": refused,
		"size-3":                 refused, // §2.7: the queue size is a power of 2
		"size-0":                 refused,
		"size-above-max":         refused, // §4.1.4.3.2: at most the size the device offered
		"misaligned-rings":       refused, // §2.7, table of alignments
	},
	"chains": {
		"loop":          {needsReset: true, served: "-", note: "answered=0"}, // §2.7.5.3.1: no longer than the queue
		"self-loop":     {needsReset: true, served: "-", note: "answered=0"},
		"indirect-loop": {needsReset: true, served: "-", note: "answered=0"},
		// §2.7.5.2 allows up to 4 GiB in a chain; the used ring's len
		// is 32 bits, so kvmlab takes 4 GiB - 1 and refuses more.
		"4g-minus-1":                  {served: "-", note: "answered=1 len=0"},
		"4g-plus":                     {needsReset: true, served: "-", note: "answered=0"},
		"4g-plus-indirect":            {needsReset: true, served: "-", note: "answered=0"},
		"zero-length-garbage-address": {served: "-", note: "answered=1 len=64"},
		"head-beyond-queue":           {needsReset: true, served: "-", note: "answered=0"},
		"next-beyond-queue":           {needsReset: true, served: "-", note: "answered=0"},
		"buffer-outside-ram":          {needsReset: true, served: "-", note: "answered=0"},
		"indirect-and-next":           {needsReset: true, served: "-", note: "answered=0"}, // §2.7.5.3.1
		"readable-after-writable":     {needsReset: true, served: "-", note: "answered=0"}, // §2.7.4.2
		"avail-idx-jump":              {needsReset: true, served: "-", note: "answered=0"}, // §2.7.6: never more than the queue size ahead
	},
	"msix": {
		// Garbage messages are the guest's own business (they reach
		// no vCPU); every request is still served, and the broken chain
		// at the end of each step sets NEEDS_RESET.
		"garbage-0":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"garbage-1":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"garbage-2":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"garbage-3":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"garbage-4":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"garbage-5":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"garbage-6":     {needsReset: true, served: "-", note: "requests-served=8/8"},
		"mask-flapping": {served: "1"},
		// §4.1.5.1.2.1: a vector the table lacks reads back NO_VECTOR.
		"vector-beyond-table": {served: "-", note: "queue-vector=0xffff config-vector=0xffff"},
	},
	"bar": {
		// The BAR takes any 32 KiB-aligned address (PCI 3.0 §6.2.5.1);
		// the device follows it back and serves as before.
		"over-ram":             {served: "1", note: "bar0=0x1000000"},
		"over-lapic":           {served: "1", note: "bar0=0xfee00000"},
		"over-ioapic":          {served: "1", note: "bar0=0xfec00000"},
		"over-neighbour":       {served: "1", note: "bar0=0xc0000000"},
		"top-of-4g":            {served: "1", note: "bar0=0xffff8000"},
		"zero":                 {served: "1", note: "bar0=0x0"},
		"moved-back-and-forth": {served: "1"},
		// Each overlap is a doorbell KVM refuses (EEXIST) and the VMM
		// reports; repeated, the reports are rate-limited.
		"over-neighbour-repeatedly": {served: "1", note: fmt.Sprintf("moves=%d", 2*hostileFlood/20)},
	},
}

// hostileLine is one step's report. It is not anchored at the start of a
// line: the shell's prompt may land in front of it on the console.
var hostileLine = regexp.MustCompile(`(?m)KVMLAB-HOSTILE (\w+)/(\S+) status=(0x[0-9a-f]+) served=(\S) works=(\d)(.*?)\r?$`)

// checkHostileReport checks the lines one attack printed against
// hostileSteps.
func checkHostileReport(t *testing.T, attack, out string) {
	t.Helper()
	if m := regexp.MustCompile(`(?m)` + regexp.QuoteMeta(hostile.MarkFail) + `.*$`).FindString(out); m != "" {
		t.Errorf("kvmlab-hostile failed: %s", m)
	}
	want := hostileSteps[attack]
	seen := map[string]bool{}
	for _, m := range hostileLine.FindAllStringSubmatch(out, -1) {
		if m[1] != attack {
			continue
		}
		step, st := m[2], m[3]
		seen[step] = true
		w, ok := want[step]
		if !ok {
			t.Errorf("%s/%s: a step this test does not know: %s", attack, step, m[0])
			continue
		}
		status, _ := strconv.ParseUint(st, 0, 8)
		if got := status&0x40 != 0; got != w.needsReset {
			t.Errorf("%s/%s: device status %s: DEVICE_NEEDS_RESET is %v, want %v", attack, step, st, got, w.needsReset)
		}
		if m[4] != w.served {
			t.Errorf("%s/%s: served=%s, want %s (does the live queue still answer?)", attack, step, m[4], w.served)
		}
		if m[5] != "1" {
			t.Errorf("%s/%s: the device did not serve a request after a reset and a fresh start (works=%s)", attack, step, m[5])
		}
		if !strings.Contains(m[6], w.note) {
			t.Errorf("%s/%s: note %q lacks %q", attack, step, strings.TrimSpace(m[6]), w.note)
		}
	}
	missing := false
	for step := range want {
		if !seen[step] {
			t.Errorf("%s/%s: no report line from the guest", attack, step)
			missing = true
		}
	}
	if missing {
		t.Logf("the guest's output for %s:\n%s", attack, tailStr(out, 4000))
	}
}

// rawImage makes a zero-filled disk image of size bytes.
func rawImage(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zero.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostileGuest boots the kvmlab guest with a disk (00:01.0, the
// neighbour) and an entropy device (00:02.0, the target), runs each attack
// of kvmlab-hostile at the shell while sampling the VMM, hands the device
// back to Linux's driver, checks both devices still work and powers off;
// once with ioeventfds and irqfds, once without (every doorbell an MMIO
// exit, every interrupt a KVM_SIGNAL_MSI). Then it boots one more guest to
// show the host is none the worse.
func TestHostileGuest(t *testing.T) {
	const guestRAM = 512 << 20
	disk := rawImage(t, 1<<20)
	args := []string{"run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "512M", "--append", quietCmdline, "--disk", disk, "--rng"}
	for _, mode := range []struct {
		name  string
		extra []string
	}{
		{"eventfds", nil},
		{"no-eventfds", []string{"--no-eventfds"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			g := bootToShellFor(t, 30*time.Minute, append(append([]string{}, args...), mode.extra...)...)
			runHostileSession(t, g, guestRAM)
		})
	}
	t.Run("next-guest-boots", func(t *testing.T) {
		g := bootToShell(t, args...)
		if v := g.value("HWRNG", "dd if=/dev/hwrng bs=64 count=1 2>/dev/null | md5sum", cmdTimeout); len(v) < 32 || strings.HasPrefix(v, "d41d8cd98f00b204") {
			t.Errorf("md5 of 64 bytes of /dev/hwrng in the next guest = %q: no bytes came", v)
		}
		g.send("poweroff\n")
		checkCleanEnd(t, g.wait(cmdTimeout), 0, g.stderr())
	})
}

// runHostileSession runs every attack in the booted guest g, one shell
// command each, then gives the device back to Linux and powers off.
func runHostileSession(t *testing.T, g *guestConsole, guestRAM uint64) {
	pid := g.cmd.Process.Pid
	for _, attack := range hostile.Attacks {
		t.Run(attack, func(t *testing.T) {
			errStart, outStart := len(g.stderr()), len(g.output())
			rss := sampleRSS(pid)
			g.send(fmt.Sprintf("kvmlab-hostile -n %d %s\n", hostileFlood, attack))
			g.expect(regexp.MustCompile(regexp.QuoteMeta(hostile.MarkEnd+attack)), 5*time.Minute)
			maxRSS, samples := rss.finish()
			if samples == 0 {
				t.Errorf("%s: no VmRSS sample of the running VMM (pid %d)", attack, pid)
			}
			checkHostileReport(t, attack, strings.ReplaceAll(g.output()[outStart:], "\r", ""))
			checkBounded(t, attack, g.stderr()[errStart:], maxRSS, samples, guestRAM)
			// The VMM is still up and the guest still answers.
			if v := g.value("ALIVE", "echo $((40+2))", cmdTimeout); v != "42" {
				t.Errorf("after %s the guest shell answered %q, want 42", attack, v)
			}
		})
		select {
		case <-g.done:
			t.Fatalf("kvmlab exited during %s (%v)", attack, g.err)
		default:
		}
	}
	g.send("kvmlab-hostile rebind\n")
	g.expect(regexp.MustCompile(regexp.QuoteMeta(hostile.MarkEnd+"rebind")), cmdTimeout)
	// Linux's own drivers, on both devices, after all that.
	if v := g.value("HWRNG", "dd if=/dev/hwrng bs=64 count=1 2>/dev/null | md5sum", cmdTimeout); len(v) < 32 || strings.HasPrefix(v, "d41d8cd98f00b204") {
		t.Errorf("md5 of 64 bytes of /dev/hwrng after the attacks = %q: no bytes came", v)
	}
	if v := g.value("VDA", "dd if=/dev/vda bs=512 count=1 2>/dev/null | md5sum", cmdTimeout); !strings.HasPrefix(v, "bf619eac0cdf3f68d496ea9344137e8b") {
		t.Errorf("md5 of the first sector of /dev/vda (zeros) after the attacks = %q, want bf619eac0cdf3f68d496ea9344137e8b", v)
	}
	g.send("poweroff\n")
	checkCleanEnd(t, g.wait(cmdTimeout), 0, g.stderr())
	t.Logf("kvmlab's stderr over the whole session: %d bytes", len(g.stderr()))
}

// bootToShellFor is bootToShell for a session that may outlast
// bootToShell's limit on the whole kvmlab run (bootTimeout + 2 minutes):
// the attacks run in the same session after the boot. Like bootToShell, it
// boots once more inside the emulated host after a triple fault there.
func bootToShellFor(t *testing.T, session time.Duration, args ...string) *guestConsole {
	t.Helper()
	for attempt := 1; ; attempt++ {
		g := startGuestCmd(t, session, []string{kvmlabBin(t)}, args...)
		took, err := g.tryWaitShell(bootTimeout)
		if err == nil {
			t.Logf("shell answered %v after kvmlab started", took.Round(time.Millisecond))
			return g
		}
		if attempt == 1 && os.Getenv(inHostEnv) == "1" && strings.Contains(g.stderr(), "triple fault") {
			t.Logf("RETRY: the guest triple-faulted inside the emulated host before its shell started; booting again once")
			continue
		}
		t.Fatal(err)
	}
}

// TestHostileTinyGuests runs hand-assembled guests that load from MMIO
// addresses nothing claims (tiny.MMIOLoadLoopCode) under kvmlab run, and
// checks the VMM runs each to its poweroff with its stderr and memory
// bounded. On a real /dev/kvm they are fast; in the emulated host each
// load is a nested exit, so the counts stay moderate.
func TestHostileTinyGuests(t *testing.T) {
	const n = 20000
	tests := []struct {
		name   string
		addr   uint32
		stride int32
		stats  bool
	}{
		// Issue 16: one load from an empty part of the PCI window,
		// over and over, used to write a line per load.
		{"window-one-address", 0xe000_0000, 0, false},
		// Nothing registered above the I/O APIC; with --stats each
		// address must not become a counter (and a line) of its own.
		{"unregistered-scan-with-stats", 0xfed0_0000, 8, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "flood.elf")
			if err := os.WriteFile(path, tiny.ELF(tiny.MMIOLoadLoopCode(tc.addr, tc.stride, n)), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"run", "--quiet", "--kernel", path, "--mem", "64M"}
			if tc.stats {
				args = append(args, "--stats")
			}
			g := startGuestCmd(t, 10*time.Minute, []string{kvmlabBin(t)}, args...)
			rss := sampleRSS(g.cmd.Process.Pid)
			code := g.wait(8 * time.Minute)
			maxRSS, samples := rss.finish()
			if out := g.output(); out != "ok\n" {
				t.Errorf("guest output %q, want %q (written after its %d loads)", out, "ok\n", n)
			}
			checkCleanEnd(t, code, 0, g.stderr())
			checkBounded(t, tc.name, g.stderr(), maxRSS, samples, 64<<20)
		})
	}
}
