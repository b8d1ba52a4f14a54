package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"kvmlab/devices/virtio"
	"kvmlab/devices/virtio/virtiotest"
	"kvmlab/guestmem"
)

// guest is fake guest RAM with a bump allocator for request buffers. The
// RAM is the middle of a larger array whose guard bytes must never change:
// the device reaches only what guestmem.Slice hands it.
type guest struct {
	t       testing.TB
	mem     *guestmem.Memory
	backing []byte
	ram     []byte
	next    uint64
}

const (
	ramBase  = 0x10000
	guardLen = 64
	guardVal = 0xa5
)

func newGuest(t testing.TB, size int) *guest {
	backing := bytes.Repeat([]byte{guardVal}, size+2*guardLen)
	ram := backing[guardLen : guardLen+size : guardLen+size]
	clear(ram)
	mem, err := guestmem.FromRegions(guestmem.Region{Base: ramBase, Data: ram})
	if err != nil {
		t.Fatal(err)
	}
	return &guest{t: t, mem: mem, backing: backing, ram: ram}
}

// alloc reserves n bytes of RAM, filled with 0xee so that what the device
// wrote shows.
func (g *guest) alloc(n int) virtio.Buffer {
	g.t.Helper()
	if g.next+uint64(n) > uint64(len(g.ram)) {
		g.t.Fatalf("fake guest RAM exhausted")
	}
	b := virtio.Buffer{Addr: guestmem.GPA(ramBase + g.next), Len: uint32(n)}
	for i := range n {
		g.ram[g.next+uint64(i)] = 0xee
	}
	g.next += (uint64(n) + 15) &^ 15
	return b
}

// put copies data into fresh RAM.
func (g *guest) put(data []byte) virtio.Buffer {
	b := g.alloc(len(data))
	copy(g.bytes(b), data)
	return b
}

func (g *guest) bytes(b virtio.Buffer) []byte {
	off := uint64(b.Addr) - ramBase
	return g.ram[off : off+uint64(b.Len)]
}

func (g *guest) checkGuards() {
	g.t.Helper()
	for i := range guardLen {
		if g.backing[i] != guardVal || g.backing[len(g.backing)-1-i] != guardVal {
			g.t.Fatalf("guard byte outside guest RAM changed")
		}
	}
}

func header(typ uint32, sector uint64) []byte {
	h := make([]byte, HeaderLen)
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], 0xdeadbeef) // reserved: ignored
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// pattern is n bytes that differ from sector to sector and from seed to
// seed.
func pattern(seed byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i/SectorSize)*7 + byte(i) + seed*31
	}
	return p
}

// newImage writes a temp image of the given size with a recognisable
// content and returns its path and content.
func newImage(t testing.TB, size int) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	content := pattern(0x5c, size)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, content
}

func openImage(t testing.TB, size int, ro bool) (*Device, string, []byte) {
	t.Helper()
	path, content := newImage(t, size)
	d, err := Open(path, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path, content
}

func fileContent(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// do serves one chain and returns the status byte (the last writable
// byte) and the used length; it fails the test if the device wants a reset.
func do(t testing.TB, g *guest, d *Device, c *virtio.Chain) (byte, uint32) {
	t.Helper()
	n, err := d.serve(g.mem, c)
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	g.checkGuards()
	last := c.Writable[len(c.Writable)-1]
	return g.bytes(last)[last.Len-1], n
}

// split cuts data into buffers of the given sizes (the last takes the
// rest).
func split(g *guest, data []byte, sizes ...int) []virtio.Buffer {
	var bufs []virtio.Buffer
	for _, s := range sizes {
		bufs = append(bufs, g.put(data[:s]))
		data = data[s:]
	}
	return append(bufs, g.put(data))
}

func TestRoundTrip(t *testing.T) {
	const sectors = 64
	d, path, content := openImage(t, sectors*SectorSize, false)
	for _, tc := range []struct {
		name   string
		sector uint64
		n      int // sectors
	}{
		{"first", 0, 1},
		{"second", 1, 1},
		{"several", 7, 3},
		{"last", sectors - 1, 1},
		{"up-to-end", sectors - 4, 4},
		{"whole disk", 0, sectors},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			data := pattern(byte(tc.sector), tc.n*SectorSize)
			st, used := do(t, g, d, &virtio.Chain{
				Readable: []virtio.Buffer{g.put(header(TypeOut, tc.sector)), g.put(data)},
				Writable: []virtio.Buffer{g.alloc(1)},
			})
			if st != StatusOK || used != 1 {
				t.Fatalf("write: status %d used %d, want 0 and 1", st, used)
			}
			off := int(tc.sector) * SectorSize
			copy(content[off:], data)
			if !bytes.Equal(fileContent(t, path), content) {
				t.Fatalf("image differs after write")
			}
			buf := g.alloc(len(data))
			st, used = do(t, g, d, &virtio.Chain{
				Readable: []virtio.Buffer{g.put(header(TypeIn, tc.sector))},
				Writable: []virtio.Buffer{buf, g.alloc(1)},
			})
			if st != StatusOK || used != uint32(len(data)+1) {
				t.Fatalf("read: status %d used %d, want 0 and %d", st, used, len(data)+1)
			}
			if !bytes.Equal(g.bytes(buf), data) {
				t.Fatalf("read back differs from what was written")
			}
		})
	}
	s := d.Stats()
	if s.Reads != 6 || s.Writes != 6 || s.BytesRead != s.BytesWritten || s.BytesRead != (1+1+3+1+4+sectors)*SectorSize {
		t.Errorf("stats %+v", s)
	}
}

