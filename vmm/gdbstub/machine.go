package gdbstub

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"kvmlab/vmm"
	"kvmlab/vmm/exits"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/inspect"
	"kvmlab/vmm/trace"
)

// Machine is a vmm.Machine as a Target: it is the machine's Debugger (its
// Stop sees every exit, on the vCPU's goroutine) and drives the machine's
// pause for all-stop. Make one with Attach before the machine is built,
// then Bind it to the machine.
type Machine struct {
	m    *vmm.Machine
	cpus int
	done chan struct{}

	mu      sync.Mutex
	state   runState
	step    int   // the vCPU with single-step on, -1 none
	pending *Stop // a watchpoint hit on another vCPU while stopping
	stops   chan Stop
	last    []trace.Event // per vCPU: its last exit that was not a debug one
	stats   *trace.Stats
	int3s   map[uint64]vmm.INT3 // where the debugger planted INT3
	initial <-chan error        // run --gdb-wait: the pause before the first instruction
}

type runState int

const (
	stopped  runState = iota // every vCPU parked (or not started: run --gdb-wait)
	running                  // the guest runs; a debug exit stops it
	stopping                 // a stop is under way; its Stop is coming
)

// Attach makes cfg's machine report to a new Machine. With wait the guest
// stops before its first instruction and waits for a debugger; otherwise
// it runs until one attaches. The kernel is asked to run without KASLR,
// so that the addresses in its vmlinux are where its code is.
func Attach(cfg *vmm.Config, wait bool) *Machine {
	t := &Machine{cpus: cfg.CPUs, done: make(chan struct{}), step: -1, stops: make(chan Stop, 1),
		stats: trace.NewStats(), int3s: map[uint64]vmm.INT3{}, last: make([]trace.Event, max(cfg.CPUs, 1))}
	if t.cpus < 1 {
		t.cpus = 1
	}
	cfg.Debugger = t
	if cfg.Cmdline != "" && !strings.Contains(cfg.Cmdline, "nokaslr") {
		cfg.Cmdline += " nokaslr"
	}
	t.state = running
	if wait {
		t.state = stopped
	}
	return t
}

// Bind ties t to the machine built from the config Attach saw. With wait,
// it pauses the machine before it runs: call it before m.Run.
func (t *Machine) Bind(m *vmm.Machine) {
	t.m = m
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stopped {
		t.initial = t.m.PauseAsync() // every vCPU parks before its first KVM_RUN
	}
}

// Ended tells t that the machine has stopped (m.Run returned).
func (t *Machine) Ended() { close(t.done) }

// Stop is vmm.Debugger's hook: every exit, on its vCPU's goroutine. An
// exit that is not a debug exit is counted and remembered (monitor stats,
// explain); a debug exit stops the machine.
func (t *Machine) Stop(c *vmm.Control, ev *trace.Event) {
	t.stats.Add(ev)
	id := c.VCPU()
	if ev.Reason != exits.Debug.String() {
		t.mu.Lock()
		if id < len(t.last) {
			t.last[id] = *ev
		}
		t.mu.Unlock()
		return
	}
	vec, _ := c.DebugException()
	dr6, _ := c.DebugStatus()
	t.mu.Lock()
	defer t.mu.Unlock()
	if vec == 3 && !t.ownINT3(ev.RIP) {
		// The guest's own INT3 (Linux runs one in its self-test): it
		// goes to the guest's #BP handler.
		_ = c.ReinjectBreakpoint()
		return
	}
	if t.step == id {
		_ = c.SetSingleStep(false)
		t.step = -1
	}
	st := Stop{CPU: id, Signal: 5, Vector: vec, DR6: dr6}
	if t.state != running {
		// Another vCPU stopped the machine first. A breakpoint is a
		// fault and hits again when this vCPU resumes; a watchpoint is
		// a trap, over once reported, so it is kept for the next resume.
		if dr6&0xf != 0 && vec == 1 && t.pending == nil {
			t.pending = &st
		}
		return
	}
	t.state = stopping
	res := t.m.PauseAsync()
	go t.finishStop(res, st)
}

