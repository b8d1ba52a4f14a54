package vmm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/kvm"
)

// Pausing a machine: every vCPU out of the guest, and kept out.
//
// While a vCPU thread is inside KVM_RUN its state belongs to the kernel:
// the registers are in the hardware's VMCB or VMCS, the local APIC's
// timers tick, and every other vCPU ioctl waits for the mutex KVM_RUN
// holds. Only a vCPU that is out of KVM_RUN, and stays out, can be read
// (or written) consistently, and a machine can only be saved whole when
// all its vCPUs are out at once: a snapshot of vCPU 0 taken while vCPU 1
// still runs would pair registers from two different instants. Pausing
// is that: each vCPU is brought out of KVM_RUN the way an inspection
// snapshot does it (a signal to its thread makes KVM_RUN return EINTR,
// snapshot.go), and instead of going back in it parks at the top of its
// loop until Resume, answering snapshot requests and running work handed
// to it meanwhile (OnParked) on its own thread.
//
// Firecracker's PATCH /vm {"state": "Paused"} and QEMU's "stop" command
// do the same; both pause before they save a snapshot. The guest does
// not notice a pause, except that its clocks jump by its length when it
// resumes (kvm-clock follows the host's monotonic clock).

// PauseWait bounds how long Pause waits for the vCPUs to park. A vCPU
// leaves KVM_RUN within microseconds of the signal; one that has not
// parked after this is stuck outside the guest (in a device model, or in
// the stepper waiting for its user), and the pause is undone.
const PauseWait = 3 * time.Second

// pauseKickEvery is how often Pause repeats the signal to a vCPU that has
// not parked yet. A signal that lands while the thread is outside KVM_RUN
// (between its look at the pause flag and its next KVM_RUN) is consumed by
// the Go runtime and does not make the next KVM_RUN return, so one signal
// is not enough; a repeat a few milliseconds later is.
const pauseKickEvery = 5 * time.Millisecond

// parkPoll is how often a parked vCPU looks for an inspection snapshot
// request (snapshot.go posts one without waking anybody: a running vCPU
// finds it at its next exit).
const parkPoll = 10 * time.Millisecond

// ErrStopped is returned by Pause when the machine stopped (or stops
// while Pause waits): there is nothing left to pause.
var ErrStopped = errors.New("the machine has stopped")

// ErrNotPaused is returned by OnParked when the machine is not paused.
var ErrNotPaused = errors.New("the machine is not paused")

// pauseState is the Machine's pause control.
type pauseState struct {
	mu     sync.Mutex               // serialises Pause, Resume and OnParked
	gate   atomic.Pointer[parkGate] // non-nil: vCPUs must park (read by every vCPU loop)
	paused atomic.Bool              // Pause succeeded and Resume has not run
}

// parkGate is one pause: the vCPUs park on it until release is closed.
type parkGate struct {
	release chan struct{} // closed by Resume (or an undone Pause)
	parked  chan int      // each vCPU sends its index once when it parks
	work    []chan func() // per vCPU: work to run on its parked thread
}

// Paused reports whether the machine is paused: Pause returned nil and
// Resume has not been called since.
func (m *Machine) Paused() bool { return m.pause.paused.Load() }

// Pause brings every vCPU out of KVM_RUN and keeps it parked outside,
// returning once all of them are. It is idempotent (pausing a paused
// machine does nothing) and safe from any goroutine. It fails with
// ErrStopped when the machine stops, and with an error naming the vCPU
// when one does not park within PauseWait; the pause is undone then.
func (m *Machine) Pause() error {
	p := &m.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.stopped.Load() {
		return ErrStopped
	}
	if p.paused.Load() {
		return nil
	}
	n := len(m.vcpus)
	g := &parkGate{release: make(chan struct{}), parked: make(chan int, n), work: make([]chan func(), n)}
	for i := range g.work {
		g.work[i] = make(chan func())
	}
	p.gate.Store(g)
	undo := func() {
		p.gate.Store(nil)
		close(g.release)
	}
	parked := make([]bool, n)
	left := n
	pid := unix.Getpid()
	kick := time.NewTicker(pauseKickEvery)
	defer kick.Stop()
	deadline := time.NewTimer(PauseWait)
	defer deadline.Stop()
	for left > 0 {
		for i, v := range m.vcpus {
			if tid := v.tid.Load(); !parked[i] && tid > 0 {
				_ = unix.Tgkill(pid, int(tid), unix.SIGURG)
			}
		}
		select {
		case i := <-g.parked:
			parked[i] = true
			left--
		case <-kick.C:
		case <-m.stopC:
			undo()
			return ErrStopped
		case <-deadline.C:
			undo()
			for i, ok := range parked {
				if !ok {
					return fmt.Errorf("pause: vCPU %d did not leave the guest within %v (it is busy outside KVM_RUN): the machine keeps running", i, PauseWait)
				}
			}
		}
	}
	p.paused.Store(true)
	return nil
}

// Resume lets every parked vCPU go back into the guest. Resuming a
// machine that is not paused does nothing.
func (m *Machine) Resume() {
	p := &m.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.gate.Load()
	if g == nil || !p.paused.Load() {
		return
	}
	p.paused.Store(false)
	// The gate goes before the release, so that a vCPU let go does not
	// see it again and park once more.
	p.gate.Store(nil)
	close(g.release)
}