// TestFraming: §2.6.4 lets the driver lay a request over its buffers as it
// likes; only the byte streams count.
func TestFraming(t *testing.T) {
	d, path, content := openImage(t, 32*SectorSize, false)
	g := newGuest(t, 1<<20)

	// Header split 4+4+8, data split at odd places, data in the same
	// buffer as the end of the header.
	data := pattern(9, 3*SectorSize)
	stream := append(header(TypeOut, 5), data...)
	st, _ := do(t, g, d, &virtio.Chain{
		Readable: split(g, stream, 4, 4, 8+100, 1, 700),
		Writable: []virtio.Buffer{g.alloc(1)},
	})
	if st != StatusOK {
		t.Fatalf("split write: status %d", st)
	}
	copy(content[5*SectorSize:], data)
	if !bytes.Equal(fileContent(t, path), content) {
		t.Fatalf("image differs after split write")
	}

	// A read into three buffers, the status sharing the last one.
	b1, b2, b3 := g.alloc(100), g.alloc(SectorSize), g.alloc(2*SectorSize-100+1)
	st, used := do(t, g, d, &virtio.Chain{
		Readable: split(g, header(TypeIn, 4), 1, 2, 3),
		Writable: []virtio.Buffer{b1, {Addr: 0xdead0000, Len: 0}, b2, b3},
	})
	if st != StatusOK || used != 3*SectorSize+1 {
		t.Fatalf("split read: status %d used %d", st, used)
	}
	got := append(append(append([]byte(nil), g.bytes(b1)...), g.bytes(b2)...), g.bytes(b3)[:b3.Len-1]...)
	if want := content[4*SectorSize : 7*SectorSize]; !bytes.Equal(got, want) {
		t.Fatalf("split read returned the wrong bytes")
	}

	// Extra readable bytes after the header of a read are ignored.
	buf := g.alloc(SectorSize)
	st, _ = do(t, g, d, &virtio.Chain{
		Readable: []virtio.Buffer{g.put(append(header(TypeIn, 0), 1, 2, 3))},
		Writable: []virtio.Buffer{buf, g.alloc(1)},
	})
	if st != StatusOK || !bytes.Equal(g.bytes(buf), content[:SectorSize]) {
		t.Fatalf("read with trailing readable bytes: status %d", st)
	}
}

func TestBadRequests(t *testing.T) {
	const sectors = 16
	d, path, content := openImage(t, sectors*SectorSize, false)
	for _, tc := range []struct {
		name   string
		typ    uint32
		sector uint64
		n      int // data bytes
		want   byte
	}{
		{"read at capacity", TypeIn, sectors, SectorSize, StatusIOErr},
		{"read across the end", TypeIn, sectors - 1, 2 * SectorSize, StatusIOErr},
		{"write across the end", TypeOut, sectors - 1, 2 * SectorSize, StatusIOErr},
		{"write at capacity", TypeOut, sectors, SectorSize, StatusIOErr},
		{"sector overflows bytes", TypeIn, 1 << 55, SectorSize, StatusIOErr},
		{"sector max", TypeOut, math.MaxUint64, SectorSize, StatusIOErr},
		{"sector max, no data", TypeIn, math.MaxUint64, 0, StatusIOErr},
		{"read not a multiple", TypeIn, 0, 511, StatusIOErr},
		{"read not a multiple 2", TypeIn, 0, 513, StatusIOErr},
		{"write not a multiple", TypeOut, 0, 100, StatusIOErr},
		{"zero-length read at end", TypeIn, sectors, 0, StatusOK},
		{"discard", 11, 0, 16, StatusUnsupp},
		{"write zeroes", 13, 0, 16, StatusUnsupp},
		{"type 2", 2, 0, 0, StatusUnsupp},
		{"type max", math.MaxUint32, 0, 0, StatusUnsupp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuest(t, 1<<16)
			c := &virtio.Chain{Readable: []virtio.Buffer{g.put(header(tc.typ, tc.sector))}}
			if tc.typ == TypeIn {
				c.Writable = append(c.Writable, g.alloc(tc.n))
			} else {
				c.Readable = append(c.Readable, g.put(pattern(1, tc.n)))
			}
			c.Writable = append(c.Writable, g.alloc(1))
			st, used := do(t, g, d, c)
			if st != tc.want {
				t.Errorf("status %d, want %d", st, tc.want)
			}
			if tc.want != StatusOK && used != 1 {
				t.Errorf("used %d, want 1", used)
			}
			if !bytes.Equal(fileContent(t, path), content) {
				t.Fatalf("image changed")
			}
		})
	}
	if s := d.Stats(); s.Rejected != 14 || s.IOErrors != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestShortHeader(t *testing.T) {
	d, _, _ := openImage(t, 4*SectorSize, false)
	g := newGuest(t, 1<<16)
	for _, readable := range [][]virtio.Buffer{
		nil,
		{g.put(header(TypeIn, 0)[:15])},
		split(g, header(TypeIn, 0)[:15], 5, 5),
	} {
		st, used := do(t, g, d, &virtio.Chain{Readable: readable, Writable: []virtio.Buffer{g.alloc(SectorSize + 1)}})
		if st != StatusIOErr || used != 1 {
			t.Errorf("%d readable buffers: status %d used %d, want IOERR and 1", len(readable), st, used)
		}
	}
}

