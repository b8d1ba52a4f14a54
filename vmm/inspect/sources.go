package inspect

import (
	"bytes"
	"os"
	"path/filepath"
)

// SymbolSources opens the files names for guest kernel addresses can come
// from: a System.map beside the kernel (the kvmlab guest's build leaves one
// there), then the kernel itself when it is an ELF vmlinux. A VMM opens them
// before its seccomp filter goes on, which refuses open, and reads them only
// when it needs names (FirstSymbols): a System.map is megabytes of heap.
func SymbolSources(kernel string) []*os.File {
	if kernel == "" {
		return nil
	}
	var out []*os.File
	if f, err := os.Open(filepath.Join(filepath.Dir(kernel), "System.map")); err == nil {
		out = append(out, f)
	}
	if f, err := os.Open(kernel); err == nil {
		var magic [4]byte
		if _, err := f.ReadAt(magic[:], 0); err == nil && bytes.Equal(magic[:], []byte("\x7fELF")) {
			out = append(out, f)
		} else {
			f.Close()
		}
	}
	return out
}

// FirstSymbols reads the symbols of the first of sources that has any; nil
// when none has.
func FirstSymbols(sources []*os.File) *Symbols {
	for _, f := range sources {
		if sym, err := ReadSymbols(f); err == nil && sym.Len() > 0 {
			return sym
		}
	}
	return nil
}
