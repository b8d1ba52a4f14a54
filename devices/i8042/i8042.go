// Package i8042 models the PC keyboard controller: an Intel 8042 (later
// 8742, then a block inside every Super I/O chip) that sits between the CPU
// and the PS/2 keyboard and mouse.
//
// # The hardware
//
// The 8042 is a small microcontroller with two I/O ports on the ISA bus:
//
//   - 0x60, the data port. Reading it takes the byte in the controller's
//     one-byte output buffer (a key code, a device reply, or the answer to a
//     controller command). Writing it either supplies the parameter of the
//     previous controller command or, when no command is waiting, sends the
//     byte on to the keyboard.
//   - 0x64, the status port when read and the command port when written.
//
// The status register (IBM PS/2 Technical Reference, "Keyboard/Auxiliary
// Device Controller", status register):
//
//	bit 0 OBF   output buffer full: a byte waits at port 0x60
//	bit 1 IBF   input buffer full: the controller has not yet consumed the
//	            last byte written to 0x60/0x64 (software polls this before
//	            each write)
//	bit 2 SYS   system flag, copied from bit 2 of the configuration byte;
//	            firmware sets it once POST has passed
//	bit 3 A2    the last write went to 0x64 (command) rather than 0x60 (data)
//	bit 4 INH   1 = keyboard not inhibited (the keylock switch is open)
//	bit 5 AUXB  the byte in the output buffer came from the auxiliary
//	            (mouse) port
//	bit 6 TO    timeout, bit 7 PERR parity error (never set here)
//
// The controller configuration byte ("command byte", CTR), internal RAM byte
// 0, read with command 0x20 and written with command 0x60:
//
//	bit 0 keyboard interrupt (IRQ1) enable    bit 4 keyboard clock disable
//	bit 1 aux interrupt (IRQ12) enable        bit 5 aux clock disable
//	bit 2 system flag                         bit 6 translate set 2 -> set 1
//
// The output port (commands 0xD0 read, 0xD1 write) is a set of wires leaving
// the chip: bit 0 drives the CPU's RESET line (active low) and bit 1 the A20
// gate; bits 4 and 5 are the IRQ1/IRQ12 outputs. That is why the keyboard
// controller can reboot a PC: writing an output port value with bit 0 clear,
// or sending one of the "pulse output port" commands 0xF0-0xFF with bit 0 of
// the command clear (0xFE pulses only the reset line), resets the processor.
// Linux's BOOT_KBD reboot method (arch/x86/kernel/reboot.c) writes 0xFE to
// port 0x64 up to ten times, polling IBF before each write.
//
// # What is modelled
//
// Everything Linux's drivers/input/serio/i8042.c touches while probing, plus
// the reboot paths: the status register, internal RAM (0x20-0x3F read,
// 0x60-0x7F write, byte 0 being the CTR), the self test 0xAA (answers 0x55),
// the interface tests 0xAB and 0xA9 (answer 0x00: no clock or data line
// stuck), port enable/disable 0xAD/0xAE/0xA7/0xA8 (they flip the CTR clock
// disable bits, which Linux checks), output port 0xD0/0xD1, the A20 gate
// commands 0xDD/0xDF, the loopback commands 0xD2/0xD3 (the next data byte
// reappears in the output buffer as if the keyboard or mouse had sent it; Linux
// uses 0xD3 to detect the aux port), 0xD4 (send the next byte to the mouse),
// and the pulse commands 0xF0-0xFF.
//
// Every command completes within the OUT instruction that sent it, so IBF
// always reads 0. The output buffer is a short queue rather than one byte so
// that a multi-byte device reply (ACK then data) is not lost; bytes are
// presented one at a time, exactly as the controller would forward them.
//
// There are no keys and no mouse. A byte sent to the keyboard is answered the
// way an idle PS/2 keyboard answers (IBM PS/2 Technical Reference, "Keyboard
// and Auxiliary Device", commands): 0xFF (reset) with 0xFA 0xAA (ACK, self
// test passed), 0xF2 (identify) with 0xFA 0xAB 0x83 (0xAB 0x41 when the CTR
// asks for translation, as real controllers translate the second ID byte),
// 0xEE (echo) with 0xEE, and everything else, including command parameters,
// with 0xFA. Bytes sent to the mouse with 0xD4 are dropped: no mouse is
// attached, so the guest's driver times out. The A20 bit is recorded but has
// no effect: KVM never masks address line 20.
//
// Interrupts are optional (SetIRQs): with lines wired, IRQ1/IRQ12 follow the
// output port bits 4/5, that is OBF for a keyboard/aux byte while the CTR
// enables that interrupt, so each byte presented makes a rising edge.
package i8042

