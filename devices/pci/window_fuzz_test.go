package pci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"kvmlab/devices/bus"
)

// The PCI window is where the guest decides, through configuration
// space, which device answers which guest-physical address: it programs
// BARs (any value, half a 64-bit BAR at a time, a byte at a time, all
// ones to size them) and switches decoding on and off, then loads and
// stores anywhere. FuzzWindow does all of that at random and checks the
// routing against a model of its own.

// fuzzBAR is one BAR a fuzz function declares.
type fuzzBAR struct {
	i    int
	kind BARKind
	size uint64
}

// fuzzSlots are the functions on the fuzzed bus: two with the tests'
// usual layout, one with a 1 MiB 64-bit BAR, the smallest (16-byte) and
// the largest (2 GiB) 32-bit BARs, and one plain ConfigSpace, whose BAR
// nothing answers because it does not handle BAR accesses.
var fuzzSlots = []struct {
	slot     int
	bars     []fuzzBAR
	handlers bool
}{
	{2, []fuzzBAR{{0, BARMem32, 0x1000}, {1, BARIO, 0x20}, {2, BARMem64, 0x4000}}, true},
	{3, []fuzzBAR{{0, BARMem32, 0x1000}, {1, BARIO, 0x20}, {2, BARMem64, 0x4000}}, true},
	{6, []fuzzBAR{{0, BARMem64, 1 << 20}, {3, BARMem32, 16}, {4, BARMem32, 1 << 31}}, true},
	{9, []fuzzBAR{{0, BARMem32, 0x1000}}, false},
}

// The window as the VMM places it: from the end of low RAM to the I/O
// APIC.
const (
	fuzzWinBase = 0xc000_0000
	fuzzWinEnd  = 0xfec0_0000
)

// windowModel is what the guest has written to each function's
// configuration space, byte for byte, whatever the function kept.
type windowModel struct {
	raw [][ConfigSize]byte
}

// barAddr is where BAR b of function k is, by the model: the written bits
// at and above the size (bits 3:0 of a memory BAR are type bits), and the
// next register as the high dword of a 64-bit BAR.
func (m *windowModel) barAddr(k int, b fuzzBAR) uint64 {
	le := binary.LittleEndian
	mask := ^(b.size - 1)
	if b.kind == BARIO {
		// Port addresses are 16 bits; bits 1:0 are type bits.
		return uint64(le.Uint32(m.raw[k][RegBAR0+4*b.i:]) & uint32(mask) & 0xfffc)
	}
	low := uint64(le.Uint32(m.raw[k][RegBAR0+4*b.i:]) & uint32(mask) &^ 0xf)
	if b.kind != BARMem64 {
		return low
	}
	return low | uint64(le.Uint32(m.raw[k][RegBAR0+4*b.i+4:])&uint32(mask>>32))<<32
}

func (m *windowModel) memoryDecode(k int) bool {
	return binary.LittleEndian.Uint16(m.raw[k][RegCommand:])&CmdMemory != 0
}

// route is the function, BAR and offset that should answer n bytes at
// addr: the lowest slot with memory decoding on and a memory BAR, not at
// address 0 (unassigned), that holds all n bytes.
func (m *windowModel) route(addr uint64, n int) (k, bar int, off uint64, ok bool) {
	for k, s := range fuzzSlots {
		if !s.handlers || !m.memoryDecode(k) {
			continue
		}
		for _, b := range s.bars {
			if b.kind == BARIO {
				continue
			}
			base := m.barAddr(k, b)
			if base == 0 || addr < base || addr-base >= b.size || uint64(n) > b.size-(addr-base) {
				continue
			}
			return k, b.i, addr - base, true
		}
	}
	return 0, 0, 0, false
}

