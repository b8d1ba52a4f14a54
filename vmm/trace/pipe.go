package trace

// Why the writers work off-thread.
//
// A vCPU's goroutine is the guest's CPU: while it formats JSON or waits in
// write(2) for a slow disk or a full pipe, the guest does not run. Encoding
// an event costs a few hundred nanoseconds and a write system call several
// microseconds, against an exit path that is otherwise a few microseconds
// long, and a trace piped into a pager that nobody scrolls can stall it
// indefinitely. So Record only copies the event into a slot of a buffered
// channel and returns (about 50ns, BenchmarkJSONRecord/burst); one
// background goroutine per writer takes events out, encodes them into a
// bufio.Writer and writes in large blocks.
//
// The channel absorbs bursts (a guest booting takes thousands of exits in a
// few milliseconds). If the writer falls behind for longer than the buffer
// lasts, Record blocks until there is room: the trace stays complete and the
// guest is slowed down instead, which is visible, not silent. Waits counts
// how often that happened; a trace taken with Waits() > 0 shows a guest that
// ran slower than it would have untraced.
//
// The bufio.Writer is also flushed every flushEvery, so a trace file is
// nearly current while the guest runs (`tail -f` works) and a VMM that is
// killed loses at most the last fraction of a second, plus whatever was
// still in the channel (ReadJSON tolerates the torn last line).

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBuffer is how many events a writer's channel holds. A slot is
// about 260 bytes, so a full channel is about 17 MiB; the memory is only
// touched once the trace has that many events.
const DefaultBuffer = 1 << 16

// flushEvery is how long encoded output may sit in the bufio.Writer.
const flushEvery = 100 * time.Millisecond

// slot is an Event as it travels through the channel: the IO, MMIO and HW
// details are copied by value next to it, so that Record does not allocate
// and the caller may reuse (or modify) what its Event points to.
type slot struct {
	ev   Event // IO, MMIO and HW are nil here
	io   IO
	mmio MMIO
	hw   HW
	has  uint8
}

const (
	hasIO = 1 << iota
	hasMMIO
	hasHW
)

func (s *slot) load(ev *Event) {
	s.ev = *ev
	s.ev.IO, s.ev.MMIO, s.ev.HW = nil, nil, nil
	s.has = 0
	if ev.IO != nil {
		s.io = *ev.IO
		s.has |= hasIO
	}
	if ev.MMIO != nil {
		s.mmio = *ev.MMIO
		s.has |= hasMMIO
	}
	if ev.HW != nil {
		s.hw = *ev.HW
		s.has |= hasHW
	}
}

// event makes ev the Event s holds; ev points into s.
func (s *slot) event(ev *Event) {
	*ev = s.ev
	if s.has&hasIO != 0 {
		ev.IO = &s.io
	}
	if s.has&hasMMIO != 0 {
		ev.MMIO = &s.mmio
	}
	if s.has&hasHW != 0 {
		ev.HW = &s.hw
	}
}

// format is an output format: it appends bytes to dst and returns it.
type format interface {
	header(dst []byte) []byte
	event(dst []byte, ev *Event) []byte
	trailer(dst []byte) []byte
}

// pipe is the machinery both writers share: a channel, the goroutine that
// drains it, and the counters.
type pipe struct {
	ch   chan slot
	kick chan struct{} // a Record that found ch full wakes the writer
	quit chan struct{} // closed by Close
	done chan struct{} // closed by the writer when it has finished

	// mu makes Close wait for Records in flight: Record holds it shared
	// while it sends, Close exclusively while it closes the channel, so no
	// Record ever sends on a closed channel.
	mu     sync.RWMutex
	closed bool

	waits   atomic.Uint64 // Records that found the channel full
	written atomic.Uint64 // events encoded and handed to the bufio.Writer
	lost    atomic.Uint64 // events recorded after Close or after a write error

	err error // the first write error; read only after done is closed
}

