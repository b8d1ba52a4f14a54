package reportlimit

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when the test says.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is an io.Writer the test can read while the writer goroutine
// writes to it.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// settle is how long a test lets the writer goroutine catch up with an
// unblocked writer: a bound on a wait, not a timed assertion.
const settle = time.Minute

func text(s string) func([]byte) []byte {
	return func(b []byte) []byte { return append(b, s...) }
}

// step is one thing a test does to a Limiter.
type step struct {
	src, msg string        // Report(src, msg) n times (n 0 means 1)
	n        int           //
	wait     time.Duration // or: advance the clock by wait and let the interval end
}

func report(src, msg string, n int) step { return step{src: src, msg: msg, n: n} }
func after(d time.Duration) step         { return step{wait: d} }

func (s step) do(l *Limiter, c *fakeClock) {
	if s.wait > 0 {
		c.advance(s.wait)
		l.tick()
		return
	}
	for i := range max(s.n, 1) {
		msg := s.msg
		if strings.Contains(msg, "%d") {
			msg = fmt.Sprintf(msg, i)
		}
		l.Report(s.src, text(msg))
	}
}

func TestLimiter(t *testing.T) {
	tests := []struct {
		name  string
		opt   Options
		steps []step
		want  []string
	}{
		{
			name:  "the first reports of a source are printed in full",
			steps: []step{report("COM1", "bad width %d", 3)},
			want:  []string{"k: bad width 0", "k: bad width 1", "k: bad width 2"},
		},
		{
			name:  "after Full reports, one summary a second with the first suppressed as example",
			steps: []step{report("pci-window", "MMIO read %d", 41_235), after(time.Second)},
			want: []string{"k: MMIO read 0", "k: MMIO read 1", "k: MMIO read 2", "k: MMIO read 3", "k: MMIO read 4",
				"k: pci-window: 41,230 more errors in the last 1 s, like: MMIO read 5"},
		},
		{
			name:  "one suppressed report is one error",
			steps: []step{report("COM1", "e", 6), after(1500 * time.Millisecond)},
			want:  []string{"k: e", "k: e", "k: e", "k: e", "k: e", "k: COM1: 1 more error in the last 1.5 s, like: e"},
		},
		{
			name:  "no summary in an interval without suppressed reports",
			steps: []step{report("COM1", "e", 5), after(time.Second), after(time.Second)},
			want:  []string{"k: e", "k: e", "k: e", "k: e", "k: e"},
		},
		{
			name: "a flood that goes on is summarised every interval",
			opt:  Options{Full: 1},
			steps: []step{report("COM1", "a%d", 3), after(time.Second),
				report("COM1", "b%d", 2), after(time.Second),
				report("COM1", "c%d", 1), after(time.Second)},
			want: []string{"k: a0", "k: COM1: 2 more errors in the last 1 s, like: a1",
				"k: COM1: 2 more errors in the last 1 s, like: b0",
				"k: COM1: 1 more error in the last 1 s, like: c0"},
		},
		{
			name: "a source quiet for a whole interval gets its full reports back",
			opt:  Options{Full: 1},
			steps: []step{report("COM1", "a%d", 2), after(time.Second), after(time.Second),
				report("COM1", "b%d", 2), after(time.Second)},
			want: []string{"k: a0", "k: COM1: 1 more error in the last 1 s, like: a1",
				"k: b0", "k: COM1: 1 more error in the last 1 s, like: b1"},
		},
		{
			name: "sources are limited apart",
			opt:  Options{Full: 1},
			steps: []step{report("COM1", "c%d", 3), report("CMOS", "m%d", 2), report("COM1", "x", 1),
				after(time.Second)},
			want: []string{"k: c0", "k: m0",
				"k: COM1: 3 more errors in the last 1 s, like: c1",
				"k: CMOS: 1 more error in the last 1 s, like: m1"},
		},
		{
			name: "bytes beyond MaxBytes in an interval are dropped, and a notice says how many",
			// "k: 0123456789\n" is 14 bytes: two fit in 30.
			opt: Options{MaxBytes: 30},
			steps: []step{report("a", "0123456789", 1), report("b", "0123456789", 1), report("c", "0123456789", 3),
				after(time.Second), report("d", "0123456789", 1)},
			want: []string{"k: 0123456789", "k: 0123456789",
				"k: reports over the limit of 30 bytes a second: 3 lines dropped in the last 1 s",
				"k: 0123456789"},
		},
		{
			name:  "summaries share the byte budget",
			opt:   Options{Full: 1, MaxBytes: 50},
			steps: []step{report("a", "x", 3), report("b", "y", 3), after(time.Second), after(time.Second)},
			want: []string{"k: x", "k: y", "k: a: 2 more errors in the last 1 s, like: x",
				"k: reports over the limit of 50 bytes a second: 1 line dropped in the last 1 s"},
		},
		{
			name:  "control bytes from the guest do not reach the terminal",
			steps: []step{report("COM1", "\x1b[2Jcleared\r\n\x7f", 1)},
			want:  []string{"k: ?[2Jcleared???"},
		},
		{
			name:  "long reports are cut",
			opt:   Options{MaxLine: 8},
			steps: []step{report("COM1", "0123456789abcdef", 1)},
			want:  []string{"k: 01234567..."},
		},
		{
			name:  "sources beyond MaxSources are counted together",
			opt:   Options{Full: 1, MaxSources: 2},
			steps: []step{report("a", "a", 2), report("b", "b", 1), report("c", "c", 2), report("d", "d", 1), after(time.Second)},
			want: []string{"k: a", "k: b", "k: c",
				"k: a: 1 more error in the last 1 s, like: a",
				"k: (other sources): 2 more errors in the last 1 s, like: c"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var out syncBuffer
			tc.opt.Prefix, tc.opt.Now = "k: ", clock.Now
			l := New(&out, tc.opt)
			defer l.Close(settle)
			for _, s := range tc.steps {
				s.do(l, clock)
			}
			if !l.drain(settle) {
				t.Fatal("the output did not drain")
			}
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if out.String() == "" {
				got = nil
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestTotals(t *testing.T) {
	clock := newFakeClock()
	l := New(&syncBuffer{}, Options{Full: 2, MaxBytes: 10, Now: clock.Now})
	defer l.Close(settle)
	for range 7 {
		l.Report("COM1", text("0123456789"))
	}
	l.Report("CMOS", text("x"))
	totals, dropped := l.Totals()
	want := []Total{{Source: "COM1", Reports: 7, Full: 2, Summarised: 5}, {Source: "CMOS", Reports: 1, Full: 1}}
	if fmt.Sprint(totals) != fmt.Sprint(want) {
		t.Errorf("totals %v, want %v", totals, want)
	}
	// Both COM1 lines (11 bytes each) are over 10 bytes; "x\n" fits.
	if dropped.OverLimitLines != 2 || dropped.OverLimitBytes != 22 || dropped.StuckLines != 0 {
		t.Errorf("dropped %+v, want 2 lines, 22 bytes over the limit", dropped)
	}
}

// TestFloodIsBounded: 100,000 reports from a guest in a burst, spread over
// ten simulated seconds, make at most a few lines and MaxBytes (plus the
// notice) per second, and are all counted.
func TestFloodIsBounded(t *testing.T) {
	const (
		reports = 100_000
		seconds = 10
		sources = 3
	)
	for _, tc := range []struct {
		name     string
		opt      Options
		maxLines int // per interval
	}{
		{"defaults", Options{}, sources * (DefaultFull + 1)},
		{"a tight byte budget", Options{MaxBytes: 300}, 1 + 300/len("kvmlab: vCPU 0: MMIO read 0xe0001000: no device\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var out syncBuffer
			tc.opt.Prefix, tc.opt.Now = "kvmlab: ", clock.Now
			l := New(&out, tc.opt)
			defer l.Close(settle)
			srcs := [sources]string{"pci-window", "COM1", "CMOS"}
			var lines, bytes []int
			prev := 0
			for i := range reports {
				addr := 0xe000_1000 + uint64(i%16)*8
				l.Report(srcs[i%sources], func(b []byte) []byte {
					return fmt.Appendf(b, "vCPU 0: MMIO read %#x: no device", addr)
				})
				if (i+1)%(reports/seconds) == 0 {
					// What one interval wrote: the summaries that
					// opened it and the reports made in it.
					if !l.drain(settle) {
						t.Fatal("the output did not drain")
					}
					s := out.String()[prev:]
					prev += len(s)
					lines, bytes = append(lines, strings.Count(s, "\n")), append(bytes, len(s))
					clock.advance(time.Second)
					l.tick()
				}
			}
			maxBytes := tc.opt.MaxBytes
			if maxBytes == 0 {
				maxBytes = DefaultMaxBytes
			}
			// The notice of dropped lines comes on top of the budget.
			limit := maxBytes + len("kvmlab: reports over the limit of 8,192 bytes a second: 100,000 lines dropped in the last 1 s\n")
			for i := range lines {
				if lines[i] > tc.maxLines+1 || bytes[i] > limit {
					t.Errorf("second %d: %d lines, %d bytes; want at most %d lines, %d bytes", i, lines[i], bytes[i], tc.maxLines+1, limit)
				}
			}
			if total := len(out.String()); total > seconds*limit {
				t.Errorf("%d bytes in all for %d reports", total, reports)
			}
			totals, _ := l.Totals()
			var n uint64
			for _, tot := range totals {
				n += tot.Reports
				if tot.Full+tot.Summarised != tot.Reports {
					t.Errorf("%+v: full + summarised != reports", tot)
				}
			}
			if n != reports {
				t.Errorf("counted %d reports, want %d", n, reports)
			}
			if !strings.Contains(out.String(), "kvmlab: pci-window: ") {
				t.Errorf("no summary for pci-window in:\n%s", out.String())
			}
			t.Logf("%d reports -> %d bytes, %d lines; per second: %v bytes", reports, len(out.String()), strings.Count(out.String(), "\n"), bytes)
		})
	}
}

// blockedWriter is stderr on a full pipe: Write blocks until released.
type blockedWriter struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	w.n += len(p)
	w.mu.Unlock()
	return len(p), nil
}

// TestBlockedWriterDoesNotBlockReporter: with the writer stuck, Report
// keeps returning, lines beyond the buffer are dropped and counted, and
// Flush gives up instead of waiting for the pipe.
func TestBlockedWriterDoesNotBlockReporter(t *testing.T) {
	clock := newFakeClock()
	w := &blockedWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	l := New(w, Options{Buffer: 512, Full: 3, Now: clock.Now})
	l.Report("COM1", text("first"))
	<-w.entered // the writer goroutine is now stuck in Write
	for i := range 100_000 {
		l.Report(fmt.Sprint("dev", i%40), text("an error from a device, long enough to fill the buffer"))
		if i%1000 == 999 {
			// Simulated seconds pass; the intervals end (the ticker
			// of the stuck writer goroutine cannot end them).
			clock.advance(time.Second)
			l.mu.Lock()
			l.endIntervalLocked(false)
			l.mu.Unlock()
		}
	}
	if l.Flush(10 * time.Millisecond) {
		t.Error("Flush reported the output drained while the writer is stuck")
	}
	_, dropped := l.Totals()
	if dropped.StuckLines == 0 {
		t.Errorf("nothing dropped with the writer stuck: %+v", dropped)
	}
	l.mu.Lock()
	pending := len(l.pending)
	l.mu.Unlock()
	if pending > 512 {
		t.Errorf("%d bytes pending, more than the 512-byte buffer", pending)
	}
	close(w.release)
	if !l.drain(settle) {
		t.Fatal("the output did not drain once the writer was released")
	}
	l.Close(settle)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 || w.n > 512+len("first\n")+len("k: ") {
		t.Errorf("wrote %d bytes, want the first line and at most one buffer", w.n)
	}
}

// TestSuppressedReportAllocatesNothing: once a source is being summarised,
// counting its reports allocates nothing, even with a closure that
// captures the report's details.
func TestSuppressedReportAllocatesNothing(t *testing.T) {
	clock := newFakeClock()
	l := New(&syncBuffer{}, Options{Now: clock.Now})
	defer l.Close(settle)
	addr := uint64(0xe000_1000)
	err := fmt.Errorf("no device")
	report := func() {
		l.Report("pci-window", func(b []byte) []byte {
			return fmt.Appendf(b, "vCPU 0: MMIO read %#x: %v", addr, err)
		})
	}
	for range DefaultFull + 1 {
		report() // the full reports and the example
	}
	if n := testing.AllocsPerRun(1000, report); n != 0 {
		t.Errorf("a suppressed report allocates %v times", n)
	}
}

func TestConcurrentReporters(t *testing.T) {
	clock := newFakeClock()
	var out syncBuffer
	l := New(&out, Options{Full: 2, Now: clock.Now})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				l.Report(fmt.Sprint("dev", g%2), text("e"))
				if i%500 == 0 {
					clock.advance(300 * time.Millisecond)
					l.tick()
				}
			}
		}()
	}
	wg.Wait()
	l.Close(settle)
	totals, _ := l.Totals()
	var n uint64
	for _, tot := range totals {
		n += tot.Reports
	}
	if n != 4*5000 {
		t.Errorf("counted %d reports, want %d", n, 4*5000)
	}
	// Reports after Close are counted, not written, and do not block.
	l.Report("dev0", text("late"))
	if strings.Contains(out.String(), "late") {
		t.Error("a report after Close was written")
	}
}

func TestAppendCount(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {41230, "41,230"}, {1234567, "1,234,567"}, {100000, "100,000"}} {
		if got := string(appendCount(nil, tc.n)); got != tc.want {
			t.Errorf("appendCount(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
