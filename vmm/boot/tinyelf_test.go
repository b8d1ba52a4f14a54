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