func TestReadOnly(t *testing.T) {
	d, path, content := openImage(t, 8*SectorSize, true)
	if d.Features()&(1<<FeatureRO) == 0 || !d.ReadOnly() {
		t.Fatalf("read-only device does not offer VIRTIO_BLK_F_RO")
	}
	g := newGuest(t, 1<<16)
	// §5.2.6.2: IOERR, and no data written.
	st, used := do(t, g, d, &virtio.Chain{
		Readable: []virtio.Buffer{g.put(header(TypeOut, 1)), g.put(pattern(3, SectorSize))},
		Writable: []virtio.Buffer{g.alloc(1)},
	})
	if st != StatusIOErr || used != 1 {
		t.Fatalf("write to read-only device: status %d used %d, want IOERR", st, used)
	}
	if !bytes.Equal(fileContent(t, path), content) {
		t.Fatalf("read-only image changed")
	}
	buf := g.alloc(SectorSize)
	st, _ = do(t, g, d, &virtio.Chain{
		Readable: []virtio.Buffer{g.put(header(TypeIn, 1))},
		Writable: []virtio.Buffer{buf, g.alloc(1)},
	})
	if st != StatusOK || !bytes.Equal(g.bytes(buf), content[SectorSize:2*SectorSize]) {
		t.Fatalf("read from read-only device: status %d", st)
	}
	st, _ = do(t, g, d, &virtio.Chain{
		Readable: []virtio.Buffer{g.put(header(TypeFlush, 0))},
		Writable: []virtio.Buffer{g.alloc(1)},
	})
	if st != StatusOK {
		t.Fatalf("flush on read-only device: status %d", st)
	}
}