// FuzzWindow decodes random bytes into configuration writes and window
// accesses, six bytes each:
//
//	op bits 1:0  0 configuration write, 1 read near a BAR, 2 write near
//	             a BAR, 3 read or write at an absolute 32-bit address
//	op bits 4:2  function (of fuzzSlots, modulo)
//	op bit 5     configuration write: write all ones (BAR sizing)
//	op bit 6     absolute access: a write
//	a            configuration write: bits 2:0 register (BAR0-5, command,
//	             interrupt line), bits 4:3 byte offset, bits 6:5 width
//	             {1, 2, 4, 4}; access near a BAR: bits 2:0 BAR, bits 4:3
//	             width {1, 2, 4, 8}, bit 7 near its end instead of its start
//	v0-v3        configuration value; signed 16-bit distance from the BAR
//	             start or end (v0, v1); absolute address
//
// Every access goes to the window twice: through a bus, as guest MMIO
// does (so only addresses inside the window reach it), and straight to
// the window device at any offset (so 64-bit BARs above 4 GiB and offsets
// that wrap are tried too). The checks: nothing panics; the window
// answers exactly when the model routes the access to a function, and
// then that function alone sees it once, at the model's BAR and offset,
// inside the BAR, and the read returns its answer; otherwise the access
// fails with ErrNoBAR and reads all ones; the bus hands the window only
// accesses that lie wholly inside it; the BAR addresses the functions
// report match the model; and Describe always has something to say.
func FuzzWindow(f *testing.F) {
	const maxOps = 256
	f.Add([]byte{})
	// BAR0 of the first function at the window base + 0x1000, memory
	// decoding on, a dword read at its start and a qword write at its
	// last byte (straddling its end).
	f.Add([]byte{
		0x00, 0x40, 0x00, 0x10, 0x00, 0xc0, // config: slot 2 BAR0 = 0xc0001000
		0x00, 0x46, 0x02, 0x00, 0x00, 0x00, // config: slot 2 command = memory
		0x01, 0x10, 0x00, 0x00, 0x00, 0x00, // read 4 at BAR0 start
		0x02, 0x98, 0xff, 0xff, 0x00, 0x00, // write 8 at BAR0 end - 1
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		root := NewRoot()
		model := &windowModel{raw: make([][ConfigSize]byte, len(fuzzSlots))}
		funcs := make([]*winFunction, len(fuzzSlots))
		plains := make([]*ConfigSpace, len(fuzzSlots))
		for k, s := range fuzzSlots {
			c := NewConfigSpace(0x1234, 0x0100+uint16(k), 0xff0000, 0)
			for _, b := range s.bars {
				if err := c.SetBAR(b.i, b.kind, b.size, false); err != nil {
					t.Fatal(err)
				}
			}
			var fn Function = c
			if s.handlers {
				funcs[k] = &winFunction{ConfigSpace: c}
				fn = funcs[k]
			} else {
				plains[k] = c
			}
			if err := root.Add(s.slot, fn); err != nil {
				t.Fatal(err)
			}
			c.Load(0, model.raw[k][:])
		}
		win := root.MemoryWindow(fuzzWinBase)
		b := bus.New()
		if err := b.Register(bus.MMIO, fuzzWinBase, fuzzWinEnd-fuzzWinBase, "pci-window", win); err != nil {
			t.Fatal(err)
		}

		if len(in) > 6*maxOps {
			in = in[:6*maxOps]
		}
		for step := 0; len(in) >= 6; step++ {
			op, a, v := in[0], in[1], binary.LittleEndian.Uint32(in[2:6])
			in = in[6:]
			k := int(op>>2&7) % len(fuzzSlots)
			s := fuzzSlots[k]
			switch op & 3 {
			case 0:
				regs := [8]int{RegBAR0, RegBAR0 + 4, RegBAR0 + 8, RegBAR0 + 12, RegBAR0 + 16, RegBAR0 + 20, RegCommand, RegInterruptLine}
				reg := regs[a&7] + int(a>>3&3)
				width := [4]int{1, 2, 4, 4}[a>>5&3]
				if reg%4+width > 4 {
					width = 1
				}
				if op&0x20 != 0 {
					v = 0xffffffff
				}
				data := binary.LittleEndian.AppendUint32(nil, v)[:width]
				if err := root.AddressPort().Write(0, binary.LittleEndian.AppendUint32(nil, 0x80000000|uint32(s.slot)<<11|uint32(reg&^3))); err != nil {
					t.Fatal(err)
				}
				if err := root.DataPort().Write(uint64(reg&3), data); err != nil {
					t.Fatalf("step %d: config write: %v", step, err)
				}
				copy(model.raw[k][reg:], data)
			case 1, 2, 3:
				var addr uint64
				var n int
				write := op&3 == 2
				if op&3 == 3 {
					addr, n, write = uint64(v), 4, op&0x40 != 0
				} else {
					n = [4]int{1, 2, 4, 8}[a>>3&3]
					bi := s.bars[int(a&7)%len(s.bars)]
					base := model.barAddr(k, bi)
					if a&0x80 != 0 {
						base += bi.size
					}
					addr = base + uint64(int64(int16(v)))
				}
				checkWindowAccess(t, step, b, win, model, funcs, addr, n, write)
			}
			// The functions' own view of their BARs agrees with the model.
			for k, s := range fuzzSlots {
				var cs *ConfigSpace
				if funcs[k] != nil {
					cs = funcs[k].ConfigSpace
				} else {
					cs = plains[k]
				}
				for _, bi := range s.bars {
					got := cs.BAR(bi.i)
					if got.Kind != bi.kind || got.Size != bi.size || got.Address != model.barAddr(k, bi) {
						t.Fatalf("step %d: slot %d BAR%d = %+v, model address %#x", step, s.slot, bi.i, got, model.barAddr(k, bi))
					}
				}
			}
		}
	})
}

