package pci

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The tests here play the OS side of MSI-X (PCI Local Bus 3.0 §6.8.2) the
// way Linux's drivers/pci/msi/msi.c does: find the capability by walking
// the list, program each table entry with dword writes (address low,
// address high, data, then vector control to unmask), and set the enable
// and function mask bits in message control.

// Layout of the function the tests build: table and PBA in BAR0, where a
// virtio device has them.
const (
	msixTestBAR   = 0
	msixTestTable = 0x4000
	msixTestPBA   = 0x6000
)

// msixMsg is one message the sink got.
type msixMsg struct {
	vector int
	addr   uint64
	data   uint32
}

// msixSink is a fake MSIXSink that records every message. check, when set,
// runs inside SendMSI, so an invariant can be checked at the moment of
// delivery.
type msixSink struct {
	mu    sync.Mutex
	msgs  []msixMsg
	err   error
	check func(msixMsg)
}

func (s *msixSink) SendMSI(vector int, addr uint64, data uint32) error {
	m := msixMsg{vector, addr, data}
	if s.check != nil {
		s.check(m)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	return s.err
}

// take returns the messages recorded since the last call.
func (s *msixSink) take() []msixMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs
	s.msgs = nil
	return m
}

// msixRig is a function with a 32 KiB memory BAR and n MSI-X vectors.
type msixRig struct {
	t    testing.TB
	cfg  *ConfigSpace
	m    *MSIX
	sink *msixSink
	cap  int // capability offset, found by walking the list
}

func newMSIXRig(t testing.TB, n int) *msixRig {
	t.Helper()
	cfg := NewConfigSpace(0x1af4, 0x1044, 0xff0000, 1)
	if err := cfg.SetBAR(msixTestBAR, BARMem32, 0x8000, false); err != nil {
		t.Fatal(err)
	}
	sink := &msixSink{}
	m, err := AddMSIX(cfg, n, msixTestBAR, msixTestTable, msixTestPBA, sink)
	if err != nil {
		t.Fatal(err)
	}
	r := &msixRig{t: t, cfg: cfg, m: m, sink: sink, cap: findCap(cfg, CapMSIX)}
	if r.cap == 0 {
		t.Fatal("no MSI-X capability in the list")
	}
	return r
}

// findCap walks the capability list (§6.7) as pci_find_capability does and
// returns the offset of the first capability with the given ID, or 0.
func findCap(f Function, id uint8) int {
	var b [1]byte
	f.ConfigRead(RegCapPointer, b[:])
	for off, n := int(b[0]), 0; off != 0 && n < 48; n++ {
		var hdr [2]byte
		f.ConfigRead(off, hdr[:])
		if hdr[0] == id {
			return off
		}
		off = int(hdr[1])
	}
	return 0
}

func (r *msixRig) cfgRead(off, n int) uint32 {
	b := make([]byte, n)
	r.cfg.ConfigRead(off, b)
	var v uint32
	for i, x := range b {
		v |= uint32(x) << (8 * i)
	}
	return v
}

