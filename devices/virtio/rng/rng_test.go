package rng

import (
	"bytes"
	"errors"
	"testing"

	"kvmlab/devices/virtio"
	"kvmlab/devices/virtio/virtiotest"
	"kvmlab/guestmem"
)

// guest is fake guest RAM in the middle of a larger array whose guard bytes
// must never change.
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
	fillVal  = 0xee // what RAM holds before the device writes
)

func newGuest(t testing.TB, size int) *guest {
	backing := bytes.Repeat([]byte{guardVal}, size+2*guardLen)
	ram := backing[guardLen : guardLen+size : guardLen+size]
	mem, err := guestmem.FromRegions(guestmem.Region{Base: ramBase, Data: ram})
	if err != nil {
		t.Fatal(err)
	}
	return &guest{t: t, mem: mem, backing: backing, ram: ram}
}

func (g *guest) alloc(n int) virtio.Buffer {
	g.t.Helper()
	if g.next+uint64(n) > uint64(len(g.ram)) {
		g.t.Fatalf("fake guest RAM exhausted")
	}
	b := virtio.Buffer{Addr: guestmem.GPA(ramBase + g.next), Len: uint32(n)}
	for i := range n {
		g.ram[g.next+uint64(i)] = fillVal
	}
	g.next += (uint64(n) + 15) &^ 15
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

// counter is a deterministic fill: bytes 1, 2, 3, … (never 0 or fillVal
// in a short run), so tests can see exactly which bytes were written.
func counter() func([]byte) error {
	var n byte
	return func(p []byte) error {
		for i := range p {
			n++
			if n == fillVal || n == 0 {
				n = 1
			}
			p[i] = n
		}
		return nil
	}
}

func TestRandomBytes(t *testing.T) {
	d := New() // the real getrandom
	g := newGuest(t, 1<<16)
	b1, b2 := g.alloc(4096), g.alloc(4096)
	n, err := d.serve(g.mem, &virtio.Chain{Writable: []virtio.Buffer{b1, b2}})
	if err != nil || n != 8192 {
		t.Fatalf("serve = %d, %v; want 8192 bytes", n, err)
	}
	g.checkGuards()
	for _, b := range []virtio.Buffer{b1, b2} {
		// 4096 random bytes all equal to the fill would happen with
		// probability 2^-32768.
		if bytes.Count(g.bytes(b), []byte{fillVal}) == int(b.Len) || bytes.Count(g.bytes(b), []byte{0}) == int(b.Len) {
			t.Fatalf("buffer was not filled with random bytes")
		}
	}
	if bytes.Equal(g.bytes(b1), g.bytes(b2)) {
		t.Fatalf("two buffers got the same bytes")
	}
	if s := d.Stats(); s.Bytes != 8192 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBound(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
		want  uint32
	}{
		{"one small", []int{64}, 64},
		{"exactly the bound", []int{MaxRequest}, MaxRequest},
		{"one too big", []int{MaxRequest + 100}, MaxRequest},
		{"second crosses the bound", []int{MaxRequest - 10, 100, 100}, MaxRequest},
		{"empty buffers", []int{0, 10, 0}, 10},
		{"nothing writable", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New()
			d.fill = counter()
			g := newGuest(t, 1<<18)
			c := &virtio.Chain{}
			for _, s := range tc.sizes {
				c.Writable = append(c.Writable, g.alloc(s))
			}
			n, err := d.serve(g.mem, c)
			if err != nil || n != tc.want {
				t.Fatalf("serve = %d, %v; want %d", n, err, tc.want)
			}
			g.checkGuards()
			// The first n writable bytes are written, the rest untouched.
			var all []byte
			for _, b := range c.Writable {
				all = append(all, g.bytes(b)...)
			}
			for i, v := range all {
				if (i < int(n)) != (v != fillVal) {
					t.Fatalf("byte %d of %d is %#x with %d written", i, len(all), v, n)
				}
			}
		})
	}
}

// TestReadableIgnored: readable buffers break §5.4.6.1 but are ignored, not
// read, written or fatal.
func TestReadableIgnored(t *testing.T) {
	d := New()
	d.fill = counter()
	g := newGuest(t, 1<<16)
	r, w := g.alloc(32), g.alloc(32)
	n, err := d.serve(g.mem, &virtio.Chain{Readable: []virtio.Buffer{r, {Addr: 1 << 50, Len: 8}}, Writable: []virtio.Buffer{w}})
	if err != nil || n != 32 {
		t.Fatalf("serve = %d, %v", n, err)
	}
	if !bytes.Equal(g.bytes(r), bytes.Repeat([]byte{fillVal}, 32)) {
		t.Fatalf("readable buffer was written")
	}
}