import (
	"fmt"
	"sync"

	"kvmlab/devices/bus"
	"kvmlab/devices/irq"
	"kvmlab/internal/human"
)

// Status register bits (port 0x64, read).
const (
	StatusOBF      = 1 << 0 // output buffer full
	StatusIBF      = 1 << 1 // input buffer full (always 0 here)
	StatusSYS      = 1 << 2 // system flag, mirrors CTR bit 2
	StatusCmd      = 1 << 3 // last write was to the command port
	StatusUnlocked = 1 << 4 // keyboard not inhibited by the keylock
	StatusAuxData  = 1 << 5 // output buffer holds an aux (mouse) byte
	StatusTimeout  = 1 << 6
	StatusParity   = 1 << 7
)

// Controller configuration byte (CTR) bits.
const (
	CTRKbdInt  = 1 << 0 // IRQ1 on keyboard data
	CTRAuxInt  = 1 << 1 // IRQ12 on aux data
	CTRSys     = 1 << 2 // system flag
	CTRKbdDis  = 1 << 4 // keyboard clock disabled
	CTRAuxDis  = 1 << 5 // aux clock disabled
	CTRXlate   = 1 << 6 // translate keyboard scan code set 2 to set 1
	DefaultCTR = CTRKbdInt | CTRAuxInt | CTRSys | CTRXlate
)

// Output port bits (commands 0xD0/0xD1).
const (
	OutReset  = 1 << 0 // CPU reset line, active low: 0 resets the CPU
	OutA20    = 1 << 1 // A20 gate
	OutKbdIRQ = 1 << 4 // IRQ1 output (keyboard byte in the output buffer)
	OutAuxIRQ = 1 << 5 // IRQ12 output (aux byte in the output buffer)
	// DefaultOutputPort is reset released and A20 enabled.
	DefaultOutputPort = OutReset | OutA20
)

// Controller commands (port 0x64, write).
const (
	CmdReadCTR      = 0x20 // 0x20-0x3F: read internal RAM byte (cmd & 0x1f)
	CmdWriteCTR     = 0x60 // 0x60-0x7F: write internal RAM byte (cmd & 0x1f)
	CmdAuxDisable   = 0xA7
	CmdAuxEnable    = 0xA8
	CmdAuxTest      = 0xA9
	CmdSelfTest     = 0xAA
	CmdKbdTest      = 0xAB
	CmdKbdDisable   = 0xAD
	CmdKbdEnable    = 0xAE
	CmdReadOutPort  = 0xD0
	CmdWriteOutPort = 0xD1
	CmdWriteKbdOBF  = 0xD2
	CmdWriteAuxOBF  = 0xD3
	CmdWriteAux     = 0xD4
	CmdA20Off       = 0xDD
	CmdA20On        = 0xDF
	CmdPulseReset   = 0xFE // 0xF0-0xFF: pulse output port bits 0-3 that are 0 in the command
)

// SelfTestOK is the answer to CmdSelfTest; InterfaceOK the answer to the
// interface tests.
const (
	SelfTestOK  = 0x55
	InterfaceOK = 0x00
)

// Keyboard replies.
const (
	kbdACK     = 0xFA
	kbdBATOK   = 0xAA
	kbdEcho    = 0xEE
	kbdReset   = 0xFF
	kbdGetID   = 0xF2
	kbdID0     = 0xAB
	kbdID1     = 0x83
	kbdID1Xlat = 0x41
)

