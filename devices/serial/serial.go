// Package serial models a 16550A UART, the serial port of every PC since
// the late 1980s, as the guest's COM1.
//
// # What a UART is
//
// A UART (universal asynchronous receiver/transmitter) turns bytes into a
// serial bit stream on a wire and back. The CPU sees eight byte-wide
// registers; it writes a byte to the transmit holding register (THR) and the
// chip shifts it out, and bytes shifted in from the wire collect in the
// receive buffer (RBR) until the CPU reads them. Status registers say whether
// the transmitter is idle (LSR.THRE/TEMT) and whether data is waiting
// (LSR.DR), and the chip can interrupt the CPU on either event. The 16550A
// adds 16-byte FIFOs in each direction so the CPU takes one interrupt per
// burst instead of one per byte. Here the "wire" is the host: transmitted
// bytes go to an io.Writer and Input feeds host bytes to the receiver.
//
// Register map (offsets from the base port, 0x3f8 for COM1):
//
//	0  RBR (read) / THR (write)         DLL when LCR.DLAB=1
//	1  IER  interrupt enable            DLM when LCR.DLAB=1
//	2  IIR (read) / FCR (write)
//	3  LCR  line control (bit 7 = DLAB)
//	4  MCR  modem control (bit 4 = loopback, bit 3 = OUT2)
//	5  LSR  line status
//	6  MSR  modem status
//	7  SCR  scratch
//
// # How Linux finds a 16550A
//
// Linux's 8250 driver (drivers/tty/serial/8250/8250_port.c, autoconfig())
// does not trust the firmware; it identifies the chip by how registers
// behave:
//
//  1. IER must read back 0x00 after writing 0x00 and 0x0F after writing 0x0F
//     (its low nibble is the only storage every 8250 variant has), so IER
//     keeps exactly its low four bits.
//  2. Unless the port is flagged UPF_SKIP_TEST, it sets MCR = LOOP|OUT2|RTS
//     and expects MSR & 0xF0 to read DCD|CTS (0x90): in loopback the modem
//     outputs are wired back to the modem inputs.
//  3. It writes FCR = 0x01 (enable FIFOs) and reads IIR: bits 7:6 = 11 means
//     a 16550A with working FIFOs. 00 would be an 8250/16450, 10 the buggy
//     original 16550.
//  4. autoconfig_16550a() then looks for later chips and must find none of
//     them: an EFR register at offset 2 when LCR is 0x80 or 0xBF (our IIR is
//     never zero with FIFOs on, so there is no EFR), a National SuperIO
//     (IIR bit 4 following MCR.LOOP; ours is always 0), a TI16750 (IIR bit 5
//     after FCR bit 5; we never report it) and an XScale (IER bit 6 sticks;
//     ours does not).
//
// When the port is opened, serial8250_do_startup() also checks that enabling
// IER.ETBEI with an empty THR makes IIR report a THRE interrupt, and that
// disabling and re-enabling ETBEI reports it again; a UART that fails either
// test is flagged UART_BUG_TXEN / UART_BUG_THRE and driven from a timer.
// This model passes both, so Linux transmits from the THRE interrupt.
//
// # What the model follows
//
// The register descriptions in National Semiconductor's (now TI's) PC16550D
// datasheet: line control, line status, FIFO control, interrupt
// identification (with its priority table), interrupt enable, modem control,
// modem status and scratch registers, and the loopback description under the
// modem control register. Simplifications, each chosen because a VMM has no
// real wire:
//
//   - Transmission is instantaneous: a THR write hands the byte to the
//     writer at once, so THRE and TEMT are always set and the TX FIFO is
//     always empty. The baud rate divisor (DLL/DLM) and LCR framing are stored
//     and read back but do not slow anything down.
//   - The receiver reports received-data-available (IIR 0x04) as soon as one
//     byte is in the FIFO, whatever the FCR trigger level. A real 16550 waits
//     for the trigger level or a four-character timeout (IIR 0x0C); host
//     input arrives in bursts with no character timing, so "timeout at once"
//     is the honest equivalent, and Linux handles both the same way.
//   - With FIFOs disabled (16450 mode) the receiver holds one byte, as the
//     datasheet says; Input then takes one byte at a time.
//   - No parity, framing or break errors can happen. Overrun (LSR.OE) happens
//     only in loopback, when the guest transmits into a full RX FIFO; Input
//     refuses bytes that do not fit instead of losing them.
//   - In loopback the receiver is disconnected from the wire, so Input takes
//     nothing until the guest leaves loopback.
//
// # Interrupts
//
// The 16550's INTR output is a level: high while any enabled interrupt
// condition is pending. On a PC that output reaches the ISA IRQ line (4 for
// COM1) only through a gate controlled by MCR.OUT2, which is why Linux sets
// OUT2 when it opens the port. ISA IRQs are edge-triggered, so the model
// tracks the level INTR would have on the IRQ line (OUT2 set and an enabled
// condition pending) and pulses the line (irq.Pulse) each time that level
// would rise. A THR write counts as a rise when THRE is enabled and nothing
// else is pending: on real hardware the write drops THRE and the drained
// transmitter raises it again a character time later; here both happen in
// the same instant, but the edge is the same.
//
// With one exception. Linux's interrupt handler reads IIR and LSR and then
// writes up to 16 bytes to THR in a row. A real 16550A takes those into its
// FIFO and interrupts once, when the FIFO has drained; this model, sending
// each byte at once, would pulse after every one of them, each pulse being
// two KVM_IRQ_LINE calls on the vCPU thread and the later ones adding
// nothing (the first edge is already latched in the interrupt controller
// while the handler runs). So after a THR write has pulsed the line, further
// THR writes pulse again only once the guest has looked at the UART: read
// IIR or LSR, or written IER, FCR or MCR. A driver that polls LSR before
// every byte still gets an edge per byte; Linux's gets one per FIFO load.
//
// Real PC boards also lose the IRQ in loopback mode, because the chip forces
// its OUT2 pin inactive there. The model does not: OUT2 gates the line in
// loopback too, so an interrupt-driven loopback self-test works.
//
// # Concurrency
//
// Read and Write run on vCPU goroutines and Input on a host goroutine. One
// mutex guards the register state and is never held while the output writer
// or the interrupt line is called. A second mutex serializes Write calls,
// out.Write included, so bytes from two vCPUs reach the writer in the order
// they were written to THR; a writer or line that called back into Write
// would deadlock on it (Read and Input are safe). A third keeps two pulses
// from interleaving (high, high, low, low) into what the interrupt
// controller would see as one edge.
package serial

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"kvmlab/devices/bus"
	"kvmlab/devices/irq"
	"kvmlab/internal/human"
)

