package inspect

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"kvmlab/internal/userfile"
)

// Symbols maps kernel symbol names to addresses and back, from a System.map
// (the "address type name" list a kernel build writes) or an ELF vmlinux.
type Symbols struct {
	byName map[string]uint64
	addrs  []uint64
	names  []string
}

// LoadSymbols reads System.map or an ELF file.
func LoadSymbols(path string) (*Symbols, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && string(magic[:]) == "\x7fELF" {
		return elfSymbols(path)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return ParseSystemMap(f)
}

// ParseSystemMap reads "ffffffff81000000 T _text" lines.
func ParseSystemMap(r io.Reader) (*Symbols, error) {
	s := &Symbols{byName: map[string]uint64{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d of the System.map: %q is not an address", n, f[0])
		}
		s.add(f[2], a)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	s.sort()
	return s, nil
}

// LoadSymbolFile is LoadSymbols for a file a user names (kvmlab step
// --symbols): a regular file of at most max bytes (package
// internal/userfile), checked before it is read, since LoadSymbols would
// wait forever on a FIFO.
func LoadSymbolFile(path string, max int64) (*Symbols, error) {
	f, _, err := userfile.Open(path, userfile.Spec{What: "symbol file", Max: max})
	if err != nil {
		return nil, err
	}
	f.Close()
	return LoadSymbols(path)
}

// ReadSymbols reads System.map or an ELF file from an open file: kvmlab
// run opens the file before its seccomp filter goes on (the filter refuses
// open) and reads it only at the first snapshot that needs names.
func ReadSymbols(r io.ReaderAt) (*Symbols, error) {
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err == nil && string(magic[:]) == "\x7fELF" {
		ef, err := elf.NewFile(r)
		if err != nil {
			return nil, err
		}
		return elfFileSymbols(ef)
	}
	return ParseSystemMap(io.NewSectionReader(r, 0, 1<<62))
}

func elfSymbols(path string) (*Symbols, error) {
	ef, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	return elfFileSymbols(ef)
}

func elfFileSymbols(ef *elf.File) (*Symbols, error) {
	syms, err := ef.Symbols()
	if err != nil {
		return nil, err
	}
	s := &Symbols{byName: map[string]uint64{}}
	for _, sy := range syms {
		if sy.Name != "" && sy.Value != 0 {
			s.add(sy.Name, sy.Value)
		}
	}
	s.sort()
	return s, nil
}

func (s *Symbols) add(name string, a uint64) {
	if _, dup := s.byName[name]; !dup {
		s.byName[name] = a
	}
	s.addrs = append(s.addrs, a)
	s.names = append(s.names, name)
}

func (s *Symbols) sort() {
	idx := make([]int, len(s.addrs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return s.addrs[idx[i]] < s.addrs[idx[j]] })
	a := make([]uint64, len(idx))
	n := make([]string, len(idx))
	for i, k := range idx {
		a[i], n[i] = s.addrs[k], s.names[k]
	}
	s.addrs, s.names = a, n
}

// Lookup returns a symbol's address.
func (s *Symbols) Lookup(name string) (uint64, bool) {
	if s == nil {
		return 0, false
	}
	a, ok := s.byName[name]
	return a, ok
}

// Describe returns "name+0xoff" for the symbol at or before addr, or "".
func (s *Symbols) Describe(addr uint64) string {
	if s == nil || len(s.addrs) == 0 {
		return ""
	}
	i := sort.Search(len(s.addrs), func(i int) bool { return s.addrs[i] > addr }) - 1
	if i < 0 {
		return ""
	}
	off := addr - s.addrs[i]
	if off > 1<<20 {
		return "" // too far from any symbol to mean anything
	}
	return fmt.Sprintf("%s+%#x", s.names[i], off)
}

// Len is the number of symbols.
func (s *Symbols) Len() int {
	if s == nil {
		return 0
	}
	return len(s.addrs)
}
