package acpipm

import (
	"testing"

	"kvmlab/devices/irq"
)

// FuzzPM drives the PM1a block with accesses decoded from random bytes,
// three bytes per access:
//
//	op 0xff: press the power button
//	op bit 7: write; bits 0-2: offset (6 and 7 are outside the block);
//	bits 3-5: width (0, 1: 1 byte; 2, 3: 2; 4, 5: 4; 6: 0; 7: 3)
//	a, b: data bytes (a wider access repeats a, b, a^b, ^a)
//
// It checks that nothing panics and, against an independent model, that
// poweroff happens exactly when a write sets SLP_EN with SLP_TYP = 5 in the
// byte at offset 5 (which alone holds both fields), that Write fails exactly
// for bad accesses and unsupported sleep types, that written status bits
// are cleared (write 1 to clear), that PM1_CNT always reads with SCI_EN and
// without write-only or reserved bits, that PM1_EN keeps only defined bits,
// and that the SCI line follows status AND enable.
func FuzzPM(f *testing.F) {
	f.Add([]byte{0x94, 0x01, 0x34})                                     // word write 0x3401 to PM1_CNT
	f.Add([]byte{0x85, 0x34, 0x00})                                     // byte write 0x34 to offset 5
	f.Add([]byte{0x90, 0x00, 0x80, 0x94, 0x01, 0x14, 0x94, 0x01, 0x34}) // ACPICA's S5 sequence
	f.Add([]byte{0xff, 0, 0, 0x92, 0x00, 0x01, 0x90, 0x00, 0x01})       // power button, enable, ack
	f.Add([]byte{0x86, 0xff, 0xff, 0xb4, 0xff, 0xff, 0x3d, 0, 0})       // bad accesses
	const maxOps = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		offs := 0
		pm := New(func() { offs++ })
		sci := &irq.Fake{}
		pm.SetSCI(sci)
		widths := [8]int{1, 1, 2, 2, 4, 4, 0, 3}
		// Long inputs add little but slow every run and the
		// minimisation of each new input.
		if len(in) > 3*maxOps {
			in = in[:3*maxOps]
		}
		for len(in) >= 3 {
			op, a, b := in[0], in[1], in[2]
			in = in[3:]
			if op == 0xff {
				pm.PowerButton()
				checkPM(t, pm, sci)
				continue
			}
			write, off, n := op&0x80 != 0, uint64(op&7), widths[(op>>3)&7]
			data := []byte{a, b, a ^ b, ^a}[:n]
			good := off+uint64(n) <= Size && n != 0 && n != 3
			before := offs
			var err error
			if write {
				err = pm.Write(off, data)
			} else {
				err = pm.Read(off, data)
			}
			_ = pm.Describe(off, write, data)

			wantOff, wantErr := false, !good
			if good && write && off <= 5 && off+uint64(n) > 5 {
				hi := data[5-off]
				if hi&0x20 != 0 { // SLP_EN
					if (hi>>2)&7 == SlpTypS5 {
						wantOff = true
					} else {
						wantErr = true
					}
				}
			}
			if (err != nil) != wantErr {
				t.Fatalf("op %#02x data % x: err = %v, want error %v", op, data, err, wantErr)
			}
			if got := offs - before; (got == 1) != wantOff || got > 1 {
				t.Fatalf("op %#02x data % x: poweroff called %d times", op, data, got)
			}
			if !good && !write {
				for _, v := range data {
					if v != 0xff {
						t.Fatalf("bad read returned % x", data)
					}
				}
			}
			if good && write && off < 2 {
				pm.mu.Lock()
				sts := pm.sts
				pm.mu.Unlock()
				for i := off; i < 2 && i < off+uint64(n); i++ {
					cleared := uint16(data[i-off]) << (8 * i)
					if wantErr {
						cleared &^= StsWak // the refused sleep set it again
					}
					if sts&cleared != 0 {
						t.Fatalf("wrote % x at %d: PM1_STS = %#04x", data, off, sts)
					}
				}
			}
			checkPM(t, pm, sci)
		}
	})
}

func checkPM(t *testing.T, pm *PM, sci *irq.Fake) {
	t.Helper()
	b := make([]byte, 6)
	if err := pm.Read(0, b[:4]); err != nil {
		t.Fatal(err)
	}
	if err := pm.Read(4, b[4:]); err != nil {
		t.Fatal(err)
	}
	sts := uint16(b[0]) | uint16(b[1])<<8
	en := uint16(b[2]) | uint16(b[3])<<8
	cnt := uint16(b[4]) | uint16(b[5])<<8
	if sts&^(StsPwrBtn|StsWak) != 0 {
		t.Fatalf("PM1_STS = %#04x has bits nothing sets", sts)
	}
	if en&^enMask != 0 {
		t.Fatalf("PM1_EN = %#04x", en)
	}
	if cnt&CntSCIEn == 0 || cnt&^(CntSCIEn|CntBMRld|CntSlpTyp) != 0 {
		t.Fatalf("PM1_CNT = %#04x", cnt)
	}
	if want := sts&en&sciEvents != 0; sci.High() != want {
		t.Fatalf("SCI %v with PM1_STS %#04x PM1_EN %#04x", sci.High(), sts, en)
	}
}
