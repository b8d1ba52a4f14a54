package stepper

import (
	"errors"
	"fmt"

	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
)

// Breakpoints of the stepper.
//
// A hardware breakpoint is a debug register (DR0-DR3) holding a linear
// address: the CPU raises #DB before executing an instruction there, and
// KVM, told to intercept #DB, turns it into KVM_EXIT_DEBUG. The guest's
// memory is untouched, and there are four.
//
// A software breakpoint is what debuggers did before debug registers and
// still do for any number of breakpoints: the first byte of the instruction
// is replaced by INT3 (0xCC), the one-byte breakpoint instruction. The CPU
// raises #BP when it executes it; KVM, told to intercept #BP
// (KVM_GUESTDBG_USE_SW_BP), exits with KVM_EXIT_DEBUG, exception 3, and
// RIP at the INT3. To go on, the stepper puts the original byte back so
// the instruction runs, and plants the INT3 again at the next exit whose
// RIP has left that instruction. A debugger with single-step would step
// over the instruction instead; re-arming at the next exit needs no #DB at
// all (which is why it also works where single-step does not, such as the
// emulated host) but can miss a second hit that comes before any exit.
type breakpoint struct {
	addr  uint64 // the address given: guest-virtual once paging is on
	sw    bool   // software (INT3), else hardware (a debug register)
	gpa   uint64 // software: guest-physical address of the INT3
	orig  byte   // software: the byte the INT3 covers
	armed bool   // software: the INT3 is in guest memory now
}

const int3 = 0xCC

// bpVector is #BP, the exception INT3 raises (Intel SDM Vol. 3 §6.15,
// "Interrupt 3"): the vector KVM_EXIT_DEBUG reports for a software
// breakpoint, where single-step and debug registers report #DB (1).
const bpVector = 3

// bpTarget is what the breakpoint code needs of the stopped vCPU
// (*vmm.Control in Stop, a fake in the unit tests).
type bpTarget interface {
	VCPUs() int
	Regs() (kvm.Regs, error)
	SetRegs(kvm.Regs) error
	Sregs() (kvm.Sregs, error)
	Translate(gva uint64) (kvm.Translation, error)
	ReadPhys(gpa uint64, n int) ([]byte, error)
	WritePhys(gpa uint64, p []byte) error
	SetSWBreakpoints(on bool) error
}

func containsBreak(bs []breakpoint, b breakpoint) bool {
	for _, x := range bs {
		if x.addr == b.addr && x.sw == b.sw {
			return true
		}
	}
	return false
}

func (s *Stepper) hwAddrs() []uint64 {
	var a []uint64
	for _, b := range s.breaks {
		if !b.sw {
			a = append(a, b.addr)
		}
	}
	return a
}

func (s *Stepper) hwCount() int { return len(s.hwAddrs()) }

func (s *Stepper) swCount() int { return len(s.breaks) - s.hwCount() }

// addSoftware plants an INT3 at guest address a.
func (s *Stepper) addSoftware(c bpTarget, a uint64) error {
	if c.VCPUs() > 1 {
		// KVM intercepts #BP per vCPU, and the others are running: an INT3
		// reached by another vCPU would go to the guest's own handler.
		return errors.New("software breakpoints need --cpus 1; use break (hardware) instead")
	}
	for _, b := range s.breaks {
		if b.sw && b.addr == a {
			return fmt.Errorf("there is a software breakpoint at %#x already", a)
		}
	}
	if err := c.SetSWBreakpoints(true); err != nil {
		return err
	}
	p, err := vmm.PlantINT3(c, a) // shared with the GDB stub (vmm/debugregs.go)
	if err != nil {
		if s.swCount() == 0 {
			_ = c.SetSWBreakpoints(false)
		}
		return err
	}
	s.breaks = append(s.breaks, breakpoint{addr: a, sw: true, gpa: p.GPA, orig: p.Orig, armed: true})
	s.printf("breakpoint %d at %#x %s (software: INT3 at guest-physical %#x over byte %#02x)\n",
		len(s.breaks), a, s.sym.Describe(a), p.GPA, p.Orig)
	return nil
}

// disarm puts the original byte back under b's INT3.
func (s *Stepper) disarm(c bpTarget, b breakpoint) error {
	if !b.sw || !b.armed {
		return nil
	}
	return c.WritePhys(b.gpa, []byte{b.orig})
}

// swHit reports which software breakpoint a debug exit at rip is, if any,
// and lifts its INT3 so that the instruction can run when the guest goes on.
// KVM reports RIP at the INT3; should a host report it past the INT3, RIP
// is moved back so the instruction is not skipped.
func (s *Stepper) swHit(c bpTarget, rip uint64) (int, bool) {
	for i := range s.breaks {
		b := &s.breaks[i]
		if !b.sw || !b.armed || (rip != b.addr && rip != b.addr+1) {
			continue
		}
		if rip == b.addr+1 {
			if r, err := c.Regs(); err == nil && r.RIP == b.addr+1 {
				r.RIP = b.addr
				_ = c.SetRegs(r)
			}
		}
		if err := s.disarm(c, *b); err != nil {
			s.printf("breakpoint %d: restoring the original byte: %v\n", i+1, err)
			return i + 1, true
		}
		b.armed = false
		return i + 1, true
	}
	return 0, false
}

// rearm plants again the INT3s lifted by swHit, once the guest has moved
// off their instruction.
func (s *Stepper) rearm(c bpTarget, rip uint64) {
	for i := range s.breaks {
		b := &s.breaks[i]
		if !b.sw || b.armed || rip == b.addr {
			continue
		}
		if err := c.WritePhys(b.gpa, []byte{int3}); err != nil {
			s.printf("breakpoint %d: re-planting the INT3: %v\n", i+1, err)
			continue
		}
		b.armed = true
	}
}

// clearSoftware removes every INT3, when the stepper lets the guest run
// free: nobody would be there to handle the next hit.
func (s *Stepper) clearSoftware(c bpTarget) {
	for i := range s.breaks {
		if err := s.disarm(c, s.breaks[i]); err == nil {
			s.breaks[i].armed = false
		}
	}
	if s.swCount() > 0 {
		_ = c.SetSWBreakpoints(false)
	}
}
