package kvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Raw kvm_stats_desc.flags as include/linux/kvm_host.h builds them.
const (
	flagsCounter   = 0x000                 // STATS_DESC_COUNTER: cumulative, none, pow10
	flagsICounter  = 0x001                 // STATS_DESC_ICOUNTER: instant
	flagsPCounter  = 0x002                 // STATS_DESC_PCOUNTER: peak
	flagsIBoolean  = 0x001 | 0x040         // STATS_DESC_IBOOLEAN: instant, boolean
	flagsTimeNsec  = 0x000 | 0x020         // STATS_DESC_TIME_NSEC: cumulative, seconds (exp -9)
	flagsLogHistNs = 0x004 | 0x020         // STATS_DESC_LOGHIST_TIME_NSEC
	flagsLinHistMB = 0x003 | 0x010 | 0x100 // linear histogram of bytes, pow2
	kernelNameSize = 48                    // KVM_STATS_NAME_SIZE
	kernelVCPUID   = "kvm-4242/vcpu-0"     // snprintf "kvm-%d/vcpu-%d"
	allFlagsSet    = 0xFFF                 // unknown type, unit and base
)

// tStat is one statistic of a synthetic stats file.
type tStat struct {
	name   string
	flags  uint32
	exp    int16
	bucket uint32
	values []uint64 // len = descriptor size
}

// tBlob describes a synthetic stats file. Zero offsets mean "the kernel's
// layout": header, id, descriptors, data, back to back, data values packed
// in descriptor order.
type tBlob struct {
	nameSize                  uint32
	id                        string
	stats                     []tStat
	idOff, descOff, dataOff   uint32
	numDescOverride           *uint32
	rawName                   map[int][]byte // replaces descriptor i's name field
	sizeOverride, offOverride map[int]uint32
}

// build lays out the file exactly as virt/kvm/binary_stats.c serves it.
func (b tBlob) build() []byte {
	ne := binary.NativeEndian
	ns := b.nameSize
	if ns == 0 {
		ns = kernelNameSize
	}
	one := statsDescSize + ns
	idOff, descOff, dataOff := b.idOff, b.descOff, b.dataOff
	if idOff == 0 {
		idOff = statsHeaderSize
	}
	if descOff == 0 {
		descOff = statsHeaderSize + ns
	}
	if dataOff == 0 {
		dataOff = descOff + uint32(len(b.stats))*one
	}
	// Data offsets: packed in descriptor order.
	offs := make([]uint32, len(b.stats))
	var dataLen uint32
	for i, s := range b.stats {
		offs[i] = dataLen
		dataLen += 8 * uint32(len(s.values))
	}
	end := max(idOff+ns, descOff+uint32(len(b.stats))*one, dataOff+dataLen)
	out := make([]byte, end)

	numDesc := uint32(len(b.stats))
	if b.numDescOverride != nil {
		numDesc = *b.numDescOverride
	}
	for i, v := range []uint32{0, ns, numDesc, idOff, descOff, dataOff} {
		ne.PutUint32(out[4*i:], v)
	}
	copy(out[idOff:idOff+ns], b.id)
	for i, s := range b.stats {
		d := out[descOff+uint32(i)*one:]
		size, off := uint32(len(s.values)), offs[i]
		if v, ok := b.sizeOverride[i]; ok {
			size = v
		}
		if v, ok := b.offOverride[i]; ok {
			off = v
		}
		ne.PutUint32(d[0:], s.flags)
		ne.PutUint16(d[4:], uint16(s.exp))
		ne.PutUint16(d[6:], uint16(size))
		ne.PutUint32(d[8:], off)
		ne.PutUint32(d[12:], s.bucket)
		if raw, ok := b.rawName[i]; ok {
			copy(d[statsDescSize:statsDescSize+ns], raw)
		} else {
			copy(d[statsDescSize:statsDescSize+ns], s.name)
		}
		for j, v := range s.values {
			ne.PutUint64(out[dataOff+offs[i]+8*uint32(j):], v)
		}
	}
	return out
}

func logHist(vals ...uint64) []uint64 {
	h := make([]uint64, 32) // HALT_POLL_HIST_COUNT
	copy(h, vals)
	return h
}

