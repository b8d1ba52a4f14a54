package bench

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Which parts of the VMM's own binary are resident.
//
// The resident set of a program's image is counted in whole pages, and the
// kernel maps file pages 64 KiB at a time around each fault. Knowing that
// "2 MiB of the binary is resident" does not say why; knowing how much of
// it is code, how much the pclntab (the runtime's function tables, read
// when it grows a stack, scans one for the garbage collector or preempts a
// goroutine) and how much type data does. residentSections answers that
// from /proc/PID/pagemap (bit 63: the page is present) and the executable's
// ELF section headers. Reading another process's pagemap takes the right
// to trace it (root, as the bench runs in the emulated host); the present
// bit itself needs no further privilege.

// sectionResident is one ELF section's resident size.
type sectionResident struct {
	name           string
	size, resident uint64 // bytes
}

// residentSections returns, for each allocated section of pid's executable,
// how much of it is resident in pid's address space.
func residentSections(pid int) ([]sectionResident, error) {
	f, pm, err := openImage(pid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	defer pm.Close()
	return sectionsResident(splitPclntab(f.Sections), pm, os.Getpagesize())
}

// openImage opens pid's executable and its pagemap. The executable must
// be static: only then are its link addresses its load addresses.
func openImage(pid int) (*elf.File, *os.File, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil, nil, err
	}
	f, err := elf.Open(exe)
	if err != nil {
		return nil, nil, err
	}
	if f.Type != elf.ET_EXEC {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a static executable (ELF type %v): its load address is not its link address", exe, f.Type)
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, pm, nil
}

// packageResident is the resident code of one Go package.
type packageResident struct {
	pkg      string
	resident uint64 // bytes of its functions on resident pages
}

// residentTextByPackage says whose code the resident pages of pid's .text
// hold: for each present page, the bytes of each function on it, summed
// by package (from the executable's symbol table). It tells which code
// the running VMM keeps in its working set, and which code merely sits
// next to it within the kernel's 64 KiB fault-around window.
func residentTextByPackage(pid int) ([]packageResident, error) {
	f, pm, err := openImage(pid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	defer pm.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("symbol table: %w (a binary built with -ldflags=-s has none)", err)
	}
	return textByPackage(syms, pm, os.Getpagesize())
}

// goPackage returns the package part of a Go symbol name:
// "kvmlab/vmm.(*Machine).Run" -> "kvmlab/vmm", "runtime.mallocgc" ->
// "runtime", "golang.org/x/sys/unix.Syscall" -> "golang.org/x/sys/unix".
func goPackage(sym string) string {
	slash := strings.LastIndexByte(sym, '/')
	if i := strings.IndexByte(sym[slash+1:], '.'); i >= 0 {
		return sym[:slash+1+i]
	}
	return sym
}

// textByPackage is residentTextByPackage on a symbol table and an open
// pagemap. Symbols without a size, and those that are not functions, are
// left out.
func textByPackage(syms []elf.Symbol, pagemap io.ReaderAt, pageSize int) ([]packageResident, error) {
	ps := uint64(pageSize)
	by := map[string]uint64{}
	present := map[uint64]bool{}
	entry := make([]byte, 8)
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 {
			continue
		}
		end := s.Value + s.Size
		for page := s.Value &^ (ps - 1); page < end; page += ps {
			in, seen := present[page]
			if !seen {
				if _, err := pagemap.ReadAt(entry, int64(page/ps*8)); err != nil {
					return nil, fmt.Errorf("pagemap at %#x: %w", page, err)
				}
				in = binary.LittleEndian.Uint64(entry)&(1<<63) != 0
				present[page] = in
			}
			if in {
				by[goPackage(s.Name)] += min(page+ps, end) - max(page, s.Value)
			}
		}
	}
	out := make([]packageResident, 0, len(by))
	for p, n := range by {
		out = append(out, packageResident{p, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].resident != out[j].resident {
			return out[i].resident > out[j].resident
		}
		return out[i].pkg < out[j].pkg
	})
	return out, nil
}