// maxQueue bounds the output queue: a guest that never reads port 0x60 but
// keeps asking questions cannot grow it without limit. Real hardware would
// lose the bytes too (or stall the keyboard).
const maxQueue = 16

type source uint8

const (
	srcKbd source = iota // keyboard port or the controller itself
	srcAux               // auxiliary (mouse) port
)

type outByte struct {
	v   byte
	src source
}

// Controller is one 8042. Its methods are safe for concurrent use.
type Controller struct {
	mu sync.Mutex

	reset  func()
	kbdIRQ irq.Line
	auxIRQ irq.Line

	ram     [32]byte // internal RAM; ram[0] is the CTR
	outPort byte
	queue   []outByte
	last    byte // last byte read from port 0x60
	cmdLast bool // status bit 3
	pending byte // command waiting for its data byte; 0 = none

	// What the last data-port write meant, for Describe (which runs after
	// the access, when the pending command has already been consumed).
	lastData    byte
	lastDataCmd byte
	lastDataOK  bool

	// headSeq counts the bytes presented in the output buffer, so that
	// a new byte replacing the one just read is told apart from the same
	// byte still waiting.
	headSeq uint64

	// irqMu serialises driving the IRQ lines (see syncIRQ); it is taken
	// before mu, never while holding it. The fields below record what the
	// lines were last driven to, and for which byte.
	irqMu              sync.Mutex
	kbdLevel, auxLevel bool
	kbdSeq, auxSeq     uint64
}

// New returns a controller in the state a PC BIOS leaves it after POST: CTR
// 0x47 (both interrupts enabled, system flag set, translation on), reset line
// released, A20 enabled, output buffer empty. reset is called (outside the
// controller's lock) each time the guest pulses the CPU reset line; it may be
// nil.
func New(reset func()) *Controller {
	c := &Controller{reset: reset, kbdIRQ: irq.Nop{}, auxIRQ: irq.Nop{}}
	c.ram[0] = DefaultCTR
	c.outPort = DefaultOutputPort
	return c
}

// SetIRQs wires the keyboard (IRQ1) and aux (IRQ12) interrupt lines. Without
// it, or for a nil line, the controller raises no interrupts, which is enough
// for reboot and for Linux's polled probing.
func (c *Controller) SetIRQs(kbd, aux irq.Line) {
	if kbd == nil {
		kbd = irq.Nop{}
	}
	if aux == nil {
		aux = irq.Nop{}
	}
	c.irqMu.Lock()
	c.mu.Lock()
	c.kbdIRQ, c.auxIRQ = kbd, aux
	c.kbdLevel, c.auxLevel = false, false
	c.mu.Unlock()
	c.irqMu.Unlock()
	c.syncIRQ()
}

// DataPort returns the device to register at port 0x60 (1 byte).
func (c *Controller) DataPort() bus.Device { return port{c: c, data: true} }

// CommandPort returns the device to register at port 0x64 (1 byte).
func (c *Controller) CommandPort() bus.Device { return port{c: c, data: false} }

// port adapts one of the controller's two I/O ports to bus.Device. The two
// ranges are registered separately and both see offset 0, so the port itself
// says which register it is.
type port struct {
	c    *Controller
	data bool
}

func (p port) name() string {
	if p.data {
		return "data port 0x60"
	}
	return "command port 0x64"
}

func (p port) check(offset uint64, data []byte) error {
	if len(data) != 1 || offset != 0 {
		return fmt.Errorf("i8042: %s: %d-byte access at offset %d, only 1-byte accesses at offset 0 exist", p.name(), len(data), offset)
	}
	return nil
}

// Read implements bus.Device.
func (p port) Read(offset uint64, data []byte) error {
	if err := p.check(offset, data); err != nil {
		for i := range data {
			data[i] = 0xff
		}
		return err
	}
	p.c.mu.Lock()
	if p.data {
		data[0] = p.c.readData()
	} else {
		data[0] = p.c.status()
	}
	p.c.mu.Unlock()
	p.c.syncIRQ()
	return nil
}

