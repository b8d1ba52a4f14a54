package i8042

import (
	"testing"

	"kvmlab/devices/bus"
	"kvmlab/devices/irq"
)

// FuzzI8042 drives the controller with accesses decoded from random bytes,
// two bytes per access:
//
//	op bit 0: port (0 = data 0x60, 1 = command 0x64)
//	op bit 1: write
//	op bits 2-4: shape: 0-4 a good 1-byte access at offset 0; 5 a 1-byte
//	             access at the nonexistent offset 1; 6, 7 an access of
//	             op>>5 bytes (0-7, so mostly a bad width)
//	value: the byte written (every byte of a wider access)
//
// Besides not panicking it checks that the status register never shows IBF,
// TIMEOUT or PARITY, that SYS follows the CTR, that the output queue stays
// bounded, that the IRQ lines follow OBF and the CTR, and that the reset
// callback fires exactly once for each reset request (command 0xF0-0xFF with
// bit 0 clear, or an output-port value with bit 0 clear after 0xD1) and never
// otherwise.
func FuzzI8042(f *testing.F) {
	f.Add([]byte{0x03, 0xfe})                         // command 0xFE
	f.Add([]byte{0x03, 0xd1, 0x02, 0x00})             // D1, output port 0x00
	f.Add([]byte{0x03, 0x60, 0x02, 0x47, 0x03, 0x20}) // CTR round trip
	f.Add([]byte{0x03, 0xaa, 0x01, 0x00, 0x00, 0x00}) // self test, status, data
	f.Add([]byte{0x1b, 0xfe, 0xfb, 0xfe})             // bad widths
	const maxOps = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		resets := 0
		c := New(func() { resets++ })
		kbd, aux := &irq.Fake{}, &irq.Fake{}
		c.SetIRQs(kbd, aux)
		ports := [2]bus.Device{c.DataPort(), c.CommandPort()}
		d1Pending := false // model: the next good data write goes to the output port

		// Long inputs add little but slow every run and the
		// minimisation of each new input.
		if len(in) > 2*maxOps {
			in = in[:2*maxOps]
		}
		for len(in) >= 2 {
			op, v := in[0], in[1]
			in = in[2:]
			isCmd, write := op&1 != 0, op&2 != 0
			dev := ports[op&1]
			width, offset := 1, uint64(0)
			switch sel := (op >> 2) & 7; {
			case sel == 5:
				offset = 1
			case sel >= 6:
				width = int(op >> 5)
			}
			buf := make([]byte, width)
			for i := range buf {
				buf[i] = v
			}
			before := resets
			var err error
			if write {
				err = dev.Write(offset, buf)
			} else {
				err = dev.Read(offset, buf)
			}
			_ = dev.(bus.Describer).Describe(offset, write, buf)

			want := 0
			if width != 1 || offset != 0 {
				if err == nil {
					t.Fatalf("%d-byte access at offset %d: no error", width, offset)
				}
				if !write {
					for i, b := range buf {
						if b != 0xff {
							t.Fatalf("bad-width read byte %d = %#02x", i, b)
						}
					}
				}
			} else if write && isCmd {
				if v >= 0xf0 && v&1 == 0 {
					want = 1
				}
				d1Pending = v == CmdWriteOutPort
			} else if write {
				if d1Pending && v&1 == 0 {
					want = 1
				}
				d1Pending = false
			}
			if got := resets - before; got != want {
				t.Fatalf("op %#02x value %#02x: %d resets, want %d", op, v, got, want)
			}

			c.mu.Lock()
			st := c.status()
			ctr := c.ram[0]
			n := len(c.queue)
			kl, al := c.irqLevels()
			c.mu.Unlock()
			if st&(StatusIBF|StatusTimeout|StatusParity) != 0 {
				t.Fatalf("status %#02x", st)
			}
			if (st&StatusSYS != 0) != (ctr&CTRSys != 0) {
				t.Fatalf("status %#02x disagrees with CTR %#02x", st, ctr)
			}
			if (st&StatusOBF != 0) != (n > 0) || n > maxQueue {
				t.Fatalf("status %#02x with %d queued", st, n)
			}
			if kbd.High() != kl || aux.High() != al {
				t.Fatalf("IRQ lines %v/%v, want %v/%v", kbd.High(), aux.High(), kl, al)
			}
		}
	})
}