// control writes message control as the OS does and then calls Unmasked,
// as the device that owns the capability must after every configuration
// write (virtio's transport does it in its ConfigWrite).
func (r *msixRig) control(enable, fmask bool) error {
	var v uint16
	if enable {
		v |= MSIXEnable
	}
	if fmask {
		v |= MSIXFunctionMask
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	r.cfg.ConfigWrite(r.cap+2, b[:])
	return r.m.Unmasked()
}

func (r *msixRig) write32(off uint64, v uint32) {
	r.t.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := r.m.TableWrite(off, b[:]); err != nil {
		r.t.Fatalf("table write %#x at %#x: %v", v, off, err)
	}
}

func (r *msixRig) read32(off uint64) uint32 {
	var b [4]byte
	r.m.TableRead(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// entry programs table entry v the way Linux's pci_write_msg_msix does:
// address low, address high, data, then the vector control word.
func (r *msixRig) entry(v int, addr uint64, data uint32, masked bool) {
	r.t.Helper()
	base := uint64(msixTestTable + MSIXEntrySize*v)
	r.write32(base+0, uint32(addr))
	r.write32(base+4, uint32(addr>>32))
	r.write32(base+8, data)
	ctl := uint32(0)
	if masked {
		ctl = 1
	}
	r.write32(base+12, ctl)
}

// pending reads vector v's PBA bit (§6.8.2.10).
func (r *msixRig) pending(v int) bool {
	w := r.read32(uint64(msixTestPBA + 4*(v/32)))
	return w&(1<<(v%32)) != 0
}

func TestAddMSIXErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n, bar     int
		table, pba uint64
	}{
		{"no vectors", 0, 0, 0, 0x800},
		{"more than 2048 vectors", 2049, 0, 0, 0x8000},
		{"negative BAR", 1, -1, 0, 0x800},
		{"BAR 6", 1, 6, 0, 0x800},
		// The low three bits of the offset registers are the BIR.
		{"table not 8-byte aligned", 1, 0, 4, 0x800},
		{"PBA not 8-byte aligned", 1, 0, 0, 0x804},
		{"table beyond 32 bits", 1, 0, 1 << 32, 0x800},
		{"PBA beyond 32 bits", 1, 0, 0, 1 << 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfigSpace(0x1af4, 0x1044, 0xff0000, 1)
			_, err := AddMSIX(cfg, tc.n, tc.bar, tc.table, tc.pba, &msixSink{})
			if !errors.Is(err, ErrMSIX) {
				t.Fatalf("AddMSIX: %v, want ErrMSIX", err)
			}
		})
	}
	// A capability list that is full is reported as such.
	cfg := NewConfigSpace(0x1af4, 0x1044, 0xff0000, 1)
	if _, err := cfg.AddCapability(CapVendor, make([]byte, ConfigSize-HeaderSize-4), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := AddMSIX(cfg, 1, 0, 0, 0x800, &msixSink{}); !errors.Is(err, ErrCapacity) {
		t.Fatalf("AddMSIX into a full list: %v, want ErrCapacity", err)
	}
}

// TestMSIXCapability checks the capability structure an OS reads
// (§6.8.2.1-§6.8.2.5) and which of its bits the OS may change.
func TestMSIXCapability(t *testing.T) {
	for _, tc := range []struct {
		n, bar     int
		table, pba uint64
	}{
		{1, 0, 0x4000, 0x6000},
		{3, 2, 0x0, 0x800},
		{2048, 5, 0x10000, 0x8000},
	} {
		cfg := NewConfigSpace(0x1af4, 0x1044, 0xff0000, 1)
		m, err := AddMSIX(cfg, tc.n, tc.bar, tc.table, tc.pba, &msixSink{})
		if err != nil {
			t.Fatal(err)
		}
		r := &msixRig{t: t, cfg: cfg, m: m, cap: findCap(cfg, CapMSIX)}
		if r.cap == 0 {
			t.Fatalf("%d vectors: no MSI-X capability", tc.n)
		}
		if got := m.Vectors(); got != tc.n {
			t.Errorf("Vectors() = %d, want %d", got, tc.n)
		}
		if got, want := r.cfgRead(r.cap+2, 2), uint32(tc.n-1); got != want {
			t.Errorf("message control %#x, want table size field %#x, disabled, unmasked", got, want)
		}
		if got, want := r.cfgRead(r.cap+4, 4), uint32(tc.table)|uint32(tc.bar); got != want {
			t.Errorf("table offset/BIR %#x, want %#x", got, want)
		}
		if got, want := r.cfgRead(r.cap+8, 4), uint32(tc.pba)|uint32(tc.bar); got != want {
			t.Errorf("PBA offset/BIR %#x, want %#x", got, want)
		}
		// Only enable and function mask are writable; the table size
		// and both offset registers are read-only (§6.8.2.3-5).
		cfg.ConfigWrite(r.cap, []byte{0xff, 0xff, 0xff, 0xff})
		cfg.ConfigWrite(r.cap+4, []byte{0xff, 0xff, 0xff, 0xff})
		cfg.ConfigWrite(r.cap+8, []byte{0xff, 0xff, 0xff, 0xff})
		if got, want := r.cfgRead(r.cap, 4), uint32(MSIXEnable|MSIXFunctionMask|(tc.n-1))<<16|CapMSIX; got != want {
			t.Errorf("after writing ones: header+control %#x, want %#x", got, want)
		}
		if got, want := r.cfgRead(r.cap+4, 4), uint32(tc.table)|uint32(tc.bar); got != want {
			t.Errorf("after writing ones: table offset/BIR %#x, want %#x", got, want)
		}
		if !m.Enabled() {
			t.Errorf("Enabled() false after setting bit 15")
		}
	}
}

// TestMSIXReset checks the state after AddMSIX and Reset: every vector
// masked (§6.8.2.9: mask bit set after reset), no pending bits.
func TestMSIXReset(t *testing.T) {
	r := newMSIXRig(t, 3)
	for v := range 3 {
		r.entry(v, 0xfee00000, uint32(0x40+v), false)
	}
	if err := r.control(true, true); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Signal(1); err != nil {
		t.Fatal(err)
	}
	r.m.Reset()
	for v := range 3 {
		base := uint64(msixTestTable + MSIXEntrySize*v)
		got := [4]uint32{r.read32(base), r.read32(base + 4), r.read32(base + 8), r.read32(base + 12)}
		if got != [4]uint32{0, 0, 0, 1} {
			t.Errorf("entry %d after reset: %#x, want zero and masked", v, got)
		}
		if r.pending(v) {
			t.Errorf("vector %d pending after reset", v)
		}
	}
}

// TestMSIXSignal covers when Signal sends, holds or refuses a message
// (§6.8.2.9: a masked vector's message is held pending; §6.8.2.3: the
// function mask masks every vector).
func TestMSIXSignal(t *testing.T) {
	const addr, data = 0xfee01004, 0x4031
	for _, tc := range []struct {
		name                   string
		enable, fmask, vmasked bool
		vector                 int
		wantErr                string
		wantSent, wantPending  bool
	}{
		{name: "enabled and unmasked", enable: true, vector: 1, wantSent: true},
		{name: "vector masked", enable: true, vmasked: true, vector: 1, wantPending: true},
		{name: "function masked", enable: true, fmask: true, vector: 1, wantPending: true},
		{name: "both masked", enable: true, fmask: true, vmasked: true, vector: 1, wantPending: true},
		{name: "disabled", vector: 1, wantErr: "disabled"},
		{name: "disabled and masked", fmask: true, vmasked: true, vector: 1, wantErr: "disabled"},
		{name: "vector beyond the table", enable: true, vector: 4, wantErr: "vector 4 of 4"},
		{name: "negative vector", enable: true, vector: -1, wantErr: "vector -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMSIXRig(t, 4)
			r.entry(1, addr, data, tc.vmasked)
			if err := r.control(tc.enable, tc.fmask); err != nil {
				t.Fatal(err)
			}
			err := r.m.Signal(tc.vector)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Signal(%d): %v, want an error containing %q", tc.vector, err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Signal(%d): %v", tc.vector, err)
			}
			msgs := r.sink.take()
			if tc.wantSent != (len(msgs) == 1) || len(msgs) > 1 {
				t.Fatalf("sent %v, want sent=%v", msgs, tc.wantSent)
			}
			if tc.wantSent && msgs[0] != (msixMsg{1, addr, data}) {
				t.Fatalf("sent %+v, want vector 1 addr %#x data %#x", msgs[0], addr, data)
			}
			for v := range 4 {
				if got := r.pending(v); got != (tc.wantPending && v == tc.vector) {
					t.Errorf("vector %d pending = %v", v, got)
				}
			}
			sent, held := r.m.Counts()
			if sent != uint64(len(msgs)) || held != map[bool]uint64{false: 0, true: 1}[tc.wantPending] {
				t.Errorf("Counts() = %d sent, %d held", sent, held)
			}
		})
	}
}

