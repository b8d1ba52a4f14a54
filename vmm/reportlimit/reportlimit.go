// Package reportlimit bounds how much a guest can make the host write.
//
// Every line a VMM prints because of something the guest did is output the
// guest controls. A device that rejects an access reports it; a guest that
// loops on that access makes one report per VM exit, and exits come at
// hundreds of thousands a second: a guest loading from an empty part of the
// PCI window made kvmlab write 100,000 lines (9.4 MB) to stderr in 1.35 s.
// Worse, a write to stderr is a system call that blocks while the pipe
// behind it is full, so with a slow or stopped reader the vCPU thread that
// reports the error stalls inside the guest's own loop. Logging becomes a
// way for the guest to flood the host's disk and to stop its own VMM.
//
// A Limiter sits between the reporters and the output, and applies the
// rules the Linux kernel applies to its own log (printk_ratelimit and the
// "callbacks suppressed" messages of lib/ratelimit.c) and syslog applies to
// repeats ("last message repeated N times"):
//
//   - Reports are grouped by source (a device's name: "COM1",
//     "pci-window"). The first Full reports of a source are printed in
//     full: they are the ones a person debugging a driver needs.
//   - After that the source's reports are only counted, and once per
//     Interval one line sums them up, with the first of them as an example:
//     "kvmlab: pci-window: 41,230 more errors in the last 1 s, like: ...".
//   - A source that stays quiet for a whole interval gets its Full reports
//     back, so a new problem later in the run is shown in full again.
//   - Whatever the sources, at most MaxBytes are written per interval;
//     lines beyond that are dropped and counted, and one notice says so.
//     That is the hard bound on what the guest can make the host write.
//   - Lines are written by a goroutine of the Limiter's own, from a buffer
//     of bounded size. When the writer is stuck (stderr is a full pipe)
//     and the buffer is full, further lines are dropped and counted:
//     Report never waits for the output.
//
// Counting a report that is not printed takes a mutex, a map lookup and a
// few increments, and allocates nothing (the caller's description of a
// report is a function that is called only when the text is needed), so
// the flood itself costs the vCPU loop almost nothing.
package reportlimit

import (
	"io"
	"strconv"
	"sync"
	"time"
)

// Options configure a Limiter. Zero fields take the defaults below.
type Options struct {
	// Prefix starts every line ("kvmlab: ").
	Prefix string
	// Full is how many reports of a source are printed in full before
	// they are summarised.
	Full int
	// Interval is the period of the summaries and of the byte budget.
	Interval time.Duration
	// MaxBytes is the most the Limiter writes per Interval, summaries
	// included; only the one-line notice that lines were dropped is
	// written on top of it.
	MaxBytes int
	// Buffer bounds the bytes waiting for the writer goroutine.
	Buffer int
	// MaxLine bounds one report's text; longer ones are cut.
	MaxLine int
	// MaxSources bounds how many sources are told apart; reports from
	// further sources are counted under OtherSources.
	MaxSources int
	// Now is the clock (time.Now when nil); tests pass a fake one.
	Now func() time.Time
}

// Defaults: at most 8 KiB a second, whatever the guest does.
const (
	DefaultFull       = 5
	DefaultInterval   = time.Second
	DefaultMaxBytes   = 8 << 10
	DefaultBuffer     = 64 << 10
	DefaultMaxLine    = 240
	DefaultMaxSources = 64
)

// OtherSources is the source under which reports from sources beyond
// Options.MaxSources are counted.
const OtherSources = "(other sources)"

// Total is what one source reported over the Limiter's life.
type Total struct {
	Source string
	// Reports is every report; Full of them were printed in full (or
	// would have been, had the byte budget or the buffer allowed), and
	// Summarised were only counted in a summary line.
	Reports, Full, Summarised uint64
}

// Dropped counts lines that were never written.
type Dropped struct {
	// OverLimit lines (and their bytes) exceeded MaxBytes in their
	// interval.
	OverLimitLines, OverLimitBytes uint64
	// Stuck lines found the buffer full (the writer could not keep up,
	// or was blocked on a full pipe), or came after Close.
	StuckLines, StuckBytes uint64
}

