package tiny

import (
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"kvmlab/vmm/boot"
)

// TestELFParses checks that the loader accepts ELF's output as a
// 64-bit ELF kernel.
func TestELFParses(t *testing.T) {
	img, err := boot.Parse(ELF([]byte{0xf4}))
	if err != nil {
		t.Fatalf("boot.Parse(ELF): %v", err)
	}
	if img == nil {
		t.Fatal("boot.Parse(ELF) returned nothing")
	}
}

// TestPortLoopELF checks the loop guest's shape: a loadable ELF whose code
// starts with mov ecx, n (little-endian n), loops on out 0x80 and ends
// with the PM1a_CNT write and a halt.
func TestPortLoopELF(t *testing.T) {
	f := PortLoopELF(0x01020304)
	if _, err := boot.Parse(f); err != nil {
		t.Fatalf("boot.Parse(PortLoopELF): %v", err)
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

// TestMMIOLoadLoopCode disassembles the MMIO loop guest: the hand-written
// bytes must decode to the instructions its comments name, with the
// address, count and stride in place and the loop jumping back to the load.
func TestMMIOLoadLoopCode(t *testing.T) {
	code := MMIOLoadLoopCode(0xe000_0000, -8, 1234)
	want := []string{
		"MOV EAX, -0x20000000" /* 0xe0000000 as a 32-bit immediate */, "MOV ECX, 0x4d2", "MOV EDX, [RAX]", "ADD RAX, -0x8", "DEC ECX", "JNE .-12",
		"MOV DX, 0x3f8", "MOV AL, 0x6f", "OUT DX, AL", "MOV AL, 0x6b", "OUT DX, AL", "MOV AL, 0xa", "OUT DX, AL",
		"MOV DX, 0x604", "MOV AX, 0x3400", "OUT DX, AX", "HLT", "JMP .-3",
	}
	var got []string
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			t.Fatalf("decode at %d: %v", off, err)
		}
		got = append(got, inst.String())
		off += inst.Len
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("MMIOLoadLoopCode disassembles to\n  %s\nwant\n  %s", strings.Join(got, "; "), strings.Join(want, "; "))
	}
	if _, err := boot.Parse(ELF(code)); err != nil {
		t.Fatalf("boot.Parse(ELF(MMIOLoadLoopCode)): %v", err)
	}
}