// TestMSIXPendingDelivery checks that a held message is sent, with the
// entry's address and data at the time of sending, as soon as every mask
// is lifted, and only then (§6.8.2.9: "delayed, never lost").
func TestMSIXPendingDelivery(t *testing.T) {
	type step struct {
		what string
		do   func(r *msixRig) error
		sent []int // vectors the sink must have got in this step, in order
	}
	signal := func(v int) func(*msixRig) error { return func(r *msixRig) error { return r.m.Signal(v) } }
	mask := func(v int, masked bool) func(*msixRig) error {
		return func(r *msixRig) error {
			ctl := uint32(0)
			if masked {
				ctl = 1
			}
			return r.m.TableWrite(uint64(msixTestTable+MSIXEntrySize*v+12), binary.LittleEndian.AppendUint32(nil, ctl))
		}
	}
	control := func(enable, fmask bool) func(*msixRig) error {
		return func(r *msixRig) error { return r.control(enable, fmask) }
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"vector unmask sends", []step{
			{"mask 0", mask(0, true), nil},
			{"signal 0", signal(0), nil},
			{"signal 0 again: one pending bit", signal(0), nil},
			{"unmask 0", mask(0, false), []int{0}},
			{"signal 0 unmasked", signal(0), []int{0}},
		}},
		{"function unmask sends all", []step{
			{"function mask", control(true, true), nil},
			{"signal 2", signal(2), nil},
			{"signal 0", signal(0), nil},
			{"function unmask", control(true, false), []int{0, 2}},
		}},
		{"function mask holds a vector unmask", []step{
			{"mask 1", mask(1, true), nil},
			{"signal 1", signal(1), nil},
			{"function mask", control(true, true), nil},
			{"unmask 1 under the function mask", mask(1, false), nil},
			{"function unmask", control(true, false), []int{1}},
		}},
		{"vector mask holds a function unmask", []step{
			{"mask 1", mask(1, true), nil},
			{"function mask", control(true, true), nil},
			{"signal 1", signal(1), nil},
			{"signal 2", signal(2), nil},
			{"function unmask: only 2", control(true, false), []int{2}},
			{"unmask 1", mask(1, false), []int{1}},
		}},
		{"disable keeps pending", []step{
			{"mask 0", mask(0, true), nil},
			{"signal 0", signal(0), nil},
			{"disable", control(false, false), nil},
			{"unmask 0 while disabled", mask(0, false), nil},
			{"enable", control(true, false), []int{0}},
		}},
		{"masking again does not send", []step{
			{"mask 0", mask(0, true), nil},
			{"signal 0", signal(0), nil},
			{"mask 0 again", mask(0, true), nil},
			{"function unmask no-op", control(true, false), nil},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMSIXRig(t, 3)
			for v := range 3 {
				r.entry(v, 0xfee00000|uint64(v)<<12, uint32(0x30+v), false)
			}
			if err := r.control(true, false); err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.steps {
				if err := s.do(r); err != nil {
					t.Fatalf("%s: %v", s.what, err)
				}
				msgs := r.sink.take()
				var got []int
				for _, m := range msgs {
					got = append(got, m.vector)
					if m.addr != 0xfee00000|uint64(m.vector)<<12 || m.data != uint32(0x30+m.vector) {
						t.Errorf("%s: message %+v has the wrong address or data", s.what, m)
					}
					if r.pending(m.vector) {
						t.Errorf("%s: vector %d sent but still pending", s.what, m.vector)
					}
				}
				if !slices.Equal(got, s.sent) {
					t.Fatalf("%s: sent vectors %v, want %v", s.what, got, s.sent)
				}
			}
		})
	}
}

