package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"kvmlab/devices/bus"
)

// machine is a Root on a real I/O bus, driven with the guest's IN and OUT.
type machine struct {
	t    testing.TB
	root *Root
	b    *bus.Bus
}

func newMachine(t testing.TB) *machine {
	t.Helper()
	m := &machine{t: t, root: NewRoot(), b: bus.New()}
	if err := m.root.Register(m.b); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *machine) out(port uint64, width int, v uint32) {
	m.t.Helper()
	data := make([]byte, width)
	for i := range data {
		data[i] = byte(v >> (8 * i))
	}
	res, err := m.b.Write(bus.PIO, port, data)
	if err != nil || !res.Handled {
		m.t.Fatalf("out %d bytes %#x to port %#x: handled %v, err %v", width, v, port, res.Handled, err)
	}
}

func (m *machine) in(port uint64, width int) uint32 {
	m.t.Helper()
	data := make([]byte, width)
	res, err := m.b.Read(bus.PIO, port, data)
	if err != nil || !res.Handled {
		m.t.Fatalf("in %d bytes from port %#x: handled %v, err %v", width, port, res.Handled, err)
	}
	var v uint32
	for i, b := range data {
		v |= uint32(b) << (8 * i)
	}
	return v
}

// conf1 is Linux's PCI_CONF1_ADDRESS(bus, devfn, reg).
func conf1(bus, dev, fn, reg int) uint32 {
	return 0x80000000 | uint32(reg&0xf00)<<16 | uint32(bus)<<16 | uint32(dev)<<11 | uint32(fn)<<8 | uint32(reg&0xfc)
}

// read is Linux's pci_conf1_read: a byte at 0xcfc + (reg & 3), a word at
// 0xcfc + (reg & 2), a dword at 0xcfc.
func (m *machine) read(bus, dev, fn, reg, width int) uint32 {
	m.t.Helper()
	m.out(0xcf8, 4, conf1(bus, dev, fn, reg))
	return m.in(uint64(0xcfc+reg&(4-width)), width)
}

func (m *machine) write(bus, dev, fn, reg, width int, v uint32) {
	m.t.Helper()
	m.out(0xcf8, 4, conf1(bus, dev, fn, reg))
	m.out(uint64(0xcfc+reg&(4-width)), width, v)
}

// testFunction is a network-controller-like device with a BAR of each kind
// and an MSI capability. It embeds ConfigSpace and overrides ConfigWrite,
// the way a real device with side effects does, to count command writes.
type testFunction struct {
	*ConfigSpace
	commandWrites int
}

func (f *testFunction) ConfigWrite(off int, data []byte) {
	f.ConfigSpace.ConfigWrite(off, data)
	if off <= RegCommand+1 && off+len(data) > RegCommand {
		f.commandWrites++
	}
}

