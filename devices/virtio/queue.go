package virtio

// The split virtqueue (virtio 1.2 §2.7), device side.
//
// A split virtqueue is three areas of guest memory that the driver
// allocates and the transport tells us about:
//
//   - the descriptor table (§2.7.5): Size entries of 16 bytes, each one
//     buffer {addr u64, len u32, flags u16, next u16}. NEXT chains a
//     descriptor to the one at index next, WRITE marks a buffer the device
//     writes (otherwise it reads it), INDIRECT says the buffer is itself a
//     table of descriptors (§2.7.5.3);
//   - the driver ("available") ring (§2.7.6): flags u16, idx u16,
//     ring[Size] u16 of chain heads, used_event u16. The driver writes a
//     head into ring[idx % Size] and then increments idx;
//   - the device ("used") ring (§2.7.8): flags u16, idx u16, ring[Size] of
//     {id u32, len u32}, avail_event u16. The device does the same in the
//     other direction: the head it is done with and how many bytes it
//     wrote, then idx.
//
// Both idx fields are free-running 16-bit counters, not ring positions: the
// number of new entries is always idx minus the last value seen, modulo
// 2^16, and can never exceed Size. Each idx is written by one side while the
// other reads it, so they go through guestmem.LoadUint16/StoreUint16, which
// are atomic and ordered: the ring entry is in memory before the index that
// publishes it.
//
// Everything in these areas belongs to a guest that may be hostile. Pop
// copies each descriptor before looking at it, bounds every walk (a chain
// visits at most Size descriptors, an indirect table at most its own
// length), checks every buffer against guest RAM, and reports a broken
// chain as an error wrapping ErrNeedsReset instead of looping or
// panicking.
//
// Notification suppression (§2.7.7, §2.7.10): without VIRTIO_F_EVENT_IDX
// the driver sets avail->flags NO_INTERRUPT to ask for no interrupts. With
// it, the driver writes used_event, "interrupt me when used idx passes
// this", and the device writes avail_event, "notify me when avail idx
// passes this"; needEvent below is the comparison both sides use.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"kvmlab/guestmem"
)

// Split-ring constants (§2.7).
const (
	// MaxQueueSize is the largest queue size the split ring allows
	// (§2.7: Queue Size ≤ 32768).
	MaxQueueSize = 32768
	// MaxIndirect bounds the entries of one indirect table, the
	// "reasonable limit of descriptors" §2.7.4.1 allows a device: it
	// keeps one table (and the copy Pop makes of it) at 16 KiB. Devices
	// must not advertise a seg_max that needs more.
	MaxIndirect = 1024
	// DescSize is the size of one descriptor (§2.7.5).
	DescSize = 16

	DescFlagNext     uint16 = 1 // VIRTQ_DESC_F_NEXT: the chain continues at next
	DescFlagWrite    uint16 = 2 // VIRTQ_DESC_F_WRITE: device-writable buffer
	DescFlagIndirect uint16 = 4 // VIRTQ_DESC_F_INDIRECT: buffer is a descriptor table

	AvailFlagNoInterrupt uint16 = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)
	UsedFlagNoNotify     uint16 = 1 // VIRTQ_USED_F_NO_NOTIFY (§2.7.7)

	// NoVector is VIRTIO_MSI_NO_VECTOR: no MSI-X vector assigned.
	NoVector uint16 = 0xffff
)

// DescTableBytes is the size of a descriptor table for size entries.
func DescTableBytes(size uint16) uint64 { return DescSize * uint64(size) }

// AvailRingBytes is the size of a driver ring for size entries, used_event
// included.
func AvailRingBytes(size uint16) uint64 { return 6 + 2*uint64(size) }

// UsedRingBytes is the size of a device ring for size entries, avail_event
// included.
func UsedRingBytes(size uint16) uint64 { return 6 + 8*uint64(size) }

