package inspect

import (
	"os"
	"path/filepath"
	"testing"

	"kvmlab/guest/tiny"
)

// TestSymbolSources opens a System.map beside the kernel and the kernel
// itself only when it is ELF, and FirstSymbols reads the first that names
// anything.
func TestSymbolSources(t *testing.T) {
	const sysMap = "ffffffff81000000 T _text\nffffffff81000100 T start_kernel\n"
	for _, tc := range []struct {
		name        string
		kernel      []byte // nil: no kernel file
		sysMap      string // "": no System.map
		wantSources int
		wantSymbols int // 0: FirstSymbols returns nil
	}{
		{"bzImage and System.map", []byte("MZ not an ELF file"), sysMap, 1, 2},
		{"bzImage alone", []byte("MZ not an ELF file"), "", 0, 0},
		{"ELF without symbols and System.map", tiny.ELF([]byte{0xf4}), sysMap, 2, 2},
		{"ELF without symbols alone", tiny.ELF([]byte{0xf4}), "", 1, 0},
		{"no kernel file", nil, sysMap, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kernel := filepath.Join(dir, "kernel")
			if tc.kernel != nil {
				if err := os.WriteFile(kernel, tc.kernel, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.sysMap != "" {
				if err := os.WriteFile(filepath.Join(dir, "System.map"), []byte(tc.sysMap), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			src := SymbolSources(kernel)
			defer func() {
				for _, f := range src {
					f.Close()
				}
			}()
			if len(src) != tc.wantSources {
				t.Fatalf("SymbolSources opened %d files, want %d", len(src), tc.wantSources)
			}
			sym := FirstSymbols(src)
			switch {
			case tc.wantSymbols == 0 && sym != nil:
				t.Errorf("FirstSymbols = %d symbols, want nil", sym.Len())
			case tc.wantSymbols != 0 && (sym == nil || sym.Len() != tc.wantSymbols):
				t.Errorf("FirstSymbols = %v, want %d symbols", sym, tc.wantSymbols)
			}
		})
	}
	if src := SymbolSources(""); src != nil {
		t.Errorf("SymbolSources(\"\") = %v, want nil", src)
	}
}