// finishStop reports st once every vCPU has parked.
func (t *Machine) finishStop(res <-chan error, st Stop) {
	err := <-res
	t.mu.Lock()
	t.state = stopped
	if err != nil {
		st = Stop{Exited: true}
	}
	t.post(st)
	t.mu.Unlock()
}

// post hands st to the session, replacing a stop nobody took (a session
// that ended between a stop and its report): the channel holds one, and a
// send must never block with t.mu held. Called with t.mu held.
func (t *Machine) post(st Stop) {
	for {
		select {
		case t.stops <- st:
			return
		default:
		}
		select {
		case <-t.stops:
		default:
		}
	}
}

// ownINT3 tells the debugger's INT3s from the guest's own. KVM reports
// RIP at the INT3 (as kvmlab step's sbreak relies on).
func (t *Machine) ownINT3(rip uint64) bool {
	_, ok := t.int3s[rip]
	return ok
}

// CPUs is the number of vCPUs.
func (t *Machine) CPUs() int { return t.cpus }

// Stops gives the stop after each resume.
func (t *Machine) Stops() <-chan Stop { return t.stops }

// Done is closed when the machine has ended.
func (t *Machine) Done() <-chan struct{} { return t.done }

// Halt stops the machine (Ctrl-C, a debugger attaching).
func (t *Machine) Halt() (bool, error) {
	t.mu.Lock()
	switch t.state {
	case stopped:
		initial := t.initial
		t.initial = nil
		t.mu.Unlock()
		if initial != nil {
			// run --gdb-wait: the vCPUs may still be on their way to
			// their first park.
			if err := <-initial; err != nil {
				return false, err
			}
		}
		return false, nil
	case stopping:
		t.mu.Unlock()
		return true, nil
	}
	t.state = stopping
	t.mu.Unlock()
	err := t.m.Pause()
	t.mu.Lock()
	defer t.mu.Unlock()
	if errors.Is(err, vmm.ErrStopped) {
		t.state = stopped
		t.post(Stop{Exited: true})
		return true, nil
	}
	if err != nil {
		t.state = running
		return false, err
	}
	t.state = stopped
	t.post(Stop{CPU: 0, Signal: 2})
	return true, nil
}