func TestFlush(t *testing.T) {
	d, _, _ := openImage(t, 8*SectorSize, false)
	g := newGuest(t, 1<<16)
	st, used := do(t, g, d, &virtio.Chain{
		Readable: []virtio.Buffer{g.put(header(TypeFlush, 0))},
		Writable: []virtio.Buffer{g.alloc(1)},
	})
	if st != StatusOK || used != 1 {
		t.Fatalf("flush: status %d used %d", st, used)
	}
	if s := d.Stats(); s.Flushes != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestGetID(t *testing.T) {
	d, _, _ := openImage(t, 8*SectorSize, false)
	if got := d.ID(); got != "kvmlab-disk.img" {
		t.Fatalf("ID() = %q", got)
	}
	g := newGuest(t, 1<<16)
	for _, tc := range []struct {
		bufLen int
		want   string
	}{
		{IDLen, "kvmlab-disk.img\x00\x00\x00\x00\x00"},
		{IDLen + 10, "kvmlab-disk.img\x00\x00\x00\x00\x00" + strings.Repeat("\xee", 10)},
		{5, "kvmla"},
		{0, ""},
	} {
		buf := g.alloc(tc.bufLen)
		st, used := do(t, g, d, &virtio.Chain{
			Readable: []virtio.Buffer{g.put(header(TypeGetID, 0))},
			Writable: []virtio.Buffer{buf, g.alloc(1)},
		})
		wantUsed := min(tc.bufLen, IDLen) + 1
		if st != StatusOK || used != uint32(wantUsed) || string(g.bytes(buf)) != tc.want {
			t.Errorf("GET_ID into %d bytes: status %d used %d data %q, want 0, %d, %q", tc.bufLen, st, used, g.bytes(buf), wantUsed, tc.want)
		}
	}
}

func TestMakeID(t *testing.T) {
	for path, want := range map[string]string{
		"/a/b/root.img":                 "kvmlab-root.img",
		"a-very-long-image-name.raw":    "kvmlab-a-very-long-i",
		"/x/ünïcode":                    "kvmlab-__n__code",
		"/x/tab\there":                  "kvmlab-tab_here",
		"exactly-13ch":                  "kvmlab-exactly-13ch",
		"/images/thirteen-chr":          "kvmlab-thirteen-chr",
		"/images/thirteen-chrs-and-mor": "kvmlab-thirteen-chrs",
	} {
		if got := MakeID(path); got != want || len(got) > IDLen {
			t.Errorf("MakeID(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestDriverErrors: chains the device cannot answer want a reset.
func TestDriverErrors(t *testing.T) {
	d, _, _ := openImage(t, 8*SectorSize, false)
	g := newGuest(t, 1<<16)
	for name, c := range map[string]*virtio.Chain{
		"no writable byte":              {Readable: []virtio.Buffer{g.put(header(TypeIn, 0))}},
		"only empty writable buffers":   {Readable: []virtio.Buffer{g.put(header(TypeIn, 0))}, Writable: []virtio.Buffer{{Addr: ramBase, Len: 0}}},
		"status outside RAM":            {Readable: []virtio.Buffer{g.put(header(TypeFlush, 0))}, Writable: []virtio.Buffer{{Addr: 0x100, Len: 1}}},
		"data past the end of RAM":      {Readable: []virtio.Buffer{g.put(header(TypeIn, 0))}, Writable: []virtio.Buffer{{Addr: ramBase + 1<<16 - 256, Len: 512}, g.alloc(1)}},
		"header outside RAM":            {Readable: []virtio.Buffer{{Addr: 1 << 40, Len: 16}}, Writable: []virtio.Buffer{g.alloc(1)}},
		"buffer wrapping address space": {Readable: []virtio.Buffer{{Addr: math.MaxUint64 - 3, Len: 16}}, Writable: []virtio.Buffer{g.alloc(1)}},
	} {
		_, err := d.serve(g.mem, c)
		if !errors.Is(err, virtio.ErrNeedsReset) {
			t.Errorf("%s: serve = %v, want an error wrapping ErrNeedsReset", name, err)
		}
		g.checkGuards()
	}
}

func TestHostIOError(t *testing.T) {
	d, _, _ := openImage(t, 8*SectorSize, false)
	g := newGuest(t, 1<<16)
	d.Close() // every pread, pwrite and fdatasync now fails
	for _, typ := range []uint32{TypeIn, TypeOut, TypeFlush} {
		c := &virtio.Chain{Readable: []virtio.Buffer{g.put(header(typ, 0))}}
		switch typ {
		case TypeIn:
			c.Writable = append(c.Writable, g.alloc(SectorSize))
		case TypeOut:
			c.Readable = append(c.Readable, g.put(pattern(0, SectorSize)))
		}
		c.Writable = append(c.Writable, g.alloc(1))
		if st, _ := do(t, g, d, c); st != StatusIOErr {
			t.Errorf("type %d on a closed image: status %d, want IOERR", typ, st)
		}
	}
	if s := d.Stats(); s.IOErrors != 3 {
		t.Errorf("stats %+v, want 3 I/O errors", s)
	}
}

// TestShrunkImage: an image truncated behind the device's back fails reads
// with IOERR (a short pread), not with a panic or stale data.
func TestShrunkImage(t *testing.T) {
	d, path, _ := openImage(t, 8*SectorSize, false)
	if err := os.Truncate(path, 2*SectorSize); err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, 1<<16)
	st, _ := do(t, g, d, &virtio.Chain{
		Readable: []virtio.Buffer{g.put(header(TypeIn, 1))},
		Writable: []virtio.Buffer{g.alloc(2 * SectorSize), g.alloc(1)},
	})
	if st != StatusIOErr {
		t.Fatalf("read past a shrunk image: status %d", st)
	}
}

func TestConfig(t *testing.T) {
	const sectors = 12345
	d, _, _ := openImage(t, sectors*SectorSize+100, false) // the tail is not exposed
	if d.Capacity() != sectors {
		t.Fatalf("Capacity() = %d, want %d", d.Capacity(), sectors)
	}
	want := make([]byte, 256)
	binary.LittleEndian.PutUint64(want[0:], sectors)
	binary.LittleEndian.PutUint32(want[12:], SegMax)
	binary.LittleEndian.PutUint32(want[20:], SectorSize)
	for off := range 200 {
		for _, w := range []int{1, 2, 4, 8} {
			got := bytes.Repeat([]byte{0xff}, w)
			d.ReadConfig(uint64(off), got)
			if !bytes.Equal(got, want[off:off+w]) {
				t.Fatalf("ReadConfig(%d, %d bytes) = %x, want %x", off, w, got, want[off:off+w])
			}
		}
	}
	// Writes change nothing, writeback included.
	d.WriteConfig(32, []byte{1})
	d.WriteConfig(0, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	got := make([]byte, 8)
	d.ReadConfig(0, got)
	if binary.LittleEndian.Uint64(got) != sectors {
		t.Fatalf("capacity changed by a config write")
	}
	d.ReadConfig(32, got[:1])
	if got[0] != 0 {
		t.Fatalf("writeback changed by a config write")
	}
	d.ReadConfig(math.MaxUint64, got)
	if !bytes.Equal(got, make([]byte, 8)) {
		t.Fatalf("ReadConfig at the top of the offset range = %x", got)
	}
}

func TestDeviceDescription(t *testing.T) {
	d, _, _ := openImage(t, SectorSize, false)
	if d.Type() != virtio.TypeBlock {
		t.Errorf("Type() = %v", d.Type())
	}
	if f := d.Features(); f != 1<<FeatureSegMax|1<<FeatureBlkSize|1<<FeatureFlush {
		t.Errorf("Features() = %#x", f)
	}
	if q := d.QueueSizes(); len(q) != 1 || q[0] != QueueSize {
		t.Errorf("QueueSizes() = %v", q)
	}
	if err := d.Activate(&virtio.Env{}); err == nil {
		t.Errorf("Activate accepted an empty environment")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "nope.img"), fs.ErrNotExist},
		{"directory", dir, ErrNotImage},
		{"empty", write("empty.img", 0), ErrEmptyImage},
		{"less than a sector", write("short.img", 511), ErrEmptyImage},
	} {
		for _, ro := range []bool{false, true} {
			d, err := Open(tc.path, ro)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s (read-only %v): Open = %v, want %v", tc.name, ro, err, tc.want)
			}
			if d != nil {
				d.Close()
			}
		}
	}

	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err == nil {
		if _, err := Open(fifo, true); !errors.Is(err, ErrNotImage) {
			t.Errorf("FIFO: Open = %v, want ErrNotImage", err)
		}
	}

	p := write("locked.img", SectorSize)
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: permission checks do not apply, skipping that case")
		return
	}
	if _, err := Open(p, false); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("read-only file opened read-write: %v, want ErrPermission", err)
	}
	d, err := Open(p, true)
	if err != nil {
		t.Fatalf("read-only file opened read-only: %v", err)
	}
	d.Close()
}

