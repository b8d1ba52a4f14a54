// Package virtiotest is a test kit for code that serves split virtqueues
// (virtio 1.2 §2.7): fake guest RAM and a fake guest driver.
//
// A device model only ever sees a *virtio.Queue and guest memory, so the
// way to test one without a guest is to play the guest: lay out the
// descriptor table and the two rings in a byte slice, write descriptor
// chains and publish them the way a driver does (§2.7.13), then read the
// used ring back the way a driver does (§2.7.14). Driver does that for
// well-formed traffic (Post, PostIndirect) and gives hostile tests and
// fuzzers the raw pieces (WriteDesc, WriteTable, Publish, SetAvailIdx) to
// build whatever a broken or malicious driver would.
//
// RAM can have two regions with a hole between them, so tests can aim
// buffers at addresses that are not RAM, or that straddle the end of a
// region.
//
// Typical use:
//
//	ram := virtiotest.NewRAM(64<<10, 0, 0)
//	drv, err := virtiotest.NewDriver(ram, 8)
//	head, err := drv.Post([][]byte{[]byte("request")}, []uint32{512})
//	// ... the device under test pops drv.Queue and pushes ...
//	used, err := drv.Used()       // [{ID: head, Len: n}]
//	reply, err := drv.ReadWritable(head)
package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"kvmlab/devices/virtio"
	"kvmlab/guestmem"
)

// RAM is fake guest RAM: a Low region at guest-physical 0 and, when built
// with a nonzero high size, a High region after a hole of unbacked
// addresses. The embedded Memory is what the code under test gets.
type RAM struct {
	*guestmem.Memory
	Low, High guestmem.Region // High.Data is nil without a high region
}

// NewRAM returns lowSize bytes of RAM at 0 followed, if highSize > 0, by a
// hole of holeSize bytes and highSize bytes of RAM. Sizes are set by the
// test itself, so invalid ones (lowSize ≤ 0, or negative) panic.
func NewRAM(lowSize, holeSize, highSize int) *RAM {
	if lowSize <= 0 || holeSize < 0 || highSize < 0 {
		panic(fmt.Sprintf("virtiotest: NewRAM(%d, %d, %d): sizes must be positive", lowSize, holeSize, highSize))
	}
	// Separate allocations: Go places each on at least an 8-byte
	// boundary, which the atomic ring-index accesses need.
	r := &RAM{Low: guestmem.Region{Base: 0, Data: make([]byte, lowSize)}}
	regions := []guestmem.Region{r.Low}
	if highSize > 0 {
		r.High = guestmem.Region{Base: r.Low.End() + guestmem.GPA(holeSize), Data: make([]byte, highSize)}
		regions = append(regions, r.High)
	}
	m, err := guestmem.FromRegions(regions...)
	if err != nil {
		panic(fmt.Sprintf("virtiotest: %v", err)) // cannot happen for these regions
	}
	r.Memory = m
	return r
}

// Hole returns the unbacked addresses between Low and High: [start, end).
// Without a High region it is the empty range at the end of Low.
func (r *RAM) Hole() (start, end guestmem.GPA) {
	if r.High.Data == nil {
		return r.Low.End(), r.Low.End()
	}
	return r.Low.End(), r.High.Base
}

// Desc is one descriptor as the driver writes it (§2.7.5): any values at
// all, for hostile tests.
type Desc struct {
	Addr  guestmem.GPA
	Len   uint32
	Flags uint16
	Next  uint16
}

func (d Desc) bytes() [virtio.DescSize]byte {
	var b [virtio.DescSize]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(d.Addr))
	binary.LittleEndian.PutUint32(b[8:], d.Len)
	binary.LittleEndian.PutUint16(b[12:], d.Flags)
	binary.LittleEndian.PutUint16(b[14:], d.Next)
	return b
}

// UsedElem is one used ring entry (§2.7.8).
type UsedElem struct {
	ID  uint32 // head of the chain
	Len uint32 // bytes the device wrote
}

// ErrFull is returned when the driver has no free descriptors or no heap
// left for a chain.
var ErrFull = errors.New("virtiotest: driver out of descriptors or buffer space")