// vcpuStats is an excerpt of a real x86 vCPU's stats after booting a small
// guest: a few thousand exits, almost all handled in the kernel.
func vcpuStats() []tStat {
	return []tStat{
		{name: "halt_successful_poll", flags: flagsCounter, values: []uint64{12}},
		{name: "halt_wakeup", flags: flagsCounter, values: []uint64{40}},
		{name: "halt_wait_ns", flags: flagsTimeNsec, exp: -9, values: []uint64{1_250_000_000}},
		{name: "halt_wait_hist", flags: flagsLogHistNs, exp: -9, values: logHist(0, 0, 1, 3, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 31)},
		{name: "blocking", flags: flagsIBoolean, values: []uint64{1}},
		{name: "pf_taken", flags: flagsCounter, values: []uint64{517}},
		{name: "exits", flags: flagsCounter, values: []uint64{4711}},
		{name: "io_exits", flags: flagsCounter, values: []uint64{2048}},
		{name: "mmio_exits", flags: flagsCounter, values: []uint64{3}},
		{name: "halt_exits", flags: flagsCounter, values: []uint64{41}},
		{name: "irq_exits", flags: flagsCounter, values: []uint64{96}},
		{name: "signal_exits", flags: flagsCounter, values: []uint64{1}},
		{name: "insn_emulation", flags: flagsCounter, values: []uint64{88}},
		{name: "hypercalls", flags: flagsCounter, values: []uint64{0}},
		{name: "guest_mode", flags: flagsIBoolean, values: []uint64{0}},
	}
}

func mustReader(t *testing.T, blob []byte) *StatsReader {
	t.Helper()
	sr, err := NewStatsReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("NewStatsReader: %v", err)
	}
	return sr
}

