package pci

// Saving and restoring PCI state (snapshots, issue 14).
//
// What a PCI function "is" splits in two. Its identity and shape (vendor
// and device ID, class, which BARs it has and how big they are, which
// capabilities sit where, which bits the guest may write) are fixed when
// the VMM builds the device; a restore builds the same device again. What
// the guest did to it (the command register, where it placed the BARs, the
// interrupt line it wrote, MSI-X enabled or not, the MSI-X table) is the
// state, and that is what these types carry.
//
// A snapshot file is user input, so a restore checks that the saved
// configuration space belongs to the device it is restored into: every
// read-only bit (IDs, class, header type, BAR type bits and the address
// bits below each BAR's size, capability IDs and pointers) must equal the
// device's own, and each saved BAR must have the device's kind and size.
// A mismatch is refused with an error naming the register, and nothing
// changes.
//
// Who saves what: Root.SaveState saves CONFIG_ADDRESS and the host bridge.
// Every other function on the bus belongs to a device model (the virtio
// transport embeds a *ConfigSpace and an *MSIX), which saves and restores
// them with ConfigSpace.SaveState/RestoreState and MSIX.SaveState/
// RestoreState as part of its own state.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadState is wrapped by every error a RestoreState in this package
// returns for an invalid state.
var ErrBadState = errors.New("invalid PCI state")

// ErrMSIXDeliver is wrapped by the error MSIX.RestoreState returns when the
// state was valid and restored, but sending the pending messages it made
// deliverable failed.
var ErrMSIXDeliver = errors.New("restored MSI-X could not deliver pending messages")

func badState(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadState, field, fmt.Sprintf(format, args...))
}

// BARState is one base address register (PCI 3.0 §6.2.5.1) as the device
// declared it and the guest (or firmware) programmed it.
type BARState struct {
	// Kind is what the BAR decodes: 0 unimplemented (also the high dword
	// of a 64-bit BAR, which the BAR below it describes), 1 I/O ports,
	// 2 32-bit memory, 3 64-bit memory. It must be the device's own.
	Kind BARKind
	// Size is the window's size in bytes, what sizing the BAR (write all
	// ones, read back) reveals. It must be the device's own.
	Size uint64
	// Prefetchable is bit 3 of a memory BAR. It must be the device's own.
	Prefetchable bool
	// Address is where the window is placed: the BAR's address bits (and
	// for a 64-bit BAR the next BAR's dword), 0 while unassigned. It must
	// agree with the BAR bytes in ConfigState.Config.
	Address uint64
}

// ConfigState is the saveable state of one function's configuration space.
type ConfigState struct {
	// Config is the 256 bytes of configuration space as the guest reads
	// them (§6.1): the type 0 header (vendor and device ID, command,
	// status, revision and class, cache line size, latency timer, header
	// type, BARs, subsystem IDs, capability pointer, interrupt line and
	// pin) and the capabilities above it. Every bit the guest cannot
	// write must equal the device's own, except status bit 3 (interrupt
	// status), which reports the device's INTx# level; the status
	// register's write-1-to-clear error bits may hold any value.
	// Exactly 256 bytes.
	Config []byte
	// BARs are the six base address registers, decoded, as a check on
	// Config: each must have the device's kind, size and
	// prefetchability, and the address Config holds.
	BARs [6]BARState
}

// SaveState returns the configuration space's state, under its lock.
func (c *ConfigSpace) SaveState() ConfigState {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ConfigState{Config: append([]byte(nil), c.regs[:]...)}
	for i := range s.BARs {
		s.BARs[i] = c.barStateLocked(i, &c.regs)
	}
	return s
}

// barStateLocked decodes BAR i from the register image regs, using the
// device's declaration of it.
func (c *ConfigSpace) barStateLocked(i int, regs *[ConfigSize]byte) BARState {
	b := c.bars[i]
	if b.kind == BARNone {
		return BARState{}
	}
	off := RegBAR0 + 4*i
	le := binary.LittleEndian
	addr := uint64(le.Uint32(regs[off:]) & le.Uint32(c.wmask[off:]))
	if b.kind == BARMem64 {
		addr |= uint64(le.Uint32(regs[off+4:])) << 32
	}
	return BARState{Kind: b.kind, Size: b.size, Prefetchable: b.prefetchable, Address: addr}
}

