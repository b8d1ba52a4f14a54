package serial

// Saving and restoring the UART (snapshots, issue 14).
//
// The state of a 16550A is its register file plus what sits in the receive
// FIFO. Some registers are not storage at all: IIR is computed from IER and
// the pending conditions, and LSR from the FIFO and the sticky error bits.
// So State holds what the chip latches, and the reads the guest makes after
// a restore are recomputed from it exactly as they were before the save.
//
// A snapshot file comes from the user, so RestoreState treats State as
// hostile: every field is checked against what this model can itself reach,
// and a State the model could never have been in is refused with an error
// naming the field, before anything changes.

import (
	"errors"
	"fmt"
)

// ErrBadState is wrapped by every error RestoreState returns.
var ErrBadState = errors.New("invalid UART state")

// State is the saveable state of a 16550A, in the PC16550D datasheet's
// terms. It is plain data and round-trips through encoding/json (RxFIFO
// becomes base64).
type State struct {
	// IER is the interrupt enable register (offset 1, DLAB=0): bit 0
	// ERBFI received data, bit 1 ETBEI THR empty, bit 2 ELSI receiver line
	// status, bit 3 EDSSI modem status. Bits 7:4 do not exist and must be 0.
	IER byte
	// LCR is the line control register (offset 3): word length, stop
	// bits, parity, break, and bit 7 DLAB, which switches offsets 0 and 1
	// to the divisor latch. Every bit is storage.
	LCR byte
	// MCR is the modem control register (offset 4): DTR, RTS, OUT1, OUT2
	// (the IRQ gate on a PC), LOOP. Bits 7:5 read 0 on a 16550A and must be 0.
	MCR byte
	// FCR is the FIFO control register (offset 2, write-only) as it is
	// latched: bit 0 FIFO enable, bit 3 DMA mode, bits 7:6 RX trigger
	// level. The self-clearing bits 1 and 2 (clear RX/TX FIFO) and the
	// 16750's bit 5 are never latched and must be 0; with FIFOs off
	// (16450 mode) nothing is latched and FCR must be 0.
	FCR byte
	// SCR is the scratch register (offset 7).
	SCR byte
	// DLL and DLM are the divisor latch, low and high byte (offsets 0
	// and 1 with DLAB=1): the baud rate divisor of the 1.8432 MHz clock.
	DLL, DLM byte
	// LSRErrors are the sticky error bits of the line status register
	// (offset 5), which a read of LSR clears. Only bit 1, OE (overrun),
	// can be set by this model (parity, framing and break errors need a
	// real wire), so any other bit is refused. DR, THRE and TEMT are not
	// stored: they follow from the FIFO, and the transmitter is always
	// empty here.
	LSRErrors byte
	// MSRDeltas are the delta bits of the modem status register (offset
	// 6, bits 3:0: DCTS, DDSR, TERI, DDCD), set when a modem input changed
	// and cleared by reading MSR. The input levels in bits 7:4 are not
	// stored: they follow from MCR (loopback) or the always-connected line.
	MSRDeltas byte
	// THREPending is the latched "transmitter holding register empty"
	// interrupt condition, which IIR reports as 0x02 while ETBEI is set
	// and which a read of IIR (reporting it) or a write to THR clears.
	THREPending bool
	// RxFIFO is the receive FIFO's contents, oldest byte (the next RBR
	// read) first. At most 16 bytes with FIFOs enabled, at most 1 in
	// 16450 mode (FCR bit 0 clear), where the receiver is the single
	// RBR. The position of the bytes in the chip's ring is not saved:
	// the guest cannot see it, and leaving it out leaves no index a
	// hostile file could point outside the ring.
	RxFIFO []byte
}

// SaveState returns the UART's state. It takes the register lock, so the
// state is one the UART was in between two accesses. Counters (Stats) are
// host-side bookkeeping and are not part of it.
func (u *UART) SaveState() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := State{
		IER: u.ier, LCR: u.lcr, MCR: u.mcr, FCR: u.fcr, SCR: u.scr,
		DLL: u.dll, DLM: u.dlm,
		LSRErrors: u.lsrErr, MSRDeltas: u.msrDelta,
		THREPending: u.threPending,
		RxFIFO:      make([]byte, u.rxLen),
	}
	for i := range s.RxFIFO {
		s.RxFIFO[i] = u.rx[(u.rxHead+i)%FIFOSize]
	}
	return s
}

