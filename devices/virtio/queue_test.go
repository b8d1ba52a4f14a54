package virtio_test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"kvmlab/devices/virtio"
	"kvmlab/devices/virtio/virtiotest"
	"kvmlab/guestmem"
)

const (
	next     = virtio.DescFlagNext
	write    = virtio.DescFlagWrite
	indirect = virtio.DescFlagIndirect
)

// newDriver returns 64 KiB of Low RAM, a 64 KiB hole and 16 KiB of High
// RAM, with a driver for a queue of the given size.
func newDriver(t testing.TB, size uint16) (*virtiotest.RAM, *virtiotest.Driver) {
	t.Helper()
	ram := virtiotest.NewRAM(64<<10, 64<<10, 16<<10)
	d, err := virtiotest.NewDriver(ram, size)
	if err != nil {
		t.Fatal(err)
	}
	return ram, d
}

func TestNewQueueAndReset(t *testing.T) {
	q := virtio.NewQueue(256)
	want := virtio.Queue{Size: 256, MSIXVector: 0xffff}
	check := func(what string) {
		t.Helper()
		if q.Size != want.Size || q.MSIXVector != want.MSIXVector || q.Ready || q.DescAddr|q.AvailAddr|q.UsedAddr != 0 {
			t.Fatalf("%s: queue = %+v, want %+v", what, *q, want)
		}
		if q.MaxSize() != 256 {
			t.Fatalf("%s: MaxSize = %d, want 256", what, q.MaxSize())
		}
	}
	check("NewQueue")

	// Use it, then Reset: the indices must start over too, which shows
	// as a chain popped again from a fresh ring.
	ram, d := newDriver(t, 8)
	d.Configure(q)
	q.Size = 8
	q.SetEventIdx(true)
	if _, err := d.Post([][]byte{{1}}, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := q.Pop(ram.Memory); err != nil || c == nil {
		t.Fatalf("Pop = %v, %v", c, err)
	}
	q.MSIXVector = 3
	q.Reset()
	check("Reset")
	d.Configure(q)
	q.Size = 8
	if c, err := q.Pop(ram.Memory); err != nil || c == nil {
		t.Fatalf("Pop after Reset = %v, %v; want the chain again (indices back at 0)", c, err)
	}
}

func TestNewQueueBadMaxSize(t *testing.T) {
	for _, size := range []uint16{0, 3, 100, 65535, 32769} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewQueue(%d) did not panic", size)
				}
			}()
			virtio.NewQueue(size)
		}()
	}
	for _, size := range []uint16{1, 2, 256, 32768} {
		if q := virtio.NewQueue(size); q.MaxSize() != size {
			t.Errorf("NewQueue(%d).MaxSize() = %d", size, q.MaxSize())
		}
	}
}

// TestZeroQueue: a Queue not built by NewQueue, or one the driver left at
// size 0, must give errors, not a division by zero.
func TestZeroQueue(t *testing.T) {
	ram, _ := newDriver(t, 8)
	q := &virtio.Queue{Ready: true}
	if _, err := q.Pop(ram.Memory); !errors.Is(err, virtio.ErrNeedsReset) {
		t.Errorf("Pop on size 0 = %v, want ErrNeedsReset", err)
	}
	if err := q.Push(ram.Memory, 0, 0); !errors.Is(err, virtio.ErrNeedsReset) {
		t.Errorf("Push on size 0 = %v, want ErrNeedsReset", err)
	}
	if _, err := q.NeedsInterrupt(ram.Memory); !errors.Is(err, virtio.ErrNeedsReset) {
		t.Errorf("NeedsInterrupt on size 0 = %v, want ErrNeedsReset", err)
	}
	if q.MaxSize() != virtio.MaxQueueSize {
		t.Errorf("zero Queue MaxSize = %d", q.MaxSize())
	}
}

func TestValidate(t *testing.T) {
	ram, d := newDriver(t, 16)
	lowEnd := ram.Low.End()
	tests := []struct {
		name  string
		edit  func(q *virtio.Queue)
		match string // "" for no error
	}{
		{"the driver's layout is valid", func(q *virtio.Queue) {}, ""},
		{"size 0", func(q *virtio.Queue) { q.Size = 0 }, "size 0"},
		{"size not a power of two", func(q *virtio.Queue) { q.Size = 12 }, "size 12"},
		{"size above the device's maximum", func(q *virtio.Queue) { q.Size = 32 }, "size 32"},
		{"§2.7 descriptor table 16-aligned", func(q *virtio.Queue) { q.DescAddr += 8 }, "descriptor table at 0x8 is not 16-byte aligned"},
		{"§2.7 driver ring 2-aligned", func(q *virtio.Queue) { q.AvailAddr++ }, "driver ring at 0x101 is not 2-byte aligned"},
		{"§2.7 driver ring at 2 mod 4 is fine", func(q *virtio.Queue) { q.AvailAddr = 0x3002 }, ""},
		{"§2.7 device ring 4-aligned", func(q *virtio.Queue) { q.UsedAddr += 2 }, "device ring at 0x12a is not 4-byte aligned"},
		{"descriptor table past the end of RAM", func(q *virtio.Queue) { q.DescAddr = lowEnd - 16*8 }, "descriptor table"},
		{"descriptor table in the hole", func(q *virtio.Queue) { q.DescAddr = lowEnd + 0x100 }, "descriptor table"},
		{"driver ring used_event beyond RAM", func(q *virtio.Queue) { q.AvailAddr = lowEnd - 36 }, "driver ring"},
		{"device ring avail_event beyond RAM", func(q *virtio.Queue) { q.UsedAddr = lowEnd - 132 }, "device ring"},
		{"device ring ends exactly at the end of RAM", func(q *virtio.Queue) { q.UsedAddr = lowEnd - 136 }, ""},
		{"device ring in High", func(q *virtio.Queue) { q.UsedAddr = ram.High.Base }, ""},
		{"address wraps 2^64", func(q *virtio.Queue) { q.DescAddr = guestmem.GPA(math.MaxUint64 &^ 15) }, "descriptor table"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := virtio.NewQueue(16)
			d.Configure(q)
			tc.edit(q)
			err := q.Validate(ram.Memory)
			if tc.match == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, virtio.ErrNeedsReset) || !strings.Contains(err.Error(), tc.match) {
				t.Fatalf("Validate = %v, want ErrNeedsReset mentioning %q", err, tc.match)
			}
		})
	}
}