// Driver is a fake guest driver for one split virtqueue. Its rings sit at
// the start of the RAM's Low region (descriptor table, driver ring, device
// ring, each at its §2.7 alignment, packed tight) and the rest of Low is a
// heap for buffers and indirect tables.
//
// Descriptors of chains posted with Post and PostIndirect are reused once
// Used has returned their chain; Post and PostIndirect reuse the heap from
// its start when no chain is in flight. WriteDesc, Alloc and Publish
// bypass that bookkeeping.
type Driver struct {
	RAM   *RAM
	Queue *virtio.Queue // configured and Ready; the device under test serves it
	Size  uint16

	// The rings' addresses. A test may move a ring (to the edge of RAM,
	// into the hole) by changing one and calling Configure: the driver's
	// own writes follow it.
	DescAddr, AvailAddr, UsedAddr guestmem.GPA

	availIdx  uint16 // next avail idx to publish
	usedSeen  uint16 // used idx up to which Used has read
	free      []uint16
	heapStart guestmem.GPA
	heap      guestmem.GPA // next free heap byte
	heapEnd   guestmem.GPA
	inflight  map[uint16][]uint16 // head → descriptors of a posted chain
	writable  map[uint16][]Desc   // head → writable buffers of the last chain posted there
}

func align(a guestmem.GPA, n guestmem.GPA) guestmem.GPA { return (a + n - 1) &^ (n - 1) }

// NewDriver lays out a queue of the given size (a power of two) in ram's
// Low region and returns a driver with a Queue configured for it: Size,
// addresses and Ready set, as the transport would from the common
// configuration. The rings start zeroed, as Linux leaves them.
func NewDriver(ram *RAM, size uint16) (*Driver, error) {
	if size == 0 || size&(size-1) != 0 || size > virtio.MaxQueueSize {
		return nil, fmt.Errorf("virtiotest: queue size %d is not a power of two in [1, %d]", size, virtio.MaxQueueSize)
	}
	d := &Driver{RAM: ram, Size: size, inflight: map[uint16][]uint16{}, writable: map[uint16][]Desc{}}
	d.DescAddr = align(ram.Low.Base, 16)
	d.AvailAddr = d.DescAddr + guestmem.GPA(virtio.DescTableBytes(size))
	d.UsedAddr = align(d.AvailAddr+guestmem.GPA(virtio.AvailRingBytes(size)), 4)
	d.heapStart = align(d.UsedAddr+guestmem.GPA(virtio.UsedRingBytes(size)), 16)
	d.heap, d.heapEnd = d.heapStart, ram.Low.End()
	if d.heapStart > d.heapEnd {
		return nil, fmt.Errorf("virtiotest: a queue of size %d needs %d bytes, RAM Low has %d",
			size, d.heapStart-ram.Low.Base, ram.Low.Size())
	}
	for i := range size {
		d.free = append(d.free, i)
	}
	d.Queue = virtio.NewQueue(size)
	d.Configure(d.Queue)
	return d, nil
}

// Configure points q at the driver's rings and enables it, like the
// transport does when the driver writes queue_enable.
func (d *Driver) Configure(q *virtio.Queue) {
	q.Size = d.Size
	q.DescAddr, q.AvailAddr, q.UsedAddr = d.DescAddr, d.AvailAddr, d.UsedAddr
	q.Ready = true
}

// Alloc reserves n bytes of heap aligned to 16 and returns their address.
func (d *Driver) Alloc(n uint32) (guestmem.GPA, error) {
	at := align(d.heap, 16)
	if at+guestmem.GPA(n) > d.heapEnd || at+guestmem.GPA(n) < at {
		return 0, fmt.Errorf("%w: %d heap bytes wanted, %d left", ErrFull, n, d.heapEnd-at)
	}
	d.heap = at + guestmem.GPA(n)
	return at, nil
}