// OnParked runs fn on every vCPU's own thread, one vCPU after the other,
// while the machine is paused, and returns the first error. fn gets the
// vCPU's index and its KVM handle; no vCPU is in KVM_RUN meanwhile, so
// every vCPU and VM ioctl reads one consistent machine. It is what a
// saved snapshot reads the vCPUs through.
func (m *Machine) OnParked(fn func(id int, v *kvm.VCPU) error) error {
	p := &m.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.gate.Load()
	if g == nil || !p.paused.Load() {
		return ErrNotPaused
	}
	for i, v := range m.vcpus {
		done := make(chan error, 1)
		job := func() { done <- fn(i, v.VCPU) }
		select {
		case g.work[i] <- job:
		case <-m.stopC:
			return ErrStopped
		}
		if err := <-done; err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	return nil
}

// parkIfPaused is the vCPU loop's hook: it parks the vCPU (index i) while
// the machine is paused. It returns at once when it is not, which is one
// atomic load.
func (m *Machine) parkIfPaused(v *vcpu) {
	g := m.pause.gate.Load()
	if g == nil {
		return
	}
	m.completePending(v)
	g.parked <- v.ID // buffered for every vCPU: never blocks
	poll := time.NewTicker(parkPoll)
	defer poll.Stop()
	for {
		select {
		case <-g.release:
			return
		case <-m.stopC:
			// A stop (Ctrl-A x, quit, a device's poweroff) ends a
			// pause: the loop sees stopped and returns.
			return
		case job := <-g.work[v.ID]:
			job()
		case <-poll.C:
			if r := v.snapPending(); r != nil {
				m.answerSnapshot(v, r, false)
			}
		}
	}
}

// completePending finishes the exit the vCPU last came back with, before it
// parks. An exit kvmlab has handled is not over until the next KVM_RUN: only
// then does KVM write the data of an IN or an MMIO read into the guest's
// register and move RIP past the instruction (api.rst, KVM_RUN: the
// operations "are complete (and guest state is consistent) only after
// userspace has re-entered the kernel with KVM_RUN"). A snapshot taken
// before that would save a vCPU halfway through an instruction. A KVM_RUN
// with immediate_exit set completes it and returns EINTR without running
// any guest code. A string instruction (REP INSB) may need more than one
// exit: KVM then returns the next one, which is handled like any other,
// and the vCPU goes in again (bounded: a REP count is at most what fits in
// the run page per exit, and the loop gives up after maxPendingExits).
func (m *Machine) completePending(v *vcpu) {
	const maxPendingExits = 1 << 16
	exits.SetImmediateExit(v.Run, true)
	defer func() {
		// A stop sets immediate_exit on every vCPU (kickAll): keep it.
		if !m.stopped.Load() {
			exits.SetImmediateExit(v.Run, false)
		}
	}()
	for range maxPendingExits {
		if m.stopped.Load() || v.RunOnce() != nil {
			return // EINTR: nothing was pending, or it is complete now
		}
		if err := exits.Decode(v.Run, &v.exit); err != nil {
			return
		}
		if r := v.exit.Reason; r < exitCountSlots {
			m.exitCounts[r].Add(1)
		}
		v.exits++
		if m.observed {
			m.observe(v)
		} else {
			m.handle(v)
		}
	}
}

// PauseAsync starts a Pause and returns once the pause is requested (or
// one already is), before the vCPUs have parked; the channel gets Pause's
// result. A Debugger calls it from Stop, on a vCPU's own goroutine, to
// stop the whole machine at a breakpoint (the GDB stub's all-stop): that
// vCPU cannot park while it is inside Stop, so a Pause there would wait
// for itself. Once the request is up, the vCPU parks as soon as Stop
// returns, before it could re-enter the guest. Called before Run, it holds
// every vCPU before its first guest instruction (run --gdb-wait).
func (m *Machine) PauseAsync() <-chan error {
	res := make(chan error, 1)
	go func() { res <- m.Pause() }()
	// Pause stores the gate first thing; a Pause already under way (the
	// gate is up) counts too, and this one then finds the machine paused.
	for m.pause.gate.Load() == nil {
		select {
		case err := <-res:
			// Done already: paused, or stopped.
			r := make(chan error, 1)
			r <- err
			return r
		case <-m.stopC:
			return res
		case <-time.After(50 * time.Microsecond):
		}
	}
	return res
}

// OnParkedControl runs fn on vCPU id's own thread while the machine is
// paused, with the Control a Debugger gets at a stop: registers, memory
// and guest debugging of that vCPU, read and set where no KVM_RUN holds
// it (the GDB stub's register and breakpoint packets).
func (m *Machine) OnParkedControl(id int, fn func(c *Control) error) error {
	p := &m.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.gate.Load()
	if g == nil || !p.paused.Load() {
		return ErrNotPaused
	}
	if id < 0 || id >= len(m.vcpus) {
		return fmt.Errorf("no vCPU %d", id)
	}
	done := make(chan error, 1)
	job := func() { done <- fn(&Control{m: m, v: m.vcpus[id]}) }
	select {
	case g.work[id] <- job:
	case <-m.stopC:
		return ErrStopped
	}
	return <-done
}
