// Package vmstate is the snapshot file: the whole state of a virtual machine
// at one instant, written so that another kvmlab process can bring the
// machine back and let it continue as if nothing had happened.
//
// What "the state of a machine" is splits into two very different parts,
// and the file keeps them apart:
//
//   - The description: every vCPU's registers, the interrupt controllers,
//     the timers, every device model's registers and queues, and the
//     configuration the machine was built with. A few hundred KiB at most,
//     written as one JSON document (package vmm decides its content;
//     docs/snapshot.md lists it layer by layer), so that a learner can read
//     it with jq.
//   - Guest RAM: hundreds of MiB, most of which the guest never touched. A
//     page the guest never touched is not backed by host memory
//     (mincore(2) says so) and reads as zeros: it is left out, and so is a
//     touched page that holds only zeros. What remains is written as runs
//     of consecutive pages; a gap of MaxGap pages or fewer between two of
//     them is written too, as zeros, so that a restore has fewer runs to
//     map.
//
// # Layout (all integers little-endian)
//
//	offset  size  field
//	0       8     magic "KVMLABSN"
//	8       4     format version (Version)
//	12      4     flags: FlagCastagnoli or 0
//	16      8     description length D (at most MaxDescription)
//	24      D     description (JSON)
//	24+D    4     CRC-32 of bytes 0 .. 24+D
//	        8     RAM size in bytes (the sum of the regions')
//	        8     number of runs N (at most MaxRuns)
//	        16*N  runs: guest-physical address, length in bytes (both
//	              page-aligned, ascending, not overlapping, inside RAM)
//	        ...   zeros up to the next multiple of 4096 in the file
//	        ...   the runs' bytes, in order (so each run starts on a page)
//	        4     CRC-32 of every byte from the RAM size on (CRC-32C
//	              with FlagCastagnoli)
//	        8     end magic "KVMLABND"
//
// The checksums catch a truncated or damaged file, not a forged one: a
// snapshot is as trusted as the file it is. Reading still treats every
// field as hostile (lengths bounded by the file's size, runs checked against
// RAM), because a damaged file must be refused in one line, never crash
// kvmlab or write outside guest RAM. A CRC rather than a cryptographic
// hash because the RAM part is large and the check runs on every restore,
// before the guest may run.
//
// Which CRC: the description's is CRC-32 with the IEEE polynomial (ISO
// 3309, the one zlib and Ethernet use). The RAM's is whichever of that and
// CRC-32C (Castagnoli, iSCSI's) the writing machine computes faster
// (ramCRC), and the header's flags say which. Go folds IEEE CRC-32 sixteen
// bytes at a time with carry-less multiplication (PCLMULQDQ) and CRC-32C
// eight bytes at a time with the SSE4.2 CRC32 instruction, and which wins
// depends on the CPU, more than 4x either way: on this project's machines
// IEEE ran at 25 GB/s and CRC-32C at 6; inside the QEMU-emulated host,
// where TCG turns each CRC32 instruction into a call, IEEE 8x faster (800
// against 100 MB/s); inside the Bochs-emulated one, whose cost is the
// number of instructions, CRC-32C 2x faster (193 against 410 ms for 85
// MiB). A snapshot is restored on a machine like the one that wrote it (a
// restore on a CPU of another vendor is refused), so the writer's choice
// is the reader's best one too.
//
// The runs start on page boundaries in the file so that a restore can map
// them straight over guest RAM, copy-on-write (guestmem's MapFile), instead
// of copying them: the guest then reads from the file only the pages it
// touches after the restore.
//
// Firecracker splits the same two parts into two files (a "snapshot" of
// state and a "memory file"); one file is simpler to hand around, and the
// runs make it as small as the touched RAM.
package vmstate

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"time"
)

// FlagCastagnoli in the header's flags: the RAM part's checksum is CRC-32C,
// not CRC-32 (IEEE).
const FlagCastagnoli = 1

// Version is the format this kvmlab writes and the only one it reads.
// Version 1 checked RAM with CRC-32C; version 2 with CRC-32 (IEEE);
// version 3 writes each vCPU's LAPIC page and XSAVE area in the
// description as base64 strings instead of arrays of numbers (package
// vmm/kvm, state_json.go), which a restore decodes several times faster.
const Version = 3

