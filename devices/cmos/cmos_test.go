package cmos

import (
	"sync"
	"testing"
	"time"
)

// clock is a settable fake host clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newAt(t time.Time) (*CMOS, *clock) {
	clk := &clock{t}
	return New(clk.now), clk
}

func rd(t *testing.T, c *CMOS, idx byte) byte {
	t.Helper()
	if err := c.Write(0, []byte{idx}); err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if err := c.Read(1, b); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

func wr(t *testing.T, c *CMOS, idx, v byte) {
	t.Helper()
	if err := c.Write(0, []byte{idx}); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(1, []byte{v}); err != nil {
		t.Fatal(err)
	}
}

// Thursday 29 February 2024, 13:45:07 UTC.
var leapDay = time.Date(2024, time.February, 29, 13, 45, 7, 500e6, time.UTC)

func TestTimeRegisters(t *testing.T) {
	regs := []byte{RegSeconds, RegMinutes, RegHours, RegWeekday, RegDay, RegMonth, RegYear, RegCentury}
	tests := []struct {
		name string
		at   time.Time
		b    byte
		want []byte // in the order of regs
	}{
		{"BCD 24h (reset default)", leapDay, DefaultB,
			[]byte{0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}},
		{"binary 24h", leapDay, BDM | B24H,
			[]byte{7, 45, 13, 5, 29, 2, 24, 20}},
		{"BCD 12h, 1 PM", leapDay, 0,
			[]byte{0x07, 0x45, 0x81, 0x05, 0x29, 0x02, 0x24, 0x20}},
		{"binary 12h, 1 PM", leapDay, BDM,
			[]byte{7, 45, 0x81, 5, 29, 2, 24, 20}},
		{"BCD 12h, 00:30 is 12 AM", time.Date(1999, 12, 31, 0, 30, 59, 0, time.UTC), 0,
			[]byte{0x59, 0x30, 0x12, 0x06, 0x31, 0x12, 0x99, 0x19}},
		{"BCD 12h, 12:30 is 12 PM", time.Date(2000, 1, 2, 12, 30, 0, 0, time.UTC), 0,
			[]byte{0x00, 0x30, 0x92, 0x01, 0x02, 0x01, 0x00, 0x20}},
		{"binary 12h, 23:59 is 11 PM", time.Date(2099, 7, 4, 23, 59, 58, 0, time.UTC), BDM,
			[]byte{58, 59, 0x8b, 7, 4, 7, 99, 20}},
		{"host zone converted to UTC", time.Date(2024, 2, 29, 23, 45, 7, 0, time.FixedZone("UTC+10", 10*3600)), DefaultB,
			[]byte{0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newAt(tt.at)
			wr(t, c, RegB, tt.b)
			for i, r := range regs {
				if got := rd(t, c, r); got != tt.want[i] {
					t.Errorf("%s = %#02x, want %#02x", RegName(r), got, tt.want[i])
				}
			}
		})
	}
}

func TestStatusRegisters(t *testing.T) {
	c, _ := newAt(leapDay)
	tests := []struct {
		reg, want byte
	}{
		{RegA, DefaultA},
		{RegB, DefaultB},
		{RegC, 0x00},
		{RegD, DVRT},
	}
	for _, tt := range tests {
		if got := rd(t, c, tt.reg); got != tt.want {
			t.Errorf("%s = %#02x, want %#02x", RegName(tt.reg), got, tt.want)
		}
	}
	// UIP is read-only 0; the other bits of A are storage.
	wr(t, c, RegA, 0xff)
	if got := rd(t, c, RegA); got != 0x7f {
		t.Errorf("status A after writing 0xff = %#02x, want 0x7f", got)
	}
	// C and D ignore writes.
	wr(t, c, RegC, 0xff)
	wr(t, c, RegD, 0x00)
	if got := rd(t, c, RegC); got != 0 {
		t.Errorf("status C = %#02x after a write", got)
	}
	if got := rd(t, c, RegD); got != DVRT {
		t.Errorf("status D = %#02x after a write", got)
	}
	// B stores everything; SET clears UIE.
	wr(t, c, RegB, 0x7f)
	if got := rd(t, c, RegB); got != 0x7f {
		t.Errorf("status B = %#02x, want 0x7f", got)
	}
	wr(t, c, RegB, 0xff)
	if got := rd(t, c, RegB); got != 0xff&^BUIE {
		t.Errorf("status B = %#02x, want %#02x (SET clears UIE)", got, 0xff&^BUIE)
	}
}

func TestStatusCUpdateFlag(t *testing.T) {
	c, clk := newAt(leapDay)
	steps := []struct {
		advance time.Duration
		b       byte
		want    byte
	}{
		{0, DefaultB, 0x00},
		{300 * time.Millisecond, DefaultB, 0x00}, // same second
		{time.Second, DefaultB, CUF},
		{0, DefaultB, 0x00}, // read clears
		{5 * time.Second, DefaultB | BUIE, CIRQF | CUF},
		{0, DefaultB | BUIE, 0x00},
		{time.Second, DefaultB | BAIE, CUF}, // UF set but not enabled: no IRQF
	}
	for i, s := range steps {
		clk.t = clk.t.Add(s.advance)
		wr(t, c, RegB, s.b)
		if got := rd(t, c, RegC); got != s.want {
			t.Errorf("step %d: status C = %#02x, want %#02x", i, got, s.want)
		}
	}
}

func TestNMIBitIgnoredForIndexing(t *testing.T) {
	c, _ := newAt(leapDay)
	for _, idx := range []byte{RegB, RegSeconds, 0x40, 0x7f} {
		wr(t, c, idx, 0) // clears NVRAM, harmless for B/seconds here
		plain := rd(t, c, idx)
		if c.NMIDisabled() {
			t.Fatalf("index %#02x: NMI reported disabled", idx)
		}
		if got := rd(t, c, idx|IndexNMIDisable); got != plain {
			t.Errorf("index %#02x|0x80 = %#02x, plain %#02x", idx, got, plain)
		}
		if !c.NMIDisabled() {
			t.Fatalf("index %#02x|0x80: NMI not reported disabled", idx)
		}
	}
	// Writes through an NMI-disabling index land on the same register.
	wr(t, c, 0x80|0x50, 0xa5)
	if got := rd(t, c, 0x50); got != 0xa5 {
		t.Errorf("NVRAM 0x50 = %#02x, want 0xa5", got)
	}
	// Port 0x70 reads back what was written, NMI bit included.
	_ = c.Write(0, []byte{0x8d})
	b := []byte{0}
	_ = c.Read(0, b)
	if b[0] != 0x8d {
		t.Errorf("port 0x70 reads %#02x, want 0x8d", b[0])
	}
}

func TestNVRAMRoundTrip(t *testing.T) {
	c, _ := newAt(leapDay)
	special := func(i byte) bool { return isTimeReg(i) || (i >= RegA && i <= RegD) }
	for i := 0; i < Size; i++ {
		if !special(byte(i)) {
			wr(t, c, byte(i), byte(i)^0x5a)
		}
	}
	for i := 0; i < Size; i++ {
		if special(byte(i)) {
			continue
		}
		if got := rd(t, c, byte(i)); got != byte(i)^0x5a {
			t.Errorf("index %#02x = %#02x, want %#02x", i, got, byte(i)^0x5a)
		}
	}
	// The alarms are among them.
	for _, r := range []byte{RegSecondsAlarm, RegMinutesAlarm, RegHoursAlarm} {
		if got := rd(t, c, r); got != r^0x5a {
			t.Errorf("%s = %#02x", RegName(r), got)
		}
	}
}

func TestSetClockWithSET(t *testing.T) {
	c, clk := newAt(leapDay)
	wr(t, c, RegB, DefaultB|BSET)
	// Frozen: the host clock moves, the registers do not.
	clk.t = clk.t.Add(10 * time.Second)
	if got := rd(t, c, RegSeconds); got != 0x07 {
		t.Fatalf("frozen seconds = %#02x, want 0x07", got)
	}
	// 2031-05-17 08:09:10, written in BCD.
	for _, w := range [][2]byte{{RegSeconds, 0x10}, {RegMinutes, 0x09}, {RegHours, 0x08},
		{RegDay, 0x17}, {RegMonth, 0x05}, {RegYear, 0x31}, {RegCentury, 0x20}, {RegWeekday, 0x01}} {
		wr(t, c, w[0], w[1])
		if got := rd(t, c, w[0]); got != w[1] {
			t.Fatalf("frozen %s reads %#02x, want %#02x", RegName(w[0]), got, w[1])
		}
	}
	wr(t, c, RegB, DefaultB) // run again
	if got := rd(t, c, RegC); got != 0 {
		t.Errorf("status C = %#02x right after setting the clock, want 0", got)
	}
	clk.t = clk.t.Add(65 * time.Second)
	want := map[byte]byte{RegSeconds: 0x15, RegMinutes: 0x10, RegHours: 0x08, RegDay: 0x17,
		RegMonth: 0x05, RegYear: 0x31, RegCentury: 0x20, RegWeekday: 0x07} // Saturday, not the 0x01 written
	for r, w := range want {
		if got := rd(t, c, r); got != w {
			t.Errorf("%s = %#02x, want %#02x", RegName(r), got, w)
		}
	}
	// The 65 s since are update cycles.
	if got := rd(t, c, RegC); got != CUF {
		t.Errorf("status C = %#02x", got)
	}
}

func TestSetClockRunning(t *testing.T) {
	c, _ := newAt(leapDay)
	wr(t, c, RegMinutes, 0x59)
	wr(t, c, RegHours, 0x23)
	if got := rd(t, c, RegMinutes); got != 0x59 {
		t.Errorf("minutes = %#02x", got)
	}
	if got := rd(t, c, RegHours); got != 0x23 {
		t.Errorf("hours = %#02x", got)
	}
	if got := rd(t, c, RegDay); got != 0x29 {
		t.Errorf("day = %#02x", got)
	}
	// Garbage normalises instead of breaking the clock: BCD month 0x13 is
	// month 13, January of the next year.
	wr(t, c, RegMonth, 0x13)
	if m, y := rd(t, c, RegMonth), rd(t, c, RegYear); m != 0x01 || y != 0x25 {
		t.Errorf("month/year = %#02x/%#02x, want 0x01/0x25 (29 Jan 2025)", m, y)
	}
	// Binary mode writes decode as binary.
	wr(t, c, RegB, BDM|B24H)
	wr(t, c, RegYear, 30)
	if got := rd(t, c, RegYear); got != 30 {
		t.Errorf("binary year = %d", got)
	}
}

func TestWordAccessSplits(t *testing.T) {
	c, _ := newAt(leapDay)
	// outw 0x70 with 0x4142: index 0x42, then data 0x41.
	if err := c.Write(0, []byte{0x42, 0x41}); err != nil {
		t.Fatal(err)
	}
	if got := rd(t, c, 0x42); got != 0x41 {
		t.Fatalf("NVRAM 0x42 = %#02x", got)
	}
	b := []byte{0, 0}
	if err := c.Read(0, b); err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x42 || b[1] != 0x41 {
		t.Fatalf("word read = % x, want 42 41", b)
	}
}

func TestBadWidths(t *testing.T) {
	c, _ := newAt(leapDay)
	wr(t, c, 0x20, 0x11)
	for _, a := range []struct {
		off uint64
		n   int
	}{{0, 0}, {0, 4}, {0, 8}, {1, 2}, {2, 1}, {1 << 40, 1}} {
		b := make([]byte, a.n)
		if err := c.Read(a.off, b); err == nil {
			t.Errorf("%d-byte read at %d: no error", a.n, a.off)
		}
		for _, v := range b {
			if v != 0xff {
				t.Errorf("%d-byte read at %d: %#02x, want 0xff", a.n, a.off, v)
			}
		}
		w := make([]byte, a.n)
		if err := c.Write(a.off, w); err == nil {
			t.Errorf("%d-byte write at %d: no error", a.n, a.off)
		}
	}
	if got := rd(t, c, 0x20); got != 0x11 {
		t.Errorf("a bad access changed NVRAM: %#02x", got)
	}
}

func TestDescribe(t *testing.T) {
	c, _ := newAt(leapDay)
	_ = c.Write(0, []byte{RegB})
	tests := []struct {
		off   uint64
		write bool
		data  []byte
		want  string
	}{
		{1, false, []byte{0x02}, "CMOS read index 0x0b (status B) = 0x02"},
		{1, true, []byte{0x82}, "CMOS write index 0x0b (status B) = 0x82"},
		{0, true, []byte{0x8d}, "CMOS select index 0x0d (status D), NMI disabled"},
		{0, true, []byte{0x32}, "CMOS select index 0x32 (century), NMI enabled"},
		{0, false, []byte{0x0b}, "CMOS index port read 0x0b"},
		{0, true, []byte{0x10, 0x01}, "CMOS select index 0x10 (NVRAM), NMI enabled; CMOS write index 0x10 (NVRAM) = 0x01"},
		{0, true, []byte{1, 2, 3, 4}, "CMOS bad 4-byte access at offset 0"},
	}
	for _, tt := range tests {
		if got := c.Describe(tt.off, tt.write, tt.data); got != tt.want {
			t.Errorf("got %q\nwant %q", got, tt.want)
		}
	}
}

// TestConcurrent: several vCPUs using the index/data pair at once can
// interleave (real software takes a lock), but the device must stay
// consistent; run with -race.
func TestConcurrent(t *testing.T) {
	c := New(nil) // the real host clock
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			b := []byte{0}
			for i := 0; i < 500; i++ {
				_ = c.Write(0, []byte{byte(i) & 0x7f})
				_ = c.Read(1, b)
				_ = c.Write(0, []byte{0x40 + byte(g)})
				_ = c.Write(1, b)
				_ = c.Describe(1, false, b)
				_ = c.NMIDisabled()
			}
		}(g)
	}
	wg.Wait()
	if got := rd(t, c, RegD); got != DVRT {
		t.Fatalf("status D = %#02x", got)
	}
}