// fuzzChain lays a request over buffers decoded from layout, three bytes a
// buffer (at most 16 buffers):
//
//	kind: bit 0 writable; bits 1-2 placement: 0 and 1 in RAM, 2 outside
//	      RAM, 3 straddling its end (lengthened to straddle it if need be)
//	a, b: length: b bit 7 set: (a%5)*512, else a | (b&7)<<8
//
// Buffers in RAM are laid out one after the other and never overlap, so the
// readable stream (header, then data) is exactly what the device sees. It
// returns the chain, the readable stream and whether every buffer is in
// RAM.
func fuzzChain(g *guest, hdr []byte, layout []byte) (*virtio.Chain, []byte, bool) {
	c := &virtio.Chain{}
	var stream []byte
	inRAM := true
	for i := 0; i+3 <= len(layout) && i < 16*3; i += 3 {
		kind, a, b := layout[i], layout[i+1], layout[i+2]
		n := int(a) | int(b&7)<<8
		if b&0x80 != 0 {
			n = int(a%5) * SectorSize
		}
		var buf virtio.Buffer
		switch (kind >> 1) & 3 {
		case 0, 1:
			buf = g.alloc(n)
		case 2:
			buf = virtio.Buffer{Addr: guestmem.GPA(ramBase + uint64(len(g.ram)) + uint64(a)<<12), Len: uint32(n)}
		case 3:
			n = max(n, int(a)+1) // always past the end
			buf = virtio.Buffer{Addr: guestmem.GPA(ramBase + uint64(len(g.ram)) - uint64(a)), Len: uint32(n)}
		}
		if (kind>>1)&3 >= 2 && n > 0 {
			inRAM = false
		}
		if kind&1 != 0 {
			c.Writable = append(c.Writable, buf)
			continue
		}
		c.Readable = append(c.Readable, buf)
		// Fill readable buffers from the stream: header first, then a
		// pattern.
		p := make([]byte, n)
		for j := range p {
			k := len(stream) + j
			if k < len(hdr) {
				p[j] = hdr[k]
			} else {
				p[j] = byte(k*13 + k/SectorSize)
			}
		}
		stream = append(stream, p...)
		if (kind>>1)&3 < 2 {
			copy(g.bytes(buf), p)
		}
	}
	return c, stream, inRAM
}

