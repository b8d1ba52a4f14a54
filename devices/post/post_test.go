package post

import (
	"bytes"
	"testing"

	"kvmlab/devices/bus"
)

// The port is a bus.Device and a bus.Describer, like every other device.
var (
	_ bus.Device    = (*Port)(nil)
	_ bus.Describer = (*Port)(nil)
)

func TestPort(t *testing.T) {
	type access struct {
		write bool
		data  []byte
		want  []byte // for reads: what comes back
	}
	tests := []struct {
		name     string
		accesses []access
		last     byte
	}{
		{"reads 0 before any code", []access{{data: []byte{0xff}, want: []byte{0}}}, 0},
		{"a write is latched and read back", []access{{write: true, data: []byte{0x42}}, {data: []byte{0}, want: []byte{0x42}}}, 0x42},
		{"the latest code wins", []access{{write: true, data: []byte{1}}, {write: true, data: []byte{0x99}}, {data: []byte{0}, want: []byte{0x99}}}, 0x99},
		{"a word write latches its first byte", []access{{write: true, data: []byte{0x12, 0x34}}, {data: []byte{0}, want: []byte{0x12}}}, 0x12},
		{"a wide read repeats the code in every byte", []access{{write: true, data: []byte{0xa5}}, {data: make([]byte, 4), want: []byte{0xa5, 0xa5, 0xa5, 0xa5}}}, 0xa5},
		{"an empty write changes nothing", []access{{write: true, data: []byte{7}}, {write: true, data: nil}, {data: []byte{0}, want: []byte{7}}}, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New()
			for i, a := range tc.accesses {
				var err error
				if a.write {
					err = p.Write(0, a.data)
				} else {
					err = p.Read(0, a.data)
				}
				if err != nil {
					t.Fatalf("access %d: %v, want no error: the guest cannot make the port fail", i, err)
				}
				if !a.write && !bytes.Equal(a.data, a.want) {
					t.Errorf("access %d: read % x, want % x", i, a.data, a.want)
				}
			}
			if got := p.Last(); got != tc.last {
				t.Errorf("Last() = %#x, want %#x", got, tc.last)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		name  string
		write bool
		data  []byte
		want  string
	}{
		{"write: Linux's I/O delay", true, []byte{0x00}, "POST code 0x00 (I/O delay)"},
		{"write of a code", true, []byte{0x3c}, "POST code 0x3c (I/O delay)"},
		{"read", false, []byte{0}, "POST read"},
		{"empty write", true, nil, "POST read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := New().Describe(0, tc.write, tc.data); got != tc.want {
				t.Errorf("Describe = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestOnTheBus registers the port where the PC has it and drives it through
// the bus, as the vCPU loop does for an OUT to 0x80.
func TestOnTheBus(t *testing.T) {
	b := bus.New()
	p := New()
	if err := b.Register(bus.PIO, 0x80, Size, "POST", p); err != nil {
		t.Fatal(err)
	}
	if r, err := b.Write(bus.PIO, 0x80, []byte{0x55}); err != nil || !r.Handled || r.Name != "POST" {
		t.Fatalf("OUT 0x80 = %+v, %v; want handled by POST", r, err)
	}
	got := []byte{0}
	if _, err := b.Read(bus.PIO, 0x80, got); err != nil || got[0] != 0x55 {
		t.Errorf("IN 0x80 = %#x, %v; want 0x55", got[0], err)
	}
	if r, _ := b.Write(bus.PIO, 0x81, []byte{1}); r.Handled {
		t.Errorf("port 0x81 handled by %q: the POST port is one port wide", r.Name)
	}
}
