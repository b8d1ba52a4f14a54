package bus

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzBus drives a Bus with register, read, write and lookup operations
// decoded from random bytes, four bytes per operation:
//
//	op   bits 0-1: 0 register, 1 read, 2 write, 3 lookup
//	     bit  2:   space (0 PIO, 1 MMIO)
//	     bit  3:   address counts down from the top of the space
//	     bits 5-7: access width - 1 (1..8 bytes); for register, size is
//	               the next byte times (width) instead
//	a0, a1: a 16-bit address
//	s:      register: size; access: ignored
//
// A brute-force model (the list of ranges that were accepted) says what each
// operation must do: Register succeeds exactly when the range is valid and
// overlaps no accepted range, accesses reach a device only when they fit
// inside one, at the offset from its base, and unclaimed reads are all ones.
// After every operation the bus's ranges must be sorted and disjoint.
func FuzzBus(f *testing.F) {
	const maxOps = 128
	f.Add([]byte{0x00, 0x10, 0x00, 0x10, 0x00, 0x18, 0x00, 0x10, 0x21, 0x1e, 0x00, 0x00})
	f.Add([]byte{0x04, 0x00, 0x10, 0x08, 0x0c, 0x00, 0x00, 0xff, 0xe5, 0x00, 0x10, 0x00, 0xe6, 0x04, 0x10, 0x00})
	f.Add([]byte{0x08, 0x00, 0x00, 0x01, 0x08, 0x0f, 0x00, 0x11, 0xe9, 0x08, 0x00, 0x00})
	f.Add([]byte{0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		type entry struct {
			Range
			dev *fakeDev
		}
		b := New()
		var model [2][]entry
		var wantR, wantW uint64
		find := func(space Space, addr, n uint64) (entry, bool) {
			for _, e := range model[space] {
				if addr >= e.Base && addr-e.Base < e.Size && n <= e.Size-(addr-e.Base) {
					return e, true
				}
			}
			return entry{}, false
		}
		if len(in) > 4*maxOps {
			in = in[:4*maxOps]
		}
		for ; len(in) >= 4; in = in[4:] {
			op := in[0]
			space := Space(op >> 2 & 1)
			addr := uint64(binary.LittleEndian.Uint16(in[1:]))
			if op&8 != 0 {
				if space == PIO {
					addr = 0xffff - addr
				} else {
					addr = ^uint64(0) - addr
				}
			}
			width := uint64(op>>5) + 1
			switch op & 3 {
			case 0:
				size := uint64(in[3]) * width
				dev := newFakeDev(t, int(size))
				err := b.Register(space, addr, size, "d", dev)
				valid := size > 0 && addr+size > addr && (space == MMIO || addr+size <= 0x10000)
				overlap := false
				for _, e := range model[space] {
					if addr < e.End() && e.Base < addr+size {
						overlap = true
					}
				}
				switch {
				case !valid:
					if !errors.Is(err, ErrEmptyRange) {
						t.Fatalf("Register(%v, %#x, %#x) = %v, want ErrEmptyRange", space, addr, size, err)
					}
				case overlap:
					if !errors.Is(err, ErrOverlap) {
						t.Fatalf("Register(%v, %#x, %#x) = %v, want ErrOverlap", space, addr, size, err)
					}
				case err != nil:
					t.Fatalf("Register(%v, %#x, %#x) = %v, want success", space, addr, size, err)
				default:
					model[space] = append(model[space], entry{Range{space, addr, size, "d", dev}, dev})
				}
			case 1, 2:
				write := op&3 == 2
				data := make([]byte, width)
				for i := range data {
					data[i] = in[3] + byte(i)
				}
				want, claimed := find(space, addr, width)
				var n int
				if claimed {
					n = len(want.dev.accesses)
				}
				var r Result
				var err error
				if write {
					r, err = b.Write(space, addr, data)
				} else {
					r, err = b.Read(space, addr, data)
				}
				if err != nil {
					t.Fatalf("device error %v", err)
				}
				if r.Handled != claimed {
					t.Fatalf("%v access of %d at %#x: Handled = %v, model says %v", space, width, addr, r.Handled, claimed)
				}
				if claimed {
					if r.Dev != Device(want.dev) || r.Offset != addr-want.Base {
						t.Fatalf("access at %#x went to %+v, want offset %#x of the device at %#x", addr, r, addr-want.Base, want.Base)
					}
					if len(want.dev.accesses) != n+1 || want.dev.accesses[n].offset != r.Offset {
						t.Fatalf("device did not see the access at offset %#x", r.Offset)
					}
				} else if write {
					wantW++
				} else {
					wantR++
					for i, c := range data {
						if c != 0xff {
							t.Fatalf("unclaimed read byte %d = %#x, want 0xff", i, c)
						}
					}
				}
				if gr, gw := b.Unhandled(); gr != wantR || gw != wantW {
					t.Fatalf("Unhandled() = %d, %d; want %d, %d", gr, gw, wantR, wantW)
				}
			case 3:
				want, wok := find(space, addr, 1)
				got, ok := b.Lookup(space, addr)
				if ok != wok || (ok && (got.Base != want.Base || got.Dev != Device(want.dev))) {
					t.Fatalf("Lookup(%v, %#x) = %+v, %v; model says %+v, %v", space, addr, got, ok, want.Range, wok)
				}
			}
			for _, s := range []Space{PIO, MMIO} {
				rs := b.Ranges(s)
				if len(rs) != len(model[s]) {
					t.Fatalf("%v: bus has %d ranges, model %d", s, len(rs), len(model[s]))
				}
				for i, r := range rs {
					if r.Size == 0 || r.End() < r.Base || (s == PIO && r.End() > 0x10000) {
						t.Fatalf("%v: invalid range %#x+%#x registered", s, r.Base, r.Size)
					}
					if i > 0 && r.Base < rs[i-1].End() {
						t.Fatalf("%v: ranges %#x+%#x and %#x+%#x overlap or are out of order", s, rs[i-1].Base, rs[i-1].Size, r.Base, r.Size)
					}
				}
			}
		}
	})
}