// check refuses a State this model could never have been in. It names the
// field, in datasheet terms, so the user learns what in the file is wrong.
func (s *State) check() error {
	bad := func(field string, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadState, field, fmt.Sprintf(format, args...))
	}
	if s.IER&^ierMask != 0 {
		return bad("IER", "%#02x sets bits 7:4, which a 16550A does not have", s.IER)
	}
	if s.MCR&^mcrMask != 0 {
		return bad("MCR", "%#02x sets bits 7:5, which read 0 on a 16550A", s.MCR)
	}
	if s.FCR&^(fcrEnable|fcrDMA|fcrTrigger) != 0 {
		return bad("FCR", "%#02x sets bits that are never latched (1, 2, 4, 5)", s.FCR)
	}
	if s.FCR&fcrEnable == 0 && s.FCR != 0 {
		return bad("FCR", "%#02x: with FIFOs off nothing else is latched", s.FCR)
	}
	if s.LSRErrors&^lsrOE != 0 {
		return bad("LSRErrors", "%#02x: only OE (0x02) can be set by this model", s.LSRErrors)
	}
	if s.MSRDeltas&^msrDeltas != 0 {
		return bad("MSRDeltas", "%#02x: only the delta bits 3:0 are stored", s.MSRDeltas)
	}
	capacity := 1
	if s.FCR&fcrEnable != 0 {
		capacity = FIFOSize
	}
	if len(s.RxFIFO) > capacity {
		return bad("RxFIFO", "%d bytes, but the receiver holds at most %d with FCR %#02x", len(s.RxFIFO), capacity, s.FCR)
	}
	return nil
}

// RestoreState puts the UART into state s. An invalid s (see State) is
// refused with an error wrapping ErrBadState and the UART is left as it
// was.
//
// After a restore the IRQ line is driven as the hardware would drive it: if
// OUT2 is set and IIR reports an enabled pending interrupt, the line is
// pulsed. The interrupt controller may already hold that edge (when its own
// saved state was restored too), and then the guest takes one interrupt its
// handler finds nothing in (IIR reads "none"), which the Linux 8250 driver
// ignores. Not pulsing would be worse: an interrupt raised just before the
// snapshot and not yet latched would be lost, and a THRE-driven transmitter
// waits for it for ever, freezing the console. An edge too many is the
// safe side.
//
// A host input goroutine waiting on Room is woken if the restored receiver
// has room, since the one it was waiting for may have been consumed by the
// restore.
func (u *UART) RestoreState(s State) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("%s: %w", u.name, err)
	}
	// Hold wmu like Write does, so a restore does not land in the middle
	// of a THR write that is handing its byte to the writer.
	u.wmu.Lock()
	defer u.wmu.Unlock()
	u.mu.Lock()
	u.ier, u.lcr, u.mcr, u.fcr, u.scr = s.IER, s.LCR, s.MCR, s.FCR, s.SCR
	u.dll, u.dlm = s.DLL, s.DLM
	u.lsrErr, u.msrDelta = s.LSRErrors, s.MSRDeltas
	u.threPending = s.THREPending
	// The coalescing flag is a VMM optimisation, not chip state: the
	// guest gets a fresh edge for its next THR burst.
	u.threEdgeOwed = false
	u.rx = [FIFOSize]byte{}
	copy(u.rx[:], s.RxFIFO)
	u.rxHead, u.rxLen = 0, len(s.RxFIFO)
	raise := u.intrLocked()
	if raise {
		u.stats.Interrupts++
	}
	room := u.mcr&mcrLoop == 0 && u.rxLen < u.rxCapLocked()
	u.mu.Unlock()

	if room {
		u.signalRoom()
	}
	if raise {
		// A failing line is counted in Stats.IRQErrors; the restore
		// itself succeeded, and the device state is what s says.
		_ = u.pulse()
	}
	return nil
}
