package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ConfigSize is the size of a conventional PCI function's configuration
// space (PCI Local Bus Spec 3.0 §6.1). PCI Express extends it to 4 KiB; this
// package does not.
const ConfigSize = 256

// Offsets of the registers of the type 0 configuration header (§6.1,
// Figure 6-1). Every function has the first 16 bytes; the rest of the first
// 64 bytes is laid out this way for header type 0 (an ordinary device, as
// opposed to type 1, a PCI-to-PCI bridge).
const (
	RegVendorID      = 0x00 // 16 bits, read-only; 0xffff means "no function"
	RegDeviceID      = 0x02 // 16 bits, read-only
	RegCommand       = 0x04 // 16 bits, §6.2.2
	RegStatus        = 0x06 // 16 bits, §6.2.3
	RegRevisionID    = 0x08 // 8 bits
	RegProgIF        = 0x09 // class code, low byte: register-level interface
	RegSubclass      = 0x0a // class code, middle byte
	RegClass         = 0x0b // class code, high byte: base class
	RegCacheLineSize = 0x0c
	RegLatencyTimer  = 0x0d
	RegHeaderType    = 0x0e // bit 7: multi-function device
	RegBIST          = 0x0f
	RegBAR0          = 0x10 // six 32-bit base address registers, §6.2.5.1
	RegCardbusCIS    = 0x28
	RegSubsysVendor  = 0x2c
	RegSubsysID      = 0x2e
	RegExpansionROM  = 0x30 // §6.2.5.2
	RegCapPointer    = 0x34 // §6.7
	RegInterruptLine = 0x3c // scratch for the OS: which IRQ the pin reaches
	RegInterruptPin  = 0x3d // 0 none, 1-4 INTA#-INTD#
	RegMinGnt        = 0x3e
	RegMaxLat        = 0x3f

	// HeaderSize is the size of the standard header; capabilities and
	// device-specific registers live above it.
	HeaderSize = 0x40
)

// Command register bits (§6.2.2).
const (
	CmdIO           = 1 << 0  // respond to accesses in the I/O BARs
	CmdMemory       = 1 << 1  // respond to accesses in the memory BARs
	CmdBusMaster    = 1 << 2  // may initiate DMA
	CmdParity       = 1 << 6  // parity error response
	CmdSERR         = 1 << 8  // SERR# driver enable
	CmdIntxDisable  = 1 << 10 // do not assert INTx#
	commandWritable = CmdIO | CmdMemory | CmdBusMaster | CmdParity | CmdSERR | CmdIntxDisable
)

// Status register bits (§6.2.3).
const (
	StatusInterrupt = 1 << 3 // INTx# is being asserted (read-only)
	StatusCapList   = 1 << 4 // a capability list starts at RegCapPointer
	// The error bits are "write 1 to clear": software clears an error by
	// writing a one to it, and writing zeros leaves the others alone, so
	// acknowledging one error cannot lose another (§6.2.3).
	statusW1C = 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15
)

// Base address register encoding (§6.2.5.1). The low bits of a BAR are
// read-only and say what kind of window it is; the bits above the size are
// the address.
const (
	barIO           = 0x1 // bit 0: I/O space
	barMem64        = 0x4 // bits 2:1 = 10b: 64-bit memory, spans two BARs
	barPrefetchable = 0x8 // bit 3: reads have no side effects
)

// Capability IDs of the capabilities the describer knows by name (PCI Code
// and ID Assignment Specification).
const (
	CapPM         = 0x01
	CapMSI        = 0x05
	CapVendor     = 0x09 // vendor-specific; virtio-pci puts its structures here
	CapPCIExpress = 0x10
	CapMSIX       = 0x11
)

var capNames = map[uint8]string{
	CapPM:         "power management",
	CapMSI:        "MSI",
	CapVendor:     "vendor-specific",
	CapPCIExpress: "PCI Express",
	CapMSIX:       "MSI-X",
}

// BARKind says what a base address register decodes.
type BARKind uint8

const (
	// BARNone is an unimplemented BAR: it reads 0 and ignores writes, so
	// sizing it yields 0, which software reads as "not there".
	BARNone BARKind = iota
	// BARIO is a window in the 64 KiB I/O port space.
	BARIO
	// BARMem32 is a memory window below 4 GiB.
	BARMem32
	// BARMem64 is a memory window anywhere in a 64-bit address space. It
	// takes two consecutive BARs: the low dword (with the type bits) and
	// the high dword.
	BARMem64
)

