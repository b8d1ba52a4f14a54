package pci

import (
	"bytes"
	"encoding/binary"
	"testing"

	"kvmlab/devices/bus"
)

// FuzzConfig drives CONFIG_ADDRESS and CONFIG_DATA directly (so offsets and
// widths the bus would filter out reach them too) with accesses decoded
// from random bytes, five bytes per access:
//
//	op bit 0:    0 CONFIG_ADDRESS, 1 CONFIG_DATA
//	op bit 1:    write
//	op bits 4:2: width, from {1, 2, 4, 4, 4, 3, 0, 8}
//	op bits 7:5: offset 0-7 (4-7 are outside the register)
//	v0-v3:       the value, little-endian; a dword written to
//	             CONFIG_ADDRESS has its bus number cleared unless bit 30
//	             (reserved, ignored by the device) is set, so most
//	             accesses land on bus 0 where the devices are
//
// The root has the host bridge and, at slot 3, a function with a 32-bit
// memory BAR, an I/O BAR, a 64-bit BAR and an MSI capability. After every
// access it checks that the access failed exactly when it was malformed and
// then read all ones, that CONFIG_ADDRESS holds what a model says, that
// reads match the registers, that read-only state (IDs, class, header type,
// BAR type bits, the capability list) is untouched, and, through the ports
// as a guest would, that 00:00.0 still has its vendor ID and that absent
// functions read all ones.
func FuzzConfig(f *testing.F) {
	const maxOps = 256
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		root := NewRoot()
		dev := newTestFunction(t)
		if err := root.Add(3, dev); err != nil {
			t.Fatal(err)
		}
		ports := [2]bus.Device{root.AddressPort(), root.DataPort()}
		widths := [8]int{1, 2, 4, 4, 4, 3, 0, 8}
		var latch uint32 // model of CONFIG_ADDRESS

		if len(in) > 5*maxOps {
			in = in[:5*maxOps]
		}
		for step := 0; len(in) >= 5; step++ {
			op, v := in[0], binary.LittleEndian.Uint32(in[1:5])
			in = in[5:]
			which, write := op&1, op&2 != 0
			width, off := widths[op>>2&7], uint64(op>>5)
			data := make([]byte, width)
			if which == 0 && write && width == 4 && v&0x40000000 == 0 {
				v &^= 0x00ff0000
			}
			for i := range data {
				data[i] = byte(v >> (8 * i))
			}
			bad := width != 1 && width != 2 && width != 4 || off+uint64(width) > 4
			// What a data access reaches, by the model.
			reg := (int(latch>>24&0xf)<<8 | int(latch&0xfc)) + int(off)
			slot := int(latch >> 11 & 0x1f)
			present := latch&0x80000000 != 0 && latch>>16&0xff == 0 && latch>>8&7 == 0 &&
				reg < ConfigSize && (slot == 0 || slot == 3)

			var err error
			if write {
				err = ports[which].Write(off, data)
			} else {
				err = ports[which].Read(off, data)
			}
			desc := ports[which].(bus.Describer).Describe(off, write, data)
			if (err != nil) != bad {
				t.Fatalf("step %d: %s: err %v, malformed %v", step, desc, err, bad)
			}
			if desc == "" {
				t.Fatalf("step %d: empty description", step)
			}
			switch {
			case bad:
				if !write && !bytes.Equal(data, bytes.Repeat([]byte{0xff}, width)) {
					t.Fatalf("step %d: %s: malformed read filled %x", step, desc, data)
				}
			case which == 0 && write && width == 4:
				latch = v & 0x8ffffffc
			case which == 0 && !write && width == 4:
				if got := binary.LittleEndian.Uint32(data); got != latch {
					t.Fatalf("step %d: CONFIG_ADDRESS read %#08x, model %#08x", step, got, latch)
				}
			case which == 0 && !write:
				if !bytes.Equal(data, bytes.Repeat([]byte{0xff}, width)) {
					t.Fatalf("step %d: %s: narrow CONFIG_ADDRESS read %x", step, desc, data)
				}
			case which == 1 && !write:
				want := bytes.Repeat([]byte{0xff}, width)
				if present {
					cs := root.HostBridge()
					if slot == 3 {
						cs = dev.ConfigSpace
					}
					cs.Load(reg, want)
				}
				if !bytes.Equal(data, want) {
					t.Fatalf("step %d: %s: read %x, want %x", step, desc, data, want)
				}
			}
			checkInvariants(t, step, root, dev, latch)
		}
	})
}