func newTestFunction(t testing.TB) *testFunction {
	t.Helper()
	c := NewConfigSpace(0x1234, 0x5678, 0x020000, 0x9a)
	c.SetSubsystem(0x1af4, 0x0001)
	for _, err := range []error{
		c.SetBAR(0, BARMem32, 0x1000, false),
		c.SetBAR(1, BARIO, 0x20, false),
		c.SetBAR(2, BARMem64, 0x4000, true),
		c.SetInterruptPin(1),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// MSI, 32-bit address: message control (enable bit writable),
	// address, data.
	if _, err := c.AddCapability(CapMSI,
		[]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		[]byte{0x01, 0, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}); err != nil {
		t.Fatal(err)
	}
	return &testFunction{ConfigSpace: c}
}

// TestLinuxProbe replays arch/x86/pci/direct.c: pci_check_type1() with
// pci_sanity_check(), which must succeed on devfn 0, then
// pci_check_type2(), which must not think mechanism #2 is there.
func TestLinuxProbe(t *testing.T) {
	m := newMachine(t)
	type step struct {
		what  string
		write bool
		port  uint64
		width int
		v     uint32 // written, or expected
	}
	steps := []step{
		{"pci_check_type1: outb(0x01, 0xCFB)", true, 0xcfb, 1, 0x01},
		{"tmp = inl(0xCF8): nothing latched yet", false, 0xcf8, 4, 0},
		{"outl(0x80000000, 0xCF8)", true, 0xcf8, 4, 0x80000000},
		{"inl(0xCF8) == 0x80000000", false, 0xcf8, 4, 0x80000000},
		{"sanity: devfn 0 class, address", true, 0xcf8, 4, conf1(0, 0, 0, 0x0a)},
		{"sanity: inw(0xCFE) == PCI_CLASS_BRIDGE_HOST", false, 0xcfe, 2, 0x0600},
		{"sanity: devfn 0 vendor, address", true, 0xcf8, 4, conf1(0, 0, 0, 0x00)},
		{"sanity: inw(0xCFC) == PCI_VENDOR_ID_INTEL", false, 0xcfc, 2, 0x8086},
		{"outl(tmp, 0xCF8)", true, 0xcf8, 4, 0},
		{"restored", false, 0xcf8, 4, 0},
		{"pci_check_type2: outb(0x00, 0xCFB)", true, 0xcfb, 1, 0},
		{"outb(0x00, 0xCF8)", true, 0xcf8, 1, 0},
		{"outb(0x00, 0xCFA)", true, 0xcfa, 1, 0},
		{"inb(0xCF8) != 0x00: no mechanism #2", false, 0xcf8, 1, 0xff},
		{"inb(0xCFA) != 0x00", false, 0xcfa, 1, 0xff},
		{"byte writes left CONFIG_ADDRESS alone", false, 0xcf8, 4, 0},
		{"PIIX reset control write is ignored", true, 0xcf9, 1, 0x06},
		{"and CONFIG_ADDRESS is still intact", false, 0xcf8, 4, 0},
	}
	for i, s := range steps {
		if s.write {
			m.out(s.port, s.width, s.v)
			continue
		}
		if got := m.in(s.port, s.width); got != s.v {
			t.Errorf("step %d, %s: read %#x, want %#x", i, s.what, got, s.v)
		}
	}
}

// TestSanityCheckScan runs pci_sanity_check's loop over all 256 devfns of
// bus 0 and checks it stops at devfn 0.
func TestSanityCheckScan(t *testing.T) {
	m := newMachine(t)
	found := -1
	for devfn := 0; devfn < 0x100 && found < 0; devfn++ {
		dev, fn := devfn>>3, devfn&7
		if m.read(0, dev, fn, 0x0a, 2) == 0x0600 || m.read(0, dev, fn, 0x00, 2) == 0x8086 {
			found = devfn
		}
	}
	if found != 0 {
		t.Fatalf("sanity check found devfn %d, want 0", found)
	}
}

// TestEnumerate scans as pci_scan_slot does: the vendor/device dword of
// every function. Only 00:00.0 and the added slots answer.
func TestEnumerate(t *testing.T) {
	m := newMachine(t)
	for _, slot := range []int{3, 31} {
		if err := m.root.Add(slot, newTestFunction(t)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[[3]int]uint32{
		{0, 0, 0}:  0x29c08086,
		{0, 3, 0}:  0x56781234,
		{0, 31, 0}: 0x56781234,
	}
	for _, b := range []int{0, 1, 255} {
		for dev := range NumSlots {
			for fn := range 8 {
				w, ok := want[[3]int{b, dev, fn}]
				if !ok {
					w = 0xffffffff
				}
				if got := m.read(b, dev, fn, RegVendorID, 4); got != w {
					t.Errorf("%02x:%02x.%d: ID dword %#08x, want %#08x", b, dev, fn, got, w)
				}
			}
		}
	}
	// Header type of present functions says single-function, type 0.
	for _, dev := range []int{0, 3, 31} {
		if got := m.read(0, dev, 0, RegHeaderType, 1); got != 0 {
			t.Errorf("00:%02x.0 header type %#x, want 0", dev, got)
		}
	}
	// With the enable bit clear nothing answers, not even the bridge.
	m.out(0xcf8, 4, conf1(0, 0, 0, 0)&^0x80000000)
	if got := m.in(0xcfc, 4); got != 0xffffffff {
		t.Errorf("disabled read %#x, want all ones", got)
	}
}

// TestDataWidths reads and writes every width and byte lane of CONFIG_DATA.
func TestDataWidths(t *testing.T) {
	m := newMachine(t)
	f := newTestFunction(t)
	if err := m.root.Add(3, f); err != nil {
		t.Fatal(err)
	}
	reads := []struct {
		reg   int // latched register
		port  uint64
		width int
		want  uint32
	}{
		{0x00, 0xcfc, 4, 0x56781234},
		{0x00, 0xcfc, 2, 0x1234},
		{0x00, 0xcfe, 2, 0x5678},
		{0x00, 0xcfd, 2, 0x7812}, // unaligned word inside the dword
		{0x00, 0xcfc, 1, 0x34},
		{0x00, 0xcfd, 1, 0x12},
		{0x00, 0xcfe, 1, 0x78},
		{0x00, 0xcff, 1, 0x56},
		{0x08, 0xcfc, 4, 0x0200009a}, // revision 0x9a, class 02 00 00
		{0x08, 0xcfe, 2, 0x0200},
		{0x2c, 0xcfc, 4, 0x00011af4}, // subsystem
		{0x3c, 0xcfd, 1, 0x01},       // interrupt pin INTA#
		{0x34, 0xcfc, 1, 0x40},       // capability pointer
		{0x40, 0xcfc, 2, 0x0005},     // MSI, end of list
	}
	for _, r := range reads {
		m.out(0xcf8, 4, conf1(0, 3, 0, r.reg))
		if got := m.in(r.port, r.width); got != r.want {
			t.Errorf("reg %#02x, %d bytes at %#x: %#x, want %#x", r.reg, r.width, r.port, got, r.want)
		}
	}

	writes := []struct {
		reg   int
		port  uint64
		width int
		v     uint32
		want  uint32 // dword at reg afterwards
	}{
		{0x04, 0xcfc, 2, 0x0006, 0x00100006},     // mem + bus master; status has the cap bit
		{0x04, 0xcfc, 4, 0xffffffff, 0x00100547}, // only writable command bits, W1C status bits were clear
		{0x0c, 0xcfd, 1, 0x40, 0x00004000},       // latency timer
		{0x0c, 0xcfc, 1, 0x10, 0x00004010},       // cache line size
		{0x3c, 0xcfc, 1, 0x0b, 0x0000010b},       // interrupt line; pin stays
		{0x3c, 0xcfc, 4, 0xffffffff, 0x000001ff},
		{0x40, 0xcfe, 1, 0xff, 0x00010005}, // MSI enable is the only writable control bit
	}
	for _, w := range writes {
		m.out(0xcf8, 4, conf1(0, 3, 0, w.reg))
		m.out(w.port, w.width, w.v)
		if got := m.read(0, 3, 0, w.reg, 4); got != w.want {
			t.Errorf("after %d-byte write %#x at %#x, reg %#02x: %#08x, want %#08x", w.width, w.v, w.port, w.reg, got, w.want)
		}
	}
	if f.commandWrites != 2 {
		t.Errorf("function saw %d command writes, want 2", f.commandWrites)
	}
	if got := f.Command(); got != 0x0547 {
		t.Errorf("Command() = %#x", got)
	}
}

// TestBARSizing runs Linux's __pci_read_base on each kind of BAR: save,
// write all ones, read the size mask, restore; then assigns an address.
func TestBARSizing(t *testing.T) {
	tests := []struct {
		name     string
		bar      int
		kind     BARKind
		size     uint64
		prefetch bool
		mask     [2]uint32 // read back after writing ones (low, high)
		addr     uint64    // then placed here
	}{
		{"mem32 4K", 0, BARMem32, 0x1000, false, [2]uint32{0xfffff000}, 0xfebf0000},
		{"mem32 prefetchable 1M", 3, BARMem32, 1 << 20, true, [2]uint32{0xfff00008}, 0xfd000000},
		{"mem32 2G", 5, BARMem32, 1 << 31, false, [2]uint32{0x80000000}, 0x80000000},
		{"mem64 prefetchable 16K", 2, BARMem64, 0x4000, true, [2]uint32{0xffffc00c, 0xffffffff}, 0x8000004000},
		{"mem64 8G", 0, BARMem64, 8 << 30, false, [2]uint32{0x00000004, 0xfffffffe}, 0x4_0000_0000},
		{"mem64 16 bytes", 4, BARMem64, 16, false, [2]uint32{0xfffffff4, 0xffffffff}, 0xfffffffffffffff0},
		{"io 32", 1, BARIO, 0x20, false, [2]uint32{0x0000ffe1}, 0xc040},
		{"io 4", 4, BARIO, 4, false, [2]uint32{0x0000fffd}, 0xfffc},
		{"io 256", 0, BARIO, 256, false, [2]uint32{0x0000ff01}, 0x1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t)
			c := NewConfigSpace(0x1234, 0x0001, 0xff0000, 0)
			if err := c.SetBAR(tc.bar, tc.kind, tc.size, tc.prefetch); err != nil {
				t.Fatal(err)
			}
			if err := m.root.Add(7, c); err != nil {
				t.Fatal(err)
			}
			dwords := 1
			if tc.kind == BARMem64 {
				dwords = 2
			}
			var sized uint64
			for d := range dwords {
				reg := RegBAR0 + 4*(tc.bar+d)
				orig := m.read(0, 7, 0, reg, 4)
				m.write(0, 7, 0, reg, 4, 0xffffffff)
				got := m.read(0, 7, 0, reg, 4)
				m.write(0, 7, 0, reg, 4, orig)
				if got != tc.mask[d] {
					t.Errorf("BAR%d after writing ones: %#08x, want %#08x", tc.bar+d, got, tc.mask[d])
				}
				if after := m.read(0, 7, 0, reg, 4); after != orig {
					t.Errorf("BAR%d not restored: %#08x, want %#08x", tc.bar+d, after, orig)
				}
				sized |= uint64(got) << (32 * d)
			}
			// Decode the size the way software does.
			addrMask := ^uint64(0xf)
			if tc.kind == BARIO {
				addrMask = 0xfffc
			}
			if tc.kind != BARMem64 {
				addrMask &= 0xffffffff
			}
			if size := (^(sized & addrMask) + 1) & addrMask; size != tc.size {
				t.Errorf("decoded size %#x, want %#x", size, tc.size)
			}
			// Program the address as the OS does, one dword at a time.
			for d := range dwords {
				m.write(0, 7, 0, RegBAR0+4*(tc.bar+d), 4, uint32(tc.addr>>(32*d)))
			}
			b := c.BAR(tc.bar)
			want := BAR{Kind: tc.kind, Size: tc.size, Prefetchable: tc.prefetch, Address: tc.addr}
			if b != want {
				t.Errorf("BAR(%d) = %+v, want %+v", tc.bar, b, want)
			}
			// Every other BAR and the ROM BAR are unimplemented: zero
			// even after writing ones.
			for reg := RegBAR0; reg <= RegExpansionROM; reg += 4 {
				i := (reg - RegBAR0) / 4
				if i == tc.bar || (dwords == 2 && i == tc.bar+1) {
					continue
				}
				m.write(0, 7, 0, reg, 4, 0xffffffff)
				if got := m.read(0, 7, 0, reg, 4); got != 0 {
					t.Errorf("unimplemented reg %#02x reads %#08x after writing ones", reg, got)
				}
			}
		})
	}
}

func TestSetBARAddress(t *testing.T) {
	c := NewConfigSpace(0x1234, 1, 0, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.SetBAR(0, BARMem64, 0x1000, true))
	must(c.SetBAR(2, BARIO, 0x10, false))
	must(c.SetBARAddress(0, 0x1_0000_2000))
	must(c.SetBARAddress(2, 0x6010))
	if b := c.BAR(0); b.Address != 0x1_0000_2000 || b.Kind != BARMem64 || !b.Prefetchable {
		t.Errorf("BAR0 %+v", b)
	}
	if b := c.BAR(2); b.Address != 0x6010 {
		t.Errorf("BAR2 %+v", b)
	}
	var low [4]byte
	c.Load(RegBAR0, low[:])
	if v := binary.LittleEndian.Uint32(low[:]); v != 0x0000200c {
		t.Errorf("BAR0 low dword %#08x, want type bits kept", v)
	}
	for _, tc := range []struct {
		i    int
		addr uint64
	}{{0, 0x1001}, {1, 0}, {2, 0x6008}, {2, 0x10000}, {3, 0}, {6, 0}, {-1, 0}} {
		if err := c.SetBARAddress(tc.i, tc.addr); !errors.Is(err, ErrBadBAR) {
			t.Errorf("SetBARAddress(%d, %#x) = %v, want ErrBadBAR", tc.i, tc.addr, err)
		}
	}
}

func TestSetBARErrors(t *testing.T) {
	tests := []struct {
		name     string
		i        int
		kind     BARKind
		size     uint64
		prefetch bool
	}{
		{"index -1", -1, BARMem32, 0x1000, false},
		{"index 6", 6, BARMem32, 0x1000, false},
		{"size 0", 0, BARMem32, 0, false},
		{"size not power of two", 0, BARMem32, 0x3000, false},
		{"mem too small", 0, BARMem32, 8, false},
		{"mem32 4G", 0, BARMem32, 1 << 32, false},
		{"io too small", 0, BARIO, 2, false},
		{"io too big", 0, BARIO, 512, false},
		{"io prefetchable", 0, BARIO, 16, true},
		{"mem64 at BAR5", 5, BARMem64, 0x1000, false},
		{"kind none", 0, BARNone, 0x1000, false},
		{"unknown kind", 0, BARKind(9), 0x1000, false},
		{"BAR1 taken", 1, BARMem32, 0x1000, false},
		{"high half of BAR2", 3, BARMem32, 0x1000, false},
		{"mem64 over taken BAR1", 0, BARMem64, 0x1000, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfigSpace(0x1234, 1, 0, 0)
			if err := c.SetBAR(1, BARIO, 16, false); err != nil {
				t.Fatal(err)
			}
			if err := c.SetBAR(2, BARMem64, 0x1000, false); err != nil {
				t.Fatal(err)
			}
			if err := c.SetBAR(tc.i, tc.kind, tc.size, tc.prefetch); !errors.Is(err, ErrBadBAR) {
				t.Errorf("SetBAR = %v, want ErrBadBAR", err)
			}
		})
	}
}