func TestStatsReaderKernelLayout(t *testing.T) {
	blob := tBlob{id: kernelVCPUID, stats: vcpuStats()}.build()
	sr := mustReader(t, blob)
	if sr.ID() != kernelVCPUID {
		t.Errorf("ID = %q, want %q", sr.ID(), kernelVCPUID)
	}
	descs := sr.Descriptors()
	var names []string
	for _, d := range descs {
		names = append(names, d.Name)
	}
	var want []string
	for _, s := range vcpuStats() {
		want = append(want, s.name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("names = %v, want %v", names, want)
	}
	// Descriptors returns a copy.
	descs[0].Name = "scribbled"
	if sr.Descriptors()[0].Name != "halt_successful_poll" {
		t.Error("Descriptors shares its slice with the reader")
	}

	got, err := sr.Read()
	if err != nil {
		t.Fatal(err)
	}
	wantVals := map[string]uint64{
		"halt_successful_poll": 12, "halt_wakeup": 40, "halt_wait_ns": 1_250_000_000,
		"halt_wait_hist": 1 + 3 + 5 + 31, // a histogram reads as its number of samples
		"blocking":       1, "pf_taken": 517, "exits": 4711, "io_exits": 2048, "mmio_exits": 3,
		"halt_exits": 41, "irq_exits": 96, "signal_exits": 1, "insn_emulation": 88,
		"hypercalls": 0, "guest_mode": 0,
	}
	if !maps.Equal(got, wantVals) {
		t.Errorf("Read = %v\nwant   %v", got, wantVals)
	}

	vals, err := sr.ReadValues()
	if err != nil {
		t.Fatal(err)
	}
	if h := vals["halt_wait_hist"]; len(h) != 32 || h[2] != 1 || h[3] != 3 || h[4] != 5 || h[20] != 31 {
		t.Errorf("halt_wait_hist buckets = %v", h)
	}
	if e := vals["exits"]; !slices.Equal(e, []uint64{4711}) {
		t.Errorf("exits values = %v", e)
	}
}

func TestStatsDescDecode(t *testing.T) {
	stats := []tStat{
		{name: "exits", flags: flagsCounter, values: []uint64{1}},
		{name: "pages_4k", flags: flagsICounter, values: []uint64{1}},
		{name: "max_mmu_rmap_size", flags: flagsPCounter, values: []uint64{1}},
		{name: "blocking", flags: flagsIBoolean, values: []uint64{1}},
		{name: "halt_wait_ns", flags: flagsTimeNsec, exp: -9, values: []uint64{1}},
		{name: "halt_wait_hist", flags: flagsLogHistNs, exp: -9, values: logHist()},
		{name: "alloc_sizes", flags: flagsLinHistMB, exp: 20, bucket: 4, values: make([]uint64, 8)},
		{name: "future", flags: allFlagsSet, exp: 3, values: []uint64{1}},
	}
	cases := []struct {
		name             string
		typ, unit, base  uint32
		exp              int16
		size             uint16
		offset, bucket   uint32
		typeStr, unitStr string
		hist             bool
	}{
		{"exits", StatTypeCumulative, StatUnitNone, StatBasePow10, 0, 1, 0, 0, "cumulative", "", false},
		{"pages_4k", StatTypeInstant, StatUnitNone, StatBasePow10, 0, 1, 8, 0, "instant", "", false},
		{"max_mmu_rmap_size", StatTypePeak, StatUnitNone, StatBasePow10, 0, 1, 16, 0, "peak", "", false},
		{"blocking", StatTypeInstant, StatUnitBoolean, StatBasePow10, 0, 1, 24, 0, "instant", "bool", false},
		{"halt_wait_ns", StatTypeCumulative, StatUnitSeconds, StatBasePow10, -9, 1, 32, 0, "cumulative", "ns", false},
		{"halt_wait_hist", StatTypeLogHist, StatUnitSeconds, StatBasePow10, -9, 32, 40, 0, "log-hist", "ns", true},
		{"alloc_sizes", StatTypeLinearHist, StatUnitBytes, StatBasePow2, 20, 8, 40 + 32*8, 4, "linear-hist", "MiB", true},
		{"future", 15, 15, 15, 3, 1, 40 + 40*8, 0, "type(15)", "unit(15)×base(15)^3", false},
	}
	sr := mustReader(t, tBlob{id: "kvm-1", stats: stats}.build())
	for _, c := range cases {
		d, ok := sr.Desc(c.name)
		if !ok {
			t.Errorf("%s: missing", c.name)
			continue
		}
		if d.Type != c.typ || d.Unit != c.unit || d.Base != c.base || d.Exponent != c.exp ||
			d.Size != c.size || d.Offset != c.offset || d.BucketSize != c.bucket {
			t.Errorf("%s: got %+v, want type %d unit %d base %d exp %d size %d off %d bucket %d",
				c.name, d, c.typ, c.unit, c.base, c.exp, c.size, c.offset, c.bucket)
		}
		if d.TypeString() != c.typeStr || d.UnitString() != c.unitStr || d.IsHistogram() != c.hist {
			t.Errorf("%s: TypeString %q UnitString %q IsHistogram %v, want %q %q %v",
				c.name, d.TypeString(), d.UnitString(), d.IsHistogram(), c.typeStr, c.unitStr, c.hist)
		}
	}
	if _, ok := sr.Desc("nope"); ok {
		t.Error("Desc found a name that is not there")
	}
}

func TestStatDescUnitString(t *testing.T) {
	cases := []struct {
		unit, base uint32
		exp        int16
		want       string
	}{
		{StatUnitNone, StatBasePow10, 0, ""},
		{StatUnitNone, StatBasePow10, 3, "×10^3"},
		{StatUnitBytes, StatBasePow2, 0, "B"},
		{StatUnitBytes, StatBasePow2, 10, "KiB"},
		{StatUnitBytes, StatBasePow2, 30, "GiB"},
		{StatUnitBytes, StatBasePow2, 12, "B×2^12"},
		{StatUnitSeconds, StatBasePow10, 0, "s"},
		{StatUnitSeconds, StatBasePow10, -3, "ms"},
		{StatUnitSeconds, StatBasePow10, -6, "us"},
		{StatUnitSeconds, StatBasePow10, -9, "ns"},
		{StatUnitSeconds, StatBasePow2, -9, "s×2^-9"},
		{StatUnitCycles, StatBasePow10, 0, "cycles"},
		{StatUnitCycles, StatBasePow10, 3, "cycles×10^3"},
		{StatUnitBoolean, StatBasePow10, 0, "bool"},
	}
	for _, c := range cases {
		d := StatDesc{Unit: c.unit, Base: c.base, Exponent: c.exp}
		if got := d.UnitString(); got != c.want {
			t.Errorf("unit %d base %d exp %d: %q, want %q", c.unit, c.base, c.exp, got, c.want)
		}
	}
}

// The kernel promises only that the blocks are aligned and disjoint, not
// their order: a reader must follow the offsets.
func TestStatsReaderFollowsOffsets(t *testing.T) {
	stats := []tStat{
		{name: "exits", flags: flagsCounter, values: []uint64{100}},
		{name: "io_exits", flags: flagsCounter, values: []uint64{60}},
		{name: "halt_wait_hist", flags: flagsLogHistNs, exp: -9, values: logHist(7, 8)},
	}
	// data at 24, descriptors after it, id string last; name_size 16.
	const ns = 16
	dataLen := uint32(8 * (1 + 1 + 32))
	b := tBlob{nameSize: ns, id: "kvm-9/vcpu-3", stats: stats, dataOff: 24, descOff: 24 + dataLen}
	b.idOff = b.descOff + 3*(statsDescSize+ns)
	sr := mustReader(t, b.build())
	got, err := sr.Read()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"exits": 100, "io_exits": 60, "halt_wait_hist": 15}
	if !maps.Equal(got, want) || sr.ID() != "kvm-9/vcpu-3" {
		t.Errorf("Read = %v id %q, want %v", got, sr.ID(), want)
	}
}