func (k BARKind) String() string {
	switch k {
	case BARNone:
		return "none"
	case BARIO:
		return "I/O"
	case BARMem32:
		return "32-bit memory"
	case BARMem64:
		return "64-bit memory"
	}
	return fmt.Sprintf("BARKind(%d)", uint8(k))
}

// BAR describes one base address register as the function declared it and
// the guest (or the host) programmed it.
type BAR struct {
	Kind         BARKind
	Size         uint64 // bytes, a power of two
	Prefetchable bool
	// Address is where the window currently is: the address bits of the
	// register(s), whatever the command register says about decoding.
	Address uint64
}

// Errors returned by the ConfigSpace setup helpers.
var (
	ErrBadBAR    = errors.New("bad BAR declaration")
	ErrCapacity  = errors.New("no room left for the capability")
	ErrBadLength = errors.New("mask length differs from data length")
)

// bar is the declaration of one BAR slot. The upper half of a 64-bit BAR is
// marked high, pointing back to its lower half.
type bar struct {
	kind         BARKind
	size         uint64
	prefetchable bool
	high         bool
}

type capability struct {
	id  uint8
	off int // offset of the ID byte
	len int // bytes, header included
}

// ConfigSpace is the 256-byte configuration space of a function with a type
// 0 header, together with what makes registers behave like hardware: a write
// mask per byte (a bit the guest may change) and a write-1-to-clear mask.
// Bits in neither mask are read-only, which is how the vendor ID stays put,
// how a BAR keeps its type bits and reports its size, and how the reserved
// registers read as zero.
//
// A ConfigSpace is itself a Function, so a device with no register side
// effects can be added to a Root as is. A device that must react to
// configuration writes (a BAR moved, memory decoding turned on, MSI-X
// enabled) embeds *ConfigSpace and overrides ConfigWrite, calling the
// embedded one first and then looking at the registers.
//
// It is safe for concurrent use; the host-side helpers and the guest-side
// ConfigRead and ConfigWrite share one mutex.
type ConfigSpace struct {
	mu    sync.Mutex
	regs  [ConfigSize]byte
	wmask [ConfigSize]byte // bits a guest write stores
	w1c   [ConfigSize]byte // bits a guest write of 1 clears
	bars  [6]bar
	caps  []capability
	free  int // first free offset for the next capability
}

var _ Function = (*ConfigSpace)(nil)

// NewConfigSpace returns the configuration space of a single-function
// device with a type 0 header: vendor and device ID, the 24-bit class code
// (class<<16 | subclass<<8 | programming interface, e.g. 0x060000 for a host
// bridge) and revision. All BARs are unimplemented and there are no
// capabilities until SetBAR and AddCapability say otherwise.
//
// Vendor 0xffff is what an absent function reads as, so an OS would not see
// a function using it; Root.Add refuses one.
func NewConfigSpace(vendor, device uint16, class uint32, revision uint8) *ConfigSpace {
	c := &ConfigSpace{free: HeaderSize}
	le := binary.LittleEndian
	le.PutUint16(c.regs[RegVendorID:], vendor)
	le.PutUint16(c.regs[RegDeviceID:], device)
	c.regs[RegRevisionID] = revision
	c.regs[RegProgIF] = byte(class)
	c.regs[RegSubclass] = byte(class >> 8)
	c.regs[RegClass] = byte(class >> 16)
	// Header type 0, single function: reset value 0, read-only.

	// Command: the decode enables, bus mastering, error reporting enables
	// and the INTx disable are the bits an OS programs. Special cycles,
	// memory-write-and-invalidate, VGA palette snooping and fast
	// back-to-back are optional features we do not have; §6.2.2 makes
	// unimplemented bits read-only zero.
	le.PutUint16(c.wmask[RegCommand:], commandWritable)
	le.PutUint16(c.w1c[RegStatus:], statusW1C)
	// Cache line size and latency timer are plain storage for
	// conventional PCI: Linux writes them when it enables bus mastering
	// (pcibios_set_master) and expects to read them back.
	c.wmask[RegCacheLineSize] = 0xff
	c.wmask[RegLatencyTimer] = 0xff
	// Interrupt line is storage for the OS too: firmware writes which
	// IRQ the pin is routed to, drivers read it (§6.2.4).
	c.wmask[RegInterruptLine] = 0xff
	return c
}