func TestDriverErrors(t *testing.T) {
	d := New()
	g := newGuest(t, 1<<16)
	for name, bufs := range map[string][]virtio.Buffer{
		"outside RAM":             {{Addr: 0x100, Len: 16}},
		"straddling the end":      {{Addr: ramBase + 1<<16 - 8, Len: 16}},
		"wrapping":                {{Addr: ^guestmem.GPA(0) - 3, Len: 16}},
		"past the bound too":      {g.alloc(MaxRequest), {Addr: 0x100, Len: 16}},
		"empty is fine, then bad": {{Addr: 0x100, Len: 0}, {Addr: 0x100, Len: 1}},
	} {
		if _, err := d.serve(g.mem, &virtio.Chain{Writable: bufs}); !errors.Is(err, virtio.ErrNeedsReset) {
			t.Errorf("%s: serve = %v, want ErrNeedsReset", name, err)
		}
		g.checkGuards()
	}
}

func TestFillError(t *testing.T) {
	d := New()
	calls := 0
	d.fill = func(p []byte) error {
		calls++
		if calls > 1 {
			return errors.New("no entropy today")
		}
		clear(p)
		return nil
	}
	g := newGuest(t, 1<<16)
	n, err := d.serve(g.mem, &virtio.Chain{Writable: []virtio.Buffer{g.alloc(10), g.alloc(10), g.alloc(10)}})
	if err != nil || n != 10 {
		t.Fatalf("serve = %d, %v; want the 10 bytes before the failure", n, err)
	}
	if s := d.Stats(); s.Errors != 1 || s.Bytes != 10 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDescription(t *testing.T) {
	d := New()
	if d.Type() != virtio.TypeRNG || d.Features() != 0 {
		t.Errorf("Type() = %v, Features() = %#x", d.Type(), d.Features())
	}
	if q := d.QueueSizes(); len(q) != 1 || q[0] != QueueSize {
		t.Errorf("QueueSizes() = %v", q)
	}
	for off := range 64 {
		p := []byte{1, 2, 3, 4}
		d.WriteConfig(uint64(off), p)
		d.ReadConfig(uint64(off), p)
		if !bytes.Equal(p, make([]byte, 4)) {
			t.Fatalf("config at %d reads %x", off, p)
		}
	}
	if err := d.Activate(&virtio.Env{}); err == nil {
		t.Errorf("Activate accepted an empty environment")
	}
}

// FuzzRNG serves one chain decoded from layout, three bytes a buffer (kind
// bit 0 writable; bits 1-2: 0, 1 in RAM, 2 outside, 3 straddling the end;
// length a | b<<8, where b bit 7 means a multiple of 16 KiB so the bound is
// reached). It checks: no panic, no byte outside RAM touched, a reset
// exactly when a non-empty writable buffer lies outside RAM, and otherwise
// exactly the first min(total, MaxRequest) writable bytes written and no
// readable byte.
func FuzzRNG(f *testing.F) {
	ones := bytes.Repeat([]byte{1}, MaxRequest)
	f.Add([]byte{1, 64, 0})
	f.Add([]byte{1, 5, 0x80, 1, 0, 0x80})
	f.Add([]byte{0, 16, 0, 1, 16, 0})
	f.Add([]byte{5, 16, 0})
	f.Add([]byte{7, 16, 0, 1, 1, 0})
	f.Add([]byte{1, 0, 0, 4, 0, 0, 1, 8, 0})
	f.Fuzz(func(t *testing.T, layout []byte) {
		d := New()
		d.fill = func(p []byte) error { copy(p, ones); return nil }
		g := newGuest(t, 1<<18)
		c := &virtio.Chain{}
		inRAM := true
		var total uint64
		for i := 0; i+3 <= len(layout) && i < 16*3; i += 3 {
			kind, a, b := layout[i], layout[i+1], layout[i+2]
			n := int(a) | int(b&0x3f)<<8
			if b&0x80 != 0 {
				n = int(a%4) << 14
			}
			var buf virtio.Buffer
			switch (kind >> 1) & 3 {
			case 0, 1:
				if g.next+uint64(n)+256 > uint64(len(g.ram)) {
					n = 0
				}
				buf = g.alloc(n)
			case 2:
				buf = virtio.Buffer{Addr: guestmem.GPA(ramBase + uint64(len(g.ram)) + uint64(a)<<12), Len: uint32(n)}
			case 3:
				n = max(n, int(a)+1)
				buf = virtio.Buffer{Addr: guestmem.GPA(ramBase + uint64(len(g.ram)) - uint64(a)), Len: uint32(n)}
			}
			if kind&1 == 0 {
				c.Readable = append(c.Readable, buf)
				continue
			}
			c.Writable = append(c.Writable, buf)
			total += uint64(n)
			if (kind>>1)&3 >= 2 && n > 0 {
				inRAM = false
			}
		}
		n, err := d.serve(g.mem, c)
		g.checkGuards()
		if (err != nil) != !inRAM {
			t.Fatalf("serve = %v; buffers in RAM: %v", err, inRAM)
		}
		if err != nil {
			if !errors.Is(err, virtio.ErrNeedsReset) {
				t.Fatalf("error %v does not wrap ErrNeedsReset", err)
			}
			return
		}
		if want := min(total, MaxRequest); uint64(n) != want {
			t.Fatalf("wrote %d bytes, want %d", n, want)
		}
		var written []byte
		for _, b := range c.Writable {
			if b.Len > 0 {
				written = append(written, g.bytes(b)...)
			}
		}
		// bytes functions rather than a loop: they are not instrumented,
		// which keeps the fuzzer fast.
		if bytes.Count(written[:n], []byte{1}) != int(n) || bytes.Count(written[n:], []byte{fillVal}) != len(written)-int(n) {
			t.Fatalf("not exactly the first %d of %d writable bytes written", n, len(written))
		}
		for _, b := range c.Readable {
			inside := uint64(b.Addr) >= ramBase && uint64(b.Addr)+uint64(b.Len) <= ramBase+uint64(len(g.ram))
			if inside && bytes.Count(g.bytes(b), []byte{fillVal}) != int(b.Len) {
				t.Fatalf("readable buffer written")
			}
		}
	})
}

// ---- Notify through a real split virtqueue ----------------------------------

// harness is a device's Env over a virtiotest driver, recording interrupts
// and Fail calls.
type harness struct {
	drv        *virtiotest.Driver
	env        *virtio.Env
	interrupts int
	fails      []error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ram := virtiotest.NewRAM(1<<20, 0x1000, 0x1000)
	drv, err := virtiotest.NewDriver(ram, 8)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{drv: drv}
	h.env = &virtio.Env{
		Mem:       ram.Memory,
		Queues:    []*virtio.Queue{drv.Queue},
		Interrupt: func(int) { h.interrupts++ },
		Fail:      func(err error) { h.fails = append(h.fails, err) },
	}
	return h
}

func TestNotify(t *testing.T) {
	d := New()
	h := newHarness(t)
	d.Notify(0) // before Activate: nothing happens
	if err := d.Activate(h.env); err != nil {
		t.Fatal(err)
	}
	h1, err := h.drv.Post(nil, []uint32{64})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := h.drv.Post(nil, []uint32{16, MaxRequest}) // truncated at the bound
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(0)
	got, err := h.drv.Used()
	want := []virtiotest.UsedElem{{ID: uint32(h1), Len: 64}, {ID: uint32(h2), Len: MaxRequest}}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] || h.interrupts != 1 {
		t.Fatalf("used %v (%v), %d interrupts; want %v and one interrupt", got, err, h.interrupts, want)
	}
	b, _ := h.drv.ReadWritable(h1)
	if bytes.Count(b, []byte{fillVal}) == len(b) || bytes.Count(b, []byte{0}) == len(b) {
		t.Fatalf("no random bytes arrived")
	}
	// 16 + MaxRequest bytes posted: the last 16 stay untouched.
	b, _ = h.drv.ReadWritable(h2)
	if bytes.Count(b[MaxRequest:], []byte{fillVal}) != 16 || bytes.Count(b[:MaxRequest], []byte{fillVal}) > MaxRequest/16 {
		t.Fatalf("truncation at the bound wrong: tail %x", b[MaxRequest-4:])
	}
	if s := d.Stats(); s.Requests != 2 || s.Bytes != 64+MaxRequest {
		t.Fatalf("stats %+v", s)
	}

	// A buffer in the hole between RAM regions: the queue refuses the
	// chain, the device asks for a reset and serves nothing more.
	hole, _ := h.drv.RAM.Hole()
	if err := h.drv.WriteDesc(7, virtiotest.Desc{Addr: hole, Len: 16, Flags: virtio.DescFlagWrite}); err != nil {
		t.Fatal(err)
	}
	if err := h.drv.Publish(7); err != nil {
		t.Fatal(err)
	}
	d.Notify(0)
	if len(h.fails) != 1 || !errors.Is(h.fails[0], virtio.ErrNeedsReset) {
		t.Fatalf("fails %v, want one wrapping ErrNeedsReset", h.fails)
	}
	if _, err := h.drv.Post(nil, []uint32{8}); err != nil {
		t.Fatal(err)
	}
	d.Notify(0)
	if got, _ := h.drv.Used(); len(got) != 0 || len(h.fails) != 1 {
		t.Fatalf("device kept serving after Fail")
	}
	d.Reset()
	again := newHarness(t)
	if err := d.Activate(again.env); err != nil {
		t.Fatal(err)
	}
	if _, err := again.drv.Post(nil, []uint32{8}); err != nil {
		t.Fatal(err)
	}
	d.Notify(0)
	if got, _ := again.drv.Used(); len(got) != 1 || got[0].Len != 8 {
		t.Fatalf("after Reset and Activate: used %v", got)
	}
}
