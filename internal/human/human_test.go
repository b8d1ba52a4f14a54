package human

import "testing"

func TestNum(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{
		{0, "0.00"}, {1.234, "1.23"}, {9.999, "10.00"}, {10, "10.0"}, {56.78, "56.8"}, {999.9, "999.9"}, {1000, "1000"}, {12345.6, "12346"},
	} {
		if got := Num(c.in); got != c.want {
			t.Errorf("Num(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMiB(t *testing.T) {
	for _, c := range []struct {
		in   uint64
		want float64
	}{{0, 0}, {1 << 20, 1}, {3 << 19, 1.5}, {5 << 30, 5120}} {
		if got := MiB(c.in); got != c.want {
			t.Errorf("MiB(%d) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestTailLines(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"one\n", 3, "one"},
		{"a\nb\nc\nd\n", 2, "c | d"},
		{"a\nb\n\n", 3, "a | b"}, // trailing blank lines do not count
		{"a\nb", 5, "a | b"},
	} {
		if got := TailLines(c.in, c.n); got != c.want {
			t.Errorf("TailLines(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestBits(t *testing.T) {
	lsr := []string{"DR", "OE", "PE", "FE", "BI", "THRE", "TEMT", "RXFE"}
	cr0 := []string{0: "PE", 1: "MP", 4: "ET", 5: "NE", 16: "WP", 18: "AM", 31: "PG"}
	for _, c := range []struct {
		v     uint64
		names []string
		want  string
	}{
		{0x61, lsr, "DR THRE TEMT"},
		{0, lsr, "none"},
		{0xff, lsr, "DR OE PE FE BI THRE TEMT RXFE"},
		{0x80050033, cr0, "PE MP ET NE WP AM PG"},
		{1<<31 | 1<<3, cr0, "bit3 PG"}, // a bit without a name
		{1 << 40, cr0, "bit40"},        // past the end of names
		{1 << 63, nil, "bit63"},        // the top bit
		{0x0f, []string{"ERBFI", "ETBEI", "ELSI"}, "ERBFI ETBEI ELSI bit3"},
	} {
		if got := Bits(c.v, c.names); got != c.want {
			t.Errorf("Bits(%#x) = %q, want %q", c.v, got, c.want)
		}
	}
}
