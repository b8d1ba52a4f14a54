package smaps

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	text := `00400000-00700000 r-xp 00000000 08:01 42 /usr/bin/kvm lab
Size:               3072 kB
Rss:                2800 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                 900 kB
Anonymous:           900 kB
7f1000000000-7f1000021000 rw-p 00000000 00:00 0 [heap]
Rss:                  60 kB
7f2000000000-7f2000001000 r--p 00000000 08:01 43 /tmp/x (deleted)
`
	got, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{0x400000, 0x700000, "r-xp", 2800, 0, "/usr/bin/kvm lab"},
		{0x7f0000000000, 0x7f0000100000, "rw-p", 900, 900, ""},
		{0x7f1000000000, 0x7f1000021000, "rw-p", 60, 0, "[heap]"},
		{0x7f2000000000, 0x7f2000001000, "r--p", 0, 0, "/tmp/x (deleted)"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ name, text string }{
		{"not hex", "zz-00700000 r-xp 0 08:01 42 /bin/x\n"},
		{"end before start", "00700000-00400000 r-xp 0 08:01 42 /bin/x\n"},
		{"no range", "00400000 r-xp 0 08:01 42 /bin/x\n"},
		{"no perms", "00400000-00700000\n"},
		{"bad Rss", "00400000-00700000 r-xp 0 08:01 42 /bin/x\nRss: many kB\n"},
		{"bad Anonymous", "00400000-00700000 r-xp 0 08:01 42 /bin/x\nAnonymous: -1 kB\n"},
	} {
		if ms, err := Parse(strings.NewReader(c.text)); err == nil {
			t.Errorf("%s: Parse(%q) = %+v, no error", c.name, c.text, ms)
		}
	}
}

// FuzzParse: any text either parses into mappings whose ranges are
// non-empty and whose figures came from the text, or is refused; it never
// panics.
func FuzzParse(f *testing.F) {
	f.Add("00400000-00700000 r-xp 00000000 08:01 42 /usr/bin/kvmlab\nRss: 2800 kB\nAnonymous: 4 kB\n")
	f.Add("7f0000000000-7f0000100000 rw-p 00000000 00:00 0\nRss: 900 kB\n")
	f.Add("Rss: 4 kB\n")
	f.Fuzz(func(t *testing.T, text string) {
		ms, err := Parse(strings.NewReader(text))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.End <= m.Start {
				t.Errorf("mapping %+v: empty or reversed range accepted", m)
			}
			if m.Perms == "" {
				t.Errorf("mapping %+v: no permissions", m)
			}
		}
	})
}