// checkStateLocked refuses a state that does not belong to this function.
func (c *ConfigSpace) checkStateLocked(s *ConfigState) error {
	if len(s.Config) != ConfigSize {
		return badState("Config", "%d bytes, configuration space is %d", len(s.Config), ConfigSize)
	}
	for o := 0; o < ConfigSize; o++ {
		ro := ^(c.wmask[o] | c.w1c[o])
		if o == RegStatus {
			ro &^= StatusInterrupt // the device's INTx# level, state
		}
		if diff := (s.Config[o] ^ c.regs[o]) & ro; diff != 0 {
			return badState("Config", "byte %#02x (%s) is %#02x, but its read-only bits %#02x must be %#02x as on this device",
				o, fieldName(&c.bars, c.caps, o), s.Config[o], ro, c.regs[o]&ro)
		}
	}
	var image [ConfigSize]byte
	copy(image[:], s.Config)
	for i, got := range s.BARs {
		field := fmt.Sprintf("BARs[%d]", i)
		want := c.barStateLocked(i, &image)
		switch {
		case got.Kind != want.Kind:
			return badState(field+".Kind", "%v, but this device's BAR%d is %v", got.Kind, i, want.Kind)
		case got.Size != want.Size:
			return badState(field+".Size", "%#x bytes, but this device's BAR%d is %#x bytes", got.Size, i, want.Size)
		case got.Prefetchable != want.Prefetchable:
			return badState(field+".Prefetchable", "%v, but this device's BAR%d is %v", got.Prefetchable, i, want.Prefetchable)
		case got.Address != want.Address:
			return badState(field+".Address", "%#x, but Config's BAR%d holds %#x", got.Address, i, want.Address)
		}
	}
	return nil
}

// RestoreState puts the guest-programmed part of configuration space into
// state s, after checking that s belongs to this function (see
// ConfigState); an invalid s is refused with an error wrapping ErrBadState
// and nothing changes.
//
// The configuration space drives nothing by itself, and the memory window
// looks BARs and the command register up on every access, so a restored
// BAR answers at once. What a device derives from its registers (a device
// that embeds ConfigSpace and overrides ConfigWrite to react to MSI-X being
// enabled, say, or that drives INTx# as status bit 3 says) is that
// device's to re-derive after calling RestoreState.
func (c *ConfigSpace) RestoreState(s ConfigState) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkStateLocked(&s); err != nil {
		return fmt.Errorf("pci: configuration space: %w", err)
	}
	copy(c.regs[:], s.Config)
	return nil
}

// State is the saveable state of the root bus: configuration mechanism
// #1's address latch and the host bridge. The functions in slots 1-31 are
// saved by the device models that own them.
type State struct {
	// ConfigAddress is CONFIG_ADDRESS (port 0xcf8, §3.2.2.3.2): bit 31
	// enable, bits 27:24 AMD's extended register bits, 23:16 bus, 15:11
	// device, 10:8 function, 7:2 register. Bits 30:28 and 1:0 read 0 and
	// must be 0.
	ConfigAddress uint32
	// HostBridge is the configuration space of the host bridge at
	// 00:00.0.
	HostBridge ConfigState
}

// SaveState returns the root's state, under its lock (and the host
// bridge's), so CONFIG_ADDRESS and the bridge are from one instant.
func (r *Root) SaveState() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return State{ConfigAddress: r.addr, HostBridge: r.bridge.SaveState()}
}

