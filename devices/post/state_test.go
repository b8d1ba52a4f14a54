package post

import (
	"encoding/json"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		writes [][]byte
	}{
		{"no code yet", nil},
		{"one code", [][]byte{{0x42}}},
		{"last of several, from a word write", [][]byte{{0x10}, {0xaa, 0xbb}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New()
			for _, w := range tc.writes {
				if err := a.Write(0, w); err != nil {
					t.Fatal(err)
				}
			}
			j, err := json.Marshal(a.SaveState())
			if err != nil {
				t.Fatal(err)
			}
			var s State
			if err := json.Unmarshal(j, &s); err != nil {
				t.Fatalf("unmarshal %s: %v", j, err)
			}
			b := New()
			if err := b.RestoreState(s); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 2, 4} {
				ra, rb := make([]byte, n), make([]byte, n)
				if err := a.Read(0, ra); err != nil {
					t.Fatal(err)
				}
				if err := b.Read(0, rb); err != nil {
					t.Fatal(err)
				}
				if string(ra) != string(rb) {
					t.Errorf("%d-byte read: original %x, restored %x", n, ra, rb)
				}
			}
		})
	}
}

// TestStateHostile: the only field is a byte, so what a hostile file can
// get wrong is its type and range, which decoding refuses before
// RestoreState is reached.
func TestStateHostile(t *testing.T) {
	for _, in := range []string{`{"Code":256}`, `{"Code":-1}`, `{"Code":"x"}`, `{"Code":1.5}`} {
		var s State
		if err := json.Unmarshal([]byte(in), &s); err == nil {
			t.Errorf("%s decoded to %+v, want an error", in, s)
		}
	}
}

// FuzzRestoreState restores a JSON-decoded State and checks the port reads
// it back in every byte.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"Code":128}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var s State
		if json.Unmarshal(in, &s) != nil {
			return
		}
		p := New()
		if err := p.RestoreState(s); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 3)
		if err := p.Read(0, b); err != nil {
			t.Fatal(err)
		}
		for _, v := range b {
			if v != s.Code {
				t.Fatalf("read %x after restoring %#x", b, s.Code)
			}
		}
		_ = p.Write(0, []byte{^s.Code})
		if p.Last() != ^s.Code {
			t.Fatal("write after restore not latched")
		}
	})
}
