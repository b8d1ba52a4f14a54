package vmm

import (
	"io"
	"sync"
)

// asyncWriter decouples the guest's serial output from the host's stdout: the
// vCPU goroutine appends to a buffer (no system call on the exit path) and a
// separate goroutine writes it out. A write to a slow terminal or a full pipe
// therefore never stalls a vCPU.
type asyncWriter struct {
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	closed  bool
	done    chan struct{}
	w       io.Writer
	dropped int
}

// maxPending bounds the buffer: if the reader of our stdout stops reading,
// the guest's console output is dropped rather than eating host memory.
const maxPending = 4 << 20

func newAsyncWriter(w io.Writer) *asyncWriter {
	a := &asyncWriter{w: w, done: make(chan struct{})}
	a.cond = sync.NewCond(&a.mu)
	go a.loop()
	return a
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	if len(a.buf)+len(p) > maxPending {
		a.dropped += len(p)
	} else {
		a.buf = append(a.buf, p...)
	}
	a.mu.Unlock()
	a.cond.Signal()
	return len(p), nil
}

func (a *asyncWriter) loop() {
	defer close(a.done)
	var out []byte
	for {
		a.mu.Lock()
		for len(a.buf) == 0 && !a.closed {
			a.cond.Wait()
		}
		if len(a.buf) == 0 && a.closed {
			a.mu.Unlock()
			return
		}
		out, a.buf = a.buf, out[:0]
		a.mu.Unlock()
		_, _ = a.w.Write(out)
	}
}

// Close flushes what is buffered and stops the writer goroutine.
func (a *asyncWriter) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cond.Signal()
	<-a.done
}
