// Package irq is the small interface through which devices raise interrupts.
//
// On a PC, an ISA device (the 16550A UART, the i8042) drives one interrupt
// request line wired to both the legacy 8259A PIC pair and the I/O APIC
// (Intel 82093AA datasheet). With KVM's in-kernel irqchip those controllers
// live in the host kernel, and the VMM sets the level of a line with the
// KVM_IRQ_LINE ioctl (Documentation/virt/kvm/api.rst §4.25). Devices do not
// know any of that: they hold a Line and set its level, so a device can be
// unit-tested with a fake Line that records what happened.
package irq

import "sync"

// Line is one interrupt request line.
type Line interface {
	// Set drives the line high (asserted) or low.
	Set(high bool) error
}

// Pulse raises and lowers an edge-triggered line: the interrupt controller
// latches the rising edge. ISA interrupts are edge-triggered.
func Pulse(l Line) error {
	if err := l.Set(true); err != nil {
		return err
	}
	return l.Set(false)
}

// Fake is a Line for tests: it records every level it was driven to.
type Fake struct {
	mu     sync.Mutex
	Levels []bool
}

// Set records the level.
func (f *Fake) Set(high bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Levels = append(f.Levels, high)
	return nil
}

// Edges counts the rising edges seen so far.
func (f *Fake) Edges() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, prev := 0, false
	for _, l := range f.Levels {
		if l && !prev {
			n++
		}
		prev = l
	}
	return n
}

// High reports the current level.
func (f *Fake) High() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.Levels) > 0 && f.Levels[len(f.Levels)-1]
}

// Nop is a Line that goes nowhere.
type Nop struct{}

// Set does nothing.
func (Nop) Set(bool) error { return nil }