const (
	magic    = "KVMLABSN"
	endMagic = "KVMLABND"
	// MaxDescription bounds the JSON description: a machine with the
	// most vCPUs KVM allows and every device is far below it.
	MaxDescription = 64 << 20
	// MaxRuns bounds the run table (16 bytes a run): one run per page of
	// 64 GiB of RAM, alternating touched and untouched, is 8 Mi runs.
	MaxRuns    = 8 << 20
	headerSize = 24
)

// ErrFormat is wrapped by every refusal of a file that is not a valid
// snapshot; the message says which part is wrong.
var ErrFormat = errors.New("not a valid kvmlab snapshot")

// Region is one range of guest RAM: its guest-physical base and its bytes
// (in package vmm, guestmem's regions).
type Region struct {
	GPA  uint64
	Data []byte
	// Resident says which PageSize pages are backed by host memory (one
	// entry per page, nil: all of them). Pages not resident are not
	// written: they read as zeros.
	Resident []bool
}

// Run is a range of guest RAM present in the file.
type Run struct {
	GPA, Len uint64
}

// Info is what a written or read file holds.
type Info struct {
	Version     uint32
	Description int    // bytes of JSON
	RAMBytes    uint64 // the machine's RAM
	SavedBytes  uint64 // RAM bytes in the file
	Runs        int
	FileBytes   int64
}

// PageSize is the granularity of runs: x86's 4 KiB page.
const PageSize = 4096