// Write implements bus.Device.
func (p port) Write(offset uint64, data []byte) error {
	if err := p.check(offset, data); err != nil {
		return err
	}
	var acts actions
	p.c.mu.Lock()
	var err error
	if p.data {
		err = p.c.writeData(data[0], &acts)
	} else {
		err = p.c.writeCommand(data[0], &acts)
	}
	p.c.mu.Unlock()
	p.c.syncIRQ()
	acts.run()
	return err
}

// actions are the callbacks an access triggers. They run after the
// controller's lock is released, so that a reset handler may call back into
// the controller (or take a while) without deadlocking.
type actions struct {
	resets int
	reset  func()
}

func (a *actions) run() {
	for i := 0; i < a.resets; i++ {
		if a.reset != nil {
			a.reset()
		}
	}
}

func (c *Controller) pulseReset(acts *actions) {
	acts.resets++
	acts.reset = c.reset
}

// status computes the status register. Everything in it is derived from
// other state, so it can never disagree with the CTR or the queue.
func (c *Controller) status() byte {
	s := byte(StatusUnlocked)
	if len(c.queue) > 0 {
		s |= StatusOBF
		if c.queue[0].src == srcAux {
			s |= StatusAuxData
		}
	}
	if c.ram[0]&CTRSys != 0 {
		s |= StatusSYS
	}
	if c.cmdLast {
		s |= StatusCmd
	}
	return s
}

// outputPort computes the output port as command 0xD0 reads it: the stored
// reset and A20 bits plus the interrupt outputs.
func (c *Controller) outputPort() byte {
	v := c.outPort &^ (OutKbdIRQ | OutAuxIRQ)
	kbd, aux := c.irqLevels()
	if kbd {
		v |= OutKbdIRQ
	}
	if aux {
		v |= OutAuxIRQ
	}
	return v
}

// irqLevels says what the IRQ1 and IRQ12 outputs are driving: a byte waits,
// it came from that port, and the CTR enables that port's interrupt.
func (c *Controller) irqLevels() (kbd, aux bool) {
	if len(c.queue) == 0 {
		return false, false
	}
	if c.queue[0].src == srcAux {
		return false, c.ram[0]&CTRAuxInt != 0
	}
	return c.ram[0]&CTRKbdInt != 0, false
}

// syncIRQ drives the IRQ lines to what the output buffer and the CTR say
// they are now. A line already high for an earlier byte is dropped and
// raised again, because the edge-triggered PIC latches one interrupt per
// rising edge.
//
// It runs after every access, outside mu so a Line may take its time, but
// under irqMu, so that the levels computed by concurrent accesses reach the
// lines in the order they were computed and the last access's view wins.
func (c *Controller) syncIRQ() {
	type set struct {
		line  irq.Line
		level bool
	}
	var sets [4]set
	n := 0
	c.irqMu.Lock()
	defer c.irqMu.Unlock()
	c.mu.Lock()
	kbd, aux := c.irqLevels()
	for _, l := range []struct {
		want  bool
		level *bool
		seq   *uint64
		line  irq.Line
	}{{kbd, &c.kbdLevel, &c.kbdSeq, c.kbdIRQ}, {aux, &c.auxLevel, &c.auxSeq, c.auxIRQ}} {
		if *l.level && (!l.want || *l.seq != c.headSeq) {
			sets[n] = set{l.line, false}
			n++
			*l.level = false
		}
		if l.want && !*l.level {
			sets[n] = set{l.line, true}
			n++
			*l.level, *l.seq = true, c.headSeq
		}
	}
	c.mu.Unlock()
	for _, s := range sets[:n] {
		// An interrupt line error is the VMM's problem, not the
		// guest's: the access itself has completed.
		_ = s.line.Set(s.level)
	}
}

func (c *Controller) push(src source, vs ...byte) {
	for _, v := range vs {
		if len(c.queue) >= maxQueue {
			break
		}
		if len(c.queue) == 0 {
			c.headSeq++ // a new byte is presented
		}
		c.queue = append(c.queue, outByte{v: v, src: src})
	}
}