// The writer polls: it empties the channel, then sleeps between pollMin and
// pollMax (longer while nothing comes, shorter while events flow). A
// goroutine blocked in a channel receive would have to be woken by every
// send, and waking a parked goroutine is the most expensive thing a send
// does: it would put a scheduler wake-up on the exit path of every event.
// Sleeping instead keeps Record to a copy and a buffered send (about half
// the cost of Record with a writer blocked in receive, by
// BenchmarkJSONRecord/burst); only a Record that finds the channel full
// kicks the writer awake.
const (
	pollMin = 100 * time.Microsecond
	pollMax = 10 * time.Millisecond
)

func newPipe(w io.Writer, size int, f format) *pipe {
	if size < 1 {
		size = DefaultBuffer
	}
	p := &pipe{
		ch:   make(chan slot, size),
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go p.run(w, f)
	return p
}

func (p *pipe) record(ev *Event) {
	if ev == nil {
		return
	}
	var s slot
	s.load(ev)
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		p.lost.Add(1)
		return
	}
	select {
	case p.ch <- s:
	default:
		// Full: the writer is behind. Wake it and wait rather than drop.
		p.waits.Add(1)
		select {
		case p.kick <- struct{}{}:
		default: // already kicked
		}
		p.ch <- s
	}
	p.mu.RUnlock()
}

func (p *pipe) close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.ch)
		close(p.quit)
	}
	p.mu.Unlock()
	<-p.done
	return p.err
}

// run is the writer goroutine.
func (p *pipe) run(w io.Writer, f format) {
	defer close(p.done)
	bw := bufio.NewWriterSize(w, 64<<10)
	buf := make([]byte, 0, 1024)
	put := func(b []byte) {
		if p.err == nil {
			_, p.err = bw.Write(b)
		}
	}
	put(f.header(buf[:0]))

	s := new(slot) // reused: one allocation, not one per event
	ev := new(Event)
	timer := time.NewTimer(pollMin)
	defer timer.Stop()
	wait := pollMin
	lastFlush := time.Now()
	for {
		n := 0
	drain:
		for {
			var ok bool
			select {
			case *s, ok = <-p.ch:
			default:
				break drain
			}
			if !ok { // closed and empty
				put(f.trailer(buf[:0]))
				if p.err == nil {
					p.err = bw.Flush()
				}
				return
			}
			n++
			if p.err != nil {
				p.lost.Add(1) // keep draining so Record never blocks forever
				continue
			}
			s.event(ev)
			buf = f.event(buf[:0], ev)
			put(buf)
			if p.err == nil {
				p.written.Add(1)
			} else {
				p.lost.Add(1)
			}
		}
		if n > 0 {
			wait = max(wait/2, pollMin)
		} else {
			wait = min(wait*2, pollMax)
		}
		if now := time.Now(); now.Sub(lastFlush) >= flushEvery {
			if p.err == nil && bw.Buffered() > 0 {
				p.err = bw.Flush()
			}
			lastFlush = now
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-p.kick:
		case <-p.quit:
		}
	}
}

// asyncSink is the Sink half both writers share: events go into a pipe and
// its goroutine encodes them in the writer's format.
type asyncSink struct {
	p *pipe
}

// Record copies ev and queues it for writing. It blocks only while the
// queue is full. It is safe for concurrent use; after Close it counts the
// event as lost.
func (a *asyncSink) Record(ev *Event) { a.p.record(ev) }

// Close writes out every queued event (and the format's trailer), flushes
// and stops the goroutine. It returns the first write error, and the same
// again if called twice.
func (a *asyncSink) Close() error { return a.p.close() }

// Waits is how many Records found the queue full and had to wait.
func (a *asyncSink) Waits() uint64 { return a.p.waits.Load() }

// Written is how many events have been encoded (not necessarily flushed yet).
func (a *asyncSink) Written() uint64 { return a.p.written.Load() }

// Lost is how many events were not written: recorded after Close or after a
// write error.
func (a *asyncSink) Lost() uint64 { return a.p.lost.Load() }
