package cmos

import (
	"testing"
	"time"
)

// FuzzCMOS drives the RTC with accesses decoded from random bytes, two bytes
// per access, while a fake host clock moves forward:
//
//	op bits 0-2: 0, 1 select index v at port 0x70 (bit 7 of v: NMI)
//	             2, 3 write v at port 0x71
//	             4, 5 read port 0x71
//	             6    word write v, v^0xff at port 0x70
//	             7    an access of (v & 7) bytes at offset (v >> 3) & 3
//	op bits 3-7: host clock advance, in units of 100 ms
//
// It checks that nothing panics and that the invariants hold after every
// access: status A never shows UIP, status D is always 0x80, status C reads
// with bits 0-3 clear and IRQF exactly when an enabled flag is set, plain
// NVRAM bytes (alarms included) hold what was last written, and while the
// clock runs every time register is a valid value in the mode status B
// selects and decodes back to the time shown.
func FuzzCMOS(f *testing.F) {
	// Long inputs add little but make every run (and the minimisation of
	// each new input) slow.
	const maxOps = 256

	f.Add([]byte{0x00, 0x0b, 0x04, 0x00})                         // read status B
	f.Add([]byte{0x00, 0x0b, 0x02, 0x86, 0x00, 0x00, 0x02, 0x59}) // SET, write seconds
	f.Add([]byte{0x00, 0x8c, 0xf4, 0x00, 0x04, 0x00})             // status C across time
	f.Add([]byte{0x06, 0x40, 0x07, 0x02, 0x07, 0x1c})             // word and bad accesses
	f.Fuzz(func(t *testing.T, in []byte) {
		clk := &clock{time.Date(2024, 2, 29, 23, 59, 50, 0, time.UTC)}
		c := New(clk.now)
		var model [Size]byte // plain bytes as last written
		plain := func(i byte) bool { return !isTimeReg(i) && (i < RegA || i > RegD) }

		if len(in) > 2*maxOps {
			in = in[:2*maxOps]
		}
		for len(in) >= 2 {
			op, v := in[0], in[1]
			in = in[2:]
			clk.t = clk.t.Add(time.Duration(op>>3) * 100 * time.Millisecond)
			idx := c.index()
			var data []byte
			off, write := uint64(0), false
			switch op & 7 {
			case 0, 1:
				data, write = []byte{v}, true
			case 2, 3:
				data, off, write = []byte{v}, 1, true
			case 4, 5:
				data, off = []byte{0}, 1
			case 6:
				data, write = []byte{v, v ^ 0xff}, true
			case 7:
				data, off, write = make([]byte, v&7), uint64(v>>3)&3, v&0x80 != 0
			}
			var err error
			if write {
				err = c.Write(off, data)
			} else {
				err = c.Read(off, data)
			}
			_ = c.Describe(off, write, data)
			good := (len(data) == 1 && off <= 1) || (len(data) == 2 && off == 0)
			if good != (err == nil) {
				t.Fatalf("%d bytes at %d: err = %v", len(data), off, err)
			}
			if !good && !write {
				for _, b := range data {
					if b != 0xff {
						t.Fatalf("bad read returned %#02x", b)
					}
				}
			}
			if good && write {
				// Track plain bytes written through port 0x71.
				switch {
				case off == 1 && plain(idx):
					model[idx] = data[0]
				case off == 0 && len(data) == 2 && plain(data[0]&0x7f):
					model[data[0]&0x7f] = data[1]
				}
			}
			if good && !write && off == 1 && idx == RegC {
				st := data[0]
				if st&0x0f != 0 {
					t.Fatalf("status C = %#02x", st)
				}
				c.mu.Lock()
				b := c.ram[RegB]
				c.mu.Unlock()
				if (st&CIRQF != 0) != (st&b&(CPF|CAF|CUF) != 0) {
					t.Fatalf("status C %#02x with status B %#02x", st, b)
				}
			}
			checkInvariants(t, c)
			c.mu.Lock()
			if i := c.index(); plain(i) && c.ram[i] != model[i] {
				t.Fatalf("index %#02x = %#02x, want %#02x", i, c.ram[i], model[i])
			}
			c.mu.Unlock()
		}
		// All of NVRAM once at the end: every access checked above is
		// cheap, so the fuzzer spends its time on new inputs.
		for i := 0; i < Size; i++ {
			if plain(byte(i)) && c.ram[i] != model[i] {
				t.Fatalf("index %#02x = %#02x, want %#02x", i, c.ram[i], model[i])
			}
		}
	})
}

func checkInvariants(t *testing.T, c *CMOS) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.readReg(RegA); a&AUIP != 0 {
		t.Fatalf("status A = %#02x", a)
	}
	if d := c.readReg(RegD); d != DVRT {
		t.Fatalf("status D = %#02x", d)
	}
	b := c.ram[RegB]
	if b&BSET != 0 {
		return
	}
	var regs [Size]byte
	for _, r := range timeRegs {
		regs[r] = c.readReg(r)
	}
	conv := fromBCD
	if b&BDM != 0 {
		conv = func(v byte) int { return int(v) }
	}
	if b&BDM == 0 {
		for _, r := range timeRegs {
			v := regs[r]
			if r == RegHours && b&B24H == 0 {
				v &^= 0x80 // the PM bit
			}
			if v&0x0f > 9 || v>>4 > 9 {
				t.Fatalf("%s = %#02x is not BCD", RegName(r), regs[r])
			}
		}
	}
	hourOK := func() bool {
		h := regs[RegHours]
		if b&B24H != 0 {
			return conv(h) <= 23
		}
		n := conv(h &^ 0x80)
		return n >= 1 && n <= 12
	}
	ranges := []struct {
		r      byte
		lo, hi int
	}{
		{RegSeconds, 0, 59}, {RegMinutes, 0, 59}, {RegWeekday, 1, 7}, {RegDay, 1, 31},
		{RegMonth, 1, 12}, {RegYear, 0, 99}, {RegCentury, 0, 99},
	}
	for _, rg := range ranges {
		if n := conv(regs[rg.r]); n < rg.lo || n > rg.hi {
			t.Fatalf("%s = %#02x out of range (status B %#02x)", RegName(rg.r), regs[rg.r], b)
		}
	}
	if !hourOK() {
		t.Fatalf("hours = %#02x invalid (status B %#02x)", regs[RegHours], b)
	}
	if g := c.guestTime(); g.Year() >= 0 && g.Year() < 10000 {
		if got := decode(regs, b); !got.Equal(g) {
			t.Fatalf("registers decode to %v, clock shows %v", got, g)
		}
		if want := byte(g.Weekday()) + 1; conv(regs[RegWeekday]) != int(want) {
			t.Fatalf("weekday %#02x for %v", regs[RegWeekday], g)
		}
	}
}