// FuzzBlkRequest serves one request with a fuzzed header and buffer layout
// against an 8-sector image, read-write or read-only, and checks it against
// a model of §5.2.6: no panic, no byte outside guest RAM touched, a reset
// exactly when a buffer lies outside RAM or there is no status byte, the
// right status and used length otherwise, the image changed only by a
// valid write to a read-write device, and read data equal to the image.
func FuzzBlkRequest(f *testing.F) {
	const sectors = 8
	ok := []byte{0, 0, 0x81, 1, 1, 0} // 512-byte readable buffer, then status
	f.Add(false, uint32(TypeOut), uint64(3), []byte{0, 16, 0, 0, 1, 0x81, 1, 1, 0})
	f.Add(true, uint32(TypeOut), uint64(3), []byte{0, 16, 0, 0, 1, 0x81, 1, 1, 0})
	f.Add(false, uint32(TypeIn), uint64(7), []byte{0, 16, 0, 1, 1, 0x81, 1, 1, 0})
	f.Add(false, uint32(TypeIn), uint64(7), []byte{0, 4, 0, 0, 12, 0, 1, 2, 0x81, 1, 1, 0})
	f.Add(false, uint32(TypeGetID), uint64(0), []byte{0, 16, 0, 1, 20, 0, 1, 1, 0})
	f.Add(false, uint32(TypeFlush), uint64(0), []byte{0, 16, 0, 1, 1, 0})
	f.Add(false, uint32(TypeOut), uint64(1)<<63, append([]byte{0, 16, 0}, ok...))
	f.Add(false, uint32(11), uint64(0), []byte{0, 16, 0, 1, 1, 0})
	f.Add(false, uint32(TypeIn), uint64(0), []byte{0, 16, 0, 5, 0, 0x82, 1, 1, 0})  // data outside RAM
	f.Add(false, uint32(TypeIn), uint64(0), []byte{0, 16, 0, 7, 16, 0x81, 1, 1, 0}) // data straddling the end
	f.Add(false, uint32(TypeIn), uint64(0), []byte{0, 16, 0})                       // no status

	// Two images with the same content: a read-write and a read-only
	// open of one image refuse each other (lock.go).
	dir := f.TempDir()
	rwPath, roPath := filepath.Join(dir, "fuzz.img"), filepath.Join(dir, "fuzz-ro.img")
	initial := pattern(0x77, sectors*SectorSize+100)
	for _, p := range []string{rwPath, roPath} {
		if err := os.WriteFile(p, initial, 0o600); err != nil {
			f.Fatal(err)
		}
	}
	rw, err := Open(rwPath, false)
	if err != nil {
		f.Fatal(err)
	}
	ro, err := Open(roPath, true)
	if err != nil {
		f.Fatal(err)
	}
	// Not locked: only this test's own resets go through it.
	restore, err := os.OpenFile(rwPath, os.O_RDWR, 0)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, readOnly bool, typ uint32, sector uint64, layout []byte) {
		if _, err := restore.WriteAt(initial, 0); err != nil {
			t.Fatal(err)
		}
		d, path := rw, rwPath
		if readOnly {
			d, path = ro, roPath
		}
		g := newGuest(t, 1<<16)
		c, stream, inRAM := fuzzChain(g, header(typ, sector), layout)
		var wlen uint64
		for _, b := range c.Writable {
			wlen += uint64(b.Len)
		}

		used, err := d.serve(g.mem, c)
		g.checkGuards()
		image := fileContent(t, path)
		if err != nil {
			if !errors.Is(err, virtio.ErrNeedsReset) {
				t.Fatalf("serve error %v does not wrap ErrNeedsReset", err)
			}
			if inRAM && wlen > 0 {
				t.Fatalf("reset for a chain in RAM with a status byte: %v", err)
			}
			if !bytes.Equal(image, initial) {
				t.Fatalf("image written by a request that was not answered")
			}
			return
		}
		if !inRAM || wlen == 0 {
			t.Fatalf("no reset for a chain outside RAM (%v) or without status (%d writable bytes)", !inRAM, wlen)
		}

		// The model.
		dataIn := wlen - 1
		dataOut := uint64(len(stream)) - min(uint64(len(stream)), HeaderLen)
		inRange := func(n uint64) bool {
			return n%SectorSize == 0 && sector <= sectors && n/SectorSize <= sectors-sector
		}
		want, wantUsed := byte(StatusIOErr), uint64(1)
		switch {
		case len(stream) < HeaderLen:
		case typ == TypeIn:
			if inRange(dataIn) {
				want, wantUsed = StatusOK, dataIn+1
			}
		case typ == TypeOut:
			if !readOnly && inRange(dataOut) {
				want = StatusOK
			}
		case typ == TypeFlush:
			want = StatusOK
		case typ == TypeGetID:
			want, wantUsed = StatusOK, min(dataIn, IDLen)+1
		default:
			want = StatusUnsupp
		}
		var got []byte
		for _, b := range c.Writable {
			if b.Len > 0 { // an empty buffer may sit anywhere
				got = append(got, g.bytes(b)...)
			}
		}
		if got[len(got)-1] != want || uint64(used) != wantUsed {
			t.Fatalf("status %d used %d, want %d and %d", got[len(got)-1], used, want, wantUsed)
		}
		wantImage := initial
		if typ == TypeOut && want == StatusOK {
			wantImage = bytes.Clone(initial)
			copy(wantImage[sector*SectorSize:], stream[HeaderLen:])
		}
		if !bytes.Equal(image, wantImage) {
			t.Fatalf("image content wrong after type %d status %d (read-only %v)", typ, want, readOnly)
		}
		if typ == TypeIn && want == StatusOK && !bytes.Equal(got[:dataIn], initial[sector*SectorSize:sector*SectorSize+dataIn]) {
			t.Fatalf("read returned the wrong data")
		}
	})
}

