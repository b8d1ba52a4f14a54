package pci

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// stateDevice is newTestFunction (a BAR of each kind, an MSI capability)
// with MSI-X added: 5 vectors, table at 0x800 and PBA at 0xc00 of BAR0.
type stateDevice struct {
	f    *testFunction
	m    *MSIX
	sink *msixSink
}

const (
	stateVectors = 5
	stateTable   = 0x800
	statePBA     = 0xc00
)

func newStateDevice(t testing.TB) *stateDevice {
	t.Helper()
	f := newTestFunction(t)
	sink := &msixSink{}
	m, err := AddMSIX(f.ConfigSpace, stateVectors, 0, stateTable, statePBA, sink)
	if err != nil {
		t.Fatal(err)
	}
	return &stateDevice{f: f, m: m, sink: sink}
}

// jsonRT sends v through encoding/json, as a snapshot file does.
func jsonRT[T any](t testing.TB, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return back
}

// configView reads all 64 dwords of slot's configuration space through
// the ports, then the 6 BARs as decoded.
func configView(m *machine, slot int) []uint32 {
	var got []uint32
	for reg := 0; reg < ConfigSize; reg += 4 {
		got = append(got, m.read(0, slot, 0, reg, 4))
	}
	return got
}

// msixView reads every table dword and PBA dword through the BAR, as the
// guest does.
func msixView(d *stateDevice) []uint32 {
	var got []uint32
	var b [4]byte
	for off := uint64(stateTable); off < stateTable+stateVectors*MSIXEntrySize; off += 4 {
		d.m.TableRead(off, b[:])
		got = append(got, binary.LittleEndian.Uint32(b[:]))
	}
	for off := uint64(statePBA); off < statePBA+8; off += 4 {
		d.m.TableRead(off, b[:])
		got = append(got, binary.LittleEndian.Uint32(b[:]))
	}
	return got
}

func msixControlOffset(t testing.TB, f Function) int {
	off := findCap(f, CapMSIX)
	if off == 0 {
		t.Fatal("no MSI-X capability")
	}
	return off + 2
}

func TestConfigAndMSIXStateRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		// prog drives the device through the configuration ports
		// (slot 3) and its MSI-X table.
		prog     func(m *machine, d *stateDevice)
		wantMsgs int // messages the restore must send
	}{
		{"fresh", func(*machine, *stateDevice) {}, 0},
		{"programmed by an OS", func(m *machine, d *stateDevice) {
			m.write(0, 3, 0, RegBAR0, 4, 0xfebf0000)
			m.write(0, 3, 0, RegBAR0+4, 4, 0xc040)
			m.write(0, 3, 0, RegBAR0+8, 4, 0xfe00_c000|0xf)
			m.write(0, 3, 0, RegBAR0+12, 4, 0x1)
			m.write(0, 3, 0, RegCommand, 2, CmdIO|CmdMemory|CmdBusMaster|CmdIntxDisable)
			m.write(0, 3, 0, RegInterruptLine, 1, 11)
			m.write(0, 3, 0, RegLatencyTimer, 1, 0x40)
			ctl := msixControlOffset(t, d.f)
			m.write(0, 3, 0, ctl, 2, MSIXEnable|MSIXFunctionMask)
			for v := 0; v < stateVectors; v++ {
				base := uint64(stateTable + MSIXEntrySize*v)
				for i, x := range []uint32{0xfee00000 | uint32(v)<<12, 0, 0x4020 + uint32(v), uint32(v % 2)} {
					var b [4]byte
					binary.LittleEndian.PutUint32(b[:], x)
					if err := d.m.TableWrite(base+uint64(4*i), b[:]); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Vectors 0 and 3 raised while the function is masked:
			// pending.
			for _, v := range []int{0, 3} {
				if err := d.m.Signal(v); err != nil {
					t.Fatal(err)
				}
			}
		}, 0},
		{"pending message deliverable at restore", func(m *machine, d *stateDevice) {
			// The snapshot lands after the guest lifted the function
			// mask but before the transport's Unmasked ran: the bit
			// is pending with nothing masking it.
			ctl := msixControlOffset(t, d.f)
			m.write(0, 3, 0, ctl, 2, MSIXEnable|MSIXFunctionMask)
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], 0)
			if err := d.m.TableWrite(stateTable+MSIXEntrySize*2+12, b[:]); err != nil {
				t.Fatal(err)
			}
			if err := d.m.Signal(2); err != nil {
				t.Fatal(err)
			}
			m.write(0, 3, 0, ctl, 2, MSIXEnable)
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ma, da := newMachine(t), newStateDevice(t)
			if err := ma.root.Add(3, da.f); err != nil {
				t.Fatal(err)
			}
			tc.prog(ma, da)
			cs := jsonRT(t, da.f.ConfigSpace.SaveState())
			ms := jsonRT(t, da.m.SaveState())

			mb, db := newMachine(t), newStateDevice(t)
			if err := mb.root.Add(3, db.f); err != nil {
				t.Fatal(err)
			}
			if err := db.f.ConfigSpace.RestoreState(cs); err != nil {
				t.Fatalf("ConfigSpace.RestoreState: %v", err)
			}
			if err := db.m.RestoreState(ms); err != nil {
				t.Fatalf("MSIX.RestoreState: %v", err)
			}
			if got := db.sink.take(); len(got) != tc.wantMsgs {
				t.Errorf("restore sent %v, want %d messages", got, tc.wantMsgs)
			}
			if tc.wantMsgs > 0 {
				// The original sends it when its transport gets to
				// Unmasked; then both have the same PBA.
				if err := da.m.Unmasked(); err != nil {
					t.Fatal(err)
				}
			}
			if va, vb := configView(ma, 3), configView(mb, 3); !reflect.DeepEqual(va, vb) {
				t.Errorf("configuration space reads differ:\noriginal %08x\nrestored %08x", va, vb)
			}
			for i := 0; i < 6; i++ {
				if a, b := da.f.BAR(i), db.f.BAR(i); a != b {
					t.Errorf("BAR%d: original %+v, restored %+v", i, a, b)
				}
			}
			if va, vb := msixView(da), msixView(db); !reflect.DeepEqual(va, vb) {
				t.Errorf("MSI-X table/PBA reads differ:\noriginal %08x\nrestored %08x", va, vb)
			}
			if da.m.Enabled() != db.m.Enabled() {
				t.Errorf("MSI-X enabled: original %v, restored %v", da.m.Enabled(), db.m.Enabled())
			}
		})
	}
}

func TestRootStateRoundTrip(t *testing.T) {
	a := newMachine(t)
	a.write(0, 0, 0, RegCommand, 2, CmdMemory|CmdSERR)
	a.write(0, 0, 0, RegCacheLineSize, 1, 0x10)
	a.write(0, 0, 0, RegInterruptLine, 1, 0x0a)
	// Stopped between CONFIG_ADDRESS and CONFIG_DATA, AMD extended bits
	// included.
	a.out(0xcf8, 4, conf1(0, 0, 0, 0x08)|0x0100_0000)
	s := jsonRT(t, a.root.SaveState())
	b := newMachine(t)
	if err := b.root.RestoreState(s); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	if x, y := a.in(0xcf8, 4), b.in(0xcf8, 4); x != y {
		t.Errorf("CONFIG_ADDRESS: original %#x, restored %#x", x, y)
	}
	if x, y := a.in(0xcfc, 4), b.in(0xcfc, 4); x != y {
		t.Errorf("CONFIG_DATA at the latched address: original %#x, restored %#x", x, y)
	}
	if va, vb := configView(a, 0), configView(b, 0); !reflect.DeepEqual(va, vb) {
		t.Errorf("host bridge reads differ:\noriginal %08x\nrestored %08x", va, vb)
	}
}

