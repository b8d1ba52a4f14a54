// Package pci models a PCI root bus, the way an x86 guest finds and
// configures every device that is not an ISA left-over: a host bridge at
// 00:00.0, room for 31 more devices on bus 0, and the I/O ports through
// which the guest reaches their configuration registers.
//
// # Configuration space
//
// PCI (PCI Local Bus Specification, revision 3.0) gives every device
// function, besides whatever memory or I/O windows it decodes, a private
// 256-byte configuration space (§6.1). Its first 64 bytes are a standard
// header (§6.1, Figure 6-1, "type 0" for an ordinary device):
//
//	0x00 vendor ID      0x02 device ID      who made it, what it is
//	0x04 command        0x06 status         §6.2.2, §6.2.3
//	0x08 revision ID    0x09 class code     e.g. 06 00 00 = host bridge
//	0x0c cache line     0x0d latency timer
//	0x0e header type    0x0f BIST           bit 7: more than one function
//	0x10-0x27 BAR0-BAR5                     base address registers, §6.2.5
//	0x2c subsystem vendor ID, 0x2e subsystem ID
//	0x30 expansion ROM BAR
//	0x34 capabilities pointer               §6.7
//	0x3c interrupt line 0x3d interrupt pin
//
// Devices are named by bus (0-255), device (0-31) and function (0-7), written
// bb:dd.f. The OS finds devices by reading the vendor ID of every possible
// function: an absent one reads 0xffff, because nothing claims the access
// and the host bridge ends it with a master abort, which returns all ones
// (§6.1: 0xffff is an invalid vendor ID, so all ones is an unambiguous "no
// device"). From
// the class code it picks a driver; from the vendor and device IDs the
// driver picks a chip.
//
// Registers are not plain memory. The IDs and class are read-only; so are
// unimplemented bits, which read as zero. The command register holds the
// switches software flips (I/O decode, memory decode, bus mastering, INTx
// disable); the status register reports, and its error bits are cleared by
// writing ones to them. ConfigSpace models all three kinds of bit with a
// per-byte write mask and a write-1-to-clear mask.
//
// # Base address registers
//
// A device that has registers or memory of its own asks for an address
// window through a BAR (§6.2.5.1); the OS, not the device, decides where the
// window goes, so that no two devices collide. The low bits of a BAR are
// read-only and say what it is: bit 0 set means I/O ports; clear means
// memory, with bits 2:1 = 00 for a 32-bit address or 10 for a 64-bit one that
// continues in the next BAR, and bit 3 for prefetchable. The address bits
// below the window's size are read-only zero. So the OS sizes a BAR by
// writing all ones and reading it back: the bits that stuck are the
// address bits, and the lowest of them is the size. A 4 KiB 32-bit memory BAR
// reads back 0xfffff000; an unimplemented BAR reads 0. The OS then writes
// the address it chose and sets the decode bits in the command register
// (§6.2.2), and from then on the device answers at that address.
//
// # Capabilities
//
// Features newer than the header (power management, MSI and MSI-X, PCI
// Express, and the structures virtio-pci describes itself with) are in a
// linked list above the header (§6.7): status bit 4 says the list exists,
// offset 0x34 points at the first entry, and each entry starts with an ID
// byte and the offset of the next entry (0 ends the list).
//
// # Configuration mechanism #1
//
// Configuration space is not in the memory or I/O address space, so the CPU
// needs a way in. On PCs it is configuration mechanism #1 (§3.2.2.3.2): two
// 32-bit I/O registers, CONFIG_ADDRESS at port 0xcf8 and CONFIG_DATA at
// 0xcfc.
//
//	CONFIG_ADDRESS  31     enable
//	                30:24  reserved (reads 0; but see 27:24 below)
//	                23:16  bus
//	                15:11  device
//	                10:8   function
//	                7:2    register (dword index)
//	                1:0    reads 0
//
// Software writes the address of a dword to CONFIG_ADDRESS, then reads or
// writes CONFIG_DATA; a byte or word access to 0xcfc+n reaches byte n of
// that dword, so Linux reads the 16-bit class at 0x0a as a word at 0xcfe.
// Only a 32-bit access to 0xcf8 is CONFIG_ADDRESS. Byte and word accesses
// to 0xcf8-0xcfb are ordinary I/O cycles to other registers; on Intel PIIX
// and ICH chipsets, port 0xcf9 is the reset control register. This model
// accepts and ignores them (they read all ones, writes change nothing), and
// does not reset the machine through 0xcf9: Linux resets through ACPI or the
// keyboard controller first.
//
// Bits 27:24 are where AMD processors put bits 11:8 of the register number
// (the "extended configuration space" of PCI Express); the model keeps
// them, so such an access reaches offset 0x100 or above, which a
// conventional PCI function does not have, and reads all ones instead of
// aliasing the header.
//
// # How Linux finds mechanism #1
//
// arch/x86/pci/direct.c, pci_check_type1(): write a byte to 0xcfb (which must
// not disturb CONFIG_ADDRESS), write 0x80000000 to 0xcf8 as a dword, and read
// it back; it must come back unchanged. Then pci_sanity_check(), when the
// firmware is older than 2001 or, as in a kvmlab guest, there is no SMBIOS
// date at all, scans bus 0 for a function whose class (the word at 0x0a) is
// 0x0600, host bridge, or 0x0300, VGA, or whose vendor is Intel or Compaq.
// With no host bridge the check fails, mechanism #2 fails too, and the
// kernel prints "PCI: Fatal: No config space access function found". That
// is why the Root always has one.
//
// # What this package models
//
// Root is bus 0 and the two ports. The host bridge is an Intel 82G33/P35
// "DRAM controller", vendor 0x8086 device 0x29c0, class 0x060000: the host
// bridge of the Q35 chipset, the same one QEMU's q35 machine shows, so
// Linux guests are known to cope with it standing alone; and an Intel part,
// so it passes both halves of the sanity check. Every other device implements Function; ConfigSpace does the
// register behaviour, BAR sizing included, for them.
//
// Simplifications: one bus, no PCI-to-PCI bridges (accesses to other buses
// read all ones), single-function devices only (functions 1-7 read all
// ones), no memory-mapped configuration (PCI Express ECAM), no expansion
// ROMs, and INTx routing is left to the devices.
//
// # Concurrency
//
// One mutex serializes configuration accesses, CONFIG_ADDRESS latch
// included, as the single CONFIG_ADDRESS register does on real hardware.
// Function methods are called with it held and must not call back into the
// Root.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"kvmlab/devices/bus"
)