// Write writes a snapshot of description and RAM to w.
func Write(w io.Writer, description []byte, ram []Region) (Info, error) {
	if len(description) > MaxDescription {
		return Info{}, fmt.Errorf("snapshot: description of %d bytes is over %d", len(description), MaxDescription)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countWriter{w: bw}
	crc := crc32.NewIEEE()
	out := io.MultiWriter(cw, crc)
	flags := ramCRC()
	var hdr [headerSize]byte
	copy(hdr[:8], magic)
	binary.LittleEndian.PutUint32(hdr[8:], Version)
	binary.LittleEndian.PutUint32(hdr[12:], flags)
	binary.LittleEndian.PutUint64(hdr[16:], uint64(len(description)))
	_, _ = out.Write(hdr[:])
	_, _ = out.Write(description)
	if err := putUint32(cw, crc.Sum32()); err != nil {
		return Info{}, err
	}

	runs, size := findRuns(ram)
	if len(runs) > MaxRuns {
		return Info{}, fmt.Errorf("snapshot: %d runs of RAM, over %d", len(runs), MaxRuns)
	}
	crc = crc32.New(ramTable(flags))
	out = io.MultiWriter(cw, crc)
	table := make([]byte, 16+16*len(runs))
	binary.LittleEndian.PutUint64(table[0:], size)
	binary.LittleEndian.PutUint64(table[8:], uint64(len(runs)))
	for i, r := range runs {
		binary.LittleEndian.PutUint64(table[16+16*i:], r.GPA)
		binary.LittleEndian.PutUint64(table[24+16*i:], r.Len)
	}
	_, _ = out.Write(table)
	_, _ = out.Write(make([]byte, padding(cw.n)))
	var saved uint64
	for _, r := range runs {
		data := slice(ram, r)
		if _, err := out.Write(data); err != nil {
			return Info{}, fmt.Errorf("snapshot: write RAM: %w", err)
		}
		saved += r.Len
	}
	if err := putUint32(cw, crc.Sum32()); err != nil {
		return Info{}, err
	}
	_, _ = cw.Write([]byte(endMagic))
	if err := bw.Flush(); err != nil {
		return Info{}, fmt.Errorf("snapshot: write: %w", err)
	}
	if cw.err != nil {
		return Info{}, fmt.Errorf("snapshot: write: %w", cw.err)
	}
	return Info{Version: Version, Description: len(description), RAMBytes: size, SavedBytes: saved, Runs: len(runs), FileBytes: cw.n}, nil
}

// padding is how many zero bytes take offset off to the next page.
func padding(off int64) int64 {
	return (PageSize - off%PageSize) % PageSize
}

// MaxGap is the longest gap, in pages, that findRuns bridges between two
// runs of one region: the gap's pages (zeros, or pages the guest never
// touched) are saved inside one longer run instead. A restore maps each run
// with an mmap(2) of its own, and inside the emulated Intel host one such
// call cost 0.64 ms (165 runs: 105 ms), while a saved page of zeros costs
// about 25 µs to check and map (its bytes through the CRC, its share of the
// page faults). A guest at its shell leaves 150 of its 164 gaps at 16 pages
// or less, 1.2 MiB in all: bridging them leaves 15 runs. One snapshot
// written both ways and restored there in turns answered at its shell
// after 1.26 s with 15 runs, 1.72 to 1.82 s with 168 (docs/snapshot.md).
const MaxGap = 16

// findRuns lists the pages worth saving (resident and not all zeros) as
// runs, joined across gaps of at most MaxGap pages, and the total RAM size.
func findRuns(ram []Region) ([]Run, uint64) {
	var runs []Run
	var size uint64
	zero := make([]byte, PageSize)
	for _, r := range ram {
		size += uint64(len(r.Data))
		first := len(runs) // runs never span two regions
		for off := 0; off+PageSize <= len(r.Data); off += PageSize {
			if p := off / PageSize; p < len(r.Resident) && !r.Resident[p] {
				continue
			}
			if bytes.Equal(r.Data[off:off+PageSize], zero) {
				continue
			}
			gpa := r.GPA + uint64(off)
			if n := len(runs); n > first && gpa-(runs[n-1].GPA+runs[n-1].Len) <= MaxGap*PageSize {
				runs[n-1].Len = gpa + PageSize - runs[n-1].GPA
				continue
			}
			runs = append(runs, Run{GPA: gpa, Len: PageSize})
		}
	}
	return runs, size
}

// slice returns the bytes of run r, which findRuns or checkRuns placed
// inside one region.
func slice(ram []Region, r Run) []byte {
	for _, reg := range ram {
		if r.GPA >= reg.GPA && r.GPA+r.Len <= reg.GPA+uint64(len(reg.Data)) {
			off := r.GPA - reg.GPA
			return reg.Data[off : off+r.Len]
		}
	}
	return nil
}

// File is a snapshot file whose description has been read and checked; its
// RAM is read by LoadRAM.
type File struct {
	Info
	Description []byte
	Runs        []Run
	// Parsed is for the reader of Description (package vmm) to keep
	// what it decoded, so that checking a snapshot before a restore and
	// the restore itself parse the JSON once: decoding it took 85 ms
	// inside the emulated Intel host, three times as long as building
	// the machine.
	Parsed any

	f       io.ReaderAt
	osf     *os.File // f, when opened by OpenFile (RAM can then be mapped)
	ramOff  int64    // where the RAM part starts (the RAM size field)
	dataOff int64    // where the runs' bytes start
	size    int64
	flags   uint32 // the header's: which CRC the RAM part has
}

// Open reads and checks the header and the description of the snapshot in
// f, of size bytes. Every refusal wraps ErrFormat and says what is wrong in
// words a user can act on.
func Open(f io.ReaderAt, size int64) (*File, error) {
	if size < headerSize+4+16+4+8 {
		return nil, fmt.Errorf("%w: %d bytes is too short for one (truncated?)", ErrFormat, size)
	}
	var hdr [headerSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("%w: read header: %w", ErrFormat, err)
	}
	if string(hdr[:8]) != magic {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrFormat, magic)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != Version {
		return nil, fmt.Errorf("%w: format version %d, this kvmlab reads version %d only: use the kvmlab that wrote it", ErrFormat, v, Version)
	}
	flags := binary.LittleEndian.Uint32(hdr[12:])
	if flags&^FlagCastagnoli != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrFormat, flags)
	}
	dlen := binary.LittleEndian.Uint64(hdr[16:])
	if dlen > MaxDescription || int64(dlen) > size-headerSize-4 {
		return nil, fmt.Errorf("%w: its description claims %d bytes, more than the file holds (truncated?)", ErrFormat, dlen)
	}
	desc := make([]byte, dlen)
	if _, err := f.ReadAt(desc, headerSize); err != nil {
		return nil, fmt.Errorf("%w: read description: %w", ErrFormat, err)
	}
	var sum [4]byte
	if _, err := f.ReadAt(sum[:], headerSize+int64(dlen)); err != nil {
		return nil, fmt.Errorf("%w: read description checksum: %w", ErrFormat, err)
	}
	crc := crc32.NewIEEE()
	crc.Write(hdr[:])
	crc.Write(desc)
	if got, want := crc.Sum32(), binary.LittleEndian.Uint32(sum[:]); got != want {
		return nil, fmt.Errorf("%w: the description's checksum does not match (the file is damaged)", ErrFormat)
	}
	ramOff := headerSize + int64(dlen) + 4
	var tbl [16]byte
	if _, err := f.ReadAt(tbl[:], ramOff); err != nil {
		return nil, fmt.Errorf("%w: read RAM table: %w (truncated?)", ErrFormat, err)
	}
	ramSize := binary.LittleEndian.Uint64(tbl[0:])
	n := binary.LittleEndian.Uint64(tbl[8:])
	if n > MaxRuns || int64(n) > (size-ramOff-16-12)/16 {
		return nil, fmt.Errorf("%w: %d RAM runs claimed, more than the file holds (truncated?)", ErrFormat, n)
	}
	raw := make([]byte, 16*n)
	if _, err := f.ReadAt(raw, ramOff+16); err != nil {
		return nil, fmt.Errorf("%w: read RAM table: %w", ErrFormat, err)
	}
	runs := make([]Run, n)
	var saved uint64
	for i := range runs {
		runs[i] = Run{GPA: binary.LittleEndian.Uint64(raw[16*i:]), Len: binary.LittleEndian.Uint64(raw[16*i+8:])}
		r := runs[i]
		if r.Len == 0 || r.GPA%PageSize != 0 || r.Len%PageSize != 0 || r.GPA+r.Len < r.GPA {
			return nil, fmt.Errorf("%w: RAM run %d (%#x, %d bytes) is not whole pages", ErrFormat, i, r.GPA, r.Len)
		}
		if i > 0 && r.GPA < runs[i-1].GPA+runs[i-1].Len {
			return nil, fmt.Errorf("%w: RAM run %d overlaps or precedes run %d", ErrFormat, i, i-1)
		}
		saved += r.Len
		if saved > ramSize {
			return nil, fmt.Errorf("%w: its RAM runs hold more than its %d bytes of RAM", ErrFormat, ramSize)
		}
	}
	dataOff := ramOff + 16 + int64(16*n)
	dataOff += padding(dataOff)
	if want := dataOff + int64(saved) + 4 + 8; want != size {
		return nil, fmt.Errorf("%w: its RAM runs need a file of %d bytes, it has %d (truncated or damaged)", ErrFormat, want, size)
	}
	var end [8]byte
	if _, err := f.ReadAt(end[:], size-8); err != nil || string(end[:]) != endMagic {
		return nil, fmt.Errorf("%w: it does not end with %q (truncated?)", ErrFormat, endMagic)
	}
	return &File{
		Info:        Info{Version: Version, Description: len(desc), RAMBytes: ramSize, SavedBytes: saved, Runs: len(runs), FileBytes: size},
		Description: desc, Runs: runs, f: f, ramOff: ramOff, dataOff: dataOff, size: size, flags: flags,
	}, nil
}