// FuzzBlkConfig reads the configuration space at any offset and width, and
// writes to it, which must change nothing.
func FuzzBlkConfig(f *testing.F) {
	f.Add(uint64(0), uint8(8), []byte{1, 2, 3, 4})
	f.Add(uint64(20), uint8(4), []byte{0})
	f.Add(uint64(32), uint8(1), []byte{1})
	f.Add(uint64(23), uint8(200), []byte{})
	f.Add(^uint64(0), uint8(8), []byte{9, 9})
	path, _ := newImage(f, 5000*SectorSize+1)
	d, err := Open(path, true)
	if err != nil {
		f.Fatal(err)
	}
	want := make([]byte, ConfigLen)
	binary.LittleEndian.PutUint64(want[0:], 5000)
	binary.LittleEndian.PutUint32(want[12:], SegMax)
	binary.LittleEndian.PutUint32(want[20:], SectorSize)
	f.Fuzz(func(t *testing.T, off uint64, width uint8, wdata []byte) {
		d.WriteConfig(off, wdata)
		got := bytes.Repeat([]byte{0xff}, int(width))
		d.ReadConfig(off, got)
		for i, b := range got {
			var w byte
			if o := off + uint64(i); o >= off && o < ConfigLen {
				w = want[o]
			}
			if b != w {
				t.Fatalf("config byte %d (offset %#x) = %#x, want %#x", i, off+uint64(i), b, w)
			}
		}
	})
}

// ---- Notify through a real split virtqueue ----------------------------------

// harness is a device's Env over a virtiotest driver, recording interrupts
// and Fail calls.
type harness struct {
	ram        *virtiotest.RAM
	drv        *virtiotest.Driver
	env        *virtio.Env
	mu         sync.Mutex
	interrupts int
	fails      []error
}

func newHarness(t testing.TB, size uint16) *harness {
	t.Helper()
	h := &harness{ram: virtiotest.NewRAM(1<<20, 0, 0)}
	var err error
	if h.drv, err = virtiotest.NewDriver(h.ram, size); err != nil {
		t.Fatal(err)
	}
	h.env = &virtio.Env{
		Mem:       h.ram.Memory,
		Queues:    []*virtio.Queue{h.drv.Queue},
		Interrupt: func(int) { h.mu.Lock(); h.interrupts++; h.mu.Unlock() },
		Fail:      func(err error) { h.mu.Lock(); h.fails = append(h.fails, err); h.mu.Unlock() },
	}
	return h
}