// I/O ports of configuration mechanism #1.
const (
	AddressPortBase = 0xcf8 // CONFIG_ADDRESS
	DataPortBase    = 0xcfc // CONFIG_DATA
	PortSize        = 4     // each is one 32-bit register
)

// Host bridge identity (see the package comment for why these).
const (
	HostBridgeVendor   = 0x8086
	HostBridgeDevice   = 0x29c0
	HostBridgeClass    = 0x060000
	HostBridgeRevision = 0x00
)

// NumSlots is the number of devices on a bus.
const NumSlots = 32

// CONFIG_ADDRESS fields.
const (
	addrEnable = 1 << 31
	// addrMask is the bits the register stores: enable, AMD's extended
	// register bits 27:24, bus, device, function and register. Bits 30:28
	// and 1:0 read as zero.
	addrMask = addrEnable | 0x0fff_fffc
)

// Function is one PCI function on the root bus. The Root calls it with
// offset and data describing an access of 1, 2 or 4 bytes that lies inside
// one aligned dword of the first 256 bytes; ConfigRead fills data, and
// ConfigWrite applies it. Both are called with the Root's lock held.
//
// *ConfigSpace implements Function. A device with side effects embeds one
// and overrides the methods it needs.
type Function interface {
	ConfigRead(offset int, data []byte)
	ConfigWrite(offset int, data []byte)
}

// RegisterNamer is implemented by functions that can name their registers
// for the exit tracer (ConfigSpace does). Without it, the Root names only
// the standard header.
type RegisterNamer interface {
	// RegisterName names the registers that n bytes at offset cover.
	RegisterName(offset, n int) string
}

// Errors.
var (
	// ErrBadWidth is returned for a port access that is not 1, 2 or 4
	// bytes, or does not fit in the 4-byte register.
	ErrBadWidth = errors.New("access is not 1, 2 or 4 bytes inside the register")
	// ErrSlot is returned by Add for a slot that is out of range or taken.
	ErrSlot = errors.New("slot out of range or taken")
	// ErrNoFunction is returned by Add for a function that would look
	// absent (nil, or vendor ID 0xffff or 0x0000).
	ErrNoFunction = errors.New("function would look absent")
)