// TestRoundTrip posts chains as a driver would, serves them as a device
// would (Reader, Writer, Push) and checks what the driver gets back.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		indirect bool
		readable [][]byte
		writable []uint32
		reply    []byte
	}{
		{"one readable", false, [][]byte{[]byte("hello")}, nil, nil},
		{"one writable", false, nil, []uint32{8}, []byte("answer!!")},
		{"header, payload, status", false, [][]byte{[]byte("hdr:"), []byte("payload")}, []uint32{3, 1}, []byte("okay")},
		{"reply shorter than the buffers", false, [][]byte{[]byte("x")}, []uint32{4, 4}, []byte("abcde")},
		{"indirect, one readable", true, [][]byte{[]byte("indirect")}, nil, nil},
		{"indirect, mixed", true, [][]byte{[]byte("a"), []byte("bc")}, []uint32{2, 5}, []byte("0123456")},
		{"zero-length writable is skipped", false, [][]byte{[]byte("r")}, []uint32{0, 2}, []byte("hi")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ram, d := newDriver(t, 8)
			post := d.Post
			if tc.indirect {
				post = d.PostIndirect
			}
			head, err := post(tc.readable, tc.writable)
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.Queue.Pop(ram.Memory)
			if err != nil || c == nil {
				t.Fatalf("Pop = %v, %v", c, err)
			}
			if c.Head != head {
				t.Fatalf("Head = %d, want %d", c.Head, head)
			}
			var wantLen uint64
			for _, n := range tc.writable {
				wantLen += uint64(n)
			}
			if c.WritableLen() != wantLen {
				t.Errorf("WritableLen = %d, want %d", c.WritableLen(), wantLen)
			}
			for _, b := range c.Writable {
				if b.Len == 0 {
					t.Errorf("zero-length buffer in Writable: %+v", c.Writable)
				}
			}
			got, err := io.ReadAll(c.Reader(ram.Memory))
			if want := bytes.Join(tc.readable, nil); err != nil || !bytes.Equal(got, want) || c.ReadableLen() != uint64(len(want)) {
				t.Fatalf("Reader = %q, %v (ReadableLen %d), want %q", got, err, c.ReadableLen(), want)
			}
			w := c.Writer(ram.Memory)
			n, err := w.Write(tc.reply)
			fits := uint64(len(tc.reply)) <= wantLen
			if fits && (err != nil || n != len(tc.reply)) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			if !fits && (!errors.Is(err, virtio.ErrChainFull) || !errors.Is(err, io.ErrShortWrite) || uint64(n) != wantLen) {
				t.Fatalf("Write past the end = %d, %v; want %d, ErrChainFull", n, err, wantLen)
			}
			if int(w.Written()) != n {
				t.Fatalf("Written = %d, want %d", w.Written(), n)
			}
			if err := d.Queue.Push(ram.Memory, c.Head, w.Written()); err != nil {
				t.Fatal(err)
			}
			if ok, err := d.Queue.NeedsInterrupt(ram.Memory); !ok || err != nil {
				t.Fatalf("NeedsInterrupt = %v, %v", ok, err)
			}
			used, err := d.Used()
			if err != nil || len(used) != 1 || used[0] != (virtiotest.UsedElem{ID: uint32(head), Len: uint32(n)}) {
				t.Fatalf("used ring = %+v, %v; want {%d %d}", used, err, head, n)
			}
			back, err := d.ReadWritable(head)
			if err != nil || !bytes.Equal(back[:n], tc.reply[:n]) {
				t.Fatalf("writable buffers hold %q, %v; want %q first", back, err, tc.reply[:n])
			}
			if c, err := d.Queue.Pop(ram.Memory); c != nil || err != nil {
				t.Fatalf("second Pop = %+v, %v; want nothing", c, err)
			}
		})
	}
}

// TestIndicesWrap runs the ring through more than 2^16 chains: both
// free-running indices wrap (§2.7.13.3) and nothing may notice.
func TestIndicesWrap(t *testing.T) {
	ram, d := newDriver(t, 4)
	for i := range 70000 {
		heads := make([]uint16, 0, 2)
		for j := range 1 + i%2 { // two descriptors each: at most 4 in flight
			h, err := d.Post([][]byte{{byte(i), byte(j)}}, []uint32{1})
			if err != nil {
				t.Fatalf("chain %d: %v", i, err)
			}
			heads = append(heads, h)
		}
		for _, h := range heads {
			c, err := d.Queue.Pop(ram.Memory)
			if err != nil || c == nil || c.Head != h {
				t.Fatalf("iteration %d: Pop = %+v, %v; want head %d", i, c, err, h)
			}
			if err := d.Queue.Push(ram.Memory, c.Head, 1); err != nil {
				t.Fatal(err)
			}
		}
		used, err := d.Used()
		if err != nil || len(used) != len(heads) {
			t.Fatalf("iteration %d: used = %+v, %v", i, used, err)
		}
	}
}

func TestPopNothing(t *testing.T) {
	ram, d := newDriver(t, 8)
	if c, err := d.Queue.Pop(ram.Memory); c != nil || err != nil {
		t.Fatalf("Pop on an empty ring = %+v, %v", c, err)
	}
	if _, err := d.Post([][]byte{{1}}, nil); err != nil {
		t.Fatal(err)
	}
	d.Queue.Ready = false
	if c, err := d.Queue.Pop(ram.Memory); c != nil || err != nil {
		t.Fatalf("Pop on a queue that is not ready = %+v, %v", c, err)
	}
	if err := d.Queue.Push(ram.Memory, 0, 0); err == nil || errors.Is(err, virtio.ErrNeedsReset) {
		t.Fatalf("Push on a queue that is not ready = %v, want a device error", err)
	}
}

