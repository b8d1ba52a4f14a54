package i8042

// Saving and restoring the controller (snapshots, issue 14).
//
// The 8042's state is its internal RAM (the CTR is byte 0), the latched
// output port, the bytes waiting to be read at port 0x60, and where the
// command protocol stands (a command waiting for its data byte, whether the
// last write went to the command port). The status register is not stored:
// it is computed from those, so it reads the same after a restore.
//
// The State comes from a user's file, so RestoreState refuses anything the
// controller could not have been in, naming the field, and changes nothing
// when it refuses.

import (
	"errors"
	"fmt"
)

// ErrBadState is wrapped by every error RestoreState returns.
var ErrBadState = errors.New("invalid i8042 state")

// OutputByte is one byte waiting in the controller's output buffer.
type OutputByte struct {
	// Value is the byte a read of port 0x60 returns.
	Value byte
	// Aux is true for a byte from the auxiliary (mouse) port: while it
	// is at the head of the queue, status bit 5 (AUXB) is set and it
	// raises IRQ12 instead of IRQ1.
	Aux bool
}

// State is the saveable state of the keyboard controller, in the IBM PS/2
// Technical Reference's terms. It is plain data for encoding/json (RAM
// becomes base64).
type State struct {
	// RAM is the controller's 32 bytes of internal RAM, read with
	// commands 0x20-0x3F and written with 0x60-0x7F. Byte 0 is the
	// controller configuration byte (CTR, "command byte"): bit 0 IRQ1
	// enable, bit 1 IRQ12 enable, bit 2 system flag, bit 4 keyboard clock
	// disable, bit 5 aux clock disable, bit 6 scan code translation.
	// Exactly 32 bytes.
	RAM []byte
	// OutputPort is the latched output port (command 0xD1): bit 0 is the
	// CPU reset line (active low; the controller releases it again after
	// pulsing it, so it must be 1) and bit 1 the A20 gate. Bits 4 and 5,
	// the IRQ1/IRQ12 outputs, are not latched (they follow the output
	// buffer and the CTR) and must be 0.
	OutputPort byte
	// Output is the output buffer, head (the byte presented at port
	// 0x60, status bit 0 OBF) first, followed by the bytes the controller
	// will present after it: a multi-byte device reply. At most 16.
	Output []OutputByte
	// LastRead is the byte last read from port 0x60, which a read with
	// the output buffer empty returns again.
	LastRead byte
	// CommandLast is status bit 3 (A2): the last write went to the
	// command port 0x64 rather than the data port 0x60.
	CommandLast bool
	// PendingCommand is the controller command still waiting for its
	// data byte at port 0x60 (0x60-0x7F write RAM, 0xD1 write output
	// port, 0xD2/0xD3 write output buffer, 0xD4 write to aux device), or
	// 0 when the next data byte goes to the keyboard.
	PendingCommand byte
}

// SaveState returns the controller's state, taken under its lock, so it is
// the state between two port accesses.
func (c *Controller) SaveState() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := State{
		RAM:            append([]byte(nil), c.ram[:]...),
		OutputPort:     c.outPort,
		LastRead:       c.last,
		CommandLast:    c.cmdLast,
		PendingCommand: c.pending,
	}
	for _, b := range c.queue {
		s.Output = append(s.Output, OutputByte{Value: b.v, Aux: b.src == srcAux})
	}
	return s
}

// waitsForData says whether command v leaves the controller waiting for a
// data byte, as writeCommand does.
func waitsForData(v byte) bool {
	switch {
	case v >= 0x60 && v <= 0x7F:
		return true
	case v == CmdWriteOutPort, v == CmdWriteKbdOBF, v == CmdWriteAuxOBF, v == CmdWriteAux:
		return true
	}
	return false
}

func (s *State) check() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadState, field, fmt.Sprintf(format, args...))
	}
	if len(s.RAM) != 32 {
		return bad("RAM", "%d bytes, the 8042 has 32", len(s.RAM))
	}
	if s.OutputPort&(OutKbdIRQ|OutAuxIRQ) != 0 {
		return bad("OutputPort", "%#02x sets the IRQ output bits 4/5, which follow the output buffer and are not latched", s.OutputPort)
	}
	if s.OutputPort&OutReset == 0 {
		return bad("OutputPort", "%#02x holds the CPU reset line (bit 0) low; the controller releases it after each pulse", s.OutputPort)
	}
	if len(s.Output) > maxQueue {
		return bad("Output", "%d bytes queued, at most %d", len(s.Output), maxQueue)
	}
	if s.PendingCommand != 0 && !waitsForData(s.PendingCommand) {
		return bad("PendingCommand", "%#02x is not a command that waits for a data byte", s.PendingCommand)
	}
	return nil
}

// RestoreState puts the controller into state s. An invalid s is refused
// with an error wrapping ErrBadState, and the controller is left as it was.
//
// After a restore the IRQ1/IRQ12 lines are driven as the output port says:
// if a byte waits and the CTR enables its interrupt, its line is driven
// high with a fresh rising edge (dropped first if it was high). The PIC
// latches ISA interrupts on the edge, and the interrupt controller of the
// restored VM may or may not hold the edge the original byte made; an
// extra interrupt is harmless (Linux's i8042 handler reads the status,
// finds OBF and takes the byte, or finds nothing), while a lost one would
// leave the byte unread and the keyboard (and Linux's probe, which waits on
// it) silent.
func (c *Controller) RestoreState(s State) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("i8042: %w", err)
	}
	c.mu.Lock()
	copy(c.ram[:], s.RAM)
	c.outPort = s.OutputPort
	c.queue = nil
	for _, b := range s.Output {
		src := srcKbd
		if b.Aux {
			src = srcAux
		}
		c.queue = append(c.queue, outByte{v: b.Value, src: src})
	}
	c.last = s.LastRead
	c.cmdLast = s.CommandLast
	c.pending = s.PendingCommand
	// Describe's memory of the last data write belongs to the access
	// before the snapshot, not to this controller's history.
	c.lastData, c.lastDataCmd, c.lastDataOK = 0, 0, false
	// The head byte is presented anew: syncIRQ sees a new sequence
	// number and makes a fresh edge for it.
	c.headSeq++
	c.mu.Unlock()
	c.syncIRQ()
	return nil
}
