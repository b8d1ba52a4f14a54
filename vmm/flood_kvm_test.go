package vmm

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmlab/guest/tiny"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/reportlimit"
)

// KVM smoke tests of the report limiter: a real guest on /dev/kvm that
// makes a device fail on every exit (tiny.MMIOLoadLoopCode: n loads from
// one address, then "ok" on COM1 and a poweroff). They need only a /dev/kvm that runs
// hand-assembled guests (kvm_pvm does), not one that boots Linux.

// emptyWindowAddr is in the PCI window, where no BAR is (the machine has
// no virtio devices): every load there is an error of "pci-window".
const emptyWindowAddr = 0xe000_1000

// needKVM skips the test when this host has no usable /dev/kvm at all.
func needKVM(t *testing.T) {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("no /dev/kvm to run a tiny guest on: %v", err)
	}
	defer sys.Close()
	if err := sys.CheckRequired(); err != nil {
		t.Skipf("/dev/kvm cannot run even a tiny guest: %v", err)
	}
}

// runFlood runs the MMIO flood guest with log as the machine's log and
// returns its outcome and reports. The run must end: a limiter that let a
// stuck log stall the vCPU would hang here, so a hang is reported as a
// failure after a generous bound (a hang detector, not a speed test).
func runFlood(t *testing.T, n uint32, log *floodLog) (Outcome, []reportlimit.Total, reportlimit.Dropped) {
	t.Helper()
	m, err := New(Config{Kernel: tiny.ELF(tiny.MMIOLoadLoopCode(emptyWindowAddr, 0, n)), MemBytes: 64 << 20, CPUs: 1, Log: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	done := make(chan Outcome, 1)
	go func() { done <- m.Run() }()
	select {
	case out := <-done:
		totals, dropped := m.Reports()
		return out, totals, dropped
	case <-time.After(5 * time.Minute):
		m.stop(Outcome{Reason: StopQuit, VCPU: -1, Detail: "test gave up"})
		t.Fatalf("the guest's %d MMIO loads did not finish: the vCPU is stuck (on its log?)", n)
	}
	return Outcome{}, nil, reportlimit.Dropped{}
}

// floodLog is the machine's stderr: it records what it is given, and while
// blocked it stands for a full pipe, whose Write does not return.
type floodLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	release chan struct{} // nil: never blocks
}

func (l *floodLog) Write(p []byte) (int, error) {
	if l.release != nil {
		<-l.release
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *floodLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var summaryLine = regexp.MustCompile(`^kvmlab: pci-window: ([0-9,]+) more errors? in the last [0-9.]+ s, like: vCPU 0: MMIO read 0xe0001000: `)

// TestMMIOFloodLogIsBounded: 100,000 loads from the empty PCI window used
// to write 100,000 lines (9.4 MB) to stderr. Now the first few are printed,
// the rest are counted in one summary line a second, and every one is in
// the totals --stats prints.
func TestMMIOFloodLogIsBounded(t *testing.T) {
	needKVM(t)
	const n = 100_000
	log := &floodLog{}
	out, totals, dropped := runFlood(t, n, log)
	if out.Reason != StopPoweroff {
		t.Fatalf("the guest did not power off: %v: %s\n%s", out.Reason, out.Detail, out.Dump)
	}
	text := log.String()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	var full, summaries int
	var summarised uint64
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "kvmlab: vCPU 0: MMIO read 0xe0001000: pci: read at 0xe0001000: no enabled BAR"):
			full++
		case summaryLine.MatchString(l):
			summaries++
			c, _ := strconv.ParseUint(strings.ReplaceAll(summaryLine.FindStringSubmatch(l)[1], ",", ""), 10, 64)
			summarised += c
		default:
			t.Errorf("unexpected log line %q", l)
		}
	}
	if full != reportlimit.DefaultFull {
		t.Errorf("%d errors in full, want %d", full, reportlimit.DefaultFull)
	}
	if uint64(full)+summarised != n {
		t.Errorf("the log accounts for %d + %d errors, want %d", full, summarised, n)
	}
	// One summary per interval the guest ran, and one at the end.
	if most := int(out.Ran/reportlimit.DefaultInterval) + 2; summaries < 1 || summaries > most {
		t.Errorf("%d summary lines in a %v run, want 1 to %d", summaries, out.Ran, most)
	}
	if len(totals) != 1 || totals[0].Source != "pci-window" || totals[0].Reports != n {
		t.Errorf("Reports() = %+v, want %d for pci-window", totals, n)
	}
	if dropped != (reportlimit.Dropped{}) {
		t.Errorf("dropped %+v with a log that keeps up", dropped)
	}
	t.Logf("%d MMIO errors in %v -> %d bytes of log in %d lines", n, out.Ran, len(text), len(lines))
}

// TestMMIOFloodWithStuckLog: with the log stuck (stderr a full pipe that
// nobody reads), the guest still runs its 100,000 failing loads to the
// end and powers off: the vCPU never waits for the log.
func TestMMIOFloodWithStuckLog(t *testing.T) {
	needKVM(t)
	const n = 100_000
	log := &floodLog{release: make(chan struct{})}
	out, totals, _ := runFlood(t, n, log)
	close(log.release)
	if out.Reason != StopPoweroff {
		t.Fatalf("the guest did not power off: %v: %s\n%s", out.Reason, out.Detail, out.Dump)
	}
	if len(totals) != 1 || totals[0].Reports != n {
		t.Errorf("Reports() = %+v, want %d for pci-window", totals, n)
	}
}