// formatPackages prints the n packages with the most resident code.
func formatPackages(ps []packageResident, n int) string {
	var b strings.Builder
	var rest uint64
	for i, p := range ps {
		if i >= n {
			rest += p.resident
			continue
		}
		fmt.Fprintf(&b, "  %8d KiB  %s\n", p.resident>>10, p.pkg)
	}
	if rest > 0 {
		fmt.Fprintf(&b, "  %8d KiB  %d other packages\n", rest>>10, len(ps)-n)
	}
	return b.String()
}

// splitPclntab replaces .gopclntab by its tables, named after what reads
// them: function names (tracebacks, runtime.FuncForPC), the compilation
// unit and file tables (file:line), the pc-value tables (stack frame sizes
// and stack maps, read when the runtime unwinds a stack: growing it,
// scanning it for the GC, preempting a goroutine) and the function table
// with its per-function data. The layout is the runtime's pcHeader (Go
// 1.20 and later, src/runtime/symtab.go): seven offsets after a 16-byte
// prefix, each relative to the start of the section. Anything unexpected
// leaves the section whole.
func splitPclntab(secs []*elf.Section) []*elf.Section {
	var out []*elf.Section
	for _, s := range secs {
		if s.Name != ".gopclntab" {
			out = append(out, s)
			continue
		}
		var h [72]byte
		if _, err := s.ReadAt(h[:], 0); err != nil || binary.LittleEndian.Uint32(h[:4]) != 0xfffffff1 || h[7] != 8 {
			out = append(out, s)
			continue
		}
		off := func(i int) uint64 { return binary.LittleEndian.Uint64(h[32+8*i:]) }
		names := []string{"funcnames", "cutab", "filetab", "pctab", "functab+funcdata"}
		bounds := []uint64{off(0), off(1), off(2), off(3), off(4), s.Size}
		ok := true
		for i := 0; i+1 < len(bounds); i++ {
			ok = ok && bounds[i] <= bounds[i+1] && bounds[i+1] <= s.Size
		}
		if !ok {
			out = append(out, s)
			continue
		}
		out = append(out, &elf.Section{SectionHeader: elf.SectionHeader{Name: ".gopclntab header", Flags: s.Flags, Addr: s.Addr, Size: bounds[0]}})
		for i, n := range names {
			out = append(out, &elf.Section{SectionHeader: elf.SectionHeader{Name: ".gopclntab " + n, Flags: s.Flags, Addr: s.Addr + bounds[i], Size: bounds[i+1] - bounds[i]}})
		}
	}
	return out
}

// sectionsResident is residentSections on parsed section headers and an
// open pagemap (8 bytes per page of the address space).
func sectionsResident(secs []*elf.Section, pagemap io.ReaderAt, pageSize int) ([]sectionResident, error) {
	var out []sectionResident
	ps := uint64(pageSize)
	entry := make([]byte, 8)
	for _, s := range secs {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 {
			continue
		}
		r := sectionResident{name: s.Name, size: s.Size}
		end := s.Addr + s.Size
		for page := s.Addr &^ (ps - 1); page < end; page += ps {
			if _, err := pagemap.ReadAt(entry, int64(page/ps*8)); err != nil {
				return nil, fmt.Errorf("pagemap at %#x: %w", page, err)
			}
			if binary.LittleEndian.Uint64(entry)&(1<<63) == 0 {
				continue
			}
			// Count the part of the page that belongs to this section.
			lo, hi := max(page, s.Addr), min(page+ps, end)
			r.resident += hi - lo
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].resident > out[j].resident })
	return out, nil
}

// formatSections prints the sections with resident pages, largest first.
func formatSections(rs []sectionResident) string {
	var b strings.Builder
	for _, r := range rs {
		if r.resident == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %8d KiB of %8d KiB  %s\n", r.resident>>10, r.size>>10, r.name)
	}
	return b.String()
}
