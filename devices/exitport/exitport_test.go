package exitport

import (
	"errors"
	"testing"
)

func TestPort(t *testing.T) {
	tests := []struct {
		name    string
		writes  [][]byte
		want    []uint8 // statuses reported, in order
		wantErr []bool  // per write
	}{
		{"one status", [][]byte{{3}}, []uint8{3}, []bool{false}},
		{"zero is a status", [][]byte{{0}}, []uint8{0}, []bool{false}},
		{"255", [][]byte{{255}}, []uint8{255}, []bool{false}},
		{"the first status counts", [][]byte{{7}, {9}}, []uint8{7}, []bool{false, false}},
		{"a word is refused", [][]byte{{1, 0}}, nil, []bool{true}},
		{"an empty write is refused", [][]byte{{}}, nil, []bool{true}},
		{"a refused write does not block a later status", [][]byte{{1, 2, 3, 4}, {42}}, []uint8{42}, []bool{true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint8
			p := New(func(s uint8) { got = append(got, s) })
			for i, w := range tc.writes {
				err := p.Write(0, w)
				if (err != nil) != tc.wantErr[i] {
					t.Fatalf("write %d (% x): err = %v, want error %v", i, w, err, tc.wantErr[i])
				}
				if err != nil && !errors.Is(err, ErrWidth) {
					t.Fatalf("write %d: %v does not wrap ErrWidth", i, err)
				}
			}
			if len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Fatalf("reported %v, want %v", got, tc.want)
			}
			s, ok := p.Status()
			if ok != (len(tc.want) == 1) || (ok && s != tc.want[0]) {
				t.Fatalf("Status() = %d, %v; want %v", s, ok, tc.want)
			}
		})
	}
}

func TestReadFloats(t *testing.T) {
	p := New(nil)
	data := []byte{0, 1, 2, 3}
	if err := p.Read(0, data); err != nil {
		t.Fatal(err)
	}
	for i, b := range data {
		if b != 0xff {
			t.Fatalf("byte %d = %#x, want 0xff", i, b)
		}
	}
	if _, ok := p.Status(); ok {
		t.Fatal("a read reported a status")
	}
}

// FuzzPort drives the port with accesses decoded from random bytes, two per
// access: op bit 0 write or read, bits 1-3 the width (0-7 bytes), v the
// first byte. It checks that nothing panics, that report is called at most
// once and with the first byte of the first one-byte write, and that only
// writes of exactly one byte are accepted.
func FuzzPort(f *testing.F) {
	f.Add([]byte{0x03, 0x03})
	f.Add([]byte{0x05, 0x01, 0x03, 0x7f, 0x03, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		calls := 0
		var first uint8
		p := New(func(s uint8) {
			calls++
			first = s
		})
		want, wanted := uint8(0), false
		for len(in) >= 2 {
			op, v := in[0], in[1]
			in = in[2:]
			data := make([]byte, (op>>1)&7)
			for i := range data {
				data[i] = v + byte(i)
			}
			_ = p.Describe(0, op&1 == 1, data)
			if op&1 == 0 {
				if err := p.Read(0, data); err != nil {
					t.Fatalf("read: %v", err)
				}
				continue
			}
			err := p.Write(0, data)
			if (err != nil) != (len(data) != 1) {
				t.Fatalf("write of %d bytes: err = %v", len(data), err)
			}
			if err == nil && !wanted {
				want, wanted = data[0], true
			}
		}
		if calls > 1 || (calls == 1) != wanted || (wanted && first != want) {
			t.Fatalf("report called %d times with %d; want once with %d: %v", calls, first, want, wanted)
		}
	})
}