// TestMSIXPendingUsesCurrentEntry: the OS may reprogram a masked entry
// (Linux does, when it moves an interrupt to another CPU); the held
// message goes out with the new address and data.
func TestMSIXPendingUsesCurrentEntry(t *testing.T) {
	r := newMSIXRig(t, 2)
	r.entry(1, 0xfee00000, 0x41, true)
	if err := r.control(true, false); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Signal(1); err != nil {
		t.Fatal(err)
	}
	r.entry(1, 0x1_fee03000, 0x52, false)
	if got := r.sink.take(); len(got) != 1 || got[0] != (msixMsg{1, 0x1_fee03000, 0x52}) {
		t.Fatalf("sent %+v, want the reprogrammed message", got)
	}
}

func TestMSIXSinkError(t *testing.T) {
	r := newMSIXRig(t, 1)
	r.sink.err = errors.New("no route")
	r.entry(0, 0xfee00000, 0x41, true)
	if err := r.control(true, false); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Signal(0); err != nil {
		t.Fatalf("held signal: %v", err)
	}
	// The unmasking write reports the sink's error, and the message is
	// not kept pending: it was handed over.
	err := r.m.TableWrite(msixTestTable+12, []byte{0, 0, 0, 0})
	if err == nil || !strings.Contains(err.Error(), "no route") {
		t.Fatalf("unmask: %v, want the sink's error", err)
	}
	if r.pending(0) {
		t.Fatal("still pending after delivery failed")
	}
	if err := r.m.Signal(0); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Fatalf("Signal: %v, want the sink's error", err)
	}
}