// OpenFile is Open on a file already opened (and checked to be a regular
// file: package userfile).
func OpenFile(f *os.File) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	sf, err := Open(f, st.Size())
	if err != nil {
		return nil, err
	}
	sf.osf = f
	return sf, nil
}

// OSFile is the file OpenFile was given, nil for a File made by Open: the
// RAM runs can be mapped from it (MapRAM).
func (f *File) OSFile() *os.File { return f.osf }

// CheckRAM says whether the file's RAM fits ram: the same total size, and
// every run inside one region.
func (f *File) CheckRAM(ram []Region) error {
	var size uint64
	for _, r := range ram {
		size += uint64(len(r.Data))
	}
	if size != f.RAMBytes {
		return fmt.Errorf("%w: it holds %d bytes of RAM, the machine has %d", ErrFormat, f.RAMBytes, size)
	}
	for i, r := range f.Runs {
		if slice(ram, r) == nil {
			return fmt.Errorf("%w: RAM run %d (%#x, %d bytes) is outside the machine's RAM", ErrFormat, i, r.GPA, r.Len)
		}
	}
	return nil
}

// LoadRAM copies the file's runs into ram (which must be zero elsewhere: a
// freshly mapped machine) and verifies the RAM checksum. On an error the
// RAM holds garbage and the machine must not run.
func (f *File) LoadRAM(ram []Region) error {
	if err := f.CheckRAM(ram); err != nil {
		return err
	}
	crc, err := f.tableCRC()
	if err != nil {
		return err
	}
	off := f.dataOff
	for _, r := range f.Runs {
		dst := slice(ram, r)
		if err := readFull(f.f, dst, off, crc); err != nil {
			return fmt.Errorf("%w: read RAM at %#x: %w", ErrFormat, r.GPA, err)
		}
		off += int64(r.Len)
	}
	return f.checkSum(crc)
}