// Queue is one split virtqueue (§2.7) seen from the device side. The
// transport sets Size, the three ring addresses and Ready from the common
// configuration; the device pops chains and pushes used entries.
//
// A Queue is not safe for concurrent use: a device serves each queue from
// one goroutine at a time.
type Queue struct {
	// Size is the queue size the driver chose (a power of two, at most
	// MaxSize).
	Size uint16
	// DescAddr, AvailAddr and UsedAddr are the guest-physical addresses of
	// the descriptor table, the driver (available) ring and the device
	// (used) ring.
	DescAddr, AvailAddr, UsedAddr guestmem.GPA
	// Ready is queue_enable.
	Ready bool
	// MSIXVector is the MSI-X table entry for this queue's interrupts
	// (0xffff: none).
	MSIXVector uint16

	maxSize  uint16 // 0 in a zero Queue, which then allows MaxQueueSize
	eventIdx bool   // VIRTIO_F_EVENT_IDX negotiated

	lastAvail uint16 // avail idx value up to which chains were popped
	usedIdx   uint16 // the device's used idx, mirrored in guest memory
	// signalled is usedIdx at the previous NeedsInterrupt call: the
	// "old" of vring_need_event.
	signalled uint16
}

// Buffer is one guest buffer of a chain.
type Buffer struct {
	Addr guestmem.GPA
	Len  uint32
}

// Chain is one descriptor chain popped from the available ring.
//
// Pop leaves zero-length descriptors out of Readable and Writable: they
// carry nothing, and their address need not be RAM. They still count
// towards the chain-length bound and the readable-before-writable rule.
type Chain struct {
	Head     uint16   // descriptor index to push back on the used ring
	Readable []Buffer // driver → device buffers, in order
	Writable []Buffer // device → driver buffers, in order
}

// driverErr builds an error that blames the driver: it wraps ErrNeedsReset
// and says what is wrong, so that the VMM log shows the offending
// descriptor. format may use %w for an underlying cause.
func driverErr(format string, args ...any) error {
	return fmt.Errorf("%w: queue: "+format, append([]any{ErrNeedsReset}, args...)...)
}

// NewQueue returns a queue whose size may be at most maxSize, which must be
// a power of two no larger than MaxQueueSize. maxSize is a constant of the
// device model, not guest input, so a bad one panics.
func NewQueue(maxSize uint16) *Queue {
	if maxSize == 0 || maxSize&(maxSize-1) != 0 || maxSize > MaxQueueSize {
		panic(fmt.Sprintf("virtio: NewQueue(%d): size must be a power of two in [1, %d]", maxSize, MaxQueueSize))
	}
	q := &Queue{maxSize: maxSize}
	q.Reset()
	return q
}

// MaxSize returns the largest size the device supports.
func (q *Queue) MaxSize() uint16 {
	if q.maxSize == 0 {
		return MaxQueueSize
	}
	return q.maxSize
}

// Reset returns the queue to its state after NewQueue: size MaxSize, no
// addresses, not ready, no MSI-X vector, indices at 0 and EVENT_IDX off.
func (q *Queue) Reset() {
	*q = Queue{Size: q.MaxSize(), MSIXVector: NoVector, maxSize: q.maxSize}
}

// SetEventIdx turns VIRTIO_F_EVENT_IDX semantics (§2.7.7) on or off: the
// transport calls it with the negotiated feature before the device starts.
func (q *Queue) SetEventIdx(on bool) { q.eventIdx = on }

// checkSize refuses a Size that would break ring arithmetic (a zero Size
// would even divide by zero). Pop, Push and NeedsInterrupt check it because
// Size is an exported field the transport fills from a guest write.
func (q *Queue) checkSize() error {
	if q.Size == 0 || q.Size&(q.Size-1) != 0 || q.Size > q.MaxSize() {
		return driverErr("size %d is not a power of two in [1, %d]", q.Size, q.MaxSize())
	}
	return nil
}

// wordArea returns the smallest run of aligned 32-bit words that covers
// [addr, addr+n).
func wordArea(addr guestmem.GPA, n uint64) (guestmem.GPA, uint64) {
	start := addr &^ 3
	end := (uint64(addr) + n + 3) &^ 3
	return start, end - uint64(start)
}

