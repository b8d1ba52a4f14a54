package cmos

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"kvmlab/internal/statetest"
)

// guestView reads the index port and then every one of the 128 registers
// through the data port, restoring the index at the end.
func guestView(t *testing.T, c *CMOS) []byte {
	t.Helper()
	idx := []byte{0}
	if err := c.Read(0, idx); err != nil {
		t.Fatal(err)
	}
	got := []byte{idx[0]}
	for i := byte(0); i < Size; i++ {
		got = append(got, rd(t, c, i))
	}
	if err := c.Write(0, idx); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestStateRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		prog func(t *testing.T, c *CMOS, clk *clock)
	}{
		{"reset", func(*testing.T, *CMOS, *clock) {}},
		{"guest set the clock back, binary 12-hour mode, NVRAM", func(t *testing.T, c *CMOS, clk *clock) {
			wr(t, c, RegB, BSET|BDM)
			for r, v := range map[byte]byte{RegSeconds: 30, RegMinutes: 15, RegHours: 0x80 | 9, RegDay: 3,
				RegMonth: 7, RegYear: 99, RegCentury: 19} {
				wr(t, c, r, v)
			}
			wr(t, c, RegB, BDM|BPIE)
			wr(t, c, 0x40, 0xab)
			wr(t, c, RegSecondsAlarm, 0x12)
			wr(t, c, RegA, 0x2f)
			clk.t = clk.t.Add(3 * time.Second) // an unread UF
		}},
		{"clock stopped mid-set, NMI masked index", func(t *testing.T, c *CMOS, clk *clock) {
			wr(t, c, RegB, BSET|B24H)
			wr(t, c, RegYear, 0x42)
			if err := c.Write(0, []byte{IndexNMIDisable | 0x20}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, clkA := newAt(leapDay)
			tc.prog(t, a, clkA)
			saved := statetest.JSONRoundTrip(t, a.SaveState())
			// Restored at the instant of the save, then both run on
			// for an hour and a half second: the original and the copy
			// must read alike. (TestRestoreContinuesFromHostClock
			// restores later than the save.)
			b, clkB := newAt(clkA.t)
			if err := b.RestoreState(saved); err != nil {
				t.Fatalf("RestoreState: %v", err)
			}
			clkA.t = clkA.t.Add(time.Hour + time.Second/2)
			clkB.t = clkA.t
			va, vb := guestView(t, a), guestView(t, b)
			if !reflect.DeepEqual(va, vb) {
				t.Errorf("register reads differ:\noriginal %x\nrestored %x", va, vb)
			}
		})
	}
}

// TestRestoreContinuesFromHostClock checks the choice the file comment
// explains: the guest's clock keeps its distance from real time, so the
// hour the snapshot spent on disk passes for the guest too.
func TestRestoreContinuesFromHostClock(t *testing.T) {
	a, _ := newAt(leapDay)
	// The guest sets 2001-01-01 00:00:00 (BCD, 24-hour).
	wr(t, a, RegB, BSET|B24H)
	for r, v := range map[byte]byte{RegSeconds: 0, RegMinutes: 0, RegHours: 0, RegDay: 1, RegMonth: 1,
		RegYear: 0x01, RegCentury: 0x20} {
		wr(t, a, r, v)
	}
	wr(t, a, RegB, B24H)
	s := a.SaveState()
	b, _ := newAt(leapDay.Add(time.Hour + 5*time.Second))
	if err := b.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	got := []byte{rd(t, b, RegCentury), rd(t, b, RegYear), rd(t, b, RegMonth), rd(t, b, RegDay),
		rd(t, b, RegHours), rd(t, b, RegMinutes), rd(t, b, RegSeconds)}
	want := []byte{0x20, 0x01, 0x01, 0x01, 0x01, 0x00, 0x05}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("restored clock reads %x, want %x (2001-01-01 01:00:05)", got, want)
	}
	if c := rd(t, b, RegC); c != 0 {
		t.Errorf("status C %#02x right after restore: the jump is not an update", c)
	}
}

func TestRestoreStateHostile(t *testing.T) {
	good := func() State { c, _ := newAt(leapDay); return c.SaveState() }
	with := func(f func(*State)) State { s := good(); f(&s); return s }
	tests := []struct {
		name  string
		s     State
		field string
	}{
		{"no RAM", with(func(s *State) { s.RAM = nil }), "RAM"},
		{"129 bytes", with(func(s *State) { s.RAM = append(s.RAM, 0) }), "RAM"},
		{"UIP set", with(func(s *State) { s.RAM[RegA] |= AUIP }), "RAM"},
		{"status C byte", with(func(s *State) { s.RAM[RegC] = CIRQF }), "RAM"},
		{"status D byte", with(func(s *State) { s.RAM[RegD] = 0 }), "RAM"},
		{"SET with UIE", with(func(s *State) { s.RAM[RegB] = BSET | BUIE }), "RAM"},
		{"offset too far ahead", with(func(s *State) { s.Offset = MaxOffset + 1 }), "Offset"},
		{"offset minint", with(func(s *State) { s.Offset = -1 << 63 }), "Offset"},
		{"alarm flag", with(func(s *State) { s.StatusCFlags = CAF }), "StatusCFlags"},
		{"IRQF stored", with(func(s *State) { s.StatusCFlags = CIRQF | CUF }), "StatusCFlags"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newAt(leapDay)
			wr(t, c, 0x50, 0x77)
			before := c.SaveState()
			err := c.RestoreState(tc.s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState = %v, want ErrBadState", err)
			}
			if !strings.Contains(err.Error(), " "+tc.field+":") {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if after := c.SaveState(); !reflect.DeepEqual(after, before) {
				t.Errorf("refused restore changed the RTC:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

// FuzzRestoreState restores a JSON-decoded State into a fresh RTC and reads
// and writes a few registers: no panic, and a refused state changes nothing.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"Index":139,"RAM":"AAAAAAAAAAAAACYCAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Offset":-1000,"StatusCFlags":16}`))
	f.Add([]byte(`{"RAM":"/////////////yaGAID///////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////8=","Offset":1099511627776}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var s State
		if json.Unmarshal(in, &s) != nil {
			return
		}
		c, clk := newAt(leapDay)
		fresh := c.SaveState()
		if err := c.RestoreState(s); err != nil && !reflect.DeepEqual(c.SaveState(), fresh) {
			t.Fatalf("refused restore changed the RTC: %v", err)
		}
		b := []byte{0}
		for _, r := range []byte{RegSeconds, RegHours, RegYear, RegCentury, RegA, RegC, RegD} {
			_ = c.Write(0, []byte{r})
			_ = c.Read(1, b)
			if r == RegD && b[0] != DefaultD {
				t.Fatalf("status D %#02x", b[0])
			}
		}
		clk.t = clk.t.Add(time.Second)
		_ = c.Write(0, []byte{RegB, 0})
		_ = c.Write(0, []byte{RegMinutes, 0x59})
		_ = c.Write(0, []byte{RegB, BSET})
		_ = c.Write(0, []byte{RegB, 0})
		_ = c.Read(0, []byte{0, 0})
	})
}