// Read re-reads the data block each time; the descriptors are parsed once.
func TestStatsReaderRereadsDataAndDelta(t *testing.T) {
	stats := vcpuStats()
	blob := tBlob{id: kernelVCPUID, stats: stats}.build()
	sr := mustReader(t, blob) // bytes.Reader reads blob in place
	before, err := sr.Read()
	if err != nil {
		t.Fatal(err)
	}
	// The guest runs: the kernel bumps its counters in the data block.
	ne := binary.NativeEndian
	bump := func(name string, bucket int, add uint64, set bool) {
		d, ok := sr.Desc(name)
		if !ok {
			t.Fatalf("no %s", name)
		}
		at := statsHeaderSize + kernelNameSize + len(stats)*(statsDescSize+kernelNameSize) + int(d.Offset) + 8*bucket
		if set {
			ne.PutUint64(blob[at:], add)
		} else {
			ne.PutUint64(blob[at:], ne.Uint64(blob[at:])+add)
		}
	}
	bump("exits", 0, 1000, false)
	bump("io_exits", 0, 600, false)
	bump("halt_exits", 0, 5, false)
	bump("pf_taken", 0, 17, false)
	bump("halt_wait_hist", 7, 4, false)
	bump("blocking", 0, 0, true) // instant: went from 1 to 0

	after, err := sr.Read()
	if err != nil {
		t.Fatal(err)
	}
	d := Delta(before, after)
	wantNonZero := map[string]uint64{"exits": 1000, "io_exits": 600, "halt_exits": 5, "pf_taken": 17, "halt_wait_hist": 4}
	for name, v := range d {
		if wantNonZero[name] != v {
			t.Errorf("Delta[%s] = %d, want %d", name, v, wantNonZero[name])
		}
	}
	if _, ok := d["blocking"]; ok {
		t.Error("Delta kept an instant value that went down")
	}
	if len(d) != len(stats)-1 {
		t.Errorf("Delta has %d entries, want %d (every stat but blocking)", len(d), len(stats)-1)
	}

	cd := sr.CounterDelta(before, after)
	if _, ok := cd["guest_mode"]; ok {
		t.Error("CounterDelta kept an instant statistic")
	}
	if cd["exits"] != 1000 || cd["halt_wait_hist"] != 4 {
		t.Errorf("CounterDelta = %v", cd)
	}

	report := FormatDelta(cd)
	lines := strings.Split(strings.TrimSpace(report), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "exits ") || !strings.Contains(lines[0], "VM exit") {
		t.Errorf("FormatDelta:\n%s", report)
	}
}