// TestPopHostile feeds Pop what a broken or malicious driver could write.
// Every case either pops the expected buffers or fails with ErrNeedsReset
// naming the problem, and a failed Pop does not advance the queue.
func TestPopHostile(t *testing.T) {
	const size = 8
	ram, _ := newDriver(t, size)
	lowEnd := ram.Low.End()
	hole, _ := ram.Hole()
	buf := guestmem.GPA(0x8000) // inside Low, past the rings
	table := guestmem.GPA(0x9000)
	// Local types keep the table short (go vet wants keyed fields in
	// literals of other packages' structs).
	type raw struct {
		addr  guestmem.GPA
		len   uint32
		flags uint16
		next  uint16
	}
	type b = localBuf
	tests := []struct {
		name     string
		descs    map[uint16]raw
		table    []raw  // written at table
		availIdx uint16 // 0: publish head 0 once
		ring0    uint16 // head in ring slot 0
		match    string // "" to expect success
		wantR    []b
		wantW    []b
	}{
		{name: "avail idx more than Size ahead", availIdx: size + 1, match: "avail idx 9 is 9 entries"},
		{name: "avail idx exactly Size ahead is fine", availIdx: size, descs: map[uint16]raw{0: {buf, 1, 0, 0}},
			wantR: []b{{buf, 1}}},
		{name: "head beyond the table", ring0: size, match: "holds head 8"},
		{name: "next beyond the table", descs: map[uint16]raw{0: {buf, 1, next, size}}, match: "descriptor 0: next 8"},
		{name: "loop of two (§2.7.5.2)", descs: map[uint16]raw{0: {buf, 1, next, 1}, 1: {buf, 1, next, 0}}, match: "longer than the queue size"},
		{name: "self loop", descs: map[uint16]raw{0: {buf, 1, next, 0}}, match: "longer than the queue size"},
		{name: "chain of exactly Size descriptors", descs: map[uint16]raw{
			0: {buf, 1, next, 1}, 1: {buf, 1, next, 2}, 2: {buf, 1, next, 3}, 3: {buf, 1, next, 4},
			4: {buf, 1, next, 5}, 5: {buf, 1, next, 6}, 6: {buf, 1, next, 7}, 7: {buf, 2, 0, 0}},
			wantR: []b{{buf, 1}, {buf, 1}, {buf, 1}, {buf, 1}, {buf, 1}, {buf, 1}, {buf, 1}, {buf, 2}}},
		{name: "readable after writable (§2.7.4.2)", descs: map[uint16]raw{0: {buf, 1, write | next, 1}, 1: {buf, 1, 0, 0}},
			match: "descriptor 1: readable buffer after a writable one"},
		{name: "buffer past the end of RAM", descs: map[uint16]raw{0: {lowEnd - 4, 8, 0, 0}}, match: "descriptor 0: buffer 0xfffc+8"},
		{name: "buffer in the hole", descs: map[uint16]raw{0: {hole + 0x10, 8, 0, 0}}, match: "buffer 0x10010+8"},
		{name: "buffer spanning the hole into High", descs: map[uint16]raw{0: {lowEnd - 4, uint32(ram.High.Base-lowEnd) + 8, 0, 0}}, match: "not backed by RAM"},
		{name: "buffer wrapping 2^64", descs: map[uint16]raw{0: {math.MaxUint64 - 3, 8, 0, 0}}, match: "buffer 0xfffffffffffffffc+8"},
		{name: "buffer in High", descs: map[uint16]raw{0: {ram.High.Base, 16, write, 0}},
			wantW: []b{{ram.High.Base, 16}}},
		{name: "zero-length buffer in the hole is skipped", descs: map[uint16]raw{0: {hole, 0, next, 1}, 1: {buf, 4, write, 0}},
			wantW: []b{{buf, 4}}},
		{name: "unknown flag bits are ignored", descs: map[uint16]raw{0: {buf, 4, 0x80, 0}}, wantR: []b{{buf, 4}}},
		{name: "INDIRECT with NEXT (§2.7.5.3.1)", descs: map[uint16]raw{0: {table, 16, indirect | next, 1}}, table: []raw{{buf, 1, 0, 0}},
			match: "INDIRECT and NEXT both set"},
		{name: "indirect table of 0 bytes", descs: map[uint16]raw{0: {table, 0, indirect, 0}}, match: "not a nonzero multiple of 16"},
		{name: "indirect table of 17 bytes", descs: map[uint16]raw{0: {table, 17, indirect, 0}}, match: "not a nonzero multiple of 16"},
		{name: "indirect table too long", descs: map[uint16]raw{0: {table, 16 * (virtio.MaxIndirect + 1), indirect, 0}}, match: "1025 entries"},
		{name: "indirect table in the hole", descs: map[uint16]raw{0: {hole, 32, indirect, 0}}, match: "indirect table 0x10000+32"},
		{name: "nested indirect (§2.7.5.3.1)", descs: map[uint16]raw{0: {table, 32, indirect, 0}},
			table: []raw{{buf, 1, next, 1}, {table, 16, indirect, 0}}, match: "indirect entry 1 of descriptor 0 (table 0x9000): INDIRECT inside"},
		{name: "indirect next beyond the table", descs: map[uint16]raw{0: {table, 32, indirect, 0}},
			table: []raw{{buf, 1, next, 2}, {buf, 1, 0, 0}}, match: "next 2 is beyond the table's 2 entries"},
		{name: "indirect loop", descs: map[uint16]raw{0: {table, 32, indirect, 0}},
			table: []raw{{buf, 1, next, 1}, {buf, 1, next, 0}}, match: "longer than its 2 entries"},
		{name: "indirect buffer outside RAM", descs: map[uint16]raw{0: {table, 16, indirect, 0}},
			table: []raw{{lowEnd, 1, 0, 0}}, match: "indirect entry 0"},
		{name: "WRITE on the indirect descriptor is ignored (§2.7.5.3.2)", descs: map[uint16]raw{0: {table, 32, indirect | write, 0}},
			table: []raw{{buf, 1, next, 1}, {buf + 1, 2, write, 0}}, wantR: []b{{buf, 1}}, wantW: []b{{buf + 1, 2}}},
		{name: "direct descriptors then an indirect one (§2.7.5.3.2)", descs: map[uint16]raw{0: {buf, 3, next, 5}, 5: {table, 32, indirect, 0}},
			table: []raw{{buf, 1, next, 1}, {buf + 1, 2, write, 0}},
			wantR: []b{{buf, 3}, {buf, 1}}, wantW: []b{{buf + 1, 2}}},
		{name: "readable in the table after a writable direct one", descs: map[uint16]raw{0: {buf, 3, write | next, 1}, 1: {table, 16, indirect, 0}},
			table: []raw{{buf, 1, 0, 0}}, match: "indirect entry 0 of descriptor 1 (table 0x9000): readable buffer after a writable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ram, d := newDriver(t, size)
			conv := func(r raw) virtiotest.Desc {
				return virtiotest.Desc{Addr: r.addr, Len: r.len, Flags: r.flags, Next: r.next}
			}
			for i, desc := range tc.descs {
				if err := d.WriteDesc(i, conv(desc)); err != nil {
					t.Fatal(err)
				}
			}
			var tbl []virtiotest.Desc
			for _, r := range tc.table {
				tbl = append(tbl, conv(r))
			}
			if err := d.WriteTable(table, tbl); err != nil {
				t.Fatal(err)
			}
			if err := d.SetRing(0, tc.ring0); err != nil {
				t.Fatal(err)
			}
			if tc.availIdx == 0 {
				tc.availIdx = 1
			}
			if err := d.SetAvailIdx(tc.availIdx); err != nil {
				t.Fatal(err)
			}
			c, err := d.Queue.Pop(ram.Memory)
			if tc.match != "" {
				if !errors.Is(err, virtio.ErrNeedsReset) || !strings.Contains(err.Error(), tc.match) {
					t.Fatalf("Pop = %+v, %v; want ErrNeedsReset mentioning %q", c, err, tc.match)
				}
				if _, again := d.Queue.Pop(ram.Memory); again == nil || again.Error() != err.Error() {
					t.Fatalf("second Pop = %v; want the same error (the queue must not advance)", again)
				}
				return
			}
			if err != nil || c == nil {
				t.Fatalf("Pop = %+v, %v", c, err)
			}
			if !slices.Equal(c.Readable, buffers(tc.wantR)) || !slices.Equal(c.Writable, buffers(tc.wantW)) {
				t.Fatalf("Pop = R %+v W %+v; want R %+v W %+v", c.Readable, c.Writable, tc.wantR, tc.wantW)
			}
		})
	}
}