// buffers lays out readable contents and writable lengths in the heap and
// returns their descriptors, without NEXT flags.
func (d *Driver) buffers(readable [][]byte, writable []uint32) ([]Desc, error) {
	if len(d.inflight) == 0 {
		d.heap = d.heapStart // nothing posted is still in use
	}
	var out []Desc
	for _, p := range readable {
		at, err := d.Alloc(uint32(len(p)))
		if err != nil {
			return nil, err
		}
		if err := d.RAM.WriteAt(p, at); err != nil {
			return nil, err
		}
		out = append(out, Desc{Addr: at, Len: uint32(len(p))})
	}
	for _, n := range writable {
		at, err := d.Alloc(n)
		if err != nil {
			return nil, err
		}
		out = append(out, Desc{Addr: at, Len: n, Flags: virtio.DescFlagWrite})
	}
	return out, nil
}

// Post lays out a chain of readable buffers holding the given bytes
// followed by writable buffers of the given lengths (writable buffers are
// filled with 0xee so tests can see what the device left alone), one
// descriptor each, and publishes it. It returns the head.
func (d *Driver) Post(readable [][]byte, writable []uint32) (uint16, error) {
	descs, err := d.buffers(readable, writable)
	if err != nil {
		return 0, err
	}
	if len(descs) == 0 || len(descs) > len(d.free) {
		return 0, fmt.Errorf("%w: chain of %d descriptors, %d free", ErrFull, len(descs), len(d.free))
	}
	idx := d.free[:len(descs)]
	d.free = d.free[len(descs):]
	for i := range descs {
		if i+1 < len(descs) {
			descs[i].Flags |= virtio.DescFlagNext
			descs[i].Next = idx[i+1]
		}
		if err := d.WriteDesc(idx[i], descs[i]); err != nil {
			return 0, err
		}
	}
	return d.track(idx, descs)
}

// PostIndirect is Post with the chain's descriptors in an indirect table
// (§2.7.5.3) on the heap, referred to by one descriptor of the ring.
func (d *Driver) PostIndirect(readable [][]byte, writable []uint32) (uint16, error) {
	descs, err := d.buffers(readable, writable)
	if err != nil {
		return 0, err
	}
	if len(descs) == 0 || len(d.free) == 0 {
		return 0, fmt.Errorf("%w: indirect chain of %d descriptors, %d free", ErrFull, len(descs), len(d.free))
	}
	for i := range descs[:len(descs)-1] {
		descs[i].Flags |= virtio.DescFlagNext
		descs[i].Next = uint16(i + 1)
	}
	table, err := d.Alloc(uint32(len(descs)) * virtio.DescSize)
	if err != nil {
		return 0, err
	}
	if err := d.WriteTable(table, descs); err != nil {
		return 0, err
	}
	head := d.free[0]
	d.free = d.free[1:]
	ind := Desc{Addr: table, Len: uint32(len(descs)) * virtio.DescSize, Flags: virtio.DescFlagIndirect}
	if err := d.WriteDesc(head, ind); err != nil {
		return 0, err
	}
	return d.track([]uint16{head}, descs)
}

func (d *Driver) track(idx []uint16, descs []Desc) (uint16, error) {
	var writable []Desc
	for _, ds := range descs {
		if ds.Flags&virtio.DescFlagWrite != 0 {
			fill := make([]byte, ds.Len)
			for i := range fill {
				fill[i] = 0xee
			}
			if err := d.RAM.WriteAt(fill, ds.Addr); err != nil {
				return 0, err
			}
			writable = append(writable, ds)
		}
	}
	d.inflight[idx[0]] = append([]uint16(nil), idx...)
	d.writable[idx[0]] = writable
	return idx[0], d.Publish(idx[0])
}

// WriteDesc writes descriptor i of the table, whatever it holds; i may be
// beyond Size (it then lands in whatever follows the table).
func (d *Driver) WriteDesc(i uint16, desc Desc) error {
	b := desc.bytes()
	return d.RAM.WriteAt(b[:], d.DescAddr+virtio.DescSize*guestmem.GPA(i))
}

// WriteTable writes descs as an indirect table at addr.
func (d *Driver) WriteTable(addr guestmem.GPA, descs []Desc) error {
	for i, desc := range descs {
		b := desc.bytes()
		if err := d.RAM.WriteAt(b[:], addr+virtio.DescSize*guestmem.GPA(i)); err != nil {
			return err
		}
	}
	return nil
}