func TestDelta(t *testing.T) {
	cases := []struct {
		name          string
		before, after map[string]uint64
		want          map[string]uint64
	}{
		{"grow", map[string]uint64{"exits": 10, "io_exits": 3}, map[string]uint64{"exits": 25, "io_exits": 3},
			map[string]uint64{"exits": 15, "io_exits": 0}},
		{"new counter counts from zero", map[string]uint64{}, map[string]uint64{"hypercalls": 4},
			map[string]uint64{"hypercalls": 4}},
		{"went down is dropped", map[string]uint64{"pages_4k": 512, "exits": 1}, map[string]uint64{"pages_4k": 256, "exits": 2},
			map[string]uint64{"exits": 1}},
		{"gone is dropped", map[string]uint64{"old": 5}, map[string]uint64{}, map[string]uint64{}},
		{"near the top", map[string]uint64{"exits": 1<<64 - 10}, map[string]uint64{"exits": 1<<64 - 1},
			map[string]uint64{"exits": 9}},
		{"nil maps", nil, nil, map[string]uint64{}},
	}
	for _, c := range cases {
		if got := Delta(c.before, c.after); !maps.Equal(got, c.want) {
			t.Errorf("%s: Delta = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestStatsReaderMalformed(t *testing.T) {
	good := func() tBlob { return tBlob{id: kernelVCPUID, stats: vcpuStats()} }
	u32 := func(v uint32) *uint32 { return &v }
	setHeader := func(field int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.NativeEndian.PutUint32(b[4*field:], v); return b }
	}
	noNUL := make([]byte, kernelNameSize)
	for i := range noNUL {
		noNUL[i] = 'x'
	}
	cases := []struct {
		name  string
		blob  tBlob
		patch func([]byte) []byte
		want  string
	}{
		{name: "empty file", patch: func([]byte) []byte { return nil }, want: "short read"},
		{name: "truncated header", patch: func(b []byte) []byte { return b[:20] }, want: "short read"},
		{name: "name_size 0", patch: setHeader(1, 0), want: "name_size 0"},
		{name: "name_size huge", patch: setHeader(1, 1<<31), want: "name_size"},
		{name: "num_desc huge", blob: func() tBlob { b := good(); b.numDescOverride = u32(1 << 30); return b }(), want: "num_desc"},
		{name: "num_desc past the file", blob: func() tBlob { b := good(); b.numDescOverride = u32(4000); return b }(), want: "short read"},
		{name: "id_offset beyond blob", patch: setHeader(3, 1<<20), want: "short read"},
		{name: "id_offset absurd", patch: setHeader(3, 0xFFFFFFF8), want: "id_offset"},
		{name: "desc_offset beyond blob", patch: setHeader(4, 1<<16), want: "short read"},
		{name: "data_offset beyond blob", patch: setHeader(5, 1<<16), want: "short read"},
		{name: "data_offset inside header", patch: setHeader(5, 8), want: "overlaps the 24-byte header"},
		{name: "desc_offset misaligned", patch: setHeader(4, 76), want: "not 8-byte aligned"},
		{name: "id overlaps descriptors", patch: setHeader(3, 80), want: "overlaps descriptor block"},
		{name: "data overlaps descriptors", patch: setHeader(5, 80), want: "data block"},
		{name: "data truncated", patch: func(b []byte) []byte { return b[:len(b)-8] }, want: "short read"},
		{name: "name not NUL-terminated", blob: func() tBlob { b := good(); b.rawName = map[int][]byte{3: noNUL}; return b }(), want: "descriptor 3: name: not NUL-terminated"},
		{name: "id not NUL-terminated", patch: func(b []byte) []byte { copy(b[24:72], noNUL); return b }, want: "id string: not NUL-terminated"},
		{name: "empty name", blob: func() tBlob { b := good(); b.rawName = map[int][]byte{0: {0}}; return b }(), want: "name: empty"},
		{name: "control byte in name", blob: func() tBlob { b := good(); b.rawName = map[int][]byte{1: []byte("ex\x1bits\x00")}; return b }(), want: "not printable"},
		{name: "duplicate name", blob: func() tBlob { b := good(); b.rawName = map[int][]byte{1: []byte("exits\x00")}; return b }(), want: "duplicate name \"exits\""},
		{name: "size 0", blob: func() tBlob { b := good(); b.sizeOverride = map[int]uint32{2: 0}; return b }(), want: "size 0"},
		{name: "value offset misaligned", blob: func() tBlob { b := good(); b.offOverride = map[int]uint32{2: 4}; return b }(), want: "offset 4 not 8-byte aligned"},
		{name: "value offset absurd", blob: func() tBlob { b := good(); b.offOverride = map[int]uint32{2: 0xFFFFFFF8}; return b }(), want: "data limit"},
		{name: "value past the data", blob: func() tBlob { b := good(); b.offOverride = map[int]uint32{2: 4096}; return b }(), want: "short read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.blob
			if b.stats == nil {
				b = good()
			}
			blob := b.build()
			if c.patch != nil {
				blob = c.patch(blob)
			}
			sr, err := NewStatsReader(bytes.NewReader(blob))
			if err == nil {
				t.Fatalf("accepted: %+v", sr.Descriptors())
			}
			if !errors.Is(err, ErrBadStats) {
				t.Errorf("error %v does not wrap ErrBadStats", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// failingReader lets the first `calls` reads through, then fails with err.
type failingReader struct {
	r     io.ReaderAt
	calls int
	err   error
}

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if f.calls == 0 {
		return 0, f.err
	}
	f.calls--
	return f.r.ReadAt(p, off)
}

// An I/O error (say, EBADF after the fd was closed) is passed on as itself,
// not disguised as a malformed file.
func TestStatsReaderIOError(t *testing.T) {
	blob := tBlob{id: kernelVCPUID, stats: vcpuStats()}.build()
	errIO := errors.New("bad file descriptor")
	for calls := range 4 { // header, id, descriptors, data
		_, err := NewStatsReader(&failingReader{r: bytes.NewReader(blob), calls: calls, err: errIO})
		if !errors.Is(err, errIO) || errors.Is(err, ErrBadStats) {
			t.Errorf("failing read %d: err = %v", calls, err)
		}
	}
	fr := &failingReader{r: bytes.NewReader(blob), calls: 4, err: errIO}
	sr, err := NewStatsReader(fr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sr.Read(); !errors.Is(err, errIO) {
		t.Errorf("Read after the fd broke: %v", err)
	}
	if _, err := sr.ReadValues(); !errors.Is(err, errIO) {
		t.Errorf("ReadValues after the fd broke: %v", err)
	}
}

// StatsFD hands out an *os.File, read with pread(2): the same code path as a
// real stats fd, minus the kernel.
func TestStatsReaderOSFile(t *testing.T) {
	blob := tBlob{id: kernelVCPUID, stats: vcpuStats()}.build()
	path := filepath.Join(t.TempDir(), "stats")
	if err := os.WriteFile(path, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sr, err := NewStatsReader(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := sr.Read()
	if err != nil || got["exits"] != 4711 || got["io_exits"] != 2048 {
		t.Fatalf("Read = %v, %v", got, err)
	}
	f.Close()
	if _, err := sr.Read(); err == nil || errors.Is(err, ErrBadStats) {
		t.Errorf("Read on a closed file: %v", err)
	}
}

// A file with no statistics is odd but well formed.
func TestStatsReaderNoDescriptors(t *testing.T) {
	sr := mustReader(t, tBlob{id: "kvm-7"}.build())
	got, err := sr.Read()
	if err != nil || len(got) != 0 || len(sr.Descriptors()) != 0 || sr.ID() != "kvm-7" {
		t.Errorf("Read = %v, %v; descriptors %v; id %q", got, err, sr.Descriptors(), sr.ID())
	}
}

// Many descriptors span several read chunks.
func TestStatsReaderManyDescriptors(t *testing.T) {
	var stats []tStat
	for i := range maxStatsDescs {
		stats = append(stats, tStat{name: "stat_" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + strconv.Itoa(i), flags: flagsCounter, values: []uint64{uint64(i) * 3}})
	}
	sr := mustReader(t, tBlob{id: "kvm-1", stats: stats}.build())
	got, err := sr.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != maxStatsDescs {
		t.Fatalf("%d stats, want %d", len(got), maxStatsDescs)
	}
	for i, s := range stats {
		if got[s.name] != uint64(i)*3 {
			t.Fatalf("%s = %d, want %d", s.name, got[s.name], i*3)
		}
	}
}

// Every statistic Linux 6.1 keeps for an x86 vCPU has an explanation.
func TestStatMeaningCoversX86VCPU(t *testing.T) {
	linux61 := []string{
		"halt_successful_poll", "halt_attempted_poll", "halt_poll_invalid", "halt_wakeup",
		"halt_poll_success_ns", "halt_poll_fail_ns", "halt_wait_ns", "halt_poll_success_hist",
		"halt_poll_fail_hist", "halt_wait_hist", "blocking",
		"pf_taken", "pf_fixed", "pf_emulate", "pf_spurious", "pf_fast", "pf_mmio_spte_created",
		"pf_guest", "tlb_flush", "invlpg", "exits", "io_exits", "mmio_exits", "signal_exits",
		"irq_window_exits", "nmi_window_exits", "l1d_flush", "halt_exits", "request_irq_exits",
		"irq_exits", "host_state_reload", "fpu_reload", "insn_emulation", "insn_emulation_fail",
		"hypercalls", "irq_injections", "nmi_injections", "req_event", "nested_run",
		"directed_yield_attempted", "directed_yield_successful", "preemption_reported",
		"preemption_other", "guest_mode", "notify_window_exits",
	}
	for _, n := range linux61 {
		if StatMeaning(n) == "" {
			t.Errorf("StatMeaning(%q) is empty", n)
		}
	}
	if StatMeaning("no_such_stat") != "" {
		t.Error("StatMeaning invents a meaning for an unknown name")
	}
	// The ones that matter most to a learner say where they are handled.
	for n, want := range map[string]string{
		"halt_exits": "in the kernel", "irq_exits": "in the kernel", "io_exits": "KVM_EXIT_IO",
		"mmio_exits": "KVM_EXIT_MMIO", "signal_exits": "EINTR", "request_irq_exits": "KVM_EXIT_IRQ_WINDOW_OPEN",
	} {
		if !strings.Contains(StatMeaning(n), want) {
			t.Errorf("StatMeaning(%q) = %q, want it to mention %q", n, StatMeaning(n), want)
		}
	}
	known := KnownStats()
	if !slices.IsSorted(known) || len(known) < len(linux61) {
		t.Errorf("KnownStats = %v", known)
	}
}

// FuzzStatsReader feeds arbitrary files to the parser: it may reject them,
// but must never panic, and what it accepts must be self-consistent.
func FuzzStatsReader(f *testing.F) {
	f.Add(tBlob{id: kernelVCPUID, stats: vcpuStats()}.build())
	f.Add(tBlob{nameSize: 8, id: "k", stats: []tStat{{name: "exits", values: []uint64{1}}}}.build())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sr, err := NewStatsReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		vals, err := sr.Read()
		if err != nil {
			t.Fatalf("Read failed after NewStatsReader succeeded: %v", err)
		}
		all, err := sr.ReadValues()
		if err != nil {
			t.Fatalf("ReadValues: %v", err)
		}
		for _, d := range sr.Descriptors() {
			v, ok := all[d.Name]
			if !ok || len(v) != int(d.Size) {
				t.Fatalf("%s: %d values, want %d", d.Name, len(v), d.Size)
			}
			var sum uint64
			for _, x := range v {
				sum += x
			}
			if vals[d.Name] != sum {
				t.Fatalf("%s: Read %d, sum of ReadValues %d", d.Name, vals[d.Name], sum)
			}
			_ = d.UnitString() + d.TypeString()
		}
		_ = FormatDelta(sr.CounterDelta(vals, vals))
	})
}