// checkInvariants checks the read-only state host-side, then probes through
// the ports as a guest would, restoring CONFIG_ADDRESS afterwards.
func checkInvariants(t *testing.T, step int, root *Root, dev *testFunction, latch uint32) {
	t.Helper()
	var hdr [HeaderSize]byte
	root.HostBridge().Load(0, hdr[:])
	le := binary.LittleEndian
	if got := le.Uint32(hdr[0:]); got != 0x29c08086 {
		t.Fatalf("step %d: host bridge IDs %#08x", step, got)
	}
	if got := le.Uint32(hdr[8:]); got != 0x06000000 {
		t.Fatalf("step %d: host bridge revision/class %#08x", step, got)
	}
	for _, o := range []int{RegHeaderType, RegBIST, RegCapPointer, RegInterruptPin} {
		if hdr[o] != 0 {
			t.Fatalf("step %d: host bridge reg %#02x = %#02x", step, o, hdr[o])
		}
	}
	if hdr[RegStatus] != 0 || hdr[RegCommand]&^0x47 != 0 || hdr[RegCommand+1]&^0x05 != 0 {
		t.Fatalf("step %d: host bridge command/status %x", step, hdr[4:8])
	}
	for o := RegBAR0; o < RegCapPointer; o++ {
		if hdr[o] != 0 {
			t.Fatalf("step %d: host bridge BAR/ROM byte %#02x = %#02x", step, o, hdr[o])
		}
	}

	var cs [ConfigSize]byte
	dev.Load(0, cs[:])
	if got := le.Uint32(cs[0:]); got != 0x56781234 {
		t.Fatalf("step %d: slot 3 IDs %#08x", step, got)
	}
	if cs[RegStatus]&StatusCapList == 0 || cs[RegCapPointer] != 0x40 || cs[0x40] != CapMSI || cs[0x41] != 0 {
		t.Fatalf("step %d: slot 3 capability list broken", step)
	}
	bars := []struct {
		i         int
		low, mask uint32 // type bits, and the bits below the size
	}{{0, 0x0, 0xfff}, {1, 0x1, 0xffff001f}, {2, 0xc, 0x3fff}}
	for _, b := range bars {
		if got := le.Uint32(cs[RegBAR0+4*b.i:]); got&b.mask != b.low {
			t.Fatalf("step %d: slot 3 BAR%d = %#08x", step, b.i, got)
		}
	}
	for _, i := range []int{4, 5} {
		if got := le.Uint32(cs[RegBAR0+4*i:]); got != 0 {
			t.Fatalf("step %d: slot 3 unimplemented BAR%d = %#08x", step, i, got)
		}
	}

	// Through the ports.
	a, d := root.AddressPort(), root.DataPort()
	buf := make([]byte, 4)
	if err := a.Read(0, buf); err != nil || le.Uint32(buf) != latch {
		t.Fatalf("step %d: CONFIG_ADDRESS %x (err %v), model %#08x", step, buf, err, latch)
	}
	probes := []struct {
		addr, want uint32
	}{
		{0x80000000, 0x29c08086}, // 00:00.0
		{0x80001800, 0x56781234}, // 00:03.0
		{0x80000100, 0xffffffff}, // 00:00.1
		{0x80002800, 0xffffffff}, // 00:05.0
		{0x80010000, 0xffffffff}, // 01:00.0
		{0x80ff1800, 0xffffffff}, // ff:03.0
		{0x00000000, 0xffffffff}, // disabled
	}
	for _, p := range probes {
		if err := a.Write(0, le.AppendUint32(buf[:0], p.addr)); err != nil {
			t.Fatal(err)
		}
		if err := d.Read(0, buf); err != nil || le.Uint32(buf) != p.want {
			t.Fatalf("step %d: probe %#08x read %x (err %v), want %#08x", step, p.addr, buf, err, p.want)
		}
	}
	if err := a.Write(0, le.AppendUint32(buf[:0], latch)); err != nil {
		t.Fatal(err)
	}
}