// Publish puts heads in the driver ring and then advances avail idx past
// them (§2.7.13.2–3), with the atomic store that orders the two.
func (d *Driver) Publish(heads ...uint16) error {
	for _, h := range heads {
		var b [2]byte
		binary.LittleEndian.PutUint16(b[:], h)
		slot := d.AvailAddr + 4 + 2*guestmem.GPA(d.availIdx%d.Size)
		if err := d.RAM.WriteAt(b[:], slot); err != nil {
			return err
		}
		d.availIdx++
	}
	return d.RAM.StoreUint16(d.AvailAddr+2, d.availIdx)
}

// SetAvailIdx stores any value as avail idx (a hostile driver's jump);
// later Publish calls continue from it.
func (d *Driver) SetAvailIdx(idx uint16) error {
	d.availIdx = idx
	return d.RAM.StoreUint16(d.AvailAddr+2, idx)
}

// SetRing writes head into driver ring slot i (modulo Size) without
// publishing it.
func (d *Driver) SetRing(i, head uint16) error {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], head)
	return d.RAM.WriteAt(b[:], d.AvailAddr+4+2*guestmem.GPA(i%d.Size))
}

// SetNoInterrupt sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT in the driver
// ring's flags (§2.7.7).
func (d *Driver) SetNoInterrupt(on bool) error {
	var v uint16
	if on {
		v = virtio.AvailFlagNoInterrupt
	}
	return d.RAM.StoreUint16(d.AvailAddr, v)
}

// SetUsedEvent writes used_event (§2.7.7, with VIRTIO_F_EVENT_IDX): the
// driver wants an interrupt once used idx passes v.
func (d *Driver) SetUsedEvent(v uint16) error {
	return d.RAM.StoreUint16(d.AvailAddr+4+2*guestmem.GPA(d.Size), v)
}

// AvailEvent reads avail_event, which the device writes with
// VIRTIO_F_EVENT_IDX (§2.7.10).
func (d *Driver) AvailEvent() (uint16, error) {
	return d.RAM.LoadUint16(d.UsedAddr + 4 + 8*guestmem.GPA(d.Size))
}

// UsedIdx reads the device's used idx.
func (d *Driver) UsedIdx() (uint16, error) {
	return d.RAM.LoadUint16(d.UsedAddr + 2)
}

// Used returns the used ring entries the device added since the last call,
// in order, and frees the descriptors of the chains they return. It does
// not check them: a test compares them with what it expects.
func (d *Driver) Used() ([]UsedElem, error) {
	idx, err := d.UsedIdx()
	if err != nil {
		return nil, err
	}
	var out []UsedElem
	for ; d.usedSeen != idx; d.usedSeen++ {
		var b [8]byte
		if err := d.RAM.ReadAt(b[:], d.UsedAddr+4+8*guestmem.GPA(d.usedSeen%d.Size)); err != nil {
			return out, err
		}
		e := UsedElem{ID: binary.LittleEndian.Uint32(b[0:]), Len: binary.LittleEndian.Uint32(b[4:])}
		out = append(out, e)
		if descs, ok := d.inflight[uint16(e.ID)]; ok && e.ID < uint32(d.Size) {
			d.free = append(d.free, descs...)
			delete(d.inflight, uint16(e.ID))
		}
	}
	return out, nil
}

// ReadWritable returns the current contents of the writable buffers of the
// last chain posted with this head by Post or PostIndirect, concatenated:
// before or after Used returned it, but before a later Post reuses its
// buffers. Bytes the device did not write read as 0xee.
func (d *Driver) ReadWritable(head uint16) ([]byte, error) {
	ws, ok := d.writable[head]
	if !ok {
		return nil, fmt.Errorf("virtiotest: no chain was posted with head %d", head)
	}
	var out []byte
	for _, w := range ws {
		b := make([]byte, w.Len)
		if err := d.RAM.ReadAt(b, w.Addr); err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}