// SetSubsystem sets the subsystem vendor and subsystem ID (read-only to the
// guest), which tell drivers which board a common chip is on; virtio uses the
// subsystem ID for the device type of legacy devices.
func (c *ConfigSpace) SetSubsystem(vendor, id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	binary.LittleEndian.PutUint16(c.regs[RegSubsysVendor:], vendor)
	binary.LittleEndian.PutUint16(c.regs[RegSubsysID:], id)
}

// SetInterruptPin sets which INTx pin the function uses: 0 none, 1-4 for
// INTA#-INTD#. Other values are refused.
func (c *ConfigSpace) SetInterruptPin(pin uint8) error {
	if pin > 4 {
		return fmt.Errorf("pci: interrupt pin %d: want 0 (none) or 1-4 (INTA#-INTD#)", pin)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.regs[RegInterruptPin] = pin
	return nil
}

// SetInterruptStatus sets or clears the status register's interrupt status
// bit, which mirrors whether the function wants its INTx# pin asserted. The
// device raises the actual line itself, unless Command has CmdIntxDisable.
func (c *ConfigSpace) SetInterruptStatus(asserted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if asserted {
		c.regs[RegStatus] |= StatusInterrupt
	} else {
		c.regs[RegStatus] &^= StatusInterrupt
	}
}

// Command returns the command register, so a device can check whether the
// guest enabled I/O or memory decoding, bus mastering or INTx.
func (c *ConfigSpace) Command() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.LittleEndian.Uint16(c.regs[RegCommand:])
}