// TestMSIXTableAccess checks the access rules of §6.8.2: the table and PBA
// take naturally aligned dword and qword accesses; anything else reads all
// ones and is refused on write. The PBA is read-only.
func TestMSIXTableAccess(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  uint64
		n    int
		ok   bool
	}{
		{"dword address low", msixTestTable, 4, true},
		{"dword vector control", msixTestTable + 12, 4, true},
		{"qword address", msixTestTable + 16, 8, true},
		{"qword data and control", msixTestTable + 24, 8, true},
		{"qword last entry", msixTestTable + 3*MSIXEntrySize + 8, 8, true},
		{"byte", msixTestTable, 1, false},
		{"word", msixTestTable + 8, 2, false},
		{"three bytes", msixTestTable, 3, false},
		{"16 bytes", msixTestTable, 16, false},
		{"empty", msixTestTable, 0, false},
		{"misaligned dword", msixTestTable + 2, 4, false},
		{"qword at a dword boundary", msixTestTable + 4, 8, false},
		{"PBA dword", msixTestPBA, 4, true},
		{"PBA qword", msixTestPBA, 8, true},
		{"PBA byte", msixTestPBA, 1, false},
		{"PBA misaligned qword", msixTestPBA + 4, 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMSIXRig(t, 4)
			r.entry(0, 0x12345678_fee00000, 0x4021, true)
			r.entry(3, 0xfee00000, 0x4024, true)
			if err := r.control(true, false); err != nil {
				t.Fatal(err)
			}
			if err := r.m.Signal(0); err != nil { // PBA bit 0 set
				t.Fatal(err)
			}
			before := snapshotTable(r, 4)

			data := make([]byte, tc.n)
			r.m.TableRead(tc.off, data)
			allOnes := true
			for _, b := range data {
				allOnes = allOnes && b == 0xff
			}
			if !tc.ok && !allOnes {
				t.Errorf("refused read returned %x, want all ones", data)
			}
			if tc.ok && allOnes {
				t.Errorf("accepted read returned all ones")
			}

			for i := range data {
				data[i] = 0x5a
			}
			err := r.m.TableWrite(tc.off, data)
			table, _ := r.m.Contains(msixTestBAR, tc.off)
			switch {
			case !tc.ok && err == nil:
				t.Errorf("TableWrite of %d bytes at %#x accepted", tc.n, tc.off)
			case tc.ok && err != nil:
				t.Errorf("TableWrite: %v", err)
			}
			after := snapshotTable(r, 4)
			if (!tc.ok || !table) && after != before {
				t.Errorf("refused or PBA write changed the table/PBA:\n%x\n%x", before, after)
			}
			if tc.ok && table && after == before {
				t.Errorf("accepted table write changed nothing")
			}
		})
	}
}

// snapshotTable reads the whole table and PBA with dword reads.
func snapshotTable(r *msixRig, n int) [4*4 + 2]uint32 {
	var s [4*4 + 2]uint32
	for i := range 4 * n {
		s[i] = r.read32(uint64(msixTestTable + 4*i))
	}
	s[16], s[17] = r.read32(msixTestPBA), r.read32(msixTestPBA+4)
	return s
}

// TestMSIXTableFields: reserved bits read as zero (§6.8.2.6: the message
// address is dword aligned; §6.8.2.9: vector control bits 31:1 reserved),
// and a qword write sets two fields at once.
func TestMSIXTableFields(t *testing.T) {
	r := newMSIXRig(t, 2)
	r.write32(msixTestTable+0, 0xfee0100f)
	r.write32(msixTestTable+12, 0xfffffffe)
	if got := r.read32(msixTestTable); got != 0xfee0100c {
		t.Errorf("address low %#x, want the low two bits dropped", got)
	}
	if got := r.read32(msixTestTable + 12); got != 0 {
		t.Errorf("vector control %#x, want reserved bits dropped", got)
	}
	q := binary.LittleEndian.AppendUint64(nil, 0x1_0000_0040) // data 0x40, control 1
	if err := r.m.TableWrite(msixTestTable+16+8, q); err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	r.m.TableRead(msixTestTable+16+8, b[:])
	if got := binary.LittleEndian.Uint64(b[:]); got != 0x1_0000_0040 {
		t.Errorf("qword read of data and control %#x", got)
	}
}