// NumPorts is the size of the UART's I/O port range.
const NumPorts = 8

// FIFOSize is the depth of the 16550A's receive FIFO.
const FIFOSize = 16

// Register offsets.
const (
	regData = 0 // RBR read, THR write; DLL with DLAB
	regIER  = 1 // DLM with DLAB
	regIIR  = 2 // IIR read, FCR write
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// IER bits. Only the low nibble exists on a 16550A.
const (
	ierERBFI = 0x01 // received data available
	ierETBEI = 0x02 // transmitter holding register empty
	ierELSI  = 0x04 // receiver line status
	ierEDSSI = 0x08 // modem status
	ierMask  = 0x0f
)

// IIR values. Bit 0 is "no interrupt pending", bits 3:1 the highest-priority
// source, bits 7:6 mirror FCR bit 0.
const (
	iirNone    = 0x01
	iirMSR     = 0x00 // 4th priority: modem status changed
	iirTHRE    = 0x02 // 3rd: THR empty
	iirRxData  = 0x04 // 2nd: received data available
	iirLSR     = 0x06 // 1st: overrun/parity/framing/break
	iirTimeout = 0x0c // 2nd: character timeout (never produced here)
	iirFIFOs   = 0xc0
)

// FCR bits.
const (
	fcrEnable  = 0x01
	fcrClearRx = 0x02
	fcrClearTx = 0x04
	fcrDMA     = 0x08
	fcr64Byte  = 0x20 // TI16750 only; ignored, never reflected in IIR
	fcrTrigger = 0xc0
)

// LCR bits.
const (
	lcrBreak = 0x40
	lcrDLAB  = 0x80
)

// MCR bits. Bits 7:5 are always zero on a 16550A.
const (
	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f
)

// LSR bits.
const (
	lsrDR   = 0x01 // data ready
	lsrOE   = 0x02 // overrun error
	lsrPE   = 0x04
	lsrFE   = 0x08
	lsrBI   = 0x10
	lsrTHRE = 0x20 // THR (TX FIFO) empty
	lsrTEMT = 0x40 // THR and shift register empty
	lsrErrs = lsrOE | lsrPE | lsrFE | lsrBI
)

// MSR bits: deltas in the low nibble, current input levels in the high one.
const (
	msrDCTS   = 0x01
	msrDDSR   = 0x02
	msrTERI   = 0x04 // trailing edge of RI
	msrDDCD   = 0x08
	msrCTS    = 0x10
	msrDSR    = 0x20
	msrRI     = 0x40
	msrDCD    = 0x80
	msrDeltas = 0x0f
)

// ErrBadWidth is returned for an access that is not exactly one byte wide.
// The 16550's registers are 8 bits; a 16-bit IN at 0x3f8 is a guest bug.
var ErrBadWidth = errors.New("access width is not 1 byte")

// ErrBadOffset is returned for an offset outside the 8 registers.
var ErrBadOffset = errors.New("offset outside the UART's 8 registers")

// Stats counts what the UART did.
type Stats struct {
	// TxBytes is the number of bytes the guest wrote to THR outside
	// loopback, i.e. handed to the output writer.
	TxBytes uint64
	// RxBytes is the number of bytes that entered the RX FIFO, from
	// Input or, in loopback, from THR.
	RxBytes uint64
	// Interrupts is the number of edges driven on the IRQ line.
	Interrupts uint64
	// CoalescedTHRE counts THR writes whose THRE edge was left out
	// because an earlier one had not yet been looked at.
	CoalescedTHRE uint64
	// Overruns counts bytes lost to a full RX FIFO (loopback only).
	Overruns uint64
	// BadAccesses counts accesses with a bad width or offset.
	BadAccesses uint64
	// TxErrors counts failed writes to the output writer, IRQErrors
	// failed pulses of the interrupt line.
	TxErrors, IRQErrors uint64
}

// UART is one 16550A. Create it with New.
type UART struct {
	name string
	line irq.Line
	out  io.Writer
	room chan struct{}

	// wmu serializes Write calls so THR bytes reach out in the order the
	// guest wrote them even though out is called without mu held.
	wmu sync.Mutex
	// irqMu keeps two pulses from interleaving (high, high, low, low),
	// which the interrupt controller would see as a single edge.
	irqMu sync.Mutex

	mu          sync.Mutex
	ier         byte // low nibble only
	lcr         byte
	mcr         byte // bits 4:0 only
	fcr         byte // enable, DMA mode and trigger bits as written
	scr         byte
	dll, dlm    byte
	lsrErr      byte // sticky error bits of LSR, cleared by reading LSR
	msrDelta    byte // MSR delta bits, cleared by reading MSR
	threPending bool // THRE interrupt latched, cleared by IIR read or THR write
	// threEdgeOwed is set when a THR write has pulsed the line and the
	// guest has not yet looked at the UART (IIR or LSR read, IER, FCR or
	// MCR write) since: further THR writes then add no edge (see
	// "Interrupts" in the package comment).
	threEdgeOwed bool
	rx           [FIFOSize]byte
	rxHead       int
	rxLen        int
	stats        Stats
}

var (
	_ bus.Device    = (*UART)(nil)
	_ bus.Describer = (*UART)(nil)
)

// New returns a UART named name (e.g. "COM1") that raises interrupts on line
// and sends transmitted bytes to out. A nil line or out is replaced by one
// that discards.
//
// The registers start in their datasheet reset state (IER, LCR, MCR, FCR
// zero; LSR 0x60; IIR 0x01), except the divisor latch, which the datasheet
// leaves undefined: it starts at 12, i.e. 9600 baud from the PC's 1.8432 MHz
// clock, a common BIOS setting.
func New(name string, line irq.Line, out io.Writer) *UART {
	if line == nil {
		line = irq.Nop{}
	}
	if out == nil {
		out = io.Discard
	}
	return &UART{
		name: name,
		line: line,
		out:  out,
		room: make(chan struct{}, 1),
		dll:  12,
	}
}

// Name returns the name given to New.
func (u *UART) Name() string { return u.name }

// Room returns a channel that receives a value whenever the receiver gains
// room: the guest read a byte from RBR, cleared the RX FIFO, enabled the
// FIFOs or left loopback. The send never blocks and the channel holds at
// most one value, so a host input goroutine can wait on it between Input
// calls instead of spinning.
func (u *UART) Room() <-chan struct{} { return u.room }

// Stats returns a snapshot of the counters.
func (u *UART) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.stats
}

