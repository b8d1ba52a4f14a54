package pci

// MSI-X (PCI Local Bus 3.0 §6.8.2).
//
// A message-signalled interrupt is not a wire: the device raises it by
// writing a 32-bit data word to an address, and the write reaches the
// interrupt controller, not memory. On x86 the address is 0xFEExxxxx, where
// the bits below select the destination local APIC, and the data holds the
// vector (Intel SDM Vol. 3, §11.11). The OS chooses address and data; the
// device only stores them. MSI-X gives a device a table of such messages,
// one per interrupt source (a virtio device uses one per queue plus one for
// configuration changes), each with its own mask bit, in a BAR the OS maps:
//
//	table entry n, at table offset 16*n:
//	  +0  message address, low 32 bits
//	  +4  message address, high 32 bits
//	  +8  message data
//	  +12 vector control: bit 0 = masked
//
// and a pending bit array (PBA) where the device records a message it could
// not send because its entry, or the whole function, was masked: it must be
// sent when the mask is lifted, so an interrupt is delayed, never lost.
//
// The capability in configuration space says where table and PBA are:
//
//	+2  message control: bits 10:0 table size - 1, bit 14 function mask,
//	    bit 15 MSI-X enable
//	+4  table offset (bits 31:3) | BAR index (bits 2:0)
//	+8  PBA offset   (bits 31:3) | BAR index (bits 2:0)

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// MSI-X message control bits.
const (
	MSIXEnable       = 1 << 15
	MSIXFunctionMask = 1 << 14
)

// MSIXEntrySize is the size of one table entry.
const MSIXEntrySize = 16

// MSIXSink delivers a message. vector is the table index, so a sink that
// keeps per-vector state (an irqfd and its GSI route) can find it.
type MSIXSink interface {
	SendMSI(vector int, addr uint64, data uint32) error
}

// MSIX is the MSI-X state of one function: the capability in its
// configuration space, the table and the pending bits. Create it with
// AddMSIX.
type MSIX struct {
	cfg    *ConfigSpace
	capOff int
	bar    int
	table  uint64 // offsets in the BAR
	pba    uint64
	sink   MSIXSink

	mu      sync.Mutex
	entries []msixEntry
	pending []uint64 // one bit per vector
	sent    uint64   // messages delivered, for statistics
	masked  uint64   // messages held pending
}

type msixEntry struct {
	addrLo, addrHi, data, control uint32
}

// ErrMSIX is returned for a bad MSI-X declaration.
var ErrMSIX = errors.New("bad MSI-X declaration")

// AddMSIX adds an MSI-X capability with n vectors to cfg, its table at
// tableOff and its PBA at pbaOff in BAR bar (8-byte aligned, as the low
// three bits of the offset registers hold the BAR index). All vectors start
// masked, as the specification requires after reset.
func AddMSIX(cfg *ConfigSpace, n int, bar int, tableOff, pbaOff uint64, sink MSIXSink) (*MSIX, error) {
	if n < 1 || n > 2048 || bar < 0 || bar > 5 || tableOff%8 != 0 || pbaOff%8 != 0 || tableOff > 1<<32-8 || pbaOff > 1<<32-8 {
		return nil, fmt.Errorf("pci: MSI-X with %d vectors, table %#x, PBA %#x in BAR%d: %w", n, tableOff, pbaOff, bar, ErrMSIX)
	}
	body := make([]byte, 10)
	le := binary.LittleEndian
	le.PutUint16(body[0:], uint16(n-1))
	le.PutUint32(body[2:], uint32(tableOff)|uint32(bar))
	le.PutUint32(body[6:], uint32(pbaOff)|uint32(bar))
	mask := make([]byte, 10)
	le.PutUint16(mask[0:], MSIXEnable|MSIXFunctionMask)
	off, err := cfg.AddCapability(CapMSIX, body, mask)
	if err != nil {
		return nil, err
	}
	m := &MSIX{cfg: cfg, capOff: off, bar: bar, table: tableOff, pba: pbaOff, sink: sink,
		entries: make([]msixEntry, n), pending: make([]uint64, (n+63)/64)}
	m.Reset()
	return m, nil
}

// Reset masks every vector and forgets pending messages (function reset).
func (m *MSIX) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.entries {
		m.entries[i] = msixEntry{control: 1}
	}
	for i := range m.pending {
		m.pending[i] = 0
	}
}

// Vectors returns the table size.
func (m *MSIX) Vectors() int { return len(m.entries) }

