package vmm

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"kvmlab/guest/tiny"
	"kvmlab/vmm/kvm"
)

// countingWriter keeps the first bytes written to it and counts them all.
type countingWriter struct {
	mu   sync.Mutex
	n    int
	head bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += len(p)
	if room := 2048 - w.head.Len(); room > 0 {
		w.head.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// TestTinyGuestMMIOFlood runs hand-assembled guests on this machine's
// /dev/kvm (any KVM: kvm_pvm runs them too, though it cannot boot Linux)
// that hammer guest-physical addresses no device claims, and checks what
// the VMM does with them: the guest runs to its poweroff, the VMM's log
// stays under maxLog bytes however many accesses the guest makes (issue
// 16: a flood of device errors used to be one line per exit), and with
// --stats the per-device counters do not grow a key per address.
func TestTinyGuestMMIOFlood(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("no /dev/kvm here (%v): the same guests run under tests/ (TestHostileTinyGuests) in the emulated host", err)
	}
	err = sys.CheckRequired()
	sys.Close()
	if err != nil {
		t.Skipf("this /dev/kvm cannot run even a tiny guest: %v", err)
	}
	const (
		n       = 20000
		maxLog  = 64 << 10
		maxKeys = 64
	)
	tests := []struct {
		name   string
		addr   uint32
		stride int32
		stats  bool
	}{
		// An empty part of the PCI window (0xc0000000-0xfec00000):
		// no BAR is there, the window answers all ones and an error.
		{"window-one-address", 0xe000_0000, 0, false},
		{"window-scan", 0xe000_0000, 4, false},
		// Above the I/O APIC: nothing is registered there at all.
		{"unregistered-scan-with-stats", 0xfed0_0000, 8, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log countingWriter
			var console bytes.Buffer
			m, err := New(Config{Kernel: tiny.ELF(tiny.MMIOLoadLoopCode(tc.addr, tc.stride, n)),
				MemBytes: 64 << 20, CPUs: 1, Log: &log, Console: &console, Stats: tc.stats})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			o := m.Run()
			keys := len(m.DeviceCounts())
			m.Close()
			if o.Reason != StopPoweroff {
				t.Errorf("the guest ended with %v (%s), want poweroff after its %d loads", o.Reason, o.Detail, n)
			}
			if got := console.String(); got != "ok\n" {
				t.Errorf("guest console %q, want %q (the guest's code after the loop)", got, "ok\n")
			}
			if log.n > maxLog {
				t.Errorf("%d loads from unclaimed MMIO wrote %d bytes of VMM log, want at most %d; it starts:\n%s",
					n, log.n, maxLog, firstLines(log.head.String(), 3))
			}
			if tc.stats && keys > maxKeys {
				t.Errorf("--stats counted accesses under %d device names after %d loads at distinct addresses, want at most %d: a guest can grow the map without bound",
					keys, n, maxKeys)
			}
			t.Logf("%d loads: %d bytes of log, %d device counters; the log starts:\n%s", n, log.n, keys, firstLines(log.head.String(), 4))
		})
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