func (u *UART) signalRoom() {
	select {
	case u.room <- struct{}{}:
	default:
	}
}

// checkAccess rejects anything but a one-byte access to offsets 0-7. Reads
// that fail still complete on the bus, so they are filled with 0xff, what a
// floating data bus reads as.
func (u *UART) checkAccess(off uint64, data []byte, write bool) error {
	var err error
	switch {
	case len(data) != 1:
		err = fmt.Errorf("%s: %d-byte access at offset %d: %w", u.name, len(data), off, ErrBadWidth)
	case off >= NumPorts:
		err = fmt.Errorf("%s: offset %d: %w", u.name, off, ErrBadOffset)
	default:
		return nil
	}
	if !write {
		for i := range data {
			data[i] = 0xff
		}
	}
	u.mu.Lock()
	u.stats.BadAccesses++
	u.mu.Unlock()
	return err
}

// Read implements bus.Device.
func (u *UART) Read(off uint64, data []byte) error {
	if err := u.checkAccess(off, data, false); err != nil {
		return err
	}
	u.mu.Lock()
	v, drained := u.readLocked(off)
	u.mu.Unlock()
	data[0] = v
	// Reads only ever clear interrupt conditions (IIR clears THRE, RBR
	// drains data, LSR/MSR clear their status), so they never pulse.
	if drained {
		u.signalRoom()
	}
	return nil
}

