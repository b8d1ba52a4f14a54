package acpi

import (
	"bytes"
	"strings"
	"testing"
)

// decodePkgLength is an independent PkgLength decoder (ACPI 6.4 §20.2.4),
// used to check the encoder. It returns the encoded value and how many bytes
// the encoding took.
func decodePkgLength(b []byte) (value, n int) {
	n = int(b[0]>>6) + 1
	if n == 1 {
		return int(b[0] & 0x3F), 1
	}
	value = int(b[0] & 0x0F)
	for i := 1; i < n; i++ {
		value |= int(b[i]) << (4 + 8*(i-1))
	}
	return value, n
}

func TestAMLPkgLength(t *testing.T) {
	tests := []struct {
		bodyLen int
		want    []byte
	}{
		{0, []byte{0x01}},
		{7, []byte{0x08}},                                     // the _S5_ package
		{62, []byte{0x3F}},                                    // largest 1-byte form: 62+1 = 63
		{63, []byte{0x41, 0x04}},                              // 63+2 = 65 = 0x041
		{0xFFF - 2, []byte{0x4F, 0xFF}},                       // largest 2-byte form: 0xFFF
		{0xFFF - 1, []byte{0x81, 0x00, 0x01}},                 // 0xFFE+3 = 0x1001
		{0xFFFFF - 3, []byte{0x8F, 0xFF, 0xFF}},               // largest 3-byte form
		{0xFFFFF - 2, []byte{0xC1, 0x00, 0x00, 0x01}},         // 0xFFFFD+4 = 0x100001
		{amlMaxPkgLength - 4, []byte{0xCF, 0xFF, 0xFF, 0xFF}}, // largest of all
	}
	for _, tt := range tests {
		got, err := amlPkgLength(tt.bodyLen)
		if err != nil {
			t.Errorf("amlPkgLength(%d): %v", tt.bodyLen, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("amlPkgLength(%d) = % x, want % x", tt.bodyLen, got, tt.want)
		}
		// The value counts the PkgLength bytes themselves; bits 5:4 of
		// a multi-byte lead byte are reserved.
		v, n := decodePkgLength(got)
		if n != len(got) || v != tt.bodyLen+n {
			t.Errorf("amlPkgLength(%d) decodes to value %d in %d bytes, want %d in %d", tt.bodyLen, v, n, tt.bodyLen+len(got), len(got))
		}
		if n > 1 && got[0]&0x30 != 0 {
			t.Errorf("amlPkgLength(%d) sets reserved lead bits: %#x", tt.bodyLen, got[0])
		}
	}
	for _, bad := range []int{-1, amlMaxPkgLength - 3, amlMaxPkgLength + 1} {
		if got, err := amlPkgLength(bad); err == nil {
			t.Errorf("amlPkgLength(%d) = % x, want error", bad, got)
		}
	}
	// Every length up to a few forms round-trips with the shortest form.
	for body := 0; body < 0x2100; body++ {
		got, err := amlPkgLength(body)
		if err != nil {
			t.Fatalf("amlPkgLength(%d): %v", body, err)
		}
		v, n := decodePkgLength(got)
		if v != body+n {
			t.Fatalf("amlPkgLength(%d) round-trips to %d", body, v-n)
		}
		if n > 1 {
			// Shortest: the next shorter form could not have held it.
			if limit := []int{0x3F, 0xFFF, 0xFFFFF}[n-2]; body+n-1 <= limit {
				t.Fatalf("amlPkgLength(%d) uses %d bytes, %d would do", body, n, n-1)
			}
		}
	}
}

func TestAMLInteger(t *testing.T) {
	tests := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},                   // ZeroOp
		{1, []byte{0x01}},                   // OneOp
		{2, []byte{0x0A, 0x02}},             // BytePrefix
		{5, []byte{0x0A, 0x05}},             // BytePrefix
		{0xFF, []byte{0x0A, 0xFF}},          // BytePrefix
		{0x100, []byte{0x0B, 0x00, 0x01}},   // WordPrefix
		{0xFFFF, []byte{0x0B, 0xFF, 0xFF}},  // WordPrefix
		{0x10000, []byte{0x0C, 0, 0, 1, 0}}, // DWordPrefix
		{0xFEE00000, []byte{0x0C, 0, 0, 0xE0, 0xFE}},
		{1 << 32, []byte{0x0E, 0, 0, 0, 0, 1, 0, 0, 0}}, // QWordPrefix
		{^uint64(0), []byte{0x0E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
	}
	for _, tt := range tests {
		if got := amlInteger(tt.v); !bytes.Equal(got, tt.want) {
			t.Errorf("amlInteger(%#x) = % x, want % x", tt.v, got, tt.want)
		}
	}
}

func TestAMLNameString(t *testing.T) {
	tests := []struct {
		path string
		want []byte
	}{
		{"_S5_", []byte("_S5_")},
		{"_S5", []byte("_S5_")}, // padded with '_'
		{"A", []byte("A___")},
		{`\_S5_`, []byte(`\_S5_`)},
		{`\`, []byte{'\\', 0x00}}, // root alone: NullName
		{"^FOO", []byte("^FOO_")},
		{"^^AB1", []byte("^^AB1_")},
		{"_SB.PCI0", append([]byte{0x2E}, "_SB_PCI0"...)},
		{`\_SB.PCI0.ISA`, append([]byte{'\\', 0x2F, 3}, "_SB_PCI0ISA_"...)},
	}
	for _, tt := range tests {
		got, err := amlNameString(tt.path)
		if err != nil {
			t.Errorf("amlNameString(%q): %v", tt.path, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("amlNameString(%q) = % x, want % x", tt.path, got, tt.want)
		}
	}
	for _, bad := range []string{"_s5_", "1ABC", "ABCDE", "A..B", "A.", `\^A`, "A-B", strings.Repeat("A.", 256) + "A"} {
		if got, err := amlNameString(bad); err == nil {
			t.Errorf("amlNameString(%q) = % x, want error", bad, got)
		}
	}
}

func TestAMLPackage(t *testing.T) {
	got, err := amlPackage(amlInteger(5), amlInteger(5), amlInteger(0), amlInteger(0))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}
	if !bytes.Equal(got, want) {
		t.Errorf("Package(4){5,5,0,0} = % x, want % x", got, want)
	}

	empty, err := amlPackage()
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x12, 0x02, 0x00}; !bytes.Equal(empty, want) {
		t.Errorf("Package(0){} = % x, want % x", empty, want)
	}

	// 40 word integers: body = 1 + 40*3 = 121 bytes, so the PkgLength
	// needs the two-byte form: 121+2 = 123 = 0x07B -> 0x4B 0x07.
	var elems [][]byte
	for i := 0; i < 40; i++ {
		elems = append(elems, amlInteger(0x1234))
	}
	big, err := amlPackage(elems...)
	if err != nil {
		t.Fatal(err)
	}
	if len(big) != 1+2+121 || big[0] != 0x12 || big[1] != 0x4B || big[2] != 0x07 || big[3] != 40 {
		t.Errorf("40-element package starts % x, length %d", big[:4], len(big))
	}
	if !bytes.Equal(big[4:7], []byte{0x0B, 0x34, 0x12}) {
		t.Errorf("first element = % x", big[4:7])
	}

	many := make([][]byte, 256)
	for i := range many {
		many[i] = amlInteger(0)
	}
	if _, err := amlPackage(many...); err == nil {
		t.Error("256-element package: want error")
	}
	if _, err := amlPackage(amlInteger(1), nil); err == nil {
		t.Error("package with empty element: want error")
	}
}

func TestAMLName(t *testing.T) {
	got, err := amlName("FOO", amlInteger(0x1234))
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x08, 'F', 'O', 'O', '_', 0x0B, 0x34, 0x12}; !bytes.Equal(got, want) {
		t.Errorf("Name(FOO, 0x1234) = % x, want % x", got, want)
	}
	if _, err := amlName("foo", amlInteger(1)); err == nil {
		t.Error("lower-case name: want error")
	}
	if _, err := amlName("FOO", nil); err == nil {
		t.Error("empty object: want error")
	}
}

func TestS5Object(t *testing.T) {
	tests := []struct {
		slpTyp uint8
		want   []byte
	}{
		// Name(_S5_, Package(4){5, 5, 0, 0}): the bytes iasl emits.
		{5, []byte{0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}},
		{7, []byte{0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x07, 0x0A, 0x07, 0x00, 0x00}},
		// 0 (QEMU's PIIX4 value) and 1 use ZeroOp/OneOp, as iasl does.
		{0, []byte{0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00}},
		{1, []byte{0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00}},
	}
	for _, tt := range tests {
		got, err := s5Object(tt.slpTyp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("s5Object(%d) = % x, want % x", tt.slpTyp, got, tt.want)
		}
	}
}

func TestAMLEisaID(t *testing.T) {
	tests := []struct {
		id   string
		want []byte
	}{
		{"PNP0A03", []byte{0x0C, 0x41, 0xD0, 0x0A, 0x03}}, // 0x030AD041
		{"PNP0A08", []byte{0x0C, 0x41, 0xD0, 0x0A, 0x08}},
		{"PNP0501", []byte{0x0C, 0x41, 0xD0, 0x05, 0x01}},
		{"AAA0000", []byte{0x0C, 0x04, 0x21, 0x00, 0x00}},
		{"ZZZFFFF", []byte{0x0C, 0x6B, 0x5A, 0xFF, 0xFF}},
	}
	for _, tt := range tests {
		got, err := amlEisaID(tt.id)
		if err != nil {
			t.Errorf("amlEisaID(%q): %v", tt.id, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("amlEisaID(%q) = % x, want % x", tt.id, got, tt.want)
		}
	}
	for _, bad := range []string{"", "PNP0A0", "PNP0A030", "pnp0A03", "PNP0a03", "PN10A03", "PNP0G03"} {
		if got, err := amlEisaID(bad); err == nil {
			t.Errorf("amlEisaID(%q) = % x, want error", bad, got)
		}
	}
}

func TestAMLScopeDevice(t *testing.T) {
	name := []byte{0x08, 'F', 'O', 'O', '_', 0x01}
	dev, err := amlDevice("DEV0", name)
	if err != nil {
		t.Fatal(err)
	}
	// DeviceOp, PkgLength 1+4+6 = 11, "DEV0", Name(FOO, One).
	want := append([]byte{0x5B, 0x82, 0x0B, 'D', 'E', 'V', '0'}, name...)
	if !bytes.Equal(dev, want) {
		t.Errorf("Device(DEV0){Name(FOO, One)} = % x, want % x", dev, want)
	}
	sc, err := amlScope(`\_SB`, dev)
	if err != nil {
		t.Fatal(err)
	}
	// ScopeOp, PkgLength 1+5+13 = 19, "\_SB_", the device.
	want = append([]byte{0x10, 0x13, '\\', '_', 'S', 'B', '_'}, dev...)
	if !bytes.Equal(sc, want) {
		t.Errorf("Scope(\\_SB){...} = % x, want % x", sc, want)
	}
	empty, err := amlScope(`\`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x10, 0x03, '\\', 0x00}; !bytes.Equal(empty, want) {
		t.Errorf("Scope(\\){} = % x, want % x", empty, want)
	}
	if _, err := amlDevice("dev0"); err == nil {
		t.Error("lower-case device name: want error")
	}
	if _, err := amlScope(`\_SB`, nil); err == nil {
		t.Error("scope with empty term: want error")
	}
}

func TestAMLBuffer(t *testing.T) {
	got, err := amlBuffer([]byte{0xAA, 0xBB})
	if err != nil {
		t.Fatal(err)
	}
	// BufferOp, PkgLength 1+2+2 = 5, BufferSize BytePrefix 2, the bytes.
	if want := []byte{0x11, 0x05, 0x0A, 0x02, 0xAA, 0xBB}; !bytes.Equal(got, want) {
		t.Errorf("Buffer(){0xAA, 0xBB} = % x, want % x", got, want)
	}
	got, err = amlBuffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x11, 0x02, 0x00}; !bytes.Equal(got, want) {
		t.Errorf("Buffer(){} = % x, want % x", got, want)
	}
	// 0x100 bytes: a WordPrefix size and a two-byte PkgLength.
	got, err = amlBuffer(make([]byte, 0x100))
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x11, 0x45, 0x10, 0x0B, 0x00, 0x01}; !bytes.Equal(got[:6], want) || len(got) != 6+0x100 {
		t.Errorf("Buffer(0x100) starts % x (length %d), want % x", got[:6], len(got), want)
	}
}