func TestMSIXContains(t *testing.T) {
	r := newMSIXRig(t, 65) // two PBA qwords
	for _, tc := range []struct {
		bar        int
		off        uint64
		table, pba bool
	}{
		{0, msixTestTable, true, false},
		{0, msixTestTable + 65*MSIXEntrySize - 1, true, false},
		{0, msixTestTable + 65*MSIXEntrySize, false, false},
		{0, msixTestTable - 1, false, false},
		{0, msixTestPBA, false, true},
		{0, msixTestPBA + 15, false, true},
		{0, msixTestPBA + 16, false, false},
		{1, msixTestTable, false, false},
		{0, 0, false, false},
		{0, ^uint64(0), false, false},
	} {
		table, pba := r.m.Contains(tc.bar, tc.off)
		if table != tc.table || pba != tc.pba {
			t.Errorf("Contains(%d, %#x) = %v, %v; want %v, %v", tc.bar, tc.off, table, pba, tc.table, tc.pba)
		}
	}
	// Vector 64 lives in the second PBA qword.
	r.entry(64, 0xfee00000, 0x40, true)
	if err := r.control(true, false); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Signal(64); err != nil {
		t.Fatal(err)
	}
	if got := r.read32(msixTestPBA + 8); got != 1 {
		t.Errorf("PBA dword 2 = %#x, want bit 0 (vector 64)", got)
	}
}

func TestMSIXDescribe(t *testing.T) {
	r := newMSIXRig(t, 2)
	for _, tc := range []struct {
		off  uint64
		want string
	}{
		{msixTestTable, "MSI-X table entry 0 address low"},
		{msixTestTable + 4, "MSI-X table entry 0 address high"},
		{msixTestTable + 16 + 8, "MSI-X table entry 1 data"},
		{msixTestTable + 16 + 12, "MSI-X table entry 1 vector control"},
		{msixTestPBA, "MSI-X pending bits"},
		{msixTestTable + 32, ""},
	} {
		if got := r.m.Describe(tc.off); got != tc.want {
			t.Errorf("Describe(%#x) = %q, want %q", tc.off, got, tc.want)
		}
	}
}

// TestMSIXSignalRacesFunctionUnmask raises a vector over and over on one
// goroutine (a device worker) while another (a vCPU) masks and unmasks the
// function. Once an unmask (the configuration write and the Unmasked that
// follows it) has returned, the vector cannot be pending: a Signal that
// saw the mask must have set its pending bit before Unmasked looked, and
// one that came later sees no mask. A pending bit left behind is an
// interrupt lost until the OS happens to mask and unmask again (§6.8.2.9).
func TestMSIXSignalRacesFunctionUnmask(t *testing.T) {
	r := newMSIXRig(t, 1)
	r.entry(0, 0xfee00000, 0x41, false)
	if err := r.control(true, false); err != nil {
		t.Fatal(err)
	}
	iterations := 100000
	if testing.Short() {
		iterations = 10000
	}
	stop := make(chan struct{})
	signalErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				signalErr <- nil
				return
			default:
			}
			if err := r.m.Signal(0); err != nil {
				signalErr <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-signalErr; err != nil {
			t.Error(err)
		}
	}()
	for i := range iterations {
		if err := r.control(true, true); err != nil {
			t.Fatal(err)
		}
		if err := r.control(true, false); err != nil {
			t.Fatal(err)
		}
		if r.pending(0) {
			t.Fatalf("iteration %d: vector 0 pending after the function mask was lifted", i)
		}
		if i%1024 == 0 {
			r.sink.take() // keep the record small
		}
	}
}