// Validate checks size and ring addresses against guest memory: Size is a
// nonzero power of two at most MaxSize, the areas are aligned as the table
// of §2.7 requires (descriptors 16, driver ring 2, device ring 4), and each
// area lies in RAM, event fields included. The two rings are checked as the
// whole 32-bit words they span, because their 16-bit indices are accessed
// atomically through those words; a driver ring that ends 2 bytes short of
// the end of a RAM region is therefore refused, which no real driver does.
// Errors wrap ErrNeedsReset.
func (q *Queue) Validate(mem *guestmem.Memory) error {
	if err := q.checkSize(); err != nil {
		return err
	}
	for _, a := range []struct {
		name  string
		addr  guestmem.GPA
		align guestmem.GPA
	}{
		{"descriptor table", q.DescAddr, 16},
		{"driver ring", q.AvailAddr, 2},
		{"device ring", q.UsedAddr, 4},
	} {
		if a.addr%a.align != 0 {
			return driverErr("%s at %#x is not %d-byte aligned (§2.7)", a.name, uint64(a.addr), a.align)
		}
	}
	availAt, availLen := wordArea(q.AvailAddr, AvailRingBytes(q.Size))
	usedAt, usedLen := wordArea(q.UsedAddr, UsedRingBytes(q.Size))
	for _, a := range []struct {
		name string
		addr guestmem.GPA
		n    uint64
	}{
		{"descriptor table", q.DescAddr, DescTableBytes(q.Size)},
		{"driver ring", availAt, availLen},
		{"device ring", usedAt, usedLen},
	} {
		if _, err := mem.Slice(a.addr, a.n); err != nil {
			return driverErr("%s of queue size %d does not fit in guest RAM: %w", a.name, q.Size, err)
		}
	}
	return nil
}

// Addresses of the fields of the two rings.
func (q *Queue) availIdxAddr() guestmem.GPA { return q.AvailAddr + 2 }
func (q *Queue) availRingAddr(i uint16) guestmem.GPA {
	return q.AvailAddr + 4 + 2*guestmem.GPA(i%q.Size)
}
func (q *Queue) usedEventAddr() guestmem.GPA { return q.AvailAddr + 4 + 2*guestmem.GPA(q.Size) }
func (q *Queue) usedIdxAddr() guestmem.GPA   { return q.UsedAddr + 2 }
func (q *Queue) usedRingAddr(i uint16) guestmem.GPA {
	return q.UsedAddr + 4 + 8*guestmem.GPA(i%q.Size)
}
func (q *Queue) availEventAddr() guestmem.GPA { return q.UsedAddr + 4 + 8*guestmem.GPA(q.Size) }