func TestConfigStateHostile(t *testing.T) {
	good := func(t *testing.T) ConfigState {
		m, d := newMachine(t), newStateDevice(t)
		if err := m.root.Add(3, d.f); err != nil {
			t.Fatal(err)
		}
		m.write(0, 3, 0, RegBAR0+8, 4, 0xfe00_0000)
		m.write(0, 3, 0, RegBAR0+12, 4, 0x2)
		return d.f.ConfigSpace.SaveState()
	}
	other := func(t *testing.T) ConfigState {
		c := NewConfigSpace(0x1234, 0x5679, 0x020000, 0x9a)
		return c.SaveState()
	}
	tests := []struct {
		name  string
		edit  func(t *testing.T, s *ConfigState)
		field string
	}{
		{"short", func(_ *testing.T, s *ConfigState) { s.Config = s.Config[:255] }, "Config:"},
		{"vendor ID", func(_ *testing.T, s *ConfigState) { s.Config[RegVendorID] ^= 1 }, "(vendor ID)"},
		{"device ID", func(_ *testing.T, s *ConfigState) { s.Config[RegDeviceID+1] = 0 }, "(device ID)"},
		{"class code", func(_ *testing.T, s *ConfigState) { s.Config[RegClass] = 0x01 }, "(class code)"},
		{"revision", func(_ *testing.T, s *ConfigState) { s.Config[RegRevisionID]++ }, "(revision ID)"},
		{"header type multifunction", func(_ *testing.T, s *ConfigState) { s.Config[RegHeaderType] = 0x80 }, "(header type)"},
		{"unimplemented command bit", func(_ *testing.T, s *ConfigState) { s.Config[RegCommand] |= 1 << 3 }, "(command)"},
		{"capabilities-list status bit", func(_ *testing.T, s *ConfigState) { s.Config[RegStatus] &^= StatusCapList }, "(status)"},
		{"BAR0 type bits", func(_ *testing.T, s *ConfigState) { s.Config[RegBAR0] |= barPrefetchable }, "(BAR0)"},
		{"BAR0 address below its size", func(_ *testing.T, s *ConfigState) { s.Config[RegBAR0+1] = 0x08 }, "(BAR0)"},
		{"I/O BAR upper half", func(_ *testing.T, s *ConfigState) { s.Config[RegBAR0+4+2] = 1 }, "(BAR1)"},
		{"subsystem ID", func(_ *testing.T, s *ConfigState) { s.Config[RegSubsysID] = 9 }, "(subsystem ID)"},
		{"interrupt pin", func(_ *testing.T, s *ConfigState) { s.Config[RegInterruptPin] = 2 }, "(interrupt pin)"},
		{"capability pointer", func(_ *testing.T, s *ConfigState) { s.Config[RegCapPointer] = 0x80 }, "(capabilities pointer)"},
		{"capability next pointer", func(_ *testing.T, s *ConfigState) { s.Config[HeaderSize+1] = 0 }, "(MSI capability at 0x40 +0x1)"},
		{"MSI-X table size", func(t *testing.T, s *ConfigState) {
			c := newStateDevice(t)
			s.Config[findCap(c.f, CapMSIX)+2]++
		}, "(MSI-X capability"},
		{"another device's state", func(t *testing.T, s *ConfigState) { *s = other(t) }, "(device ID)"},
		{"BAR0 size", func(_ *testing.T, s *ConfigState) { s.BARs[0].Size = 0x2000 }, "BARs[0].Size:"},
		{"BAR1 kind", func(_ *testing.T, s *ConfigState) { s.BARs[1].Kind = BARMem32 }, "BARs[1].Kind:"},
		{"BAR2 prefetchable", func(_ *testing.T, s *ConfigState) { s.BARs[2].Prefetchable = false }, "BARs[2].Prefetchable:"},
		{"BAR2 address disagrees", func(_ *testing.T, s *ConfigState) { s.BARs[2].Address = 0x1000 }, "BARs[2].Address:"},
		{"high half of 64-bit BAR described", func(_ *testing.T, s *ConfigState) { s.BARs[3].Size = 0x4000 }, "BARs[3].Size:"},
		{"unimplemented BAR5 described", func(_ *testing.T, s *ConfigState) { s.BARs[5] = BARState{Kind: BARIO, Size: 4} }, "BARs[5].Kind:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good(t)
			tc.edit(t, &s)
			m, d := newMachine(t), newStateDevice(t)
			if err := m.root.Add(3, d.f); err != nil {
				t.Fatal(err)
			}
			m.write(0, 3, 0, RegCommand, 2, CmdMemory)
			m.write(0, 3, 0, RegBAR0, 4, 0xfebf0000)
			before := d.f.ConfigSpace.SaveState()
			err := d.f.ConfigSpace.RestoreState(s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState = %v, want ErrBadState", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
			if after := d.f.ConfigSpace.SaveState(); !reflect.DeepEqual(after, before) {
				t.Errorf("refused restore changed configuration space")
			}
		})
	}
}