// control reads message control from configuration space.
func (m *MSIX) control() uint16 {
	var b [2]byte
	m.cfg.Load(m.capOff+2, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

// Enabled reports whether the OS turned MSI-X on.
func (m *MSIX) Enabled() bool { return m.control()&MSIXEnable != 0 }

// Signal raises vector v: sends its message, or marks it pending when the
// vector or the function is masked. An out-of-range vector is an error (a
// driver that programmed a vector number the table does not have).
func (m *MSIX) Signal(v int) error {
	m.mu.Lock()
	// Message control is read under m.mu: a function unmask that lands
	// between this read and the pending bit below would otherwise run
	// Unmasked before the bit is set, and the message would stay pending
	// with nothing masked. Lock order is m.mu, then the config space's.
	ctl := m.control()
	if v < 0 || v >= len(m.entries) {
		m.mu.Unlock()
		return fmt.Errorf("pci: MSI-X vector %d of %d", v, len(m.entries))
	}
	if ctl&MSIXEnable == 0 {
		m.mu.Unlock()
		return fmt.Errorf("pci: MSI-X vector %d raised while MSI-X is disabled", v)
	}
	e := m.entries[v]
	if ctl&MSIXFunctionMask != 0 || e.control&1 != 0 {
		m.pending[v/64] |= 1 << (v % 64)
		m.masked++
		m.mu.Unlock()
		return nil
	}
	m.sent++
	m.mu.Unlock()
	return m.sink.SendMSI(v, uint64(e.addrHi)<<32|uint64(e.addrLo), e.data)
}

// Counts returns how many messages were sent and how many were held
// pending because of a mask.
func (m *MSIX) Counts() (sent, held uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent, m.masked
}

// Unmasked re-examines pending vectors after a mask was lifted (a table
// write or a message control write) and sends those now deliverable.
func (m *MSIX) Unmasked() error {
	ctl := m.control()
	if ctl&MSIXEnable == 0 || ctl&MSIXFunctionMask != 0 {
		return nil
	}
	type msg struct {
		v    int
		addr uint64
		data uint32
	}
	var due []msg
	m.mu.Lock()
	for v, e := range m.entries {
		if m.pending[v/64]&(1<<(v%64)) != 0 && e.control&1 == 0 {
			m.pending[v/64] &^= 1 << (v % 64)
			m.sent++
			due = append(due, msg{v, uint64(e.addrHi)<<32 | uint64(e.addrLo), e.data})
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, d := range due {
		errs = append(errs, m.sink.SendMSI(d.v, d.addr, d.data))
	}
	return errors.Join(errs...)
}

// Contains reports whether offset off of the BAR is in the table or the
// PBA, and which.
func (m *MSIX) Contains(bar int, off uint64) (table, pba bool) {
	if bar != m.bar {
		return false, false
	}
	n := uint64(len(m.entries))
	if off >= m.table && off-m.table < n*MSIXEntrySize {
		return true, false
	}
	if off >= m.pba && off-m.pba < (n+63)/64*8 {
		return false, true
	}
	return false, false
}

// TableRead reads the table or PBA at BAR offset off (4- or 8-byte
// accesses, naturally aligned, §6.8.2.2; others read all ones).
func (m *MSIX) TableRead(off uint64, data []byte) {
	fill(data, 0xff)
	if (len(data) != 4 && len(data) != 8) || off%uint64(len(data)) != 0 {
		return
	}
	table, pba := m.Contains(m.bar, off)
	m.mu.Lock()
	defer m.mu.Unlock()
	le := binary.LittleEndian
	for i := 0; i < len(data); i += 4 {
		o := off + uint64(i)
		var v uint32
		switch {
		case table:
			rel := o - m.table
			idx := rel / MSIXEntrySize
			if idx >= uint64(len(m.entries)) {
				continue
			}
			e := m.entries[idx]
			v = [4]uint32{e.addrLo, e.addrHi, e.data, e.control}[rel%MSIXEntrySize/4]
		case pba:
			rel := o - m.pba
			w := rel / 8
			if w >= uint64(len(m.pending)) {
				continue
			}
			v = uint32(m.pending[w] >> (32 * (rel % 8 / 4)))
		default:
			continue
		}
		le.PutUint32(data[i:], v)
	}
}

// TableWrite writes the table at BAR offset off. The PBA is read-only.
// Unmasking a vector with a pending message sends it.
func (m *MSIX) TableWrite(off uint64, data []byte) error {
	if (len(data) != 4 && len(data) != 8) || off%uint64(len(data)) != 0 {
		return fmt.Errorf("pci: MSI-X table write of %d bytes at %#x: not a naturally aligned dword or qword", len(data), off)
	}
	table, _ := m.Contains(m.bar, off)
	if !table {
		return nil // PBA writes are ignored
	}
	unmask := false
	le := binary.LittleEndian
	m.mu.Lock()
	for i := 0; i < len(data); i += 4 {
		rel := off + uint64(i) - m.table
		idx := rel / MSIXEntrySize
		if idx >= uint64(len(m.entries)) {
			continue
		}
		e := &m.entries[idx]
		v := le.Uint32(data[i:])
		switch rel % MSIXEntrySize / 4 {
		case 0:
			e.addrLo = v &^ 3 // message address is dword aligned
		case 1:
			e.addrHi = v
		case 2:
			e.data = v
		case 3:
			if e.control&1 != 0 && v&1 == 0 {
				unmask = true
			}
			e.control = v & 1 // other bits reserved
		}
	}
	m.mu.Unlock()
	if unmask {
		return m.Unmasked()
	}
	return nil
}

// Describe names an access to the table or PBA for the exit tracer.
func (m *MSIX) Describe(off uint64) string {
	table, pba := m.Contains(m.bar, off)
	switch {
	case table:
		rel := off - m.table
		return fmt.Sprintf("MSI-X table entry %d %s", rel/MSIXEntrySize,
			[4]string{"address low", "address high", "data", "vector control"}[rel%MSIXEntrySize/4])
	case pba:
		return "MSI-X pending bits"
	}
	return ""
}
