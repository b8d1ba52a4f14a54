package exits

import "testing"

// BenchmarkDecode measures Decode alone, the first step of every exit that
// reaches user space, for the exits a booting guest produces most (a
// one-byte OUT to the serial port, a 4-byte MMIO read) and for a reason with
// no payload. Decode reuses the Exit's storage, so it must report 0
// allocs/op; a change to the run-page layout code must not move these
// figures.
//
//	go test -run '^$' -bench Decode ./vmm/exits/
func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name  string
		build func(run []byte)
	}{
		{"io-out", func(run []byte) { EncodeIO(run, Out, 1, 0x3f8, 1, 0x1000, []byte{'H'}) }},
		{"mmio-read", func(run []byte) { EncodeMMIO(run, 0xfed000f0, make([]byte, 4), false) }},
		{"hlt", func(run []byte) { EncodeReason(run, HLT) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			run := make([]byte, realRunSize)
			c.build(run)
			var e Exit
			b.ReportAllocs()
			for b.Loop() {
				if err := Decode(run, &e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