// Pop returns the next available chain, or nil with no error when the
// driver has posted nothing new or the queue is not Ready.
//
// A chain is zero or more direct descriptors, optionally ending in one
// INDIRECT descriptor whose table holds the rest (§2.7.5.3.2: the device
// must accept that shape). Pop refuses, with an error wrapping
// ErrNeedsReset and naming the descriptor:
//
//   - an avail idx more than Size ahead, a head or next index beyond the
//     table;
//   - a chain longer than Size (§2.7.5.3.1), which also catches loops;
//   - INDIRECT together with NEXT; an indirect table that is empty, not a
//     multiple of 16 bytes, longer than MaxIndirect entries or not in RAM;
//     INDIRECT inside an indirect table (§2.7.5.3.1);
//   - a readable buffer after a writable one (§2.7.4.2);
//   - a buffer not entirely inside one RAM region;
//   - buffers adding up to more than 4 GiB - 1 (§2.7.5.2 allows 4 GiB, but
//     the used ring's len is 32-bit).
//
// The WRITE flag of an INDIRECT descriptor is ignored, as §2.7.5.3.2
// requires. On error the queue does not advance.
//
// With EVENT_IDX on, Pop keeps avail_event equal to the number of chains
// popped (§2.7.10), so the driver notifies again as soon as it posts past
// it.
func (q *Queue) Pop(mem *guestmem.Memory) (*Chain, error) {
	if !q.Ready {
		return nil, nil
	}
	if err := q.checkSize(); err != nil {
		return nil, err
	}
	availIdx, err := mem.LoadUint16(q.availIdxAddr())
	if err != nil {
		return nil, driverErr("reading avail idx: %w", err)
	}
	if availIdx == q.lastAvail {
		if !q.eventIdx {
			return nil, nil
		}
		// Going idle: publish avail_event, then look again. The store
		// and the load are sequentially consistent, so a driver that
		// posts in between either is seen here or sees avail_event
		// and notifies: no request is left without a notification.
		if err := q.storeAvailEvent(mem, q.lastAvail); err != nil {
			return nil, err
		}
		if availIdx, err = mem.LoadUint16(q.availIdxAddr()); err != nil {
			return nil, driverErr("reading avail idx: %w", err)
		}
		if availIdx == q.lastAvail {
			return nil, nil
		}
	}
	if pending := availIdx - q.lastAvail; pending > q.Size {
		return nil, driverErr("avail idx %d is %d entries past the device's %d, more than the queue size %d",
			availIdx, pending, q.lastAvail, q.Size)
	}
	// A plain copy is enough for the ring entry and the descriptors: the
	// driver wrote them before the avail idx store that the atomic load
	// above observed.
	var b [2]byte
	slot := q.availRingAddr(q.lastAvail)
	if err := mem.ReadAt(b[:], slot); err != nil {
		return nil, driverErr("reading avail ring entry %d: %w", q.lastAvail%q.Size, err)
	}
	head := binary.LittleEndian.Uint16(b[:])
	if head >= q.Size {
		return nil, driverErr("avail ring entry %d holds head %d, beyond the queue size %d",
			q.lastAvail%q.Size, head, q.Size)
	}
	c, err := q.walk(mem, head)
	if err != nil {
		return nil, err
	}
	if q.eventIdx {
		if err := q.storeAvailEvent(mem, q.lastAvail+1); err != nil {
			return nil, err
		}
	}
	q.lastAvail++
	return c, nil
}

func (q *Queue) storeAvailEvent(mem *guestmem.Memory, v uint16) error {
	if err := mem.StoreUint16(q.availEventAddr(), v); err != nil {
		return driverErr("writing avail_event: %w", err)
	}
	return nil
}

// desc is one descriptor, copied out of guest memory (§2.7.5).
type desc struct {
	addr  guestmem.GPA
	len   uint32
	flags uint16
	next  uint16
}