// FuzzMSIX drives one function's MSI-X state with random operations, four
// bytes each:
//
//	op % 6 = 0: table write, 4 or 8 bytes (b1 bit 7) at table offset b1&0x3f*4
//	         (4-byte units, so misaligned qwords happen), value b2,b3
//	         spread over the bytes
//	op % 6 = 1: table or PBA read, width b1>>5 of {1,2,3,4,8,8,4,0}
//	op % 6 = 2: message control write (enable b2 bit 0, function mask
//	         bit 1), then Unmasked as the owning device does
//	op % 6 = 3..5: Signal(vector b1%6 - 1): -1 and 4 are out of range
//
// Invariants, checked after every operation and inside the sink: a message
// is only delivered while MSI-X is enabled and neither the function nor the
// vector is masked, with the entry's current address and data; a Signal
// that is not delivered at once sets the pending bit, and only that does;
// a delivery clears it; nothing deliverable stays pending.
func FuzzMSIX(f *testing.F) {
	f.Add([]byte{})
	// Enable, program entry 0, signal it.
	f.Add([]byte{2, 0, 1, 0, 0, 0, 0xee, 0xfe, 0, 3, 0x41, 0, 0, 2, 0, 0, 3, 1, 0, 0})
	// Function mask, signal, unmask; read the PBA.
	f.Add([]byte{2, 0, 3, 0, 3, 2, 0, 0, 2, 0, 1, 0, 1, 0x60, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		const n = 4
		r := newMSIXRig(t, n)
		var (
			pending   [n]bool // model of the PBA
			delivered int     // messages the sink got during the current op
			opName    string
		)
		r.sink.check = func(m msixMsg) {
			// Runs outside the MSIX lock, single-threaded: the state
			// read here is the state the message was sent in.
			ctl := uint16(r.cfgRead(r.cap+2, 2))
			base := uint64(msixTestTable + MSIXEntrySize*m.vector)
			if m.vector < 0 || m.vector >= n {
				t.Fatalf("%s: message for vector %d", opName, m.vector)
			}
			if ctl&MSIXEnable == 0 || ctl&MSIXFunctionMask != 0 || r.read32(base+12)&1 != 0 {
				t.Fatalf("%s: vector %d delivered with control %#x, vector control %#x", opName, m.vector, ctl, r.read32(base+12))
			}
			addr := uint64(r.read32(base+4))<<32 | uint64(r.read32(base))
			if m.addr != addr || m.data != r.read32(base+8) {
				t.Fatalf("%s: vector %d sent %#x/%#x, table holds %#x/%#x", opName, m.vector, m.addr, m.data, addr, r.read32(base+8))
			}
			pending[m.vector] = false
			delivered++
		}
		deliverable := func(v int) bool {
			ctl := uint16(r.cfgRead(r.cap+2, 2))
			return ctl&MSIXEnable != 0 && ctl&MSIXFunctionMask == 0 &&
				r.read32(uint64(msixTestTable+MSIXEntrySize*v+12))&1 == 0
		}
		widths := [8]int{1, 2, 3, 4, 8, 8, 4, 0}
		const maxOps = 200
		for step := 0; len(in) >= 4 && step < maxOps; step++ {
			op, b1, b2, b3 := in[0], in[1], in[2], in[3]
			in = in[4:]
			delivered = 0
			switch op % 6 {
			case 0:
				width := 4
				if b1&0x80 != 0 {
					width = 8
				}
				off := uint64(msixTestTable) + uint64(b1&0x3f)*4
				data := make([]byte, width)
				for i := range data {
					data[i] = []byte{b2, b3}[i%2] ^ byte(i)
				}
				opName = "table write"
				err := r.m.TableWrite(off, data)
				if (off%uint64(width) != 0) != (err != nil) {
					t.Fatalf("%s of %d bytes at %#x: %v", opName, width, off, err)
				}
			case 1:
				width := widths[b1>>5]
				off := uint64(msixTestTable)
				if b1&0x10 != 0 {
					off = msixTestPBA
				}
				off += uint64(b1 & 0xf)
				data := make([]byte, width)
				opName = "read"
				r.m.TableRead(off, data)
			case 2:
				opName = "control write"
				if err := r.control(b2&1 != 0, b2&2 != 0); err != nil {
					t.Fatal(err)
				}
			default:
				v := int(b1%6) - 1
				opName = "signal"
				wasDeliverable := v >= 0 && v < n && deliverable(v)
				enabled := r.m.Enabled()
				err := r.m.Signal(v)
				switch {
				case v < 0 || v >= n:
					if err == nil {
						t.Fatalf("Signal(%d) out of range: no error", v)
					}
				case !enabled:
					if err == nil {
						t.Fatalf("Signal(%d) with MSI-X disabled: no error", v)
					}
				case err != nil:
					t.Fatalf("Signal(%d): %v", v, err)
				case wasDeliverable:
					if delivered != 1 {
						t.Fatalf("Signal(%d) deliverable: %d messages", v, delivered)
					}
				default:
					if delivered != 0 {
						t.Fatalf("Signal(%d) masked: %d messages", v, delivered)
					}
					pending[v] = true
				}
			}
			for v := range n {
				if got := r.pending(v); got != pending[v] {
					t.Fatalf("step %d (%s): vector %d PBA bit %v, model %v", step, opName, v, got, pending[v])
				}
				if pending[v] && deliverable(v) {
					t.Fatalf("step %d (%s): vector %d pending although deliverable", step, opName, v)
				}
			}
		}
	})
}