// Resume programs every vCPU's guest debugging and lets the machine run,
// unless a stop is pending: then that stop is reported at once.
func (t *Machine) Resume(step int, hw []vmm.HWBreakpoint, sw bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != stopped {
		return errors.New("the machine is not stopped")
	}
	if t.pending != nil && len(hw) == 0 {
		t.pending = nil // a detach: nobody wants the watchpoint now
	}
	if t.pending != nil {
		t.post(*t.pending)
		t.pending = nil
		return nil
	}
	for i := range t.cpus {
		err := t.m.OnParkedControl(i, func(c *vmm.Control) error {
			if err := c.SetDebugRegisters(hw); err != nil {
				return err
			}
			if err := c.SetSWBreakpoints(sw); err != nil {
				return err
			}
			return c.SetSingleStep(i == step)
		})
		if err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	t.step = step
	t.state = running
	t.m.Resume()
	return nil
}

func (t *Machine) onCPU(cpu int, fn func(c *vmm.Control) error) error {
	if t.m == nil {
		return errors.New("no machine")
	}
	return t.m.OnParkedControl(cpu, fn)
}

// Regs reads a vCPU's registers.
func (t *Machine) Regs(cpu int) (Registers, error) {
	var r Registers
	err := t.onCPU(cpu, func(c *vmm.Control) error {
		var err error
		if r.Regs, err = c.Regs(); err != nil {
			return err
		}
		r.Sregs, err = c.Sregs()
		return err
	})
	return r, err
}

// SetRegs writes a vCPU's general registers (the others are read-only).
func (t *Machine) SetRegs(cpu int, r Registers) error {
	return t.onCPU(cpu, func(c *vmm.Control) error { return c.SetRegs(r.Regs) })
}

// ReadMem reads guest memory, virtual through cpu's page tables.
func (t *Machine) ReadMem(cpu int, addr uint64, n int, phys bool) ([]byte, error) {
	var out []byte
	err := t.onCPU(cpu, func(c *vmm.Control) error {
		var err error
		if !phys {
			sr, err := c.Sregs()
			if err != nil {
				return err
			}
			phys = sr.CR0&(1<<31) == 0 // paging off: virtual is physical
		}
		if phys {
			// Byte by page, so that a read running into the end of RAM
			// gives what it could.
			for n > 0 {
				chunk := min(n, int(0x1000-addr&0xfff))
				b, err := c.ReadPhys(addr, chunk)
				if err != nil {
					return err
				}
				out = append(out, b...)
				addr += uint64(chunk)
				n -= chunk
			}
			return nil
		}
		out, err = c.ReadVirt(addr, n)
		return err
	})
	return out, err
}

// WriteMem writes guest-virtual memory (M), page by page.
func (t *Machine) WriteMem(cpu int, addr uint64, p []byte) error {
	return t.onCPU(cpu, func(c *vmm.Control) error {
		sr, err := c.Sregs()
		if err != nil {
			return err
		}
		paging := sr.CR0&(1<<31) != 0
		for len(p) > 0 {
			chunk := min(len(p), int(0x1000-addr&0xfff))
			gpa := addr
			if paging {
				tr, err := c.Translate(addr)
				if err != nil {
					return err
				}
				if tr.Valid == 0 {
					return fmt.Errorf("guest-virtual %#x is not mapped", addr)
				}
				gpa = tr.PhysicalAddress
			}
			if err := c.WritePhys(gpa, p[:chunk]); err != nil {
				return err
			}
			p, addr = p[chunk:], addr+uint64(chunk)
		}
		return nil
	})
}

// PlantINT3 plants a software breakpoint (vmm.PlantINT3, as kvmlab step's
// sbreak does).
func (t *Machine) PlantINT3(cpu int, addr uint64) (vmm.INT3, error) {
	var b vmm.INT3
	err := t.onCPU(cpu, func(c *vmm.Control) error {
		var err error
		b, err = vmm.PlantINT3(c, addr)
		return err
	})
	if err == nil {
		t.mu.Lock()
		t.int3s[addr] = b
		t.mu.Unlock()
	}
	return b, err
}

// LiftINT3 removes one.
func (t *Machine) LiftINT3(b vmm.INT3) error {
	t.mu.Lock()
	delete(t.int3s, b.GVA)
	t.mu.Unlock()
	return t.onCPU(0, func(c *vmm.Control) error { return b.Lift(c) })
}

// Monitor runs the observatory's monitor commands.
func (t *Machine) Monitor(cpu int, args []string) (string, error) {
	var b strings.Builder
	switch args[0] {
	case "stats":
		if err := t.stats.Write(&b); err != nil {
			return "", err
		}
		st := t.m.Stats()
		fmt.Fprintf(&b, "%d exits reached kvmlab in %v\n", st.TotalExits, st.Ran.Round(1e6))
	case "explain":
		t.mu.Lock()
		ev := t.last[min(cpu, len(t.last)-1)]
		t.mu.Unlock()
		if ev.Reason == "" {
			return "vCPU has had no exit yet\n", nil
		}
		fmt.Fprintf(&b, "the last exit of vCPU %d, #%d %s at rip=%#x:\n", cpu, ev.Seq, ev.Reason, ev.RIP)
		err := t.onCPU(cpu, func(c *vmm.Control) error {
			b.WriteString(hwexit.Explain(&ev, c.Vendor()))
			return nil
		})
		b.WriteString("\n")
		return b.String(), err
	case "regs":
		r, err := t.Regs(cpu)
		if err != nil {
			return "", err
		}
		b.WriteString(inspect.Format(inspect.State{Regs: r.Regs, Sregs: r.Sregs}, nil, nil))
		b.WriteString("\n")
	case "quit":
		t.Kill()
		return "the machine stops\n", nil
	default:
		return "", fmt.Errorf("unknown monitor command %q: monitor help lists them", args[0])
	}
	return b.String(), nil
}

// Kill stops the machine.
func (t *Machine) Kill() {
	if t.m != nil {
		t.m.Quit()
	}
}

var _ Target = (*Machine)(nil)
var _ vmm.Debugger = (*Machine)(nil)