// checkWindowAccess makes one access through the bus and one straight to
// the window, and checks both against the model.
func checkWindowAccess(t *testing.T, step int, b *bus.Bus, win bus.Device, model *windowModel, funcs []*winFunction, addr uint64, n int, write bool) {
	t.Helper()
	k, bar, off, routed := model.route(addr, n)
	what := fmt.Sprintf("step %d: %d-byte %s at %#x", step, n, direction(write), addr)
	inWindow := addr >= fuzzWinBase && addr < fuzzWinEnd && uint64(n) <= fuzzWinEnd-addr

	for _, direct := range []bool{false, true} {
		data := bytes.Repeat([]byte{0x5a}, n)
		var res bus.Result
		var err error
		switch {
		case direct && write:
			err = win.Write(addr-fuzzWinBase, data)
		case direct:
			err = win.Read(addr-fuzzWinBase, data)
		case write:
			res, err = b.Write(bus.MMIO, addr, data)
		default:
			res, err = b.Read(bus.MMIO, addr, data)
		}
		how := what + " through the bus"
		if direct {
			how = what + " to the window"
		}
		reached := direct || inWindow
		if !direct && res.Handled != inWindow {
			t.Fatalf("%s: bus handled %v, inside the window %v", how, res.Handled, inWindow)
		}
		claimed := reached && routed
		saw := make([][]winAccess, len(funcs))
		for i, f := range funcs {
			if f != nil {
				saw[i] = f.take()
			}
		}
		for i, accesses := range saw {
			want := 0
			if claimed && i == k {
				want = 1
			}
			if len(accesses) != want {
				t.Fatalf("%s: slot %d saw %+v (routed %v to slot %d)", how, fuzzSlots[i].slot, accesses, claimed, fuzzSlots[k].slot)
			}
		}
		if claimed {
			if err != nil {
				t.Fatalf("%s: %v, want slot %d BAR%d+%#x", how, err, fuzzSlots[k].slot, bar, off)
			}
			if got, want := saw[k][0], (winAccess{bar, off, n, write}); got != want {
				t.Fatalf("%s: slot %d saw %+v, want %+v", how, fuzzSlots[k].slot, got, want)
			}
			if !write {
				for i := range data {
					if data[i] != winPattern(bar, off, i) {
						t.Fatalf("%s: read %x, not the function's answer", how, data)
					}
				}
			}
		} else {
			if reached && !errors.Is(err, ErrNoBAR) {
				t.Fatalf("%s: err %v, want ErrNoBAR (nothing routes it)", how, err)
			}
			if !reached && err != nil {
				t.Fatalf("%s: outside the window: %v", how, err)
			}
			if !write && !bytes.Equal(data, bytes.Repeat([]byte{0xff}, n)) {
				t.Fatalf("%s: unclaimed read %x, want all ones", how, data)
			}
		}
		if direct {
			if d := win.(bus.Describer).Describe(addr-fuzzWinBase, write, data); d == "" {
				t.Fatalf("%s: empty description", how)
			}
		}
	}
}
