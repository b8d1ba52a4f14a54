package inspect

import (
	"bytes"
	"strings"
	"testing"

	"kvmlab/guest/tiny"
)

// TestReadSymbols reads both kinds of symbol file from an open file, as
// kvmlab run does under its seccomp filter: a System.map text, and an ELF
// file.
func TestReadSymbols(t *testing.T) {
	m := "ffffffff81000000 T _text\nffffffff81000100 T start_kernel\n"
	sym, err := ReadSymbols(strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := sym.Lookup("start_kernel"); !ok || a != 0xffffffff81000100 || sym.Len() != 2 {
		t.Errorf("System.map: start_kernel = %#x, %v; %d symbols", a, ok, sym.Len())
	}
	if _, err := ReadSymbols(strings.NewReader("not an address T x\n")); err == nil {
		t.Error("a line without an address was accepted")
	}

	// An ELF file is read as one, not as a System.map: a kernel built
	// without symbols says so.
	_, err = ReadSymbols(bytes.NewReader(tiny.ELF([]byte{0xf4})))
	if err == nil || !strings.Contains(err.Error(), "no symbol section") {
		t.Errorf("an ELF file without symbols: %v, want debug/elf's \"no symbol section\"", err)
	}
}