// TestConfigStateInterruptStatus: status bit 3 is the device's INTx# level,
// state rather than identity, so a restore may set it.
func TestConfigStateInterruptStatus(t *testing.T) {
	d := newStateDevice(t)
	s := d.f.ConfigSpace.SaveState()
	s.Config[RegStatus] |= StatusInterrupt
	if err := d.f.ConfigSpace.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	d.f.ConfigRead(RegStatus, b[:])
	if b[0]&StatusInterrupt == 0 {
		t.Error("interrupt status not restored")
	}
}

func TestRootStateHostile(t *testing.T) {
	good := func() State { return NewRoot().SaveState() }
	tests := []struct {
		name  string
		edit  func(s *State)
		field string
	}{
		{"CONFIG_ADDRESS bits 1:0", func(s *State) { s.ConfigAddress = 0x80000001 }, "ConfigAddress:"},
		{"CONFIG_ADDRESS bit 30", func(s *State) { s.ConfigAddress = 0xc0000000 }, "ConfigAddress:"},
		{"host bridge vendor", func(s *State) { s.HostBridge.Config[RegVendorID] = 0x86 ^ 0xff }, "HostBridge: "},
		{"host bridge missing", func(s *State) { s.HostBridge = ConfigState{} }, "HostBridge: "},
		{"host bridge BAR", func(s *State) { s.HostBridge.BARs[0].Kind = BARMem32 }, "BARs[0].Kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.edit(&s)
			m := newMachine(t)
			m.write(0, 0, 0, RegCommand, 2, CmdMemory)
			m.out(0xcf8, 4, conf1(0, 0, 0, 0x04))
			before := m.root.SaveState()
			err := m.root.RestoreState(s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState = %v, want ErrBadState", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
			if !reflect.DeepEqual(m.root.SaveState(), before) {
				t.Error("refused restore changed the root")
			}
		})
	}
}

func TestMSIXStateHostile(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(s *MSIXState)
		field string
	}{
		{"table too short", func(s *MSIXState) { s.Table = s.Table[:4] }, "Table:"},
		{"table too long", func(s *MSIXState) { s.Table = append(s.Table, MSIXEntryState{}) }, "Table:"},
		{"unaligned address", func(s *MSIXState) { s.Table[3].MessageAddress = 0xfee00002 }, "Table[3].MessageAddress:"},
		{"reserved control bit", func(s *MSIXState) { s.Table[1].VectorControl = 3 }, "Table[1].VectorControl:"},
		{"PBA missing", func(s *MSIXState) { s.PBA = nil }, "PBA:"},
		{"PBA too long", func(s *MSIXState) { s.PBA = make([]byte, 16) }, "PBA:"},
		{"pending bit past the table", func(s *MSIXState) { s.PBA[0] = 1 << stateVectors }, "PBA:"},
		{"pending bit in the last byte", func(s *MSIXState) { s.PBA[7] = 0x80 }, "PBA:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newStateDevice(t)
			s := d.m.SaveState()
			tc.edit(&s)
			s.Enabled = true // must not leak into message control on refusal
			// A programmed, pending state to keep.
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], 0xfee01000)
			if err := d.m.TableWrite(stateTable, b[:]); err != nil {
				t.Fatal(err)
			}
			ctl := msixControlOffset(t, d.f)
			d.f.ConfigWrite(ctl, []byte{0, 0xc0})
			if err := d.m.Signal(1); err != nil {
				t.Fatal(err)
			}
			d.f.ConfigWrite(ctl, []byte{0, 0x40})
			before, cfgBefore := d.m.SaveState(), d.f.ConfigSpace.SaveState()
			err := d.m.RestoreState(s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState = %v, want ErrBadState", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
			if !reflect.DeepEqual(d.m.SaveState(), before) || !reflect.DeepEqual(d.f.ConfigSpace.SaveState(), cfgBefore) {
				t.Error("refused restore changed MSI-X or message control")
			}
			if msgs := d.sink.take(); len(msgs) != 0 {
				t.Errorf("refused restore sent %v", msgs)
			}
		})
	}
}