func (c *Controller) readData() byte {
	if len(c.queue) == 0 {
		// Nothing new: the output buffer still holds the last byte.
		return c.last
	}
	c.last = c.queue[0].v
	c.queue = c.queue[1:]
	if len(c.queue) == 0 {
		c.queue = nil // let the backing array go
	} else {
		c.headSeq++ // the next byte is presented
	}
	return c.last
}

func (c *Controller) writeCommand(v byte, acts *actions) error {
	c.cmdLast = true
	// A new command abandons one still waiting for its data byte, as on
	// the real controller.
	c.pending = 0
	switch {
	case v >= 0x20 && v <= 0x3F:
		c.push(srcKbd, c.ram[v&0x1f])
	case v >= 0x60 && v <= 0x7F:
		c.pending = v
	case v == CmdAuxDisable:
		c.ram[0] |= CTRAuxDis
	case v == CmdAuxEnable:
		c.ram[0] &^= CTRAuxDis
	case v == CmdAuxTest, v == CmdKbdTest:
		c.push(srcKbd, InterfaceOK)
	case v == CmdSelfTest:
		c.push(srcKbd, SelfTestOK)
	case v == CmdKbdDisable:
		c.ram[0] |= CTRKbdDis
	case v == CmdKbdEnable:
		c.ram[0] &^= CTRKbdDis
	case v == CmdReadOutPort:
		c.push(srcKbd, c.outputPort())
	case v == CmdWriteOutPort, v == CmdWriteKbdOBF, v == CmdWriteAuxOBF, v == CmdWriteAux:
		c.pending = v
	case v == CmdA20Off:
		c.outPort &^= OutA20
	case v == CmdA20On:
		c.outPort |= OutA20
	case v >= 0xF0:
		// Pulse the output port bits whose command bit is 0 for about
		// 6 µs. Only bit 0 (reset) is wired to anything.
		if v&OutReset == 0 {
			c.pulseReset(acts)
		}
	default:
		return fmt.Errorf("i8042: unsupported controller command %#02x ignored", v)
	}
	return nil
}

func (c *Controller) writeData(v byte, acts *actions) error {
	c.cmdLast = false
	cmd := c.pending
	c.pending = 0
	c.lastData, c.lastDataCmd, c.lastDataOK = v, cmd, true
	switch {
	case cmd >= 0x60 && cmd <= 0x7F:
		// RAM byte 0 is the CTR. Enabling an interrupt while a byte
		// waits raises the line (syncIRQ), since the output port bit
		// is simply OBF AND enable.
		c.ram[cmd&0x1f] = v
	case cmd == CmdWriteOutPort:
		// Bits 4 and 5 are outputs computed from OBF; only reset and
		// A20 (and the unused bits) are latched. The reset line going
		// low resets the CPU; the line is then released again, since a
		// reset also reinitialises whatever drove it.
		c.outPort = v&^(OutKbdIRQ|OutAuxIRQ) | OutReset
		if v&OutReset == 0 {
			c.pulseReset(acts)
		}
	case cmd == CmdWriteKbdOBF:
		c.push(srcKbd, v)
	case cmd == CmdWriteAuxOBF:
		c.push(srcAux, v)
	case cmd == CmdWriteAux:
		// No mouse is attached: the byte goes nowhere.
	default:
		c.keyboard(v)
	}
	return nil
}

// keyboard answers a byte sent to the (absent, but polite) keyboard.
func (c *Controller) keyboard(v byte) {
	switch v {
	case kbdReset:
		c.push(srcKbd, kbdACK, kbdBATOK)
	case kbdGetID:
		id1 := byte(kbdID1)
		if c.ram[0]&CTRXlate != 0 {
			id1 = kbdID1Xlat
		}
		c.push(srcKbd, kbdACK, kbdID0, id1)
	case kbdEcho:
		c.push(srcKbd, kbdEcho)
	default:
		c.push(srcKbd, kbdACK)
	}
}