// TestReadOnly writes all ones, then all zeros, to every register of the
// host bridge and checks which bits moved.
func TestReadOnly(t *testing.T) {
	m := newMachine(t)
	before := make([]uint32, ConfigSize/4)
	for i := range before {
		before[i] = m.read(0, 0, 0, 4*i, 4)
	}
	// Writable bits of the host bridge, per dword.
	writable := map[int]uint32{
		RegCommand:       0x0547,
		RegCacheLineSize: 0xffff, // cache line size and latency timer
		RegInterruptLine: 0x00ff,
	}
	for _, fill := range []uint32{0xffffffff, 0} {
		for i := range before {
			m.write(0, 0, 0, 4*i, 4, fill)
		}
		for i, b := range before {
			w := writable[4*i]
			want := b&^w | fill&w
			if got := m.read(0, 0, 0, 4*i, 4); got != want {
				t.Errorf("after writing %#08x, reg %#02x (%s) = %#08x, want %#08x", fill, 4*i, headerField(4*i), got, want)
			}
		}
	}
	tests := []struct {
		name  string
		reg   int
		width int
		want  uint32
	}{
		{"vendor ID", RegVendorID, 2, 0x8086},
		{"device ID", RegDeviceID, 2, 0x29c0},
		{"class", RegSubclass, 2, 0x0600},
		{"header type", RegHeaderType, 1, 0},
		{"no capabilities", RegStatus, 2, 0},
		{"capability pointer", RegCapPointer, 1, 0},
	}
	for _, tc := range tests {
		m.write(0, 0, 0, tc.reg, tc.width, 0x5a5a)
		if got := m.read(0, 0, 0, tc.reg, tc.width); got != tc.want {
			t.Errorf("%s: %#x after writing, want %#x", tc.name, got, tc.want)
		}
	}
}