// TestMSIXStateDeliverError: a valid state is restored even when the sink
// fails, and the error says so.
func TestMSIXStateDeliverError(t *testing.T) {
	d := newStateDevice(t)
	s := d.m.SaveState()
	s.Enabled = true
	s.Table[0] = MSIXEntryState{MessageAddress: 0xfee00000, MessageData: 0x31}
	s.PBA[0] = 1
	d.sink.err = errors.New("irqfd gone")
	err := d.m.RestoreState(s)
	if !errors.Is(err, ErrMSIXDeliver) || errors.Is(err, ErrBadState) {
		t.Fatalf("RestoreState = %v, want ErrMSIXDeliver", err)
	}
	if got := d.m.SaveState(); got.Table[0] != s.Table[0] || !got.Enabled || got.PBA[0] != 0 {
		t.Errorf("state after a failed delivery: %+v", got)
	}
}

// fuzzPCIState is what FuzzRestoreState decodes: the three states of the
// package, each restored into a fresh object.
type fuzzPCIState struct {
	Root   State
	Config ConfigState
	MSIX   MSIXState
}

// FuzzRestoreState decodes JSON into the root, configuration space and
// MSI-X states, restores each into a fresh device and makes a few accesses:
// nothing panics, a refused state changes nothing, and a restored MSI-X
// never holds a pending bit past its table.
func FuzzRestoreState(f *testing.F) {
	seed := func(prog func(m *machine, d *stateDevice)) {
		m, d := newMachine(f), newStateDevice(f)
		if err := m.root.Add(3, d.f); err != nil {
			f.Fatal(err)
		}
		prog(m, d)
		b, err := json.Marshal(fuzzPCIState{m.root.SaveState(), d.f.ConfigSpace.SaveState(), d.m.SaveState()})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(func(*machine, *stateDevice) {})
	seed(func(m *machine, d *stateDevice) {
		m.write(0, 3, 0, RegBAR0, 4, 0xfebf0000)
		m.write(0, 3, 0, RegCommand, 2, CmdMemory)
		m.write(0, 3, 0, msixControlOffset(f, d.f), 2, MSIXEnable|MSIXFunctionMask)
		_ = d.m.Signal(4)
	})
	f.Add([]byte(`{"Root":{"ConfigAddress":2147483648},"MSIX":{"Table":[{},{},{},{},{}],"PBA":"HwAAAAAAAAA=","Enabled":true}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var s fuzzPCIState
		if json.Unmarshal(in, &s) != nil {
			return
		}
		m, d := newMachine(t), newStateDevice(t)
		if err := m.root.Add(3, d.f); err != nil {
			t.Fatal(err)
		}
		root, cfg := m.root.SaveState(), d.f.ConfigSpace.SaveState()
		if err := m.root.RestoreState(s.Root); err != nil && !reflect.DeepEqual(m.root.SaveState(), root) {
			t.Fatalf("refused root restore changed it: %v", err)
		}
		if err := d.f.ConfigSpace.RestoreState(s.Config); err != nil && !reflect.DeepEqual(d.f.ConfigSpace.SaveState(), cfg) {
			t.Fatalf("refused config restore changed it: %v", err)
		}
		// The MSI-X state as it is now: its enable and function mask
		// bits live in the configuration space, which the restore
		// above may just have changed (seen by the fuzzer: a valid
		// configuration space with enable set, and no MSI-X state).
		msix := d.m.SaveState()
		err := d.m.RestoreState(s.MSIX)
		if errors.Is(err, ErrBadState) && !reflect.DeepEqual(d.m.SaveState(), msix) {
			t.Fatalf("refused MSI-X restore changed it: %v", err)
		}
		// Accesses: the latched CONFIG_DATA, a scan of slot 3, the
		// memory window, the MSI-X table and a signal.
		m.in(0xcfc, 4)
		configView(m, 3)
		var b [8]byte
		_ = m.root.MemoryWindow(0).Read(0xfebf0000+stateTable, b[:4])
		for off := uint64(stateTable); off < statePBA+16; off += 8 {
			d.m.TableRead(off, b[:])
		}
		_ = d.m.Signal(1)
		_ = d.m.Unmasked()
		if got := d.m.SaveState(); got.PBA[0]>>stateVectors != 0 {
			t.Fatalf("PBA %x has bits past the table", got.PBA)
		}
		for i := 0; i < 6; i++ {
			if b := d.f.BAR(i); b.Kind != BARNone && b.Address&(b.Size-1) != 0 {
				t.Fatalf("BAR%d %+v misaligned after restore", i, b)
			}
		}
	})
}