// SetBAR declares BAR i (0-5) as a window of size bytes. Sizes are powers of
// two, at least 4 bytes and at most 256 for I/O (§6.2.5.1 limits an I/O BAR
// to 256 bytes), at least 16 bytes for memory, at most 2 GiB for a 32-bit
// memory BAR. A 64-bit BAR also takes BAR i+1. Only memory can be
// prefetchable. Declaring a BAR twice, or over the high half of a 64-bit
// one, is an error.
//
// The BAR starts at address 0, unassigned; the guest's OS (or the VMM, with
// SetBARAddress, playing firmware) places it.
func (c *ConfigSpace) SetBAR(i int, kind BARKind, size uint64, prefetchable bool) error {
	bad := func(why string) error {
		return fmt.Errorf("pci: BAR%d %v of %#x bytes: %s: %w", i, kind, size, why, ErrBadBAR)
	}
	if i < 0 || i > 5 {
		return bad("no such BAR")
	}
	if size == 0 || size&(size-1) != 0 {
		return bad("size is not a power of two")
	}
	switch kind {
	case BARIO:
		if size < 4 || size > 256 {
			return bad("I/O BARs are 4 to 256 bytes")
		}
		if prefetchable {
			return bad("I/O is never prefetchable")
		}
	case BARMem32:
		if size < 16 || size > 1<<31 {
			return bad("32-bit memory BARs are 16 bytes to 2 GiB")
		}
	case BARMem64:
		if size < 16 || size > 1<<63 {
			return bad("64-bit memory BARs are at least 16 bytes")
		}
		if i == 5 {
			return bad("a 64-bit BAR needs the next BAR for its high dword")
		}
	default:
		return bad("unknown kind")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bars[i].kind != BARNone || c.bars[i].high {
		return bad("already declared")
	}
	if kind == BARMem64 && (c.bars[i+1].kind != BARNone || c.bars[i+1].high) {
		return bad("BAR" + fmt.Sprint(i+1) + " is already declared")
	}
	c.bars[i] = bar{kind: kind, size: size, prefetchable: prefetchable}
	off := RegBAR0 + 4*i
	le := binary.LittleEndian
	// The writable bits are the address bits at and above the size: the
	// bits below it are read-only zero (or type bits), which is what
	// makes "write all ones, read back" reveal the size.
	mask := ^(size - 1)
	switch kind {
	case BARIO:
		// Upper 16 bits read-only zero: a PC decodes 16-bit I/O
		// addresses, and §6.2.5.1 allows hardwiring them.
		le.PutUint32(c.regs[off:], barIO)
		le.PutUint32(c.wmask[off:], uint32(mask)&0xfffc)
	case BARMem32, BARMem64:
		typ := uint32(0)
		if kind == BARMem64 {
			typ = barMem64
		}
		if prefetchable {
			typ |= barPrefetchable
		}
		le.PutUint32(c.regs[off:], typ)
		le.PutUint32(c.wmask[off:], uint32(mask)&^0xf)
		if kind == BARMem64 {
			c.bars[i+1] = bar{high: true}
			le.PutUint32(c.regs[off+4:], 0)
			le.PutUint32(c.wmask[off+4:], uint32(mask>>32))
		}
	}
	return nil
}

// SetBARAddress places BAR i at addr, as firmware would before the OS
// boots. The address must be aligned to the BAR's size and fit the kind.
func (c *ConfigSpace) SetBARAddress(i int, addr uint64) error {
	if i < 0 || i > 5 {
		return fmt.Errorf("pci: BAR%d: no such BAR: %w", i, ErrBadBAR)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.bars[i]
	if b.kind == BARNone {
		return fmt.Errorf("pci: BAR%d is not a BAR's low dword: %w", i, ErrBadBAR)
	}
	if addr&(b.size-1) != 0 {
		return fmt.Errorf("pci: BAR%d address %#x not aligned to its size %#x: %w", i, addr, b.size, ErrBadBAR)
	}
	limit := uint64(1) << 32
	if b.kind == BARIO {
		limit = 1 << 16
	}
	if b.kind != BARMem64 && addr >= limit {
		return fmt.Errorf("pci: BAR%d address %#x beyond what a %v BAR holds: %w", i, addr, b.kind, ErrBadBAR)
	}
	off := RegBAR0 + 4*i
	le := binary.LittleEndian
	low := le.Uint32(c.regs[off:])
	le.PutUint32(c.regs[off:], low&^le.Uint32(c.wmask[off:])|uint32(addr))
	if b.kind == BARMem64 {
		le.PutUint32(c.regs[off+4:], uint32(addr>>32))
	}
	return nil
}

// BAR returns BAR i as declared and currently programmed. The high half of
// a 64-bit BAR and undeclared BARs have Kind BARNone.
func (c *ConfigSpace) BAR(i int) BAR {
	if i < 0 || i > 5 {
		return BAR{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.bars[i]
	if b.kind == BARNone {
		return BAR{}
	}
	off := RegBAR0 + 4*i
	le := binary.LittleEndian
	addr := uint64(le.Uint32(c.regs[off:]) & le.Uint32(c.wmask[off:]))
	if b.kind == BARMem64 {
		addr |= uint64(le.Uint32(c.regs[off+4:])) << 32
	}
	return BAR{Kind: b.kind, Size: b.size, Prefetchable: b.prefetchable, Address: addr}
}

// AddCapability appends a capability to the capability list (§6.7) and
// returns its offset. body is what follows the two-byte header (capability
// ID and next pointer, both read-only); writable, if not nil, is the mask of
// body bits the guest may change and must be as long as body. The first
// capability sets the status register's capabilities-list bit and the
// capability pointer at 0x34. Capabilities are placed dword-aligned from
// 0x40 upward, in the order added.
func (c *ConfigSpace) AddCapability(id uint8, body, writable []byte) (int, error) {
	if writable != nil && len(writable) != len(body) {
		return 0, fmt.Errorf("pci: capability %#02x: %d-byte body, %d-byte mask: %w", id, len(body), len(writable), ErrBadLength)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	off := c.free
	n := 2 + len(body)
	if n > ConfigSize-off {
		return 0, fmt.Errorf("pci: capability %#02x of %d bytes at %#x: %w", id, n, off, ErrCapacity)
	}
	c.regs[off] = id
	c.regs[off+1] = 0 // end of list until another one is added
	copy(c.regs[off+2:], body)
	copy(c.wmask[off+2:], writable)
	if len(c.caps) == 0 {
		c.regs[RegCapPointer] = byte(off)
		c.regs[RegStatus] |= StatusCapList
	} else {
		c.regs[c.caps[len(c.caps)-1].off+1] = byte(off)
	}
	c.caps = append(c.caps, capability{id: id, off: off, len: n})
	c.free = (off + n + 3) &^ 3
	return off, nil
}

// Load copies configuration space at off into data, as the host sees it
// (no side effects). Like slicing, an offset or length beyond the 256 bytes
// panics: it is a programming error, never a guest's doing.
func (c *ConfigSpace) Load(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(data, c.regs[off:off+len(data)])
}

// Store writes data at off regardless of the write masks: the device
// updating its own read-only registers. Out-of-range offsets panic, as for
// Load.
func (c *ConfigSpace) Store(off int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(c.regs[off:off+len(data)], data)
}

// SetWriteMask sets which bits of the len(mask) bytes at off the guest may
// write, for device-specific registers above the header. Out-of-range
// offsets panic, as for Load.
func (c *ConfigSpace) SetWriteMask(off int, mask []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(c.wmask[off:off+len(mask)], mask)
}

// validAccess is true for an access the Root could have made: 1, 2 or 4
// bytes inside one dword of the 256.
func validAccess(off int, n int) bool {
	return (n == 1 || n == 2 || n == 4) && off >= 0 && off < ConfigSize && off%4+n <= 4
}

// ConfigRead implements Function: it copies the registers. An access the
// Root would never make reads as all ones.
func (c *ConfigSpace) ConfigRead(off int, data []byte) {
	if !validAccess(off, len(data)) {
		fill(data, 0xff)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(data, c.regs[off:])
}

// ConfigWrite implements Function: each bit in the write mask takes the
// written value, each write-1-to-clear bit written as 1 is cleared, and
// every other bit keeps its value. An access the Root would never make is
// dropped.
func (c *ConfigSpace) ConfigWrite(off int, data []byte) {
	if !validAccess(off, len(data)) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range data {
		o := off + i
		c.regs[o] = c.regs[o]&^c.wmask[o] | v&c.wmask[o]
		c.regs[o] &^= v & c.w1c[o]
	}
}

// RegisterName implements RegisterNamer: the names of the header fields,
// BARs and capabilities that n bytes at off cover, for the exit tracer.
func (c *ConfigSpace) RegisterName(off, n int) string {
	c.mu.Lock()
	bars := c.bars
	caps := append([]capability(nil), c.caps...)
	c.mu.Unlock()
	return registerName(off, n, func(o int) string { return fieldName(&bars, caps, o) })
}

// fieldName names the register byte o belongs to, given the function's
// BARs and capabilities.
func fieldName(bars *[6]bar, caps []capability, o int) string {
	if o >= RegBAR0 && o < RegCardbusCIS {
		i := (o - RegBAR0) / 4
		if bars[i].high {
			return fmt.Sprintf("BAR%d: high dword of 64-bit BAR%d", i, i-1)
		}
		return fmt.Sprintf("BAR%d", i)
	}
	if o < HeaderSize {
		return headerField(o)
	}
	for _, cp := range caps {
		if o >= cp.off && o < cp.off+cp.len {
			name := capNames[cp.id]
			if name == "" {
				name = fmt.Sprintf("ID %#02x", cp.id)
			}
			return fmt.Sprintf("%s capability at %#02x +%#x", name, cp.off, o-cp.off)
		}
	}
	return "device-specific"
}

// registerName joins the distinct names field gives the bytes of an access,
// so a dword read at 0x08 shows as "revision ID, class code" and a word read
// at 0x12 as "BAR0".
func registerName(off, n int, field func(o int) string) string {
	var names []string
	for o := off; o < off+n && o < ConfigSize; o++ {
		name := field(o)
		if len(names) == 0 || names[len(names)-1] != name {
			names = append(names, name)
		}
	}
	// A capability's per-byte names carry their offset; keep the first.
	if len(names) > 1 && strings.Contains(names[0], "capability at") {
		names = names[:1]
	}
	return strings.Join(names, ", ")
}

// headerField names the type 0 header field byte o (below 0x40) belongs to.
func headerField(o int) string {
	switch {
	case o < 0x02:
		return "vendor ID"
	case o < 0x04:
		return "device ID"
	case o < 0x06:
		return "command"
	case o < 0x08:
		return "status"
	case o == RegRevisionID:
		return "revision ID"
	case o < 0x0c:
		return "class code"
	case o == RegCacheLineSize:
		return "cache line size"
	case o == RegLatencyTimer:
		return "latency timer"
	case o == RegHeaderType:
		return "header type"
	case o == RegBIST:
		return "BIST"
	case o < RegCardbusCIS:
		return fmt.Sprintf("BAR%d", (o-RegBAR0)/4)
	case o < RegSubsysVendor:
		return "CardBus CIS pointer"
	case o < RegSubsysID:
		return "subsystem vendor ID"
	case o < RegExpansionROM:
		return "subsystem ID"
	case o < RegCapPointer:
		return "expansion ROM BAR"
	case o == RegCapPointer:
		return "capabilities pointer"
	case o < RegInterruptLine:
		return "reserved"
	case o == RegInterruptLine:
		return "interrupt line"
	case o == RegInterruptPin:
		return "interrupt pin"
	case o == RegMinGnt:
		return "min grant"
	case o == RegMaxLat:
		return "max latency"
	}
	return "device-specific"
}

func fill(data []byte, v byte) {
	for i := range data {
		data[i] = v
	}
}
