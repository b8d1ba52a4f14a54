package boot

import "testing"

// TestTinyELFParses checks that the loader accepts TinyELF's output as a
// 64-bit ELF kernel.
func TestTinyELFParses(t *testing.T) {
	img, err := Parse(TinyELF([]byte{0xf4}))
	if err != nil {
		t.Fatalf("Parse(TinyELF): %v", err)
	}
	if img == nil {
		t.Fatal("Parse(TinyELF) returned nothing")
	}
}

// TestPortLoopELF checks the loop guest's shape: a loadable ELF whose code
// starts with mov ecx, n (little-endian n), loops on out 0x80 and ends
// with the PM1a_CNT write and a halt.
func TestPortLoopELF(t *testing.T) {
	f := PortLoopELF(0x01020304)
	if _, err := Parse(f); err != nil {
		t.Fatalf("Parse(PortLoopELF): %v", err)
	}
	code := f[0x1000:]
	for _, c := range []struct {
		off  int
		want []byte
	}{
		{0, []byte{0xb9, 0x04, 0x03, 0x02, 0x01}}, // mov ecx, 0x01020304
		{5, []byte{0xe6, 0x80}},                   // out 0x80, al
		{11, []byte{0x66, 0xba, 0x04, 0x06}},      // mov dx, 0x604
		{21, []byte{0xf4}},                        // hlt
	} {
		if got := code[c.off : c.off+len(c.want)]; string(got) != string(c.want) {
			t.Errorf("code[%d:] = % x, want % x", c.off, got, c.want)
		}
	}
}