// TestStatusW1C checks the error bits of the status register: a device sets
// them, the guest clears them by writing ones, and zeros leave them.
func TestStatusW1C(t *testing.T) {
	m := newMachine(t)
	f := newTestFunction(t)
	if err := m.root.Add(2, f); err != nil {
		t.Fatal(err)
	}
	// Received master abort and detected parity error.
	f.Store(RegStatus, []byte{StatusCapList, 0xa0})
	f.SetInterruptStatus(true)
	steps := []struct {
		write uint32
		want  uint32
	}{
		{0x0000, 0xa018},
		{0x2000, 0x8018}, // clears master abort only
		{0x0018, 0x8018}, // interrupt status and capability bits are read-only
		{0xffff, 0x0018},
	}
	for _, s := range steps {
		m.write(0, 2, 0, RegStatus, 2, s.write)
		if got := m.read(0, 2, 0, RegStatus, 2); got != s.want {
			t.Errorf("after writing %#04x to status: %#04x, want %#04x", s.write, got, s.want)
		}
	}
	f.SetInterruptStatus(false)
	if got := m.read(0, 2, 0, RegStatus, 2); got != 0x0010 {
		t.Errorf("status %#04x after deasserting, want 0x0010", got)
	}
}

func TestCapabilities(t *testing.T) {
	c := NewConfigSpace(0x1234, 1, 0, 0)
	offs := []int{}
	for _, cp := range []struct {
		id   uint8
		body int
	}{{CapMSIX, 10}, {CapVendor, 1}, {CapPM, 6}} {
		off, err := c.AddCapability(cp.id, make([]byte, cp.body), nil)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	if want := []int{0x40, 0x4c, 0x50}; fmt.Sprint(offs) != fmt.Sprint(want) {
		t.Fatalf("offsets %v, want %v", offs, want)
	}
	// Walk the list as an OS does (pci_find_capability).
	var hdr [2]byte
	c.ConfigRead(RegStatus, hdr[:])
	if hdr[0]&StatusCapList == 0 {
		t.Fatal("status capabilities-list bit clear")
	}
	var got []string
	c.ConfigRead(RegCapPointer, hdr[:1])
	for p := int(hdr[0]); p != 0; p = int(hdr[1]) {
		c.ConfigRead(p, hdr[:])
		got = append(got, fmt.Sprintf("%#02x@%#02x", hdr[0], p))
	}
	if want := "[0x11@0x40 0x09@0x4c 0x01@0x50]"; fmt.Sprint(got) != want {
		t.Errorf("list %v, want %s", got, want)
	}
	// Headers are read-only.
	c.ConfigWrite(0x40, []byte{0xff, 0xff})
	c.ConfigRead(0x40, hdr[:])
	if hdr != [2]byte{CapMSIX, 0x4c} {
		t.Errorf("MSI-X header %x after writing", hdr)
	}
	// Running out of room and bad masks are errors.
	if _, err := c.AddCapability(CapVendor, make([]byte, 0xb0), nil); !errors.Is(err, ErrCapacity) {
		t.Errorf("oversized capability: %v", err)
	}
	if _, err := c.AddCapability(CapVendor, make([]byte, 4), make([]byte, 3)); !errors.Is(err, ErrBadLength) {
		t.Errorf("short mask: %v", err)
	}
	// Filling exactly to 0xff works.
	if off, err := c.AddCapability(CapVendor, make([]byte, 0x100-0x58-2), nil); err != nil || off != 0x58 {
		t.Errorf("last capability at %#x: %v", off, err)
	}
	if _, err := c.AddCapability(CapVendor, nil, nil); !errors.Is(err, ErrCapacity) {
		t.Errorf("capability in a full space: %v", err)
	}
}

func TestAdd(t *testing.T) {
	r := NewRoot()
	ok := NewConfigSpace(0x1234, 1, 0, 0)
	if err := r.Add(5, ok); err != nil {
		t.Fatal(err)
	}
	if r.Function(5) != ok || r.Function(0) != r.HostBridge() || r.Function(6) != nil || r.Function(32) != nil || r.Function(-1) != nil {
		t.Error("Function does not return what was added")
	}
	tests := []struct {
		name string
		slot int
		f    Function
		want error
	}{
		{"slot 0 is the host bridge", 0, ok, ErrSlot},
		{"slot 32", 32, ok, ErrSlot},
		{"slot -1", -1, ok, ErrSlot},
		{"slot taken", 5, NewConfigSpace(0x1234, 2, 0, 0), ErrSlot},
		{"nil", 6, nil, ErrNoFunction},
		{"vendor 0xffff", 6, NewConfigSpace(0xffff, 1, 0, 0), ErrNoFunction},
		{"vendor 0", 6, NewConfigSpace(0, 1, 0, 0), ErrNoFunction},
	}
	for _, tc := range tests {
		if err := r.Add(tc.slot, tc.f); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestAddressRegister checks what CONFIG_ADDRESS keeps: reserved bits 30:28
// and 1:0 read as zero, AMD's extended register bits 27:24 are kept and
// take the access beyond the 256 bytes, where it reads all ones.
func TestAddressRegister(t *testing.T) {
	m := newMachine(t)
	tests := []struct {
		write, read uint32
		data        uint32 // dword at CONFIG_DATA
	}{
		{0x80000000, 0x80000000, 0x29c08086},
		{0xffffffff, 0x8ffffffc, 0xffffffff},
		{0x80000003, 0x80000000, 0x29c08086}, // bits 1:0 ignored
		{0xf0000000, 0x80000000, 0x29c08086}, // bits 30:28 ignored
		{0x81000000, 0x81000000, 0xffffffff}, // register 0x100
		{0x00000000, 0x00000000, 0xffffffff},
		{0x7fffffff, 0x0ffffffc, 0xffffffff},
	}
	for _, tc := range tests {
		m.out(0xcf8, 4, tc.write)
		if got := m.in(0xcf8, 4); got != tc.read {
			t.Errorf("wrote %#08x, CONFIG_ADDRESS reads %#08x, want %#08x", tc.write, got, tc.read)
		}
		if got := m.in(0xcfc, 4); got != tc.data {
			t.Errorf("wrote %#08x, CONFIG_DATA reads %#08x, want %#08x", tc.write, got, tc.data)
		}
	}
	// Writes beyond the 256 bytes are dropped, not aliased onto the header.
	m.out(0xcf8, 4, conf1(0, 0, 0, 0x104))
	m.out(0xcfc, 4, 0xffffffff)
	if got := m.read(0, 0, 0, RegCommand, 4); got != 0 {
		t.Errorf("extended write reached the command register: %#08x", got)
	}
}

// TestBadAccesses calls the port devices directly with accesses the bus
// would never pass and widths a hostile guest could make.
func TestBadAccesses(t *testing.T) {
	r := NewRoot()
	ports := map[string]bus.Device{"address": r.AddressPort(), "data": r.DataPort()}
	tests := []struct {
		off   uint64
		width int
		bad   bool
	}{
		{0, 0, true}, {0, 3, true}, {0, 8, true}, {4, 1, true}, {1 << 63, 1, true},
		{3, 2, true}, {2, 4, true}, {1, 4, true}, {0, 4, false}, {1, 2, false}, {3, 1, false},
	}
	for name, p := range ports {
		for _, tc := range tests {
			data := make([]byte, tc.width)
			err := p.Read(tc.off, data)
			if (err != nil) != tc.bad || (tc.bad && !errors.Is(err, ErrBadWidth)) {
				t.Errorf("%s read %d bytes at %d: err %v, want bad=%v", name, tc.width, tc.off, err, tc.bad)
			}
			if tc.bad {
				for _, b := range data {
					if b != 0xff {
						t.Errorf("%s bad read filled %x, want all 0xff", name, data)
						break
					}
				}
			}
			if err := p.Write(tc.off, data); (err != nil) != tc.bad {
				t.Errorf("%s write %d bytes at %d: err %v", name, tc.width, tc.off, err)
			}
			_ = p.(bus.Describer).Describe(tc.off, true, data)
		}
	}
	// Direct ConfigSpace calls the Root would never make are harmless.
	c := r.HostBridge()
	for _, tc := range []struct{ off, n int }{{-1, 1}, {256, 1}, {255, 2}, {2, 4}, {0, 3}, {1 << 40, 1}} {
		data := make([]byte, tc.n)
		c.ConfigRead(tc.off, data)
		c.ConfigWrite(tc.off, data)
		_ = c.RegisterName(tc.off, tc.n)
	}
	var id [4]byte
	c.Load(0, id[:])
	if binary.LittleEndian.Uint32(id[:]) != 0x29c08086 {
		t.Errorf("host bridge ID changed: %x", id)
	}
}

func TestDescribe(t *testing.T) {
	r := NewRoot()
	f := newTestFunction(t)
	if err := f.SetBARAddress(0, 0xfebf0000); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(3, f); err != nil {
		t.Fatal(err)
	}
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	le16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	a, d := r.AddressPort(), r.DataPort()
	latch := func(v uint32) {
		if err := a.Write(0, le32(v)); err != nil {
			t.Fatal(err)
		}
	}
	// access runs the access first, as the tracer sees it, then describes.
	access := func(p bus.Device, off uint64, write bool, data []byte) string {
		if write {
			_ = p.Write(off, data)
		} else {
			_ = p.Read(off, data)
		}
		return p.(bus.Describer).Describe(off, write, data)
	}
	tests := []struct {
		name  string
		latch uint32 // CONFIG_ADDRESS before the access (ignored for the address port)
		port  bus.Device
		off   uint64
		write bool
		data  []byte
		want  string
	}{
		{"BAR read", 0x80001810, d, 0, false, make([]byte, 4), "PCI config read 00:03.0 reg 0x10 = 0xfebf0000 (BAR0)"},
		{"address write", 0, a, 0, true, le32(0x80001810), "PCI CONFIG_ADDRESS write 0x80001810 (00:03.0 reg 0x10)"},
		{"address read", 0x80000000, a, 0, false, make([]byte, 4), "PCI CONFIG_ADDRESS read 0x80000000 (00:00.0 reg 0x00)"},
		{"address disabled", 0, a, 0, true, le32(0x00001810), "PCI CONFIG_ADDRESS write 0x00001810 (disabled)"},
		{"class word", 0x80000008, d, 2, false, make([]byte, 2), "PCI config read 00:00.0 reg 0x0a = 0x0600 (class code)"},
		{"ID dword", 0x80000000, d, 0, false, make([]byte, 4), "PCI config read 00:00.0 reg 0x00 = 0x29c08086 (vendor ID, device ID)"},
		{"revision and class", 0x80001808, d, 0, false, make([]byte, 4), "PCI config read 00:03.0 reg 0x08 = 0x0200009a (revision ID, class code)"},
		{"command write", 0x80001804, d, 0, true, le16(0x0007), "PCI config write 00:03.0 reg 0x04 = 0x0007 (command)"},
		{"64-bit BAR high", 0x8000181c, d, 0, false, make([]byte, 4), "PCI config read 00:03.0 reg 0x1c = 0x00000000 (BAR3: high dword of 64-bit BAR2)"},
		{"MSI cap", 0x80001840, d, 2, true, le16(1), "PCI config write 00:03.0 reg 0x42 = 0x0001 (MSI capability at 0x40 +0x2)"},
		{"device-specific", 0x80001880, d, 0, false, make([]byte, 4), "PCI config read 00:03.0 reg 0x80 = 0x00000000 (device-specific)"},
		{"absent", 0x80002800, d, 0, false, make([]byte, 2), "PCI config read 00:05.0 reg 0x00 = 0xffff (vendor ID; no device)"},
		{"absent write", 0x80002804, d, 0, true, le16(7), "PCI config write 00:05.0 reg 0x04 = 0x0007 (command; no device, dropped)"},
		{"function 1", 0x80000100, d, 0, false, make([]byte, 4), "PCI config read 00:00.1 reg 0x00 = 0xffffffff (vendor ID, device ID; single-function device)"},
		{"other bus", 0x80010000, d, 0, false, make([]byte, 4), "PCI config read 01:00.0 reg 0x00 = 0xffffffff (vendor ID, device ID; no bus 1)"},
		{"extended", 0x81000000, d, 0, false, make([]byte, 4), "PCI config read 00:00.0 reg 0x100 = 0xffffffff (extended; beyond the 256-byte configuration space)"},
		{"data disabled", 0, d, 0, false, make([]byte, 4), "PCI config read 0xffffffff with CONFIG_ADDRESS disabled"},
		{"0xcfb probe", 0, a, 3, true, []byte{1}, "PCI port 0xcfb write 0x01 ignored (only dword accesses reach CONFIG_ADDRESS)"},
		{"reset control", 0, a, 1, true, []byte{6}, "PCI port 0xcf9 write 0x06 ignored (PIIX reset control register, not emulated)"},
		{"bad address width", 0, a, 0, false, make([]byte, 3), "PCI CONFIG_ADDRESS bad 3-byte read at offset 0"},
		{"bad data width", 0, d, 2, true, make([]byte, 4), "PCI CONFIG_DATA bad 4-byte write at offset 2"},
	}
	for _, tc := range tests {
		latch(tc.latch)
		if got := access(tc.port, tc.off, tc.write, tc.data); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// A Function that only implements the interface, without RegisterNamer, is
// described with the standard header names.
type bareFunction struct{ c *ConfigSpace }

func (b bareFunction) ConfigRead(off int, data []byte)  { b.c.ConfigRead(off, data) }
func (b bareFunction) ConfigWrite(off int, data []byte) { b.c.ConfigWrite(off, data) }

func TestDescribeWithoutNamer(t *testing.T) {
	r := NewRoot()
	if err := r.Add(1, bareFunction{NewConfigSpace(0x1234, 1, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddressPort().Write(0, []byte{0x10, 0x08, 0, 0x80}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4)
	if err := r.DataPort().Read(0, data); err != nil {
		t.Fatal(err)
	}
	want := "PCI config read 00:01.0 reg 0x10 = 0x00000000 (BAR0)"
	if got := r.DataPort().(bus.Describer).Describe(0, false, data); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRegisterOverlap(t *testing.T) {
	b := bus.New()
	if err := NewRoot().Register(b); err != nil {
		t.Fatal(err)
	}
	if err := NewRoot().Register(b); !errors.Is(err, bus.ErrOverlap) {
		t.Errorf("second root: %v, want ErrOverlap", err)
	}
}