// readLocked returns the value of register off and whether the read made
// room in the receiver.
func (u *UART) readLocked(off uint64) (v byte, drained bool) {
	dlab := u.lcr&lcrDLAB != 0
	switch off {
	case regData:
		if dlab {
			return u.dll, false
		}
		return u.popLocked()
	case regIER:
		if dlab {
			return u.dlm, false
		}
		return u.ier, false
	case regIIR:
		u.threEdgeOwed = false
		id := u.iidLocked()
		// Reading IIR while it reports THRE is what acknowledges the
		// THRE interrupt; a lower-priority THRE stays latched.
		if id == iirTHRE {
			u.threPending = false
		}
		return id | u.fifoBitsLocked(), false
	case regLCR:
		return u.lcr, false
	case regMCR:
		return u.mcr, false
	case regLSR:
		u.threEdgeOwed = false
		v := u.lsrLocked()
		u.lsrErr = 0 // reading LSR clears the error bits and the LS interrupt
		return v, false
	case regMSR:
		v := u.msrInputsLocked() | u.msrDelta
		u.msrDelta = 0
		return v, false
	case regSCR:
		return u.scr, false
	}
	return 0xff, false // unreachable: checkAccess bounds off
}

// Write implements bus.Device.
func (u *UART) Write(off uint64, data []byte) error {
	if err := u.checkAccess(off, data, true); err != nil {
		return err
	}
	v := data[0]

	u.wmu.Lock()
	defer u.wmu.Unlock()

	u.mu.Lock()
	// before is the level INTR had just before the change; a pulse is
	// due when the write takes it from low to high.
	before := u.intrLocked()
	var tx, room bool // send v to out; the receiver gained room
	dlab := u.lcr&lcrDLAB != 0
	switch off {
	case regData:
		if dlab {
			u.dll = v
			break
		}
		// Writing THR acknowledges a pending THRE interrupt. The
		// level INTR would have between the write and the end of the
		// (instant) transmission is what the rise is measured from.
		u.threPending = false
		before = u.intrLocked()
		if u.mcr&mcrLoop != 0 {
			u.loopbackLocked(v)
		} else {
			tx = true
			u.stats.TxBytes++
		}
		// The transmitter is idle again at once.
		u.threPending = true
		// Only a rise that THRE alone causes is coalesced. In loopback
		// the byte comes back as received data, a condition of its
		// own that the guest must be told about (found by FuzzUART:
		// a second loopback byte raised INTR with no edge).
		if !before && u.intrLocked() && u.iidLocked() == iirTHRE {
			if u.threEdgeOwed {
				// The guest has an edge for this burst it has
				// not handled yet; a second one would only make
				// it take a spurious interrupt.
				before = true
				u.stats.CoalescedTHRE++
			}
			u.threEdgeOwed = true
		}
	case regIER:
		if dlab {
			u.dlm = v
			break
		}
		u.threEdgeOwed = false
		old := u.ier
		u.ier = v & ierMask
		// Enabling ETBEI while THR is empty (always, here) raises a
		// THRE interrupt; Linux's UART_BUG_THRE test relies on it.
		if old&ierETBEI == 0 && u.ier&ierETBEI != 0 {
			u.threPending = true
		}
	case regIIR:
		u.threEdgeOwed = false
		room = u.writeFCRLocked(v)
	case regLCR:
		u.lcr = v
	case regMCR:
		u.threEdgeOwed = false
		room = u.writeMCRLocked(v)
	case regLSR, regMSR:
		// Read-only on a 16550A (the datasheet reserves writes for
		// factory test); ignored.
	case regSCR:
		u.scr = v
	}
	after := u.intrLocked()
	raise := !before && after
	if raise {
		u.stats.Interrupts++
	}
	u.mu.Unlock()

	if room {
		u.signalRoom()
	}
	var err error
	if tx {
		if _, werr := u.out.Write([]byte{v}); werr != nil {
			u.mu.Lock()
			u.stats.TxErrors++
			u.mu.Unlock()
			err = fmt.Errorf("%s: transmit: %w", u.name, werr)
		}
	}
	if raise {
		if perr := u.pulse(); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// writeFCRLocked handles an FCR write and reports whether the receiver
// gained room.
func (u *UART) writeFCRLocked(v byte) (room bool) {
	wasOn := u.fcr&fcrEnable != 0
	on := v&fcrEnable != 0
	// Switching between FIFO and 16450 mode empties the FIFOs; in 16450
	// mode the other FCR bits are not programmed.
	if on != wasOn {
		u.clearRxLocked()
		room = true
	}
	if !on {
		u.fcr = 0
		return room
	}
	if v&fcrClearRx != 0 {
		u.clearRxLocked()
		room = true
	}
	// fcrClearTx: the TX FIFO is always empty, nothing to clear.
	u.fcr = v & (fcrEnable | fcrDMA | fcrTrigger)
	return room
}

// writeMCRLocked handles an MCR write and reports whether the receiver
// gained room (by leaving loopback).
func (u *UART) writeMCRLocked(v byte) (room bool) {
	oldIn := u.msrInputsLocked()
	wasLoop := u.mcr&mcrLoop != 0
	u.mcr = v & mcrMask
	newIn := u.msrInputsLocked()
	// Entering or leaving loopback, or changing the looped outputs,
	// changes the modem inputs; record it in the delta bits as the
	// datasheet's MSR description does for real input changes.
	changed := oldIn ^ newIn
	if changed&msrCTS != 0 {
		u.msrDelta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		u.msrDelta |= msrDDSR
	}
	if oldIn&msrRI != 0 && newIn&msrRI == 0 {
		u.msrDelta |= msrTERI
	}
	if changed&msrDCD != 0 {
		u.msrDelta |= msrDDCD
	}
	return wasLoop && u.mcr&mcrLoop == 0
}

// Input offers host bytes to the receiver. It accepts as many as fit in the
// RX FIFO (16 bytes, or 1 in 16450 mode) and returns how many it took; it
// takes none in loopback mode, where the receiver is cut off from the wire.
// When the guest has enabled the received-data interrupt, the IRQ line is
// pulsed if the new data raises INTR.
func (u *UART) Input(p []byte) int {
	u.mu.Lock()
	if u.mcr&mcrLoop != 0 {
		u.mu.Unlock()
		return 0
	}
	before := u.intrLocked()
	n := 0
	for _, b := range p {
		if !u.pushLocked(b) {
			break
		}
		n++
	}
	u.stats.RxBytes += uint64(n)
	raise := !before && u.intrLocked()
	if raise {
		u.stats.Interrupts++
	}
	u.mu.Unlock()
	if raise {
		// Input has no error result; a failing line is counted.
		_ = u.pulse()
	}
	return n
}

// pulse drives one edge on the line.
func (u *UART) pulse() error {
	u.irqMu.Lock()
	err := irq.Pulse(u.line)
	u.irqMu.Unlock()
	if err != nil {
		u.mu.Lock()
		u.stats.IRQErrors++
		u.mu.Unlock()
		return fmt.Errorf("%s: raise interrupt: %w", u.name, err)
	}
	return nil
}

// rxCapLocked is the receiver's capacity: the FIFO, or the single holding
// register in 16450 mode.
func (u *UART) rxCapLocked() int {
	if u.fcr&fcrEnable != 0 {
		return FIFOSize
	}
	return 1
}

func (u *UART) pushLocked(b byte) bool {
	if u.rxLen >= u.rxCapLocked() {
		return false
	}
	u.rx[(u.rxHead+u.rxLen)%FIFOSize] = b
	u.rxLen++
	return true
}

func (u *UART) popLocked() (byte, bool) {
	if u.rxLen == 0 {
		// Reading an empty RBR is harmless; the value is undefined.
		return 0, false
	}
	b := u.rx[u.rxHead]
	u.rxHead = (u.rxHead + 1) % FIFOSize
	u.rxLen--
	return b, true
}

func (u *UART) clearRxLocked() {
	u.rxHead, u.rxLen = 0, 0
}

// loopbackLocked delivers a transmitted byte to the receiver. A full
// receiver loses the byte and flags an overrun, as the datasheet describes
// for a character arriving with the FIFO full.
func (u *UART) loopbackLocked(b byte) {
	if u.pushLocked(b) {
		u.stats.RxBytes++
		return
	}
	u.lsrErr |= lsrOE
	u.stats.Overruns++
}

func (u *UART) fifoBitsLocked() byte {
	if u.fcr&fcrEnable != 0 {
		return iirFIFOs
	}
	return 0
}

func (u *UART) lsrLocked() byte {
	v := byte(lsrTHRE|lsrTEMT) | u.lsrErr
	if u.rxLen > 0 {
		v |= lsrDR
	}
	return v
}

// msrInputsLocked returns the modem input levels (MSR bits 7:4). Outside
// loopback the line always looks connected (DCD, DSR, CTS asserted, no
// ring) so that software waiting for carrier or doing CTS flow control
// goes ahead. In loopback the outputs are wired back: RTS→CTS, DTR→DSR,
// OUT1→RI, OUT2→DCD.
func (u *UART) msrInputsLocked() byte {
	if u.mcr&mcrLoop == 0 {
		return msrDCD | msrDSR | msrCTS
	}
	var v byte
	if u.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if u.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if u.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if u.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// iidLocked returns IIR bits 3:0: the highest-priority enabled pending
// interrupt, or iirNone.
func (u *UART) iidLocked() byte {
	switch {
	case u.ier&ierELSI != 0 && u.lsrErr&lsrErrs != 0:
		return iirLSR
	case u.ier&ierERBFI != 0 && u.rxLen > 0:
		return iirRxData
	case u.ier&ierETBEI != 0 && u.threPending:
		return iirTHRE
	case u.ier&ierEDSSI != 0 && u.msrDelta != 0:
		return iirMSR
	}
	return iirNone
}

// intrLocked is the level the IRQ line would have: INTR gated by OUT2.
func (u *UART) intrLocked() bool {
	return u.mcr&mcrOUT2 != 0 && u.iidLocked() != iirNone
}

// Describe implements bus.Describer. For a read, data holds the value read.
func (u *UART) Describe(off uint64, write bool, data []byte) string {
	dir := "read"
	if write {
		dir = "write"
	}
	if len(data) != 1 {
		return fmt.Sprintf("%s bad %d-byte %s at offset %d", u.name, len(data), dir, off)
	}
	if off >= NumPorts {
		return fmt.Sprintf("%s %s at offset %d (no such register)", u.name, dir, off)
	}
	v := data[0]
	u.mu.Lock()
	dlab := u.lcr&lcrDLAB != 0
	u.mu.Unlock()

	hex := fmt.Sprintf("0x%02x", v)
	switch off {
	case regData:
		if dlab {
			return fmt.Sprintf("%s DLL %s %s (DLAB)", u.name, dir, hex)
		}
		if write {
			return fmt.Sprintf("%s THR write %s", u.name, quoteByte(v))
		}
		return fmt.Sprintf("%s RBR read %s", u.name, quoteByte(v))
	case regIER:
		if dlab {
			return fmt.Sprintf("%s DLM %s %s (DLAB)", u.name, dir, hex)
		}
		return fmt.Sprintf("%s IER %s %s (%s)", u.name, dir, hex, human.Bits(uint64(v), ierNames[:]))
	case regIIR:
		if write {
			return fmt.Sprintf("%s FCR write %s (%s)", u.name, hex, describeFCR(v))
		}
		return fmt.Sprintf("%s IIR read %s (%s)", u.name, hex, describeIIR(v))
	case regLCR:
		return fmt.Sprintf("%s LCR %s %s (%s)", u.name, dir, hex, describeLCR(v))
	case regMCR:
		return fmt.Sprintf("%s MCR %s %s (%s)", u.name, dir, hex, human.Bits(uint64(v), mcrNames[:]))
	case regLSR:
		if write {
			return fmt.Sprintf("%s LSR write %s (read-only, ignored)", u.name, hex)
		}
		return fmt.Sprintf("%s LSR read %s (%s)", u.name, hex, human.Bits(uint64(v), lsrNames[:]))
	case regMSR:
		if write {
			return fmt.Sprintf("%s MSR write %s (read-only, ignored)", u.name, hex)
		}
		return fmt.Sprintf("%s MSR read %s (%s)", u.name, hex, human.Bits(uint64(v), msrNames[:]))
	default: // regSCR
		return fmt.Sprintf("%s SCR %s %s", u.name, dir, hex)
	}
}

var (
	ierNames = [8]string{"ERBFI", "ETBEI", "ELSI", "EDSSI"}
	mcrNames = [8]string{"DTR", "RTS", "OUT1", "OUT2", "LOOP"}
	lsrNames = [8]string{"DR", "OE", "PE", "FE", "BI", "THRE", "TEMT", "RXFE"}
	msrNames = [8]string{"DCTS", "DDSR", "TERI", "DDCD", "CTS", "DSR", "RI", "DCD"}
)

func describeIIR(v byte) string {
	var s string
	switch v & 0x0f {
	case iirNone:
		s = "no interrupt"
	case iirLSR:
		s = "line status"
	case iirRxData:
		s = "RX data"
	case iirTimeout:
		s = "RX timeout"
	case iirTHRE:
		s = "THRE"
	case iirMSR:
		s = "modem status"
	default:
		s = fmt.Sprintf("id %#x", v&0x0f)
	}
	if v&iirFIFOs == iirFIFOs {
		s += ", FIFOs on"
	}
	return s
}

func describeFCR(v byte) string {
	if v&fcrEnable == 0 {
		return "FIFOs off"
	}
	parts := []string{"FIFOs on"}
	if v&fcrClearRx != 0 {
		parts = append(parts, "clear RX")
	}
	if v&fcrClearTx != 0 {
		parts = append(parts, "clear TX")
	}
	if v&fcrDMA != 0 {
		parts = append(parts, "DMA mode 1")
	}
	if v&fcr64Byte != 0 {
		parts = append(parts, "64-byte (ignored)")
	}
	trig := [4]int{1, 4, 8, 14}[v>>6]
	return strings.Join(parts, "|") + ", RX trigger " + strconv.Itoa(trig)
}

// describeLCR spells out the frame format the usual way: data bits, parity
// letter, stop bits ("8N1").
func describeLCR(v byte) string {
	bits := 5 + int(v&0x03)
	parity := "N"
	if v&0x08 != 0 {
		parity = [4]string{"O", "E", "M", "S"}[(v>>4)&0x03]
	}
	stop := "1"
	if v&0x04 != 0 {
		stop = "2"
		if bits == 5 {
			stop = "1.5"
		}
	}
	s := strconv.Itoa(bits) + parity + stop
	if v&lcrBreak != 0 {
		s += "|break"
	}
	if v&lcrDLAB != 0 {
		s += "|DLAB"
	}
	return s
}

// quoteByte shows a transmitted or received byte as a Go character literal
// when it is ASCII ('H', '\n', '\x00') and in hex otherwise.
func quoteByte(b byte) string {
	if b < 0x80 {
		return strconv.QuoteRuneToASCII(rune(b))
	}
	return fmt.Sprintf("0x%02x", b)
}
