package vmm

import (
	"io"
	"sync"
	"time"
)

// asyncWriter decouples the guest's serial output from the host's stdout: the
// vCPU goroutine appends to a buffer (no system call on the exit path) and a
// separate goroutine writes it out. A write to a slow terminal or a full pipe
// therefore never stalls a vCPU.
//
// The writer goroutine is woken only when the buffer goes from empty to
// non-empty, and then lets bytes gather for coalesceWindow before it writes.
// The guest's UART sends one byte per VM exit, so waking the writer for each
// byte would cost the vCPU thread a futex wake-up and the host a write(2)
// per character; batching makes both one per burst. A couple of milliseconds
// is far below what a person at a terminal notices.
type asyncWriter struct {
	mu      sync.Mutex
	buf     []byte
	closed  bool
	kick    chan struct{} // holds one value while a flush is due
	closing chan struct{} // closed by Close
	done    chan struct{}
	w       io.Writer
	dropped int
}

// maxPending bounds the buffer: if the reader of our stdout stops reading,
// the guest's console output is dropped rather than eating host memory.
const maxPending = 4 << 20

// coalesceWindow is how long the writer lets output gather after the first
// byte of a burst.
const coalesceWindow = 2 * time.Millisecond

func newAsyncWriter(w io.Writer) *asyncWriter {
	a := &asyncWriter{w: w, kick: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{})}
	go a.loop()
	return a
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	wasEmpty := len(a.buf) == 0
	if len(a.buf)+len(p) > maxPending {
		a.dropped += len(p)
	} else {
		a.buf = append(a.buf, p...)
	}
	a.mu.Unlock()
	if wasEmpty && len(p) > 0 {
		select {
		case a.kick <- struct{}{}:
		default: // a flush is already due
		}
	}
	return len(p), nil
}

func (a *asyncWriter) loop() {
	defer close(a.done)
	var out []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-a.kick:
			// Let the rest of the burst arrive, unless we are
			// closing, when everything is flushed at once.
			timer.Reset(coalesceWindow)
			select {
			case <-timer.C:
			case <-a.closing:
				timer.Stop()
			}
		case <-a.closing:
		}
		a.mu.Lock()
		out, a.buf = a.buf, out[:0]
		closed := a.closed
		a.mu.Unlock()
		if len(out) > 0 {
			_, _ = a.w.Write(out)
		}
		if closed {
			// Close set closed before closing the channel, so a
			// Write that raced with it is either in out or lost
			// with the machine, which has stopped.
			a.mu.Lock()
			rest := a.buf
			a.buf = nil
			a.mu.Unlock()
			if len(rest) > 0 {
				_, _ = a.w.Write(rest)
			}
			return
		}
	}
}

// Close flushes what is buffered and stops the writer goroutine.
func (a *asyncWriter) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		<-a.done
		return
	}
	a.closed = true
	a.mu.Unlock()
	close(a.closing)
	<-a.done
}