// localBuf is virtio.Buffer for unkeyed table literals.
type localBuf struct {
	addr guestmem.GPA
	len  uint32
}

func buffers(bs []localBuf) []virtio.Buffer {
	var out []virtio.Buffer
	for _, b := range bs {
		out = append(out, virtio.Buffer{Addr: b.addr, Len: b.len})
	}
	return out
}

// TestChainOver4GiB: §2.7.5.2 caps a chain at 2^32 bytes, and the used
// ring's len is 32-bit, so Pop refuses a chain whose buffers (here 1024
// indirect entries naming the same 4 MiB) add up to 4 GiB.
func TestChainOver4GiB(t *testing.T) {
	ram := virtiotest.NewRAM(4<<20, 0, 0)
	d, err := virtiotest.NewDriver(ram, 4)
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]virtiotest.Desc, virtio.MaxIndirect)
	for i := range entries {
		entries[i] = virtiotest.Desc{Addr: 0, Len: 4 << 20, Flags: next, Next: uint16(i + 1)}
	}
	entries[len(entries)-1].Flags = 0
	table, err := d.Alloc(16 * virtio.MaxIndirect)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteTable(table, entries); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteDesc(0, virtiotest.Desc{Addr: table, Len: 16 * virtio.MaxIndirect, Flags: indirect}); err != nil {
		t.Fatal(err)
	}
	if err := d.Publish(0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Queue.Pop(ram.Memory); !errors.Is(err, virtio.ErrNeedsReset) || !strings.Contains(err.Error(), "indirect entry 1023") {
		t.Fatalf("Pop = %v, want the 1024th entry refused", err)
	}
	// One entry fewer is 4 GiB - 4 MiB: accepted.
	entries[len(entries)-2].Flags = 0
	if err := d.WriteTable(table, entries); err != nil {
		t.Fatal(err)
	}
	c, err := d.Queue.Pop(ram.Memory)
	if err != nil || c.ReadableLen() != 1023<<22 {
		t.Fatalf("Pop = %v; want 1023 buffers of 4 MiB", err)
	}
}

func TestPushErrors(t *testing.T) {
	ram, d := newDriver(t, 8)
	if err := d.Queue.Push(ram.Memory, 8, 0); err == nil || errors.Is(err, virtio.ErrNeedsReset) {
		t.Fatalf("Push(head 8) on size 8 = %v, want a device-bug error", err)
	}
	d.Queue.UsedAddr = ram.Low.End() - 8
	if err := d.Queue.Push(ram.Memory, 1, 0); !errors.Is(err, virtio.ErrNeedsReset) || !errors.Is(err, guestmem.ErrOutOfRange) {
		t.Fatalf("Push on a used ring outside RAM = %v", err)
	}
}

