package probe

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEachLine(t *testing.T) {
	long := strings.Repeat("x", maxLine+100)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"one", "a\n", []string{"a"}},
		{"no final newline", "a\nb", []string{"a", "b"}},
		{"blank lines", "\n\na\n", []string{"", "", "a"}},
		{"overlong line is cut", long + "\nnext\n", []string{long[:maxLine], "next"}},
		{"overlong last line", "a\n" + long, []string{"a", long[:maxLine]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			if err := eachLine(strings.NewReader(tt.in), func(l []byte) { got = append(got, string(l)) }); err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("got %d lines, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestParseCPUInfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     cpuInfo
	}{
		{"vm", cpuinfoVM, cpuInfo{Model: "AMD EPYC Processor", Processors: 2, Hypervisor: true}},
		{"host", cpuinfoHost, cpuInfo{Model: "Intel(R) Xeon(R) CPU @ 2.20GHz", Processors: 4}},
		// Not a flag: a word that contains it, or the word elsewhere.
		{"lookalikes", "processor: 0\nflags: hypervisorx xhypervisor\nmodel name: hypervisor\n", cpuInfo{Model: "hypervisor", Processors: 1}},
		{"no colon", "processor 0\nflags hypervisor\n", cpuInfo{}},
		{"arm64", "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n", cpuInfo{Processors: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUInfo(strings.NewReader(tt.in))
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseMemInfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     uint64
		err      string
	}{
		{"ok", "MemTotal:        8048288 kB\nMemFree: 1 kB\n", 8048288, ""},
		{"second line", "Foo: 1 kB\nMemTotal: 42 kB\n", 42, ""},
		{"missing", "MemFree: 1 kB\n", 0, "no MemTotal line"},
		{"no unit", "MemTotal: 42\n", 0, "want a number and kB"},
		{"negative", "MemTotal: -42 kB\n", 0, "invalid syntax"},
		{"overflow", "MemTotal: 99999999999999999999 kB\n", 0, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMemInfo(strings.NewReader(tt.in))
			if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("got %d, %v; want %d, %q", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseUptime(t *testing.T) {
	for in, want := range map[string]float64{"12.50 3.00\n": 12.5, "0.00 0.00": 0, "7": 7} {
		if got, err := parseUptime([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", " \n", "NaN 1", "+Inf 1", "-1 1", "1e999 1", "x 1"} {
		if got, err := parseUptime([]byte(in)); err == nil {
			t.Errorf("%q: %v, want an error", in, got)
		}
	}
}

func TestParseMountInfo(t *testing.T) {
	// Optional fields between the options and "-": none, one, several.
	in := "1 0 0:1 / / rw - rootfs rootfs rw\n" +
		"2 1 0:2 / /a rw shared:1 - ext4 /dev/vda rw\n" +
		"3 1 0:3 / /b rw shared:2 master:1 propagate_from:1 - xfs /dev/vdb rw\n" +
		"4 1 0:4 / /c rw\n" + // no separator
		"5 1 0:5 / /d rw -\n" + // separator but no type
		"\n"
	n, list, err := parseMountInfo(strings.NewReader(in))
	want := []string{"/ rootfs", "/a ext4", "/b xfs"}
	if n != 5 || strings.Join(list, ",") != strings.Join(want, ",") || err == nil || err.Error() != "2 of 5 lines malformed" {
		t.Errorf("got %d %q %v", n, list, err)
	}
}

func TestClip(t *testing.T) {
	for in, want := range map[string]string{
		" a \n":                           "a",
		"\xffa":                           "\uFFFDa",
		strings.Repeat("a", 300):          strings.Repeat("a", maxString),
		strings.Repeat("€", 100):          strings.Repeat("€", maxString/3),       // 3-byte runes: cut on a rune boundary
		"a" + strings.Repeat("\xff", 300): "a\uFFFD",                              // a run of bad bytes is one replacement
		strings.Repeat("a\xff", 200):      strings.Repeat("a\uFFFD", maxString/4), // replaced before the cut: still within bounds
	} {
		if got := clip(in); got != want {
			t.Errorf("clip(%.20q…) = %.20q…, want %.20q…", in, got, want)
		}
	}
}

// The fuzzers feed the parsers what a hostile guest or container could put
// where a /proc file should be. Beyond not panicking, they check that what
// the parsers keep stays bounded and encodes as JSON.

func FuzzParseCPUInfo(f *testing.F) {
	f.Add([]byte(cpuinfoVM))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCPUInfo(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("error from a bytes.Reader: %v", err)
		}
		if c.Processors < 0 || c.Processors > bytes.Count(b, []byte{'\n'})+1 {
			t.Fatalf("%d processors in %d lines", c.Processors, bytes.Count(b, []byte{'\n'})+1)
		}
		if c.Hypervisor && !bytes.Contains(b, []byte("hypervisor")) {
			t.Fatal("hypervisor bit out of nowhere")
		}
		checkString(t, c.Model)
	})
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add([]byte(mountinfo))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, list, _ := parseMountInfo(bytes.NewReader(b))
		if n < len(list) || len(list) > maxList || n > bytes.Count(b, []byte{'\n'})+1 {
			t.Fatalf("%d mounts, %d listed, from %d bytes", n, len(list), len(b))
		}
		for i, s := range list {
			checkString(t, s)
			if i > 0 && list[i-1] > s {
				t.Fatalf("not sorted: %q > %q", list[i-1], s)
			}
		}
	})
}

func FuzzParseMemInfo(f *testing.F) {
	f.Add([]byte("MemTotal:  245760 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kb, err := parseMemInfo(bytes.NewReader(b))
		if err == nil && !bytes.Contains(b, []byte("MemTotal:")) {
			t.Fatalf("%d kB without a MemTotal line", kb)
		}
		if err != nil && kb != 0 {
			t.Fatalf("%d kB with error %v", kb, err)
		}
	})
}

func FuzzParseUptime(f *testing.F) {
	f.Add([]byte("12.50 3.00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseUptime(b)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("negative uptime %v", v)
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("uptime %v does not encode: %v", v, err)
		}
	})
}

func checkString(t *testing.T, s string) {
	t.Helper()
	if len(s) > maxString || !utf8.ValidString(s) {
		t.Fatalf("kept %d bytes, valid UTF-8 %v: %.40q", len(s), utf8.ValidString(s), s)
	}
}