// Describe implements bus.Describer. It is meant to be called right after
// the access it describes, as the exit tracer does: a data-port write is
// explained with the command that was waiting when it happened.
func (p port) Describe(offset uint64, write bool, data []byte) string {
	if len(data) != 1 || offset != 0 {
		return fmt.Sprintf("i8042 %s: bad %d-byte access at offset %d", p.name(), len(data), offset)
	}
	v := data[0]
	switch {
	case !p.data && write:
		return fmt.Sprintf("i8042 command %#02x (%s)", v, commandName(v))
	case !p.data:
		return fmt.Sprintf("i8042 status read %#02x (%s)", v, statusBits(v))
	case !write:
		return fmt.Sprintf("i8042 data read %#02x", v)
	}
	p.c.mu.Lock()
	cmd := p.c.pending
	if p.c.lastDataOK && p.c.lastData == v {
		cmd = p.c.lastDataCmd
	}
	p.c.mu.Unlock()
	return fmt.Sprintf("i8042 data write %#02x (%s)", v, dataMeaning(cmd, v))
}

func commandName(v byte) string {
	switch {
	case v == CmdReadCTR:
		return "read controller configuration byte"
	case v > 0x20 && v <= 0x3F:
		return fmt.Sprintf("read internal RAM byte %d", v&0x1f)
	case v == CmdWriteCTR:
		return "write controller configuration byte: next data byte"
	case v > 0x60 && v <= 0x7F:
		return fmt.Sprintf("write internal RAM byte %d: next data byte", v&0x1f)
	case v == CmdAuxDisable:
		return "disable aux port"
	case v == CmdAuxEnable:
		return "enable aux port"
	case v == CmdAuxTest:
		return "test aux port"
	case v == CmdSelfTest:
		return "controller self test"
	case v == CmdKbdTest:
		return "test keyboard port"
	case v == CmdKbdDisable:
		return "disable keyboard port"
	case v == CmdKbdEnable:
		return "enable keyboard port"
	case v == CmdReadOutPort:
		return "read output port"
	case v == CmdWriteOutPort:
		return "write output port: next data byte"
	case v == CmdWriteKbdOBF:
		return "write keyboard output buffer: next data byte"
	case v == CmdWriteAuxOBF:
		return "write aux output buffer: next data byte"
	case v == CmdWriteAux:
		return "write to aux device: next data byte"
	case v == CmdA20Off:
		return "disable A20 gate"
	case v == CmdA20On:
		return "enable A20 gate"
	case v == CmdPulseReset:
		return "pulse reset line: reboot"
	case v == 0xFF:
		return "pulse no output line"
	case v >= 0xF0 && v&OutReset == 0:
		return fmt.Sprintf("pulse output lines %04b: reboot", ^v&0xf)
	case v >= 0xF0:
		return fmt.Sprintf("pulse output lines %04b", ^v&0xf)
	}
	return "unsupported"
}

func dataMeaning(cmd, v byte) string {
	switch {
	case cmd == CmdWriteCTR:
		return "controller configuration byte: " + ctrBits(v)
	case cmd > 0x60 && cmd <= 0x7F:
		return fmt.Sprintf("internal RAM byte %d", cmd&0x1f)
	case cmd == CmdWriteOutPort && v&OutReset == 0:
		return "output port: reset line low: reboot"
	case cmd == CmdWriteOutPort && v&OutA20 != 0:
		return "output port: A20 on"
	case cmd == CmdWriteOutPort:
		return "output port: A20 off"
	case cmd == CmdWriteKbdOBF:
		return "into output buffer as keyboard data"
	case cmd == CmdWriteAuxOBF:
		return "into output buffer as aux data"
	case cmd == CmdWriteAux:
		return "to aux device: none attached, dropped"
	}
	switch v {
	case kbdReset:
		return "to keyboard: reset"
	case kbdGetID:
		return "to keyboard: identify"
	case kbdEcho:
		return "to keyboard: echo"
	}
	return "to keyboard: ACKed"
}

func statusBits(v byte) string {
	return human.Bits(uint64(v), []string{"OBF", "IBF", "SYS", "CMD", "UNLOCKED", "AUXDATA", "TIMEOUT", "PARITY"})
}

func ctrBits(v byte) string {
	return human.Bits(uint64(v), []string{"KBDINT", "AUXINT", "SYS", "", "KBDDIS", "AUXDIS", "XLATE", ""})
}