// Root is PCI bus 0 behind configuration mechanism #1. Create it with
// NewRoot.
type Root struct {
	mu     sync.Mutex
	addr   uint32 // CONFIG_ADDRESS, masked with addrMask
	slots  [NumSlots]Function
	bridge *ConfigSpace
}

// NewRoot returns bus 0 with the host bridge at 00:00.0 and the other 31
// slots empty.
func NewRoot() *Root {
	b := NewConfigSpace(HostBridgeVendor, HostBridgeDevice, HostBridgeClass, HostBridgeRevision)
	r := &Root{bridge: b}
	r.slots[0] = b
	return r
}

// HostBridge returns the configuration space of 00:00.0.
func (r *Root) HostBridge() *ConfigSpace { return r.bridge }

// Add places f as function 0 of device slot (1-31).
func (r *Root) Add(slot int, f Function) error {
	if slot < 1 || slot >= NumSlots {
		return fmt.Errorf("pci: add at slot %d (want 1-%d): %w", slot, NumSlots-1, ErrSlot)
	}
	if f == nil {
		return fmt.Errorf("pci: add nil function at slot %d: %w", slot, ErrNoFunction)
	}
	var id [2]byte
	f.ConfigRead(RegVendorID, id[:])
	if v := binary.LittleEndian.Uint16(id[:]); v == 0xffff || v == 0 {
		return fmt.Errorf("pci: add at slot %d: vendor ID %#04x: %w", slot, v, ErrNoFunction)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slots[slot] != nil {
		return fmt.Errorf("pci: add at slot %d: %w", slot, ErrSlot)
	}
	r.slots[slot] = f
	return nil
}

// Function returns the function in slot, or nil.
func (r *Root) Function(slot int) Function {
	if slot < 0 || slot >= NumSlots {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slots[slot]
}

// AddressPort returns CONFIG_ADDRESS, to register at port 0xcf8, size 4.
func (r *Root) AddressPort() bus.Device { return addressPort{r} }

// DataPort returns CONFIG_DATA, to register at port 0xcfc, size 4.
func (r *Root) DataPort() bus.Device { return dataPort{r} }

// Register places both ports on b's I/O port space.
func (r *Root) Register(b *bus.Bus) error {
	if err := b.Register(bus.PIO, AddressPortBase, PortSize, "pci-config-address", r.AddressPort()); err != nil {
		return err
	}
	return b.Register(bus.PIO, DataPortBase, PortSize, "pci-config-data", r.DataPort())
}

// checkPort rejects an access that is not 1, 2 or 4 bytes within the 4-byte
// register. A failed read still completes on the bus, so it reads all ones.
func checkPort(name string, off uint64, data []byte, write bool) error {
	n := uint64(len(data))
	if (n == 1 || n == 2 || n == 4) && off < PortSize && off+n <= PortSize {
		return nil
	}
	if !write {
		fill(data, 0xff)
	}
	return fmt.Errorf("pci: %s: %d-byte access at offset %d: %w", name, len(data), off, ErrBadWidth)
}

// target decodes a CONFIG_ADDRESS value plus the data port offset into the
// function and register an access reaches. f is nil, and why says why, when
// nothing answers.
type target struct {
	bus, dev, fn int
	reg          int // byte offset, 0x000-0xfff
	f            Function
	why          string
}

func (r *Root) targetLocked(addr uint32, portOff uint64) target {
	t := target{
		bus: int(addr >> 16 & 0xff),
		dev: int(addr >> 11 & 0x1f),
		fn:  int(addr >> 8 & 7),
		reg: (int(addr>>24&0xf)<<8 | int(addr&0xfc)) + int(portOff&3),
	}
	switch {
	case addr&addrEnable == 0:
		t.why = "CONFIG_ADDRESS disabled"
	case t.bus != 0:
		t.why = fmt.Sprintf("no bus %d", t.bus)
	case r.slots[t.dev] == nil:
		t.why = "no device"
	case t.fn != 0:
		t.why = "single-function device"
	case t.reg >= ConfigSize:
		t.why = "beyond the 256-byte configuration space"
	default:
		t.f = r.slots[t.dev]
	}
	return t
}

func (t target) String() string {
	return fmt.Sprintf("%02x:%02x.%d reg 0x%02x", t.bus, t.dev, t.fn, t.reg)
}

// addressPort is CONFIG_ADDRESS at 0xcf8-0xcfb.
type addressPort struct{ r *Root }

var (
	_ bus.Device    = addressPort{}
	_ bus.Describer = addressPort{}
	_ bus.Device    = dataPort{}
	_ bus.Describer = dataPort{}
)

// Read implements bus.Device. A dword read returns the latched address;
// byte and word reads are not CONFIG_ADDRESS cycles and read all ones.
func (p addressPort) Read(off uint64, data []byte) error {
	if err := checkPort("CONFIG_ADDRESS", off, data, false); err != nil {
		return err
	}
	if len(data) != 4 {
		fill(data, 0xff)
		return nil
	}
	p.r.mu.Lock()
	a := p.r.addr
	p.r.mu.Unlock()
	binary.LittleEndian.PutUint32(data, a)
	return nil
}

// Write implements bus.Device. Only a dword write latches a new address;
// byte and word writes (Linux's 0xcfb probe, the PIIX reset control at
// 0xcf9) are ignored.
func (p addressPort) Write(off uint64, data []byte) error {
	if err := checkPort("CONFIG_ADDRESS", off, data, true); err != nil {
		return err
	}
	if len(data) != 4 {
		return nil
	}
	p.r.mu.Lock()
	p.r.addr = binary.LittleEndian.Uint32(data) & addrMask
	p.r.mu.Unlock()
	return nil
}

// Describe implements bus.Describer: "PCI CONFIG_ADDRESS write 0x80001810
// (00:03.0 reg 0x10)".
func (p addressPort) Describe(off uint64, write bool, data []byte) string {
	dir := direction(write)
	if checkPort("CONFIG_ADDRESS", off, data, true) != nil {
		return fmt.Sprintf("PCI CONFIG_ADDRESS bad %d-byte %s at offset %d", len(data), dir, off)
	}
	v := hexValue(data)
	if len(data) != 4 {
		port := AddressPortBase + off
		what := "only dword accesses reach CONFIG_ADDRESS"
		if off == 1 && len(data) == 1 {
			what = "PIIX reset control register, not emulated"
		}
		return fmt.Sprintf("PCI port %#x %s %s ignored (%s)", port, dir, v, what)
	}
	a := binary.LittleEndian.Uint32(data)
	if write {
		a &= addrMask
	}
	p.r.mu.Lock()
	t := p.r.targetLocked(a, 0)
	p.r.mu.Unlock()
	if a&addrEnable == 0 {
		return fmt.Sprintf("PCI CONFIG_ADDRESS %s %s (disabled)", dir, v)
	}
	return fmt.Sprintf("PCI CONFIG_ADDRESS %s %s (%v)", dir, v, t)
}

// dataPort is CONFIG_DATA at 0xcfc-0xcff.
type dataPort struct{ r *Root }

// Read implements bus.Device: it reads configuration space at the latched
// address, plus the port offset. Nothing there reads as all ones.
func (p dataPort) Read(off uint64, data []byte) error {
	if err := checkPort("CONFIG_DATA", off, data, false); err != nil {
		return err
	}
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.targetLocked(r.addr, off)
	if t.f == nil {
		fill(data, 0xff)
		return nil
	}
	t.f.ConfigRead(t.reg, data)
	return nil
}

// Write implements bus.Device: it writes configuration space at the latched
// address, plus the port offset. Writes that reach nothing are dropped, as
// a master abort drops them on real hardware.
func (p dataPort) Write(off uint64, data []byte) error {
	if err := checkPort("CONFIG_DATA", off, data, true); err != nil {
		return err
	}
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.targetLocked(r.addr, off)
	if t.f != nil {
		t.f.ConfigWrite(t.reg, data)
	}
	return nil
}

// Describe implements bus.Describer: "PCI config read 00:03.0 reg 0x10 =
// 0xfebf0000 (BAR0)". For a read, data holds the value read.
func (p dataPort) Describe(off uint64, write bool, data []byte) string {
	dir := direction(write)
	if checkPort("CONFIG_DATA", off, data, true) != nil {
		return fmt.Sprintf("PCI CONFIG_DATA bad %d-byte %s at offset %d", len(data), dir, off)
	}
	r := p.r
	r.mu.Lock()
	a := r.addr
	t := r.targetLocked(a, off)
	r.mu.Unlock()
	v := hexValue(data)
	if a&addrEnable == 0 {
		return fmt.Sprintf("PCI config %s %s with CONFIG_ADDRESS disabled", dir, v)
	}
	var name string
	switch {
	case t.reg >= ConfigSize:
		name = "extended"
	case t.f != nil:
		if n, ok := t.f.(RegisterNamer); ok {
			name = n.RegisterName(t.reg, len(data))
		} else {
			name = registerName(t.reg, len(data), headerField)
		}
	default:
		name = registerName(t.reg, len(data), headerField)
	}
	if t.f == nil {
		name += "; " + t.why
		if write {
			name += ", dropped"
		}
	}
	return fmt.Sprintf("PCI config %s %v = %s (%s)", dir, t, v, name)
}

func direction(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// hexValue formats a little-endian value with as many digits as it has
// bytes: 0x0600, 0xfebf0000.
func hexValue(data []byte) string {
	var sb strings.Builder
	sb.WriteString("0x")
	for i := len(data) - 1; i >= 0; i-- {
		fmt.Fprintf(&sb, "%02x", data[i])
	}
	return sb.String()
}

// BARHandler is implemented by functions with memory BARs that answer
// accesses: the Root's memory window calls it with the BAR index and the
// offset inside the BAR, once the access is known to fall inside a BAR the
// guest enabled (command register memory-decode bit set).
type BARHandler interface {
	Function
	BAR(i int) BAR
	Command() uint16
	BARRead(bar int, off uint64, data []byte) error
	BARWrite(bar int, off uint64, data []byte) error
}

// BARDescriber names a BAR access for the exit tracer.
type BARDescriber interface {
	DescribeBAR(bar int, off uint64, write bool, data []byte) string
}

// ErrNoBAR is returned for a window access no enabled BAR claims.
var ErrNoBAR = errors.New("no enabled BAR at this address")

// MemoryWindow returns the bus device for the root bridge's memory window
// at [base, base+size): the addresses the ACPI _CRS hands the OS for BARs.
// A real host bridge forwards a memory cycle in its window onto the PCI
// bus, where the function whose BAR matches claims it; the window does the
// same, so a guest may move a BAR anywhere in the window and the device
// follows without the VMM re-registering anything.
func (r *Root) MemoryWindow(base uint64) bus.Device { return window{r, base} }

type window struct {
	r    *Root
	base uint64
}

// claim finds the function and BAR at guest-physical address addr.
func (w window) claim(addr uint64, n int) (BARHandler, int, uint64, bool) {
	w.r.mu.Lock()
	slots := w.r.slots
	w.r.mu.Unlock()
	for _, f := range slots {
		h, ok := f.(BARHandler)
		if !ok || h.Command()&CmdMemory == 0 {
			continue
		}
		for i := 0; i < 6; i++ {
			b := h.BAR(i)
			if b.Kind != BARMem32 && b.Kind != BARMem64 || b.Address == 0 {
				continue
			}
			if addr >= b.Address && addr-b.Address < b.Size && uint64(n) <= b.Size-(addr-b.Address) {
				return h, i, addr - b.Address, true
			}
		}
	}
	return nil, 0, 0, false
}

func (w window) Read(off uint64, data []byte) error {
	h, i, o, ok := w.claim(w.base+off, len(data))
	if !ok {
		fill(data, 0xff)
		return fmt.Errorf("pci: read at %#x: %w", w.base+off, ErrNoBAR)
	}
	return h.BARRead(i, o, data)
}

func (w window) Write(off uint64, data []byte) error {
	h, i, o, ok := w.claim(w.base+off, len(data))
	if !ok {
		return fmt.Errorf("pci: write at %#x: %w", w.base+off, ErrNoBAR)
	}
	return h.BARWrite(i, o, data)
}

func (w window) Describe(off uint64, write bool, data []byte) string {
	h, i, o, ok := w.claim(w.base+off, len(data))
	if !ok {
		return fmt.Sprintf("PCI window %s at %#x: no BAR claims it", direction(write), w.base+off)
	}
	if d, ok := h.(BARDescriber); ok {
		return d.DescribeBAR(i, o, write, data)
	}
	return fmt.Sprintf("BAR%d+%#x %s %s", i, o, direction(write), hexValue(data))
}