// RestoreState restores CONFIG_ADDRESS and the host bridge. An invalid s
// is refused with an error wrapping ErrBadState, naming the field, and
// neither changes. A guest stopped between writing CONFIG_ADDRESS and
// accessing CONFIG_DATA continues with the access it was about to make.
func (r *Root) RestoreState(s State) error {
	if s.ConfigAddress&^addrMask != 0 {
		return fmt.Errorf("pci: root: %w", badState("ConfigAddress", "%#08x sets bits 30:28 or 1:0, which read 0", s.ConfigAddress))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bridge
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkStateLocked(&s.HostBridge); err != nil {
		return fmt.Errorf("pci: root: HostBridge: %w", err)
	}
	r.addr = s.ConfigAddress
	copy(b.regs[:], s.HostBridge.Config)
	return nil
}

// MSIXEntryState is one MSI-X table entry (§6.8.2.6-§6.8.2.9).
type MSIXEntryState struct {
	// MessageAddress is the message address, upper and lower dword
	// together; on x86 0xFEExxxxx, selecting the destination local APIC.
	// Bits 1:0 are read-only zero (the address is dword aligned).
	MessageAddress uint64
	// MessageData is the 32-bit data word written, holding the vector.
	MessageData uint32
	// VectorControl is the vector control dword: bit 0 is the per-vector
	// mask; the other bits are reserved and must be 0.
	VectorControl uint32
}

// MSIXState is the saveable state of a function's MSI-X (§6.8.2): the
// message control bits the guest sets and the table and pending bits that
// live in the BAR. The capability's location, table size and BAR offsets
// are the device's shape, not state.
type MSIXState struct {
	// Enabled is message control bit 15, MSI-X Enable.
	Enabled bool
	// FunctionMask is message control bit 14, Function Mask: every
	// vector is masked, whatever its own mask bit says.
	FunctionMask bool
	// Table is the MSI-X table, entry n for vector n. It must have as
	// many entries as the device's table (message control bits 10:0,
	// plus one).
	Table []MSIXEntryState
	// PBA is the pending bit array as the guest reads it from the BAR:
	// bit n (byte n/8, bit n%8, little-endian qwords) set for a vector
	// whose message was held back by a mask. Its length is the table
	// size rounded up to 64 bits, in bytes; bits past the last vector
	// must be 0.
	PBA []byte
}

// SaveState returns the MSI-X state, under the table's lock and, for the
// message control bits, the configuration space's (the same lock order
// as Signal), so no message is half-way between pending and sent.
func (m *MSIX) SaveState() MSIXState {
	m.mu.Lock()
	defer m.mu.Unlock()
	ctl := m.control()
	s := MSIXState{
		Enabled:      ctl&MSIXEnable != 0,
		FunctionMask: ctl&MSIXFunctionMask != 0,
		Table:        make([]MSIXEntryState, len(m.entries)),
		PBA:          make([]byte, 8*len(m.pending)),
	}
	for i, e := range m.entries {
		s.Table[i] = MSIXEntryState{
			MessageAddress: uint64(e.addrHi)<<32 | uint64(e.addrLo),
			MessageData:    e.data,
			VectorControl:  e.control,
		}
	}
	for i, w := range m.pending {
		binary.LittleEndian.PutUint64(s.PBA[8*i:], w)
	}
	return s
}

func (m *MSIX) checkState(s *MSIXState) error {
	n := len(m.entries)
	if len(s.Table) != n {
		return badState("Table", "%d entries, but this device's table has %d", len(s.Table), n)
	}
	for i, e := range s.Table {
		if e.MessageAddress&3 != 0 {
			return badState(fmt.Sprintf("Table[%d].MessageAddress", i), "%#x is not dword aligned", e.MessageAddress)
		}
		if e.VectorControl&^1 != 0 {
			return badState(fmt.Sprintf("Table[%d].VectorControl", i), "%#x sets reserved bits (only bit 0, mask, exists)", e.VectorControl)
		}
	}
	if want := 8 * len(m.pending); len(s.PBA) != want {
		return badState("PBA", "%d bytes, but %d vectors take %d", len(s.PBA), n, want)
	}
	for bit := n; bit < 8*len(s.PBA); bit++ {
		if s.PBA[bit/8]&(1<<(bit%8)) != 0 {
			return badState("PBA", "bit %d set, but the table has only %d vectors", bit, n)
		}
	}
	return nil
}

// RestoreState puts the MSI-X table, pending bits and the message control
// enable and function mask bits into state s. An invalid s is refused with
// an error wrapping ErrBadState, naming the field, and nothing changes.
//
// The enable and function mask bits live in the configuration space's
// message control register, which ConfigSpace.RestoreState restores too;
// restore the ConfigSpace first and the MSIX second, and the MSIX state's
// bits are the ones that stay.
//
// A message pending for a vector that the restored masks let through is
// sent at once, as the hardware sends a pending message when its mask is
// lifted (it can be saved that way when a snapshot lands between a guest's
// unmask and the delivery). Restore the VM's interrupt controllers (local
// APICs) before the devices, or that message is wiped by their restore. If
// sending fails, the state is still restored and the error wraps
// ErrMSIXDeliver, as TableWrite returns an unmask's delivery error.
func (m *MSIX) RestoreState(s MSIXState) error {
	if err := m.checkState(&s); err != nil {
		return fmt.Errorf("pci: MSI-X: %w", err)
	}
	m.mu.Lock()
	for i, e := range s.Table {
		m.entries[i] = msixEntry{addrLo: uint32(e.MessageAddress), addrHi: uint32(e.MessageAddress >> 32),
			data: e.MessageData, control: e.VectorControl}
	}
	for i := range m.pending {
		m.pending[i] = binary.LittleEndian.Uint64(s.PBA[8*i:])
	}
	// Message control, under m.mu as Signal reads it.
	var ctl [2]byte
	m.cfg.mu.Lock()
	o := m.capOff + 2
	v := binary.LittleEndian.Uint16(m.cfg.regs[o:]) &^ (MSIXEnable | MSIXFunctionMask)
	if s.Enabled {
		v |= MSIXEnable
	}
	if s.FunctionMask {
		v |= MSIXFunctionMask
	}
	binary.LittleEndian.PutUint16(ctl[:], v)
	copy(m.cfg.regs[o:], ctl[:])
	m.cfg.mu.Unlock()
	m.mu.Unlock()
	if err := m.Unmasked(); err != nil {
		return fmt.Errorf("pci: MSI-X: %w: %w", ErrMSIXDeliver, err)
	}
	return nil
}