// TestNeedsInterrupt covers both suppression schemes of §2.7.7.
func TestNeedsInterrupt(t *testing.T) {
	type step struct {
		pushes    int
		usedEvent uint16 // with EVENT_IDX
		noIntr    bool   // without
		want      bool
	}
	tests := []struct {
		name     string
		eventIdx bool
		steps    []step
	}{
		{"flags 0: always", false, []step{{1, 0, false, true}, {0, 0, false, true}, {3, 0, false, true}}},
		{"NO_INTERRUPT: never", false, []step{{1, 0, true, false}, {2, 0, true, false}}},
		{"NO_INTERRUPT toggled", false, []step{{1, 0, true, false}, {1, 0, false, true}}},
		{"used_event 0: the first used entry", true, []step{{1, 0, false, true}, {1, 0, false, false}}},
		{"used_event ahead", true, []step{{2, 4, false, false}, {2, 4, false, false}, {1, 4, false, true}}},
		{"used_event crossed inside a batch", true, []step{{5, 2, false, true}}},
		{"used_event behind: not crossed again", true, []step{{3, 0, false, true}, {2, 0, false, false}}},
		{"nothing pushed", true, []step{{0, 0, false, false}}},
		{"NO_INTERRUPT ignored with EVENT_IDX", true, []step{{1, 0, true, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ram, d := newDriver(t, 8)
			d.Queue.SetEventIdx(tc.eventIdx)
			for i, s := range tc.steps {
				if err := d.SetNoInterrupt(s.noIntr); err != nil {
					t.Fatal(err)
				}
				if err := d.SetUsedEvent(s.usedEvent); err != nil {
					t.Fatal(err)
				}
				for range s.pushes {
					if _, err := d.Post(nil, []uint32{1}); err != nil {
						t.Fatal(err)
					}
					c, err := d.Queue.Pop(ram.Memory)
					if err != nil || c == nil {
						t.Fatalf("Pop = %v, %v", c, err)
					}
					if err := d.Queue.Push(ram.Memory, c.Head, 0); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := d.Used(); err != nil {
					t.Fatal(err)
				}
				got, err := d.Queue.NeedsInterrupt(ram.Memory)
				if err != nil || got != s.want {
					t.Fatalf("step %d: NeedsInterrupt = %v, %v; want %v", i, got, err, s.want)
				}
			}
		})
	}
}

// TestNeedsInterruptWrap: vring_need_event compares modulo 2^16.
func TestNeedsInterruptWrap(t *testing.T) {
	ram, d := newDriver(t, 4)
	d.Queue.SetEventIdx(true)
	for i := range 65536 + 3 {
		ev := uint16(i) // ask for an interrupt for every entry
		if i%2 == 1 {
			ev = uint16(i) - 2 // already passed: none
		}
		if err := d.SetUsedEvent(ev); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Post(nil, []uint32{1}); err != nil {
			t.Fatal(err)
		}
		c, err := d.Queue.Pop(ram.Memory)
		if err != nil || c == nil {
			t.Fatalf("Pop = %v, %v", c, err)
		}
		if err := d.Queue.Push(ram.Memory, c.Head, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Used(); err != nil {
			t.Fatal(err)
		}
		if got, err := d.Queue.NeedsInterrupt(ram.Memory); err != nil || got != (i%2 == 0) {
			t.Fatalf("entry %d, used_event %d: NeedsInterrupt = %v, %v", i, ev, got, err)
		}
	}
}

// TestAvailEvent: with EVENT_IDX the device keeps avail_event at the
// number of chains it popped (§2.7.10), even when Pop finds nothing.
func TestAvailEvent(t *testing.T) {
	ram, d := newDriver(t, 8)
	d.Queue.SetEventIdx(true)
	check := func(want uint16) {
		t.Helper()
		if got, err := d.AvailEvent(); err != nil || got != want {
			t.Fatalf("avail_event = %d, %v; want %d", got, err, want)
		}
	}
	if c, err := d.Queue.Pop(ram.Memory); c != nil || err != nil {
		t.Fatalf("Pop = %v, %v", c, err)
	}
	check(0)
	for i := range 3 {
		if _, err := d.Post([][]byte{{byte(i)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if c, err := d.Queue.Pop(ram.Memory); c == nil || err != nil {
			t.Fatalf("Pop = %v, %v", c, err)
		}
		check(uint16(i + 1))
	}
	// Without EVENT_IDX the field is the driver's to ignore and the
	// device's to leave alone.
	ram2, d2 := newDriver(t, 8)
	if _, err := d2.Post([][]byte{{1}}, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := d2.Queue.Pop(ram2.Memory); c == nil || err != nil {
		t.Fatalf("Pop = %v, %v", c, err)
	}
	if got, err := d2.AvailEvent(); err != nil || got != 0 {
		t.Fatalf("avail_event without EVENT_IDX = %d, %v; want untouched 0", got, err)
	}
}

func TestChainReader(t *testing.T) {
	ram, d := newDriver(t, 8)
	parts := [][]byte{[]byte("The "), []byte("split "), {}, []byte("virtqueue"), []byte(".")}
	if _, err := d.Post(parts, []uint32{4}); err != nil {
		t.Fatal(err)
	}
	c, err := d.Queue.Pop(ram.Memory)
	if err != nil {
		t.Fatal(err)
	}
	// iotest.TestReader reads in odd sizes, with ReadAt-free semantics,
	// and checks io.Reader's rules (EOF at the end, no bytes lost).
	if err := iotest.TestReader(c.Reader(ram.Memory), bytes.Join(parts, nil)); err != nil {
		t.Fatal(err)
	}
	// A hand-built chain with a buffer outside RAM: the reader returns
	// what it could and an error, never touches other memory.
	hole, _ := ram.Hole()
	bad := &virtio.Chain{Readable: []virtio.Buffer{c.Readable[0], {Addr: hole, Len: 4}}}
	got, err := io.ReadAll(bad.Reader(ram.Memory))
	if string(got) != "The " || !errors.Is(err, guestmem.ErrOutOfRange) {
		t.Fatalf("ReadAll over a bad buffer = %q, %v", got, err)
	}
}

func TestChainWriter(t *testing.T) {
	tests := []struct {
		name    string
		bufs    []uint32
		writes  []string
		wantN   []int
		full    []bool
		written uint32
	}{
		{"exact fit over three buffers", []uint32{2, 3, 1}, []string{"abcdef"}, []int{6}, []bool{false}, 6},
		{"many small writes", []uint32{4, 4}, []string{"a", "bcd", "efg", "h"}, []int{1, 3, 3, 1}, []bool{false, false, false, false}, 8},
		{"overflow then full", []uint32{3}, []string{"abcd", "e"}, []int{3, 0}, []bool{true, true}, 3},
		{"empty write on a full chain", []uint32{1}, []string{"a", ""}, []int{1, 0}, []bool{false, false}, 1},
		{"no writable buffers", nil, []string{"x"}, []int{0}, []bool{true}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ram, d := newDriver(t, 8)
			head, err := d.Post([][]byte{{0}}, tc.bufs)
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.Queue.Pop(ram.Memory)
			if err != nil {
				t.Fatal(err)
			}
			w := c.Writer(ram.Memory)
			var all string
			for i, s := range tc.writes {
				n, err := w.Write([]byte(s))
				if n != tc.wantN[i] || errors.Is(err, virtio.ErrChainFull) != tc.full[i] || (err != nil && !tc.full[i]) {
					t.Fatalf("write %d (%q) = %d, %v; want %d, full %v", i, s, n, err, tc.wantN[i], tc.full[i])
				}
				all += s[:n]
			}
			if w.Written() != tc.written {
				t.Fatalf("Written = %d, want %d", w.Written(), tc.written)
			}
			back, err := d.ReadWritable(head)
			if err != nil || !strings.HasPrefix(string(back), all) {
				t.Fatalf("buffers hold %q, %v; want %q first", back, err, all)
			}
		})
	}
}

// fuzzQueue is the shape every fuzz input is decoded into: 64 KiB of Low
// RAM (rings at its start), a 64 KiB hole, 32 KiB of High RAM, and an
// indirect table slot at the start of High.
const (
	fuzzLow   = 64 << 10
	fuzzHole  = 64 << 10
	fuzzHigh  = 32 << 10
	fuzzTable = guestmem.GPA(fuzzLow + fuzzHole) // High.Base
)

// fuzzDesc expands 8 input bytes into a descriptor that is likely to be
// interesting: addr (u16, times 4) covers Low, the hole, High and beyond;
// flag bit 7 moves it just below 2^64, bit 6 makes len huge, the low three
// bits are NEXT, WRITE and INDIRECT, bit 3 an unknown flag; next is a byte.
func fuzzDesc(b []byte) virtiotest.Desc {
	var e [8]byte
	copy(e[:], b)
	a := uint64(e[0]) | uint64(e[1])<<8
	l := uint32(e[2]) | uint32(e[3])<<8
	f := e[4]
	d := virtiotest.Desc{Addr: guestmem.GPA(a * 4), Len: l, Flags: uint16(f & 0xf), Next: uint16(e[5])}
	if f&0x80 != 0 {
		d.Addr = guestmem.GPA(math.MaxUint64 - a)
	}
	if f&0x40 != 0 {
		d.Len = l<<16 | 0xffff
	}
	if f&0x20 != 0 {
		d.Addr = fuzzTable // point at the indirect table
		d.Len = uint32(e[6]) & 0xf0
	}
	return d
}

// modelPop is an independent, deliberately naive model of which chains Pop
// must accept: walk first, collecting every descriptor, then check the
// whole list. It returns the buffers or ok=false.
func modelPop(mem *guestmem.Memory, q *virtio.Queue, last uint16) (head uint16, r, w []virtio.Buffer, empty, ok bool) {
	rd := func(at guestmem.GPA, n int) ([]byte, bool) {
		b := make([]byte, n)
		return b, mem.ReadAt(b, at) == nil
	}
	u16 := func(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
	parse := func(b []byte) virtiotest.Desc {
		var a uint64
		for i := 7; i >= 0; i-- {
			a = a<<8 | uint64(b[i])
		}
		return virtiotest.Desc{Addr: guestmem.GPA(a), Len: uint32(b[8]) | uint32(b[9])<<8 | uint32(b[10])<<16 | uint32(b[11])<<24,
			Flags: u16(b[12:]), Next: u16(b[14:])}
	}
	b, good := rd(q.AvailAddr+2, 2)
	if !good {
		return 0, nil, nil, false, false
	}
	idx := u16(b)
	if idx == last {
		return 0, nil, nil, true, true
	}
	if idx-last > q.Size {
		return 0, nil, nil, false, false
	}
	if b, good = rd(q.AvailAddr+4+2*guestmem.GPA(last%q.Size), 2); !good {
		return 0, nil, nil, false, false
	}
	head = u16(b)
	if head >= q.Size {
		return 0, nil, nil, false, false
	}
	var list []virtiotest.Desc
	for i, n := head, 0; ; n++ {
		if n == int(q.Size) {
			return 0, nil, nil, false, false
		}
		b, good := rd(q.DescAddr+16*guestmem.GPA(i), 16)
		if !good {
			return 0, nil, nil, false, false
		}
		d := parse(b)
		if d.Flags&indirect != 0 {
			if d.Flags&next != 0 || d.Len == 0 || d.Len%16 != 0 || d.Len/16 > virtio.MaxIndirect {
				return 0, nil, nil, false, false
			}
			tb, good := rd(d.Addr, int(d.Len))
			if !good {
				return 0, nil, nil, false, false
			}
			entries := int(d.Len / 16)
			for j, m := 0, 0; ; m++ {
				if m == entries {
					return 0, nil, nil, false, false
				}
				e := parse(tb[16*j:])
				if e.Flags&indirect != 0 {
					return 0, nil, nil, false, false
				}
				list = append(list, e)
				if e.Flags&next == 0 {
					break
				}
				if int(e.Next) >= entries {
					return 0, nil, nil, false, false
				}
				j = int(e.Next)
			}
			break
		}
		list = append(list, d)
		if d.Flags&next == 0 {
			break
		}
		if d.Next >= q.Size {
			return 0, nil, nil, false, false
		}
		i = d.Next
	}
	var total uint64
	seenW := false
	for _, d := range list {
		isW := d.Flags&write != 0
		if seenW && !isW {
			return 0, nil, nil, false, false
		}
		seenW = seenW || isW
		total += uint64(d.Len)
		if d.Len == 0 {
			continue
		}
		if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
			return 0, nil, nil, false, false
		}
		if isW {
			w = append(w, virtio.Buffer{Addr: d.Addr, Len: d.Len})
		} else {
			r = append(r, virtio.Buffer{Addr: d.Addr, Len: d.Len})
		}
	}
	if total > math.MaxUint32 {
		return 0, nil, nil, false, false
	}
	return head, r, w, false, true
}

// FuzzQueuePop decodes the input into a descriptor table, an indirect
// table and a driver ring, optionally moves a ring to the edge of RAM or
// out of it, then pops (bounded) and checks every result against modelPop:
// the same accept/refuse decision, the same buffers, every buffer inside
// RAM, every error wrapping ErrNeedsReset, and on a queue that passes
// Validate, Push and NeedsInterrupt never failing. Popped chains are served
// a little (read, write, Push), which may scribble over the rings: the
// model sees the same memory before each Pop.
func FuzzQueuePop(f *testing.F) {
	// enc is the inverse of fuzzDesc for the common case: a buffer at
	// 4*a in RAM (Low is a < 0x4000, High from 0x8000).
	enc := func(a, l uint16, flags, nxt, x byte) []byte {
		return []byte{byte(a), byte(a >> 8), byte(l), byte(l >> 8), flags, nxt, x, 0}
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	zeros := func(descs int) []byte { return make([]byte, 8*descs) }
	// Size 8: one readable then one writable buffer, desc 0 → 1.
	f.Add(uint8(3), false, uint16(1), uint8(0), cat(enc(0x2000, 16, 1, 1, 0), enc(0x2010, 16, 2, 0, 0)))
	// Size 4: a loop 0 → 1 → 0.
	f.Add(uint8(2), true, uint16(1), uint8(0), cat(enc(0x2000, 1, 1, 1, 0), enc(0x2000, 1, 1, 0, 0)))
	// Size 16: desc 0 is INDIRECT (flag 0x20 aims it at the table slot,
	// x=0x20 makes it 2 entries), the table chains a readable buffer to a
	// writable one; the ring holds head 0 twice.
	f.Add(uint8(4), true, uint16(2), uint8(0), cat(enc(0, 0, 0x24, 0, 0x20), zeros(15),
		enc(0x1000, 16, 1, 1, 0), enc(0x1010, 16, 2, 0, 0), zeros(14)))
	// Size 4: a direct descriptor, then an indirect one (§2.7.5.3.2).
	f.Add(uint8(2), false, uint16(1), uint8(0), cat(enc(0x2000, 8, 1, 1, 0), enc(0, 0, 0x24, 0, 0x10), zeros(2),
		enc(0x8100, 32, 2, 0, 0), zeros(15)))
	// Size 2, nested indirect: the table's only entry is INDIRECT again.
	f.Add(uint8(1), false, uint16(1), uint8(0), cat(enc(0, 0, 0x24, 0, 0x10), zeros(1), enc(0, 0, 0x24, 0, 0x10), zeros(15)))
	// A buffer in the hole, one near 2^64, one with a huge length.
	f.Add(uint8(1), false, uint16(1), uint8(0), enc(0x5000, 8, 0, 0, 0))
	f.Add(uint8(1), false, uint16(1), uint8(0), enc(4, 16, 0x80, 0, 0))
	f.Add(uint8(1), false, uint16(1), uint8(0), enc(0x2000, 1, 0x40, 0, 0))
	// Size 8, the first chain again with each ring placement.
	for at := range 6 {
		f.Add(uint8(3), true, uint16(1), uint8(at), cat(enc(0x2000, 16, 1, 1, 0), enc(0x2010, 16, 2, 0, 0)))
	}
	// avail idx far ahead, and a head beyond the table.
	f.Add(uint8(3), false, uint16(300), uint8(0), []byte{})
	f.Add(uint8(0), false, uint16(1), uint8(0), cat(enc(0x2000, 1, 0, 0, 0), zeros(16), []byte{7}))
	f.Fuzz(func(t *testing.T, sizeLog uint8, eventIdx bool, availIdx uint16, ringAt uint8, data []byte) {
		size := uint16(1) << (sizeLog % 7) // 1 … 64
		ram := virtiotest.NewRAM(fuzzLow, fuzzHole, fuzzHigh)
		d, err := virtiotest.NewDriver(ram, size)
		if err != nil {
			t.Fatal(err)
		}
		q := d.Queue
		q.SetEventIdx(eventIdx)
		if err := q.Validate(ram.Memory); err != nil {
			t.Fatalf("the kit's layout does not validate: %v", err)
		}
		// Move a ring to the edge of RAM, or out of it.
		usedLen := guestmem.GPA(virtio.UsedRingBytes(size))
		availLen := guestmem.GPA(virtio.AvailRingBytes(size))
		switch ringAt % 8 {
		case 1: // used ring ends exactly at the end of High (it is 2 mod 4 long)
			d.UsedAddr = ram.High.End() - usedLen - 2
		case 2: // avail_event 2 bytes past the end of High
			d.UsedAddr = ram.High.End() - usedLen + 2
		case 3: // used ring in the hole
			d.UsedAddr = ram.Low.End() + 0x100
		case 4: // avail ring ends at the end of High
			d.AvailAddr = (ram.High.End() - availLen) &^ 1
		case 5: // avail ring straddles the end of Low
			d.AvailAddr = ram.Low.End() - 4
		}
		d.Configure(q)
		// Only a queue that validates may be held to the model: a device
		// never serves one that does not, but even then nothing may
		// panic and every error must blame the driver.
		valid := q.Validate(ram.Memory) == nil
		if ringAt%8 >= 6 && !valid {
			t.Fatal("the kit's layout no longer validates")
		}
		take := func(n int) []byte {
			n = min(n, len(data))
			b := data[:n]
			data = data[n:]
			return b
		}
		for i := range size {
			if err := d.WriteDesc(i, fuzzDesc(take(8))); err != nil {
				t.Fatal(err)
			}
		}
		var table []virtiotest.Desc
		for range 16 {
			table = append(table, fuzzDesc(take(8)))
		}
		// Within a table next is taken modulo 20, so chains there mostly
		// stay inside the 16-entry slot; entries with the unknown flag
		// 0x8 lose INDIRECT, so that nesting is not all the fuzzer sees.
		for i := range table {
			table[i].Next %= 20
			if table[i].Flags&0x8 != 0 {
				table[i].Flags &^= virtio.DescFlagIndirect
			}
		}
		if err := d.WriteTable(fuzzTable, table); err != nil {
			t.Fatal(err)
		}
		for i := range size {
			if h := take(1); len(h) == 1 {
				if err := d.SetRing(i, uint16(h[0])); err != nil && valid {
					t.Fatal(err)
				}
			}
		}
		if err := d.SetAvailIdx(availIdx); err != nil && valid {
			t.Fatal(err)
		}
		payload := bytes.Repeat([]byte{0x5a}, 64)

		var last uint16
		for range 2*int(size) + 2 {
			mHead, mR, mW, mEmpty, mOK := modelPop(ram.Memory, q, last)
			c, err := q.Pop(ram.Memory)
			if err != nil {
				if !errors.Is(err, virtio.ErrNeedsReset) {
					t.Fatalf("Pop error %v does not wrap ErrNeedsReset", err)
				}
				if mOK && valid {
					t.Fatalf("Pop = %v; the model accepts (head %d, R %+v, W %+v)", err, mHead, mR, mW)
				}
				return
			}
			if !valid {
				if c == nil {
					return
				}
			} else if !mOK {
				t.Fatalf("Pop = %+v; the model refuses", c)
			}
			if c == nil {
				if !mEmpty {
					t.Fatal("Pop found nothing; the model finds a chain")
				}
				return
			}
			last++
			if valid && (c.Head != mHead || !slices.Equal(c.Readable, mR) || !slices.Equal(c.Writable, mW)) {
				t.Fatalf("Pop = head %d R %+v W %+v; model head %d R %+v W %+v", c.Head, c.Readable, c.Writable, mHead, mR, mW)
			}
			for _, b := range append(append([]virtio.Buffer(nil), c.Readable...), c.Writable...) {
				if _, err := ram.Slice(b.Addr, uint64(b.Len)); err != nil || b.Len == 0 {
					t.Fatalf("popped buffer %+v is not a nonempty RAM range: %v", b, err)
				}
			}
			if n := len(c.Readable) + len(c.Writable); n > int(size)+virtio.MaxIndirect || c.ReadableLen()+c.WritableLen() > math.MaxUint32 {
				t.Fatalf("chain of %d buffers, %d bytes", n, c.ReadableLen()+c.WritableLen())
			}
			if _, err := io.CopyN(io.Discard, c.Reader(ram.Memory), 4096); err != nil && err != io.EOF {
				t.Fatalf("reading a popped chain: %v", err)
			}
			w := c.Writer(ram.Memory)
			if _, err := w.Write(payload); err != nil && !errors.Is(err, virtio.ErrChainFull) {
				t.Fatalf("writing a popped chain: %v", err)
			}
			// On a validated queue the rings are RAM: Push and
			// NeedsInterrupt cannot fail.
			if err := q.Push(ram.Memory, c.Head, w.Written()); err != nil && (valid || !errors.Is(err, virtio.ErrNeedsReset)) {
				t.Fatalf("Push: %v", err)
			}
			if _, err := q.NeedsInterrupt(ram.Memory); err != nil && (valid || !errors.Is(err, virtio.ErrNeedsReset)) {
				t.Fatalf("NeedsInterrupt: %v", err)
			}
		}
	})
}

// FuzzChainIO posts a chain built from the input (direct or indirect) and
// reads and writes it in fuzzed chunk sizes: the reader must return
// exactly the readable bytes, the writer must fill the writable buffers in
// order and stop with ErrChainFull, and the driver must get back what was
// written.
func FuzzChainIO(f *testing.F) {
	f.Add([]byte("\x02\x01\x03abc\x02de\x05"), false, []byte{1, 2, 3})
	f.Add([]byte("\x01\x03\x00\x00\x01\x07"), true, []byte{0, 5})
	f.Add([]byte("\x00\x02\x10\x00"), false, []byte{255})
	f.Fuzz(func(t *testing.T, data []byte, useIndirect bool, chunks []byte) {
		take := func() int {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return int(b)
		}
		nr, nw := take()%5, take()%5
		var readable [][]byte
		for range nr {
			n := min(take(), len(data))
			readable = append(readable, data[:n])
			data = data[n:]
		}
		var writable []uint32
		for range nw {
			writable = append(writable, uint32(take()))
		}
		if nr+nw == 0 {
			return
		}
		if len(chunks) == 0 {
			chunks = []byte{7}
		}
		ram, d := newDriver(t, 16)
		post := d.Post
		if useIndirect {
			post = d.PostIndirect
		}
		head, err := post(readable, writable)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.Queue.Pop(ram.Memory)
		if err != nil || c == nil {
			t.Fatalf("Pop = %+v, %v", c, err)
		}

		// Chunk sizes cycle through chunks; zero-sized ones are tried in
		// the first cycle only, so every later call makes progress and
		// the loops end within len(chunks) + bytes + 1 calls.
		chunk := func(i int) int {
			n := int(chunks[i%len(chunks)])
			if n == 0 && i >= len(chunks) {
				n = 1
			}
			return n
		}

		want := bytes.Join(readable, nil)
		r := c.Reader(ram.Memory)
		var got []byte
		for i := 0; ; i++ {
			p := make([]byte, chunk(i))
			n, err := r.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil || n > len(p) || (len(p) > 0 && n == 0) || i > len(want)+len(chunks)+1 {
				t.Fatalf("Read #%d of %d = %d, %v", i, len(p), n, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Reader returned %q, want %q", got, want)
		}

		capacity := c.WritableLen()
		w := c.Writer(ram.Memory)
		var wrote []byte
		for i := 0; ; i++ {
			p := bytes.Repeat([]byte{byte(i)}, chunk(i))
			n, err := w.Write(p)
			wrote = append(wrote, p[:n]...)
			if err != nil {
				if !errors.Is(err, virtio.ErrChainFull) || uint64(len(wrote)) != capacity {
					t.Fatalf("Write = %d, %v after %d of %d bytes", n, err, len(wrote), capacity)
				}
				break
			}
			if n != len(p) || i > int(capacity)+len(chunks)+1 {
				t.Fatalf("Write #%d of %d = %d, nil (capacity %d)", i, len(p), n, capacity)
			}
		}
		if uint64(w.Written()) != uint64(len(wrote)) {
			t.Fatalf("Written = %d, wrote %d", w.Written(), len(wrote))
		}
		if err := d.Queue.Push(ram.Memory, c.Head, w.Written()); err != nil {
			t.Fatal(err)
		}
		used, err := d.Used()
		if err != nil || len(used) != 1 || used[0].ID != uint32(head) || used[0].Len != uint32(len(wrote)) {
			t.Fatalf("used = %+v, %v", used, err)
		}
		back, err := d.ReadWritable(head)
		if err != nil || !bytes.Equal(back[:len(wrote)], wrote) {
			t.Fatalf("driver sees %x, %v; device wrote %x", back, err, wrote)
		}
		for _, b := range back[len(wrote):] {
			if b != 0xee {
				t.Fatalf("byte past what was written changed: %x", back)
			}
		}
	})
}

// BenchmarkPopPush is the per-request cost of the queue itself: one
// two-buffer chain popped, read, written and pushed.
func BenchmarkPopPush(b *testing.B) {
	ram, d := newDriver(b, 256)
	req := []byte("0123456789abcdef")
	reply := make([]byte, 64)
	for b.Loop() {
		if _, err := d.Post([][]byte{req}, []uint32{64}); err != nil {
			b.Fatal(err)
		}
		c, err := d.Queue.Pop(ram.Memory)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, c.Reader(ram.Memory)); err != nil {
			b.Fatal(err)
		}
		w := c.Writer(ram.Memory)
		if _, err := w.Write(reply); err != nil {
			b.Fatal(err)
		}
		if err := d.Queue.Push(ram.Memory, c.Head, w.Written()); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Used(); err != nil {
			b.Fatal(err)
		}
	}
}