// tableCRC starts the RAM part's checksum: the RAM size, the run table and
// the padding after it, read again from the file (Open checked the table,
// the checksum covers its bytes).
func (f *File) tableCRC() (hash.Hash32, error) {
	crc := crc32.New(ramTable(f.flags))
	raw := make([]byte, 16+16*len(f.Runs))
	if _, err := f.f.ReadAt(raw, f.ramOff); err != nil {
		return nil, fmt.Errorf("%w: read RAM table: %w", ErrFormat, err)
	}
	crc.Write(raw)
	crc.Write(make([]byte, padding(f.ramOff+int64(len(raw)))))
	return crc, nil
}

// checkSum compares the RAM part's checksum, computed in crc, with the one
// at the end of the file.
func (f *File) checkSum(crc hash.Hash32) error {
	var sum [4]byte
	if _, err := f.f.ReadAt(sum[:], f.size-12); err != nil {
		return fmt.Errorf("%w: read RAM checksum: %w", ErrFormat, err)
	}
	if crc.Sum32() != binary.LittleEndian.Uint32(sum[:]) {
		return fmt.Errorf("%w: the RAM's checksum does not match (the file is damaged)", ErrFormat)
	}
	return nil
}

// MapRAM hands each run and the file offset of its bytes to mapFn, which
// maps them over guest RAM (guestmem's MapFile: runs and offsets are
// page-aligned). It checks the runs against ram first. Nothing is read: call
// VerifyMapped to check the RAM's checksum.
func (f *File) MapRAM(ram []Region, mapFn func(r Run, off int64) error) error {
	if err := f.CheckRAM(ram); err != nil {
		return err
	}
	off := f.dataOff
	for _, r := range f.Runs {
		if err := mapFn(r, off); err != nil {
			return err
		}
		off += int64(r.Len)
	}
	return nil
}

// VerifyMapped checks the RAM part's checksum against ram, over which
// MapRAM has just mapped the file's runs, before anything writes to it: the
// runs' bytes are read through the mapping rather than with read(2). That
// copies nothing (a copy of the page cache into a buffer cost as much as
// the checksum itself), and it leaves every saved page mapped in the
// process's page tables, read-only and shared with the page cache, so that
// the guest's first touch of a page after the restore finds it there
// instead of faulting in the host too.
//
// A file truncated while it is read makes the reads fault (SIGBUS): the
// caller runs this with debug.SetPanicOnFault and recovers.
func (f *File) VerifyMapped(ram []Region) error {
	if err := f.CheckRAM(ram); err != nil {
		return err
	}
	crc, err := f.tableCRC()
	if err != nil {
		return err
	}
	for _, r := range f.Runs {
		crc.Write(slice(ram, r))
	}
	return f.checkSum(crc)
}

// readFull reads len(dst) bytes at off in chunks, hashing them.
func readFull(r io.ReaderAt, dst []byte, off int64, h hash.Hash32) error {
	const chunk = 4 << 20
	for len(dst) > 0 {
		n := min(len(dst), chunk)
		if _, err := r.ReadAt(dst[:n], off); err != nil {
			return err
		}
		h.Write(dst[:n])
		dst, off = dst[n:], off+int64(n)
	}
	return nil
}

func putUint32(w io.Writer, v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	_, err := w.Write(b[:])
	return err
}

// countWriter counts bytes and keeps the first error, so that Write can
// check once at the end.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// ramTable is the CRC table the flags name for the RAM part.
func ramTable(flags uint32) *crc32.Table {
	if flags&FlagCastagnoli != 0 {
		return castagnoli
	}
	return crc32.IEEETable
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ramCRC returns the flags for the RAM checksum this machine computes
// faster (see the package documentation), timed once per process on 64 KiB,
// the best of three tries each: well under a millisecond on hardware, and
// a few inside an emulated host, against hundreds for the RAM itself.
var ramCRC = sync.OnceValue(func() uint32 {
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i * 131)
	}
	best := func(t *crc32.Table) time.Duration {
		d := time.Duration(1<<63 - 1)
		for range 3 {
			start := time.Now()
			crc32.Checksum(buf, t)
			d = min(d, time.Since(start))
		}
		return d
	}
	if best(castagnoli) < best(crc32.IEEETable) {
		return FlagCastagnoli
	}
	return 0
})
