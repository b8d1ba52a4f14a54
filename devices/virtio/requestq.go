package virtio

import (
	"errors"
	"fmt"
	"sync"

	"kvmlab/guestmem"
)

// RequestQueue drives a device whose only queue is a request queue the
// driver fills and the device answers chain by chain (virtio-blk §5.2,
// virtio-rng §5.4). It implements Activate, Reset and the batch loop of
// Notify; the device supplies the answer to one chain. Embed it and call
// Serve from Notify.
type RequestQueue struct {
	// Name prefixes errors ("blk", "rng").
	Name string

	mu     sync.Mutex
	env    *Env // nil until Activate and after Reset
	failed bool // Fail was called: serve nothing until Reset
}

// Activate implements Device.Activate.
func (r *RequestQueue) Activate(env *Env) error {
	if env == nil || env.Mem == nil || len(env.Queues) < 1 || env.Queues[0] == nil || env.Interrupt == nil || env.Fail == nil {
		return errors.New(r.Name + ": activate: incomplete environment (need memory, requestq, Interrupt and Fail)")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.env, r.failed = env, false
	return nil
}

// Reset implements Device.Reset. Serve holds the lock while it touches
// guest memory, so taking it here waits for a batch in progress.
func (r *RequestQueue) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.env, r.failed = nil, false
}

// Quiesce runs f while no batch is in progress.
func (r *RequestQueue) Quiesce(f func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f()
}

// Serve answers every chain the driver has posted on queue 0 with serve,
// which returns the bytes written into the chain or an error that puts the
// device into DEVICE_NEEDS_RESET; then it asks for one interrupt for the
// batch.
func (r *RequestQueue) Serve(q int, serve func(mem *guestmem.Memory, c *Chain) (uint32, error)) {
	if q != 0 {
		return // there is no other queue; the transport never sends this
	}
	r.mu.Lock()
	env := r.env
	if env == nil || r.failed {
		r.mu.Unlock()
		return
	}
	queue := env.Queues[0]
	pushed := false
	var fail error
	for {
		c, err := queue.Pop(env.Mem)
		if err != nil {
			fail = fmt.Errorf("%s: requestq: %w", r.Name, err) // wraps ErrNeedsReset
			break
		}
		if c == nil {
			break
		}
		n, err := serve(env.Mem, c)
		if err != nil {
			fail = err
			break
		}
		if err := queue.Push(env.Mem, c.Head, n); err != nil {
			fail = fmt.Errorf("%s: requestq: %w", r.Name, err)
			break
		}
		pushed = true
	}
	// One interrupt for the whole batch, and under the lock: the
	// transport may read the queue's event index in guest RAM to decide
	// whether to send it, and Reset must wait for that.
	if pushed {
		env.Interrupt(0)
	}
	r.failed = fail != nil
	r.mu.Unlock()
	// Outside the lock: the transport may react to Fail by resetting the
	// device, and Reset takes the lock.
	if fail != nil {
		env.Fail(fail)
	}
}