func (h *harness) post(t testing.TB, readable [][]byte, writable ...uint32) uint16 {
	t.Helper()
	head, err := h.drv.Post(readable, writable)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func (h *harness) used(t testing.TB) []virtiotest.UsedElem {
	t.Helper()
	u, err := h.drv.Used()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// reply returns a chain's writable bytes: data, then the status byte.
func (h *harness) reply(t testing.TB, head uint16) ([]byte, byte) {
	t.Helper()
	b, err := h.drv.ReadWritable(head)
	if err != nil {
		t.Fatal(err)
	}
	return b[:len(b)-1], b[len(b)-1]
}

func TestNotify(t *testing.T) {
	d, path, content := openImage(t, 16*SectorSize, false)
	h := newHarness(t, 16)

	d.Notify(0) // before Activate: nothing to serve, nothing to touch
	if err := d.Activate(h.env); err != nil {
		t.Fatal(err)
	}
	data := pattern(42, 2*SectorSize)
	h1 := h.post(t, [][]byte{header(TypeOut, 3), data}, 1)
	h2 := h.post(t, [][]byte{header(TypeIn, 3)}, 2*SectorSize, 1)
	h3 := h.post(t, [][]byte{header(TypeFlush, 0)}, 1)
	h4, err := h.drv.PostIndirect([][]byte{header(TypeGetID, 0)[:5], header(TypeGetID, 0)[5:]}, []uint32{IDLen, 1})
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(1) // no such queue
	if got := h.used(t); len(got) != 0 {
		t.Fatalf("Notify(1) served %v", got)
	}
	d.Notify(0)
	want := []virtiotest.UsedElem{{ID: uint32(h1), Len: 1}, {ID: uint32(h2), Len: 2*SectorSize + 1}, {ID: uint32(h3), Len: 1}, {ID: uint32(h4), Len: IDLen + 1}}
	if got := h.used(t); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("used ring %v, want %v", got, want)
	}
	if h.interrupts != 1 || len(h.fails) != 0 {
		t.Fatalf("%d interrupts, fails %v; want one interrupt for the batch", h.interrupts, h.fails)
	}
	for _, head := range []uint16{h1, h2, h3, h4} {
		if _, st := h.reply(t, head); st != StatusOK {
			t.Errorf("chain %d: status %d", head, st)
		}
	}
	if got, _ := h.reply(t, h2); !bytes.Equal(got, data) {
		t.Fatalf("read back differs")
	}
	if got, _ := h.reply(t, h4); string(got) != "kvmlab-disk.img\x00\x00\x00\x00\x00" {
		t.Fatalf("GET_ID through an indirect table: %q", got)
	}
	copy(content[3*SectorSize:], data)
	if !bytes.Equal(fileContent(t, path), content) {
		t.Fatalf("image differs")
	}
	d.Notify(0) // nothing new: no interrupt
	if h.interrupts != 1 {
		t.Fatalf("interrupt without new used buffers")
	}
}

// TestNotifyFail: a chain without a status byte, and a head the queue
// rejects, put the device into NEEDS_RESET after the good requests before
// them completed; it then serves nothing until Reset and Activate.
func TestNotifyFail(t *testing.T) {
	for _, tc := range []struct {
		name string
		post func(t *testing.T, h *harness)
	}{
		{"no status byte", func(t *testing.T, h *harness) {
			h.post(t, [][]byte{header(TypeIn, 0)})
		}},
		{"head out of range", func(t *testing.T, h *harness) {
			if err := h.drv.Publish(h.drv.Size + 3); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, _ := openImage(t, 16*SectorSize, false)
			h := newHarness(t, 16)
			if err := d.Activate(h.env); err != nil {
				t.Fatal(err)
			}
			h.post(t, [][]byte{header(TypeFlush, 0)}, 1)
			tc.post(t, h)
			d.Notify(0)
			if len(h.fails) != 1 || !errors.Is(h.fails[0], virtio.ErrNeedsReset) {
				t.Fatalf("fails %v, want one wrapping ErrNeedsReset", h.fails)
			}
			if got := h.used(t); len(got) != 1 || h.interrupts != 1 {
				t.Fatalf("used %v, %d interrupts: the good request before the bad one must complete", got, h.interrupts)
			}
			// Failed: whatever comes next waits for the reset.
			h.post(t, [][]byte{header(TypeFlush, 0)}, 1)
			d.Notify(0)
			if len(h.fails) != 1 || len(h.used(t)) != 0 {
				t.Fatalf("device kept serving after Fail")
			}
			d.Reset()
			h2 := newHarness(t, 16) // the driver sets the queue up again
			if err := d.Activate(h2.env); err != nil {
				t.Fatal(err)
			}
			head := h2.post(t, [][]byte{header(TypeFlush, 0)}, 1)
			d.Notify(0)
			if got := h2.used(t); len(got) != 1 || got[0].ID != uint32(head) {
				t.Fatalf("after Reset and Activate: used %v", got)
			}
		})
	}
}

// TestNotifyConcurrent hammers Notify and Stats from several goroutines
// (run with -race): the device serialises its queue.
func TestNotifyConcurrent(t *testing.T) {
	d, _, _ := openImage(t, 64*SectorSize, false)
	h := newHarness(t, 128) // 32 chains of 3 descriptors
	if err := d.Activate(h.env); err != nil {
		t.Fatal(err)
	}
	for i := range 32 {
		h.post(t, [][]byte{header(TypeIn, uint64(i))}, SectorSize, 1)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				d.Notify(0)
				_ = d.Stats()
			}
		})
	}
	wg.Wait()
	if got := h.used(t); len(got) != 32 || d.Stats().Reads != 32 {
		t.Fatalf("%d used, stats %+v; want 32 reads", len(got), d.Stats())
	}
}

// TestVectored drives vectored with an operation that moves at most a few
// bytes per call, as a pwritev interrupted by a signal may: every byte
// must land in order across the buffers, and an operation that moves
// nothing must end the request with an error instead of looping.
func TestVectored(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &Device{f: f}
	src := []byte("0123456789abcdefghij")
	cases := []struct {
		name    string
		step    int // bytes moved per call; 0: nothing ever
		bufs    []int
		wantN   int
		wantErr bool
	}{
		{"whole", 100, []int{5, 0, 7, 8}, 20, false},
		{"three at a time", 3, []int{5, 0, 7, 8}, 20, false},
		{"one at a time", 1, []int{1, 19}, 20, false},
		{"stuck", 0, []int{4, 4}, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []byte
			calls := 0
			op := func(fd int, iovs [][]byte, off int64) (int, error) {
				calls++
				if off != int64(len(got)) {
					t.Fatalf("call %d at offset %d, want %d", calls, off, len(got))
				}
				if calls > 100 {
					t.Fatal("vectored loops")
				}
				n := 0
				for _, b := range iovs {
					for _, x := range b {
						if n == c.step {
							return n, nil
						}
						got = append(got, x)
						n++
					}
				}
				return n, nil
			}
			var data span
			at := 0
			for _, l := range c.bufs {
				data = append(data, src[at:at+l])
				at += l
			}
			n, err := d.vectored(op, data, 0)
			if n != c.wantN || (err != nil) != c.wantErr {
				t.Fatalf("vectored = %d, %v; want %d, error %v", n, err, c.wantN, c.wantErr)
			}
			if !c.wantErr && !bytes.Equal(got, src[:at]) {
				t.Errorf("moved %q, want %q", got, src[:at])
			}
		})
	}
}
