package post

import "testing"

// FuzzPort drives the port with accesses decoded from random bytes, two per
// access: op bit 0 write or read, op bits 1-3 the width (0-7 bytes), and v
// the byte written. It checks that nothing fails or panics and that every
// byte of every read is the first byte of the last non-empty write.
func FuzzPort(f *testing.F) {
	f.Add([]byte{0x03, 0x80, 0x02, 0x00})
	f.Add([]byte{0x01, 0x00, 0x0e, 0x00, 0x09, 0x11})
	f.Fuzz(func(t *testing.T, in []byte) {
		p := New()
		var model byte
		for len(in) >= 2 {
			op, v := in[0], in[1]
			in = in[2:]
			data := make([]byte, (op>>1)&7)
			if op&1 == 1 {
				for i := range data {
					data[i] = v + byte(i)
				}
				if err := p.Write(uint64(op>>4), data); err != nil {
					t.Fatalf("write: %v", err)
				}
				if len(data) > 0 {
					model = data[0]
				}
				continue
			}
			if err := p.Read(uint64(op>>4), data); err != nil {
				t.Fatalf("read: %v", err)
			}
			for i, b := range data {
				if b != model {
					t.Fatalf("read byte %d = %#x, want %#x", i, b, model)
				}
			}
		}
	})
}