func parseDesc(b []byte) desc {
	return desc{
		addr:  guestmem.GPA(binary.LittleEndian.Uint64(b[0:])),
		len:   binary.LittleEndian.Uint32(b[8:]),
		flags: binary.LittleEndian.Uint16(b[12:]),
		next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

// chainBuilder accumulates the buffers of one chain and enforces the rules
// that span the whole chain, direct and indirect parts alike.
type chainBuilder struct {
	mem      *guestmem.Memory
	c        *Chain
	total    uint64 // bytes in all buffers so far
	writable bool   // a writable descriptor was seen
}

// descLoc names a descriptor in error messages. It is formatted only when
// there is an error, so the walk allocates nothing for it.
type descLoc struct {
	i        uint32       // index in the descriptor table or indirect table
	indirect bool         // i is an entry of an indirect table ...
	parent   uint32       // ... that this direct descriptor points to
	table    guestmem.GPA // ... at this address
}

func (l descLoc) String() string {
	if l.indirect {
		return fmt.Sprintf("indirect entry %d of descriptor %d (table %#x)", l.i, l.parent, uint64(l.table))
	}
	return fmt.Sprintf("descriptor %d", l.i)
}

// add checks one non-INDIRECT descriptor and appends its buffer.
func (b *chainBuilder) add(d desc, where descLoc) error {
	w := d.flags&DescFlagWrite != 0
	if !w && b.writable {
		return driverErr("%s: readable buffer after a writable one (§2.7.4.2)", where)
	}
	b.writable = b.writable || w
	b.total += uint64(d.len)
	if b.total > math.MaxUint32 {
		return driverErr("%s: chain holds more than %d bytes", where, uint64(math.MaxUint32))
	}
	if d.len == 0 {
		return nil // nothing to access: see Chain
	}
	if _, err := b.mem.Slice(d.addr, uint64(d.len)); err != nil {
		return driverErr("%s: buffer %#x+%d: %w", where, uint64(d.addr), d.len, err)
	}
	buf := Buffer{Addr: d.addr, Len: d.len}
	if w {
		b.c.Writable = append(b.c.Writable, buf)
	} else {
		b.c.Readable = append(b.c.Readable, buf)
	}
	return nil
}

// walk follows the chain that starts at descriptor head (< Size).
func (q *Queue) walk(mem *guestmem.Memory, head uint16) (*Chain, error) {
	b := chainBuilder{mem: mem, c: &Chain{Head: head}}
	var raw [DescSize]byte
	i := head
	for n := 0; ; n++ {
		// The driver may not build a chain longer than the queue
		// (§2.7.5.3.1), so a loop (§2.7.5.2) ends here too.
		if n == int(q.Size) {
			return nil, driverErr("chain from head %d is longer than the queue size %d (a loop?)", head, q.Size)
		}
		at := q.DescAddr + DescSize*guestmem.GPA(i)
		if err := mem.ReadAt(raw[:], at); err != nil {
			return nil, driverErr("reading descriptor %d: %w", i, err)
		}
		d := parseDesc(raw[:])
		where := descLoc{i: uint32(i)}
		if d.flags&DescFlagIndirect != 0 {
			if d.flags&DescFlagNext != 0 {
				return nil, driverErr("%s: INDIRECT and NEXT both set (§2.7.5.3.1)", where)
			}
			if err := b.indirect(d, where); err != nil {
				return nil, err
			}
			return b.c, nil
		}
		if err := b.add(d, where); err != nil {
			return nil, err
		}
		if d.flags&DescFlagNext == 0 {
			return b.c, nil
		}
		if d.next >= q.Size {
			return nil, driverErr("%s: next %d is beyond the queue size %d", where, d.next, q.Size)
		}
		i = d.next
	}
}

// indirect walks the table an INDIRECT descriptor points to (§2.7.5.3).
// The table is copied once, so a guest rewriting it meanwhile cannot make
// the walk see two different versions.
func (b *chainBuilder) indirect(d desc, where descLoc) error {
	if d.len == 0 || d.len%DescSize != 0 {
		return driverErr("%s: indirect table of %d bytes is not a nonzero multiple of %d", where, d.len, DescSize)
	}
	entries := d.len / DescSize
	if entries > MaxIndirect {
		return driverErr("%s: indirect table of %d entries, more than %d", where, entries, MaxIndirect)
	}
	table := make([]byte, d.len)
	if err := b.mem.ReadAt(table, d.addr); err != nil {
		return driverErr("%s: indirect table %#x+%d: %w", where, uint64(d.addr), d.len, err)
	}
	i := uint32(0)
	for n := uint32(0); ; n++ {
		if n == entries {
			return driverErr("%s: chain in indirect table at %#x is longer than its %d entries (a loop?)",
				where, uint64(d.addr), entries)
		}
		e := parseDesc(table[DescSize*i:])
		ewhere := descLoc{i: i, indirect: true, parent: where.i, table: d.addr}
		if e.flags&DescFlagIndirect != 0 {
			return driverErr("%s: INDIRECT inside an indirect table (§2.7.5.3.1)", ewhere)
		}
		if err := b.add(e, ewhere); err != nil {
			return err
		}
		if e.flags&DescFlagNext == 0 {
			return nil
		}
		if uint32(e.next) >= entries {
			return driverErr("%s: next %d is beyond the table's %d entries", ewhere, e.next, entries)
		}
		i = uint32(e.next)
	}
}

// Push puts a chain's head on the used ring with the bytes written: the
// entry {head, written} goes to used->ring[idx % Size] first, then used idx
// is incremented with an atomic store, so a driver that sees the new idx
// sees the entry (§2.7.8.2). head must be the Head of a chain
// popped from this queue: head ≥ Size is a device bug and its error does
// not wrap ErrNeedsReset; an error writing the ring (not in RAM) does.
func (q *Queue) Push(mem *guestmem.Memory, head uint16, written uint32) error {
	if err := q.checkSize(); err != nil {
		return err
	}
	if !q.Ready {
		return fmt.Errorf("virtio: queue: push of head %d on a queue that is not ready (device bug)", head)
	}
	if head >= q.Size {
		return fmt.Errorf("virtio: queue: push of head %d on a queue of size %d (device bug)", head, q.Size)
	}
	var e [8]byte
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	if err := mem.WriteAt(e[:], q.usedRingAddr(q.usedIdx)); err != nil {
		return driverErr("writing used ring entry %d: %w", q.usedIdx%q.Size, err)
	}
	if err := mem.StoreUint16(q.usedIdxAddr(), q.usedIdx+1); err != nil {
		return driverErr("writing used idx: %w", err)
	}
	q.usedIdx++
	return nil
}

// NeedsInterrupt reports whether the driver wants an interrupt for the used
// entries pushed since the last call (§2.7.7.2). Without EVENT_IDX that is
// whenever avail->flags lacks NO_INTERRUPT; with it, when used idx moved
// past used_event since the previous call. Call it after the Pushes of a
// batch, once: each call moves "the previous call". A queue that is not
// Ready never needs one.
func (q *Queue) NeedsInterrupt(mem *guestmem.Memory) (bool, error) {
	if !q.Ready {
		return false, nil
	}
	if err := q.checkSize(); err != nil {
		return false, err
	}
	old, cur := q.signalled, q.usedIdx
	q.signalled = cur
	if !q.eventIdx {
		flags, err := mem.LoadUint16(q.AvailAddr)
		if err != nil {
			return false, driverErr("reading avail flags: %w", err)
		}
		return flags&AvailFlagNoInterrupt == 0, nil
	}
	// Loaded after the used idx store of Push (sequentially consistent),
	// which is the full barrier §2.7.7.2 asks for between the two.
	event, err := mem.LoadUint16(q.usedEventAddr())
	if err != nil {
		return false, driverErr("reading used_event: %w", err)
	}
	return needEvent(event, cur, old), nil
}

// needEvent is vring_need_event (§2.7.7.2): whether moving an index from
// old to cur crossed event, i.e. event is in [old, cur) modulo 2^16.
func needEvent(event, cur, old uint16) bool {
	return cur-event-1 < cur-old
}

// ReadableLen is the total length of the readable buffers.
func (c *Chain) ReadableLen() uint64 { return totalLen(c.Readable) }

// WritableLen is the total length of the writable buffers: the most a
// ChainWriter can write.
func (c *Chain) WritableLen() uint64 { return totalLen(c.Writable) }

func totalLen(bs []Buffer) uint64 {
	var n uint64
	for _, b := range bs {
		n += uint64(b.Len)
	}
	return n
}

// Reader returns a reader over the chain's readable buffers, in order. It
// copies from guest memory at each Read, through mem's checks, so what it
// returns is what the guest holds at that moment: a device that parses a
// header must parse its own copy. At the end it returns io.EOF.
func (c *Chain) Reader(mem *guestmem.Memory) io.Reader {
	return &chainReader{mem: mem, bufs: c.Readable}
}

type chainReader struct {
	mem  *guestmem.Memory
	bufs []Buffer // still to read; bufs[0] from off
	off  uint32
}

func (r *chainReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.bufs) > 0 {
		b := r.bufs[0]
		k := uint32(min(uint64(len(p)-n), uint64(b.Len-r.off)))
		if err := r.mem.ReadAt(p[n:n+int(k)], b.Addr+guestmem.GPA(r.off)); err != nil {
			return n, driverErr("reading chain buffer %#x+%d: %w", uint64(b.Addr), b.Len, err)
		}
		n += int(k)
		r.off += k
		if r.off == b.Len {
			r.bufs, r.off = r.bufs[1:], 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// ErrChainFull is returned by ChainWriter.Write when the chain's writable
// buffers cannot take all of p. It wraps io.ErrShortWrite. The driver did
// nothing wrong by posting small buffers; the device decides what that
// means (virtio-net drops the packet, virtio-blk reports an error).
var ErrChainFull = fmt.Errorf("virtio: chain's writable buffers are full: %w", io.ErrShortWrite)

// Writer returns a writer over the chain's writable buffers.
func (c *Chain) Writer(mem *guestmem.Memory) *ChainWriter {
	return &ChainWriter{mem: mem, bufs: c.Writable}
}

// ChainWriter writes into a chain's writable buffers, in order, and counts
// the bytes: Written is the len to Push.
type ChainWriter struct {
	mem     *guestmem.Memory
	bufs    []Buffer // still to fill; bufs[0] from off
	off     uint32
	written uint64
}

// Write implements io.Writer. When the buffers fill up it writes what fits
// and returns ErrChainFull.
func (w *ChainWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(w.bufs) > 0 {
		b := w.bufs[0]
		k := uint32(min(uint64(len(p)-n), uint64(b.Len-w.off)))
		if err := w.mem.WriteAt(p[n:n+int(k)], b.Addr+guestmem.GPA(w.off)); err != nil {
			w.written += uint64(n)
			return n, driverErr("writing chain buffer %#x+%d: %w", uint64(b.Addr), b.Len, err)
		}
		n += int(k)
		w.off += k
		if w.off == b.Len {
			w.bufs, w.off = w.bufs[1:], 0
		}
	}
	w.written += uint64(n)
	if n < len(p) {
		return n, ErrChainFull
	}
	return n, nil
}

// Written returns the number of bytes written so far. A chain from Pop
// holds less than 4 GiB, so it always fits; a hand-made larger one
// saturates.
func (w *ChainWriter) Written() uint32 {
	return uint32(min(w.written, math.MaxUint32))
}

// DeviceIndices returns the device side's private ring positions, which
// live only in the VMM and so must go into a snapshot (§2.7): the avail idx
// up to which chains were popped (last_avail_idx), the used idx the device
// last published, and the used idx of the previous NeedsInterrupt (the
// "old" of vring_need_event, §2.7.7.2).
func (q *Queue) DeviceIndices() (lastAvail, usedIdx, signalled uint16) {
	return q.lastAvail, q.usedIdx, q.signalled
}

// SetDeviceIndices puts back what DeviceIndices returned, for a restore.
// It checks nothing: the transport validates the values against guest
// RAM before it calls it.
func (q *Queue) SetDeviceIndices(lastAvail, usedIdx, signalled uint16) {
	q.lastAvail, q.usedIdx, q.signalled = lastAvail, usedIdx, signalled
}

// CheckIndices checks restored device indices against the rings in guest
// RAM (Validate must have passed): the used idx in RAM is the one the
// device published, and the driver has not posted more than Size chains
// past lastAvail. Errors wrap ErrNeedsReset.
func (q *Queue) CheckIndices(mem *guestmem.Memory, lastAvail, usedIdx uint16) error {
	ram, err := mem.LoadUint16(q.usedIdxAddr())
	if err != nil {
		return driverErr("reading used idx: %w", err)
	}
	if ram != usedIdx {
		return driverErr("used idx in guest RAM is %d, the device's is %d", ram, usedIdx)
	}
	avail, err := mem.LoadUint16(q.availIdxAddr())
	if err != nil {
		return driverErr("reading avail idx: %w", err)
	}
	if pending := avail - lastAvail; pending > q.Size {
		return driverErr("avail idx %d is %d entries past the device's %d, more than the queue size %d",
			avail, pending, lastAvail, q.Size)
	}
	// The device never returns a chain it has not popped: used idx
	// cannot be ahead of last_avail_idx (both count from 0 mod 2^16).
	if inflight := lastAvail - usedIdx; inflight > q.Size {
		return driverErr("used idx %d is not within the queue size %d behind last_avail_idx %d",
			usedIdx, q.Size, lastAvail)
	}
	return nil
}