// Limiter is a report limiter. Create it with New; it is safe for
// concurrent use. Close it when done.
type Limiter struct {
	opt Options
	out io.Writer

	mu          sync.Mutex
	sources     map[string]*source
	order       []*source // in order of first report: summaries come out in a stable order
	epoch       uint64    // intervals begun
	windowStart time.Time
	budget      int    // bytes left in this interval
	overLines   uint64 // dropped for the byte budget in this interval
	pending     []byte // lines waiting for the writer goroutine
	dropped     Dropped
	waiters     []chan struct{} // Flush calls waiting for pending to drain
	closed      bool

	kick chan struct{} // holds one value while pending needs writing
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the writer goroutine ends
}

type source struct {
	name  string
	total Total
	// burst is how many reports were printed in full in the current
	// episode (a run of intervals with reports in each).
	burst int
	// last is the epoch of the source's last report.
	last uint64
	// suppressed counts this interval's reports beyond the burst;
	// example is the text of the first of them.
	suppressed uint64
	example    []byte
}

// New returns a Limiter writing to out and starts its writer goroutine.
func New(out io.Writer, opt Options) *Limiter {
	if opt.Full <= 0 {
		opt.Full = DefaultFull
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.Buffer <= 0 {
		opt.Buffer = DefaultBuffer
	}
	if opt.MaxLine <= 0 {
		opt.MaxLine = DefaultMaxLine
	}
	if opt.MaxSources <= 0 {
		opt.MaxSources = DefaultMaxSources
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	l := &Limiter{
		opt: opt, out: out, sources: map[string]*source{},
		budget: opt.MaxBytes, windowStart: opt.Now(),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	go l.run()
	return l
}

// Report counts one report from source. describe appends the report's text
// (one line, without prefix or newline) to b and returns the result; it is
// called only when the text will be used, at most Full+1 times per source
// per interval, never while the Limiter's lock is held, and not after
// Report returns (so a closure that captures the report's details is not
// moved to the heap).
func (l *Limiter) Report(src string, describe func(b []byte) []byte) {
	l.mu.Lock()
	s := l.sourceLocked(src)
	s.total.Reports++
	if s.last+1 < l.epoch {
		// A whole interval without a report: a new episode.
		s.burst = 0
	}
	s.last = l.epoch
	full := s.burst < l.opt.Full
	if full {
		s.burst++
		s.total.Full++
	} else {
		s.total.Summarised++
		s.suppressed++
		if s.suppressed > 1 {
			// The hot path of a flood: counted, nothing else.
			l.mu.Unlock()
			return
		}
	}
	l.mu.Unlock()

	// The text, outside the lock: describe is the caller's code.
	line := l.line(describe)
	l.mu.Lock()
	defer l.mu.Unlock()
	if full {
		l.emitLocked(line)
		return
	}
	// The first suppressed report of the interval is the summary's
	// example, unless the interval ended while it was being described.
	if s.suppressed > 0 && s.example == nil {
		s.example = line[len(l.opt.Prefix) : len(line)-1]
	}
}

// sourceLocked finds or adds a source.
func (l *Limiter) sourceLocked(name string) *source {
	if s, ok := l.sources[name]; ok {
		return s
	}
	if len(l.order) >= l.opt.MaxSources {
		name = OtherSources
		if s, ok := l.sources[name]; ok {
			return s
		}
	}
	s := &source{name: name, total: Total{Source: name}, last: l.epoch}
	l.sources[name] = s
	l.order = append(l.order, s)
	return s
}

// line builds prefix + text + "\n", the text cut to MaxLine and with
// control bytes replaced: a device's error may quote what the guest wrote,
// and escape sequences from the guest must not reach the host's terminal.
func (l *Limiter) line(describe func([]byte) []byte) []byte {
	b := make([]byte, 0, len(l.opt.Prefix)+l.opt.MaxLine+8)
	b = append(b, l.opt.Prefix...)
	b = describe(b)
	text := b[len(l.opt.Prefix):]
	if len(text) > l.opt.MaxLine {
		b = append(b[:len(l.opt.Prefix)+l.opt.MaxLine], "..."...)
		text = b[len(l.opt.Prefix):]
	}
	for i, c := range text {
		if c < 0x20 || c == 0x7f {
			text[i] = '?'
		}
	}
	return append(b, '\n')
}

// emitLocked spends the byte budget on line and queues it for the writer.
func (l *Limiter) emitLocked(line []byte) {
	if len(line) > l.budget {
		l.overLines++
		l.dropped.OverLimitLines++
		l.dropped.OverLimitBytes += uint64(len(line))
		return
	}
	l.budget -= len(line)
	l.queueLocked(line)
}

// queueLocked hands line to the writer goroutine, or drops it when the
// buffer is full: never waits.
func (l *Limiter) queueLocked(line []byte) {
	if l.closed || len(l.pending)+len(line) > l.opt.Buffer {
		l.dropped.StuckLines++
		l.dropped.StuckBytes += uint64(len(line))
		return
	}
	l.pending = append(l.pending, line...)
	select {
	case l.kick <- struct{}{}:
	default: // already due
	}
}

// tick ends the current interval if it has lasted Interval.
func (l *Limiter) tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endIntervalLocked(false)
}

// endIntervalLocked writes the interval's summaries and opens the next
// interval with a fresh byte budget. Unless force is set it does nothing
// before the interval has lasted Interval.
func (l *Limiter) endIntervalLocked(force bool) {
	now := l.opt.Now()
	elapsed := now.Sub(l.windowStart)
	if !force && elapsed < l.opt.Interval {
		return
	}
	l.epoch++
	l.windowStart = now
	l.budget = l.opt.MaxBytes
	secs := seconds(elapsed)
	if l.overLines > 0 {
		// The notice is not charged to the budget: it is one line per
		// interval at most, and it is the one that must get through.
		b := append([]byte(l.opt.Prefix), "reports over the limit of "...)
		b = appendCount(b, uint64(l.opt.MaxBytes))
		b = append(b, " bytes a second: "...)
		b = appendCount(b, l.overLines)
		b = append(b, " line"...)
		if l.overLines != 1 {
			b = append(b, 's')
		}
		b = append(b, " dropped in the last "...)
		b = append(b, secs...)
		b = append(b, " s\n"...)
		l.overLines = 0
		l.queueLocked(b)
	}
	for _, s := range l.order {
		if s.suppressed == 0 {
			continue
		}
		b := append([]byte(l.opt.Prefix), s.name...)
		b = append(b, ": "...)
		b = appendCount(b, s.suppressed)
		b = append(b, " more error"...)
		if s.suppressed != 1 {
			b = append(b, 's')
		}
		b = append(b, " in the last "...)
		b = append(b, secs...)
		b = append(b, " s"...)
		if s.example != nil {
			b = append(b, ", like: "...)
			b = append(b, s.example...)
		}
		b = append(b, '\n')
		s.suppressed, s.example = 0, nil
		l.emitLocked(b)
	}
}

// seconds formats d in seconds to one decimal: "1", "0.3", "12.5".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Round(100*time.Millisecond))/float64(time.Second), 'f', -1, 64)
}

// appendCount appends n with thousands separators: 41,230.
func appendCount(b []byte, n uint64) []byte {
	s := strconv.FormatUint(n, 10)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return b
}

// run is the writer goroutine: it writes what is pending, and ends the
// interval on a ticker. Everything slow (the write) happens here, outside
// the lock.
func (l *Limiter) run() {
	defer close(l.done)
	ticker := time.NewTicker(l.opt.Interval)
	defer ticker.Stop()
	var out []byte
	for {
		select {
		case <-l.kick:
		case <-ticker.C:
			l.tick()
		case <-l.quit:
		}
		for {
			l.mu.Lock()
			if len(l.pending) == 0 {
				waiters, closed := l.waiters, l.closed
				l.waiters = nil
				l.mu.Unlock()
				for _, w := range waiters {
					close(w)
				}
				if closed {
					return
				}
				break
			}
			out, l.pending = l.pending, out[:0]
			l.mu.Unlock()
			// A write error has nowhere to be reported: the lines
			// are lost, as they would be with a closed stderr.
			_, _ = l.out.Write(out)
		}
	}
}

// Flush ends the current interval at once, so that its summaries are
// written, and waits up to wait for everything pending to be written. It
// reports whether that happened; it returns false, and leaves the lines to
// the writer, when the output is stuck.
func (l *Limiter) Flush(wait time.Duration) bool {
	l.mu.Lock()
	l.endIntervalLocked(true)
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.mu.Unlock()
	return l.drain(wait)
}

// drain waits up to wait for everything pending to be written.
func (l *Limiter) drain(wait time.Duration) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// Close flushes (waiting up to wait) and stops the writer goroutine. A
// writer stuck on a full pipe is left behind rather than waited for.
// Reports after Close are counted and dropped.
func (l *Limiter) Close(wait time.Duration) {
	l.Flush(wait)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
}

// Totals returns every source's totals, in the order the sources first
// reported, and the lines dropped.
func (l *Limiter) Totals() ([]Total, Dropped) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Total, len(l.order))
	for i, s := range l.order {
		out[i] = s.total
	}
	return out, l.dropped
}
