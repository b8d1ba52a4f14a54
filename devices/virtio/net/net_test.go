package virtionet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/devices/virtio"
	"kvmlab/guestmem"
)

// ---- fake backend ----------------------------------------------------------

// fakeBackend is an in-memory TAP: frames the test injects come out of
// Read one at a time, frames the device writes are collected.
type fakeBackend struct {
	in      chan []byte   // host → device
	out     chan []byte   // device → host
	closed  chan struct{} // Read returns io.EOF once closed
	readErr chan error    // a Read fails with the error sent here

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed and replaced when the deadline changes
	writeErr error
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		in:      make(chan []byte, 64),
		out:     make(chan []byte, 1024),
		closed:  make(chan struct{}),
		readErr: make(chan error, 1),
		changed: make(chan struct{}),
	}
}

func (b *fakeBackend) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		d, changed := b.deadline, b.changed
		b.mu.Unlock()
		var timeout <-chan time.Time
		if !d.IsZero() {
			wait := time.Until(d)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timeout = time.After(wait)
		}
		select {
		case f := <-b.in:
			return copy(p, f), nil
		case <-changed:
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		case <-b.closed:
			return 0, io.EOF
		case err := <-b.readErr:
			return 0, err
		}
	}
}

func (b *fakeBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	err := b.writeErr
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	b.out <- append([]byte(nil), p...)
	return len(p), nil
}

func (b *fakeBackend) SetReadDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadline = t
	close(b.changed)
	b.changed = make(chan struct{})
	return nil
}

// written returns the frames the device wrote so far.
func (b *fakeBackend) written() [][]byte {
	var fs [][]byte
	for {
		select {
		case f := <-b.out:
			fs = append(fs, f)
		default:
			return fs
		}
	}
}

// ---- fake driver -----------------------------------------------------------

const (
	ramSize  = 1 << 20
	testQLen = 16
	outside  = guestmem.GPA(0x10_0000_0000) // no RAM there
)

// seg is one buffer a test driver puts in a chain.
type seg struct {
	addr  guestmem.GPA
	len   uint32
	write bool
}

// ring is the driver side of one split virtqueue (§2.7) in fake RAM.
type ring struct {
	mem                 *guestmem.Memory
	q                   *virtio.Queue
	desc, avail, used   guestmem.GPA
	next                uint16 // next free descriptor
	availIdx, usedIdx   uint16
	inflight, completed int
}

func newRing(mem *guestmem.Memory, base guestmem.GPA) *ring {
	r := &ring{mem: mem, desc: base, avail: base + 16*testQLen, used: base + 0x800}
	r.q = virtio.NewQueue(QueueSize)
	r.q.Size = testQLen
	r.q.DescAddr, r.q.AvailAddr, r.q.UsedAddr = r.desc, r.avail, r.used
	r.q.Ready = true
	return r
}

func (r *ring) put16(gpa guestmem.GPA, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	if err := r.mem.WriteAt(b[:], gpa); err != nil {
		panic(err)
	}
}

func (r *ring) get32(gpa guestmem.GPA) uint32 {
	var b [4]byte
	if err := r.mem.ReadAt(b[:], gpa); err != nil {
		panic(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

// post makes a chain of segs available and returns its head.
func (r *ring) post(segs ...seg) uint16 {
	head := r.next
	for i, s := range segs {
		var d [16]byte
		idx := r.next
		r.next = (r.next + 1) % testQLen
		binary.LittleEndian.PutUint64(d[0:], uint64(s.addr))
		binary.LittleEndian.PutUint32(d[8:], s.len)
		var flags uint16
		if s.write {
			flags |= 2 // VIRTQ_DESC_F_WRITE
		}
		if i < len(segs)-1 {
			flags |= 1 // VIRTQ_DESC_F_NEXT
			binary.LittleEndian.PutUint16(d[14:], r.next)
		}
		binary.LittleEndian.PutUint16(d[12:], flags)
		if err := r.mem.WriteAt(d[:], r.desc+16*guestmem.GPA(idx)); err != nil {
			panic(err)
		}
	}
	r.put16(r.avail+4+2*guestmem.GPA(r.availIdx%testQLen), head)
	r.availIdx++
	// Publish with an atomic store, as a driver's virtio_store_mb does:
	// the entry is in memory before the index that makes it visible.
	if err := r.mem.StoreUint16(r.avail+2, r.availIdx); err != nil {
		panic(err)
	}
	r.inflight++
	return head
}

type usedElem struct {
	id, len uint32
}

// reap returns the used entries the device added since the last call.
func (r *ring) reap() []usedElem {
	var out []usedElem
	idx, err := r.mem.LoadUint16(r.used + 2)
	if err != nil {
		panic(err)
	}
	for ; r.usedIdx != idx; r.usedIdx++ {
		e := r.used + 4 + 8*guestmem.GPA(r.usedIdx%testQLen)
		out = append(out, usedElem{r.get32(e), r.get32(e + 4)})
		r.completed++
	}
	return out
}

// ---- harness ---------------------------------------------------------------

type harness struct {
	t      testing.TB
	ram    []byte
	mem    *guestmem.Memory
	rx, tx *ring
	be     *fakeBackend
	dev    *Device
	irq    chan int
	fails  chan error
	env    *virtio.Env
	onFail func(error) // replaces sending on fails when set
	// setup, when set, runs after the rings are made and before
	// Activate: the driver's work before DRIVER_OK.
	setup func()
}

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}

// Data buffers live from dataBase on, rings below it.
const dataBase = guestmem.GPA(0x10000)

func newHarness(t testing.TB) *harness {
	h := &harness{t: t, ram: make([]byte, ramSize), be: newFakeBackend()}
	var err error
	h.mem, err = guestmem.FromRegions(guestmem.Region{Base: 0, Data: h.ram})
	if err != nil {
		t.Fatal(err)
	}
	h.dev = New(h.be, testMAC)
	return h
}

// activate gives the device fresh queues and callbacks.
func (h *harness) activate() {
	h.t.Helper()
	h.rx, h.tx = newRing(h.mem, 0x1000), newRing(h.mem, 0x2000)
	clear(h.ram[:dataBase])
	h.irq = make(chan int, 4096)
	h.fails = make(chan error, 16)
	h.env = &virtio.Env{
		Mem:       h.mem,
		Queues:    []*virtio.Queue{h.rx.q, h.tx.q},
		Features:  1<<virtio.FeatureVersion1 | h.dev.Features(),
		Interrupt: func(q int) { h.irq <- q },
		Fail:      func(err error) { h.fails <- err },
	}
	if h.onFail != nil {
		h.env.Fail = h.onFail
	}
	if h.setup != nil {
		h.setup()
	}
	if err := h.dev.Activate(h.env); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(h.dev.Reset)
}

// waitIRQ waits for an interrupt on queue q.
func (h *harness) waitIRQ(q int) {
	h.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got := <-h.irq:
			if got == q {
				return
			}
		case err := <-h.fails:
			h.t.Fatalf("device failed: %v", err)
		case <-timeout:
			h.t.Fatalf("no interrupt on queue %d", q)
		}
	}
}

// waitStalls waits until the receive path has waited for buffers n times.
func (h *harness) waitStalls(n uint64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.dev.Stats().RxStalls < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("receive path never waited for buffers (%d of %d)", h.dev.Stats().RxStalls, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitFail waits for env.Fail.
func (h *harness) waitFail() error {
	h.t.Helper()
	select {
	case err := <-h.fails:
		return err
	case <-time.After(5 * time.Second):
		h.t.Fatal("the device did not fail")
		return nil
	}
}

// ethFrame is a broadcast frame of n bytes (n >= 14) with a recognisable
// payload.
func ethFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 1, 2, 3, 0x88, 0xb5})
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

// withHeader puts a zero virtio_net_hdr in front of frame.
func withHeader(frame []byte) []byte { return append(make([]byte, HeaderSize), frame...) }

// ---- tests -----------------------------------------------------------------

func TestIdentity(t *testing.T) {
	d := New(newFakeBackend(), testMAC)
	if d.Type() != virtio.TypeNet {
		t.Errorf("Type() = %v", d.Type())
	}
	if want := uint64(1<<0 | 1<<5 | 1<<11 | 1<<12 | 1<<16); d.Features() != want {
		t.Errorf("Features() = %#x, want CSUM|MAC|HOST_TSO4|HOST_TSO6|STATUS %#x (§5.1.3)", d.Features(), want)
	}
	if got := d.QueueSizes(); len(got) != 2 || got[0] != 256 || got[1] != 256 {
		t.Errorf("QueueSizes() = %v, want [256 256]", got)
	}
	if !bytes.Equal(d.MAC(), testMAC) {
		t.Errorf("MAC() = %v", d.MAC())
	}
}

func TestMAC(t *testing.T) {
	for i := 0; i < 20; i++ {
		m := New(newFakeBackend(), nil).MAC()
		if err := CheckMAC(m); err != nil {
			t.Fatal(err)
		}
		if m[0] != 0x52 || m[1] != 0x54 || m[2] != 0 || m[0]&2 == 0 {
			t.Fatalf("random MAC %v is not 52:54:00:xx:xx:xx", m)
		}
	}
	for _, tc := range []struct {
		mac net.HardwareAddr
		ok  bool
	}{
		{testMAC, true},
		{net.HardwareAddr{2, 0, 0, 0, 0, 1}, true},
		{net.HardwareAddr{1, 0, 0, 0, 0, 1}, false}, // multicast
		{net.HardwareAddr{0, 0, 0, 0, 0, 0}, false},
		{net.HardwareAddr{2, 0, 0, 0, 0}, false},
		{net.HardwareAddr{2, 0, 0, 0, 0, 0, 0, 1}, false}, // EUI-64
	} {
		if err := CheckMAC(tc.mac); (err == nil) != tc.ok {
			t.Errorf("CheckMAC(%v) = %v", tc.mac, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("New accepted a multicast MAC")
		}
	}()
	New(newFakeBackend(), net.HardwareAddr{1, 2, 3, 4, 5, 6})
}

// §5.1.4: mac at 0, status at 6, max_virtqueue_pairs at 8, zero beyond.
func TestConfig(t *testing.T) {
	d := New(newFakeBackend(), testMAC)
	want := make([]byte, 64)
	copy(want, testMAC)
	want[6] = StatusLinkUp
	want[8] = 1
	for _, width := range []int{1, 2, 4, 8} {
		for off := 0; off+width <= len(want); off++ {
			got := make([]byte, width)
			for i := range got {
				got[i] = 0xaa // must be overwritten
			}
			d.ReadConfig(uint64(off), got)
			if !bytes.Equal(got, want[off:off+width]) {
				t.Errorf("ReadConfig(%d, %d bytes) = % x, want % x", off, width, got, want[off:off+width])
			}
		}
	}
	t.Run("writes ignored", func(t *testing.T) {
		d.WriteConfig(0, []byte{1, 2, 3, 4, 5, 6, 0, 0})
		got := make([]byte, 10)
		d.ReadConfig(0, got)
		if !bytes.Equal(got, want[:10]) {
			t.Errorf("after WriteConfig: % x", got)
		}
	})
	t.Run("offset wraps", func(t *testing.T) {
		got := []byte{0xaa, 0xaa, 0xaa, 0xaa}
		d.ReadConfig(^uint64(0)-1, got) // bytes at 2^64-2, 2^64-1, then "0", "1"
		if !bytes.Equal(got, make([]byte, 4)) {
			t.Errorf("ReadConfig across 2^64 = % x, want zeros", got)
		}
	})
}

func TestActivateIncomplete(t *testing.T) {
	h := newHarness(t)
	q := virtio.NewQueue(QueueSize)
	ok := func(int) {}
	fail := func(error) {}
	for name, env := range map[string]*virtio.Env{
		"nil":          nil,
		"no memory":    {Queues: []*virtio.Queue{q, q}, Interrupt: ok, Fail: fail},
		"one queue":    {Mem: h.mem, Queues: []*virtio.Queue{q}, Interrupt: ok, Fail: fail},
		"nil queue":    {Mem: h.mem, Queues: []*virtio.Queue{q, nil}, Interrupt: ok, Fail: fail},
		"no interrupt": {Mem: h.mem, Queues: []*virtio.Queue{q, q}, Fail: fail},
		"no fail":      {Mem: h.mem, Queues: []*virtio.Queue{q, q}, Interrupt: ok},
	} {
		if err := h.dev.Activate(env); err == nil {
			t.Errorf("%s: Activate succeeded", name)
			h.dev.Reset()
		}
	}
	h.activate()
	if err := h.dev.Activate(h.env); err == nil {
		t.Error("second Activate without Reset succeeded")
	}
}

// §5.1.6.2: each transmit chain is a header and one frame.
func TestTransmit(t *testing.T) {
	frame := ethFrame(100, 7)
	big := ethFrame(MaxFrame, 1)
	hdr := func(mod func([]byte)) []byte {
		p := withHeader(frame)
		mod(p)
		return p
	}
	// off: features without any offload, as a driver that negotiated
	// none; tso4: CSUM and HOST_TSO4 only.
	const off = 1<<virtio.FeatureVersion1 | 1<<FeatureMAC | 1<<FeatureStatus
	const tso4 = off | 1<<FeatureCsum | 1<<FeatureHostTSO4
	// offload writes an offload header: flags, gso_type, hdr_len,
	// gso_size, csum_start, csum_offset.
	offload := func(flags, gso byte, hdrLen, gsoSize, start, offset uint16) []byte {
		return hdr(func(p []byte) {
			p[0], p[1] = flags, gso
			binary.LittleEndian.PutUint16(p[2:], hdrLen)
			binary.LittleEndian.PutUint16(p[4:], gsoSize)
			binary.LittleEndian.PutUint16(p[6:], start)
			binary.LittleEndian.PutUint16(p[8:], offset)
		})
	}
	tcp4 := offload(hdrFlagNeedsCsum, hdrGSOTCPv4, 54, 1448, 34, 16)
	cases := []struct {
		name    string
		feat    uint64 // negotiated features; 0: all the device offers
		packet  []byte // header and frame as the driver puts them in RAM
		split   []int  // buffer lengths (the rest in a last buffer)
		send    []byte // what the backend must see, nil: dropped
		dropped bool
	}{
		{name: "one buffer", packet: withHeader(frame), send: withHeader(frame)},
		{name: "header alone then frame", packet: withHeader(frame), split: []int{HeaderSize}, send: withHeader(frame)},
		{name: "header split oddly", packet: withHeader(frame), split: []int{5, 0, 9, 1}, send: withHeader(frame)},
		{name: "num_buffers cleared", packet: hdr(func(p []byte) { p[10], p[11] = 3, 0 }), send: withHeader(frame)},
		{name: "DATA_VALID cleared", packet: hdr(func(p []byte) { p[0] = 2 }), send: withHeader(frame)},
		{name: "largest frame", packet: withHeader(big), split: []int{4096, 65536 - 4096}, send: withHeader(big)},
		{name: "longer than MaxFrame", packet: withHeader(ethFrame(MaxFrame+1, 1)), dropped: true},
		{name: "shorter than an Ethernet header", packet: withHeader(frame[:13]), dropped: true},
		{name: "NEEDS_CSUM without CSUM", feat: off, packet: offload(hdrFlagNeedsCsum, 0, 0, 0, 34, 16), dropped: true},
		{name: "GSO without HOST_TSO4", feat: off, packet: tcp4, dropped: true},
		{name: "partial checksum", packet: offload(hdrFlagNeedsCsum, 0, 0, 0, 34, 16), send: offload(hdrFlagNeedsCsum, 0, 0, 0, 34, 16)},
		{name: "checksum field past the frame", packet: offload(hdrFlagNeedsCsum, 0, 0, 0, 90, 9), dropped: true},
		{name: "TCP/IPv4 segment", feat: tso4, packet: tcp4, send: tcp4},
		{name: "TCP/IPv6 segment without HOST_TSO6", feat: tso4, packet: offload(hdrFlagNeedsCsum, hdrGSOTCPv6, 74, 1428, 54, 16), dropped: true},
		{name: "TCP/IPv6 segment", packet: offload(hdrFlagNeedsCsum, hdrGSOTCPv6, 74, 1428, 54, 16), send: offload(hdrFlagNeedsCsum, hdrGSOTCPv6, 74, 1428, 54, 16)},
		{name: "segment without NEEDS_CSUM", packet: offload(0, hdrGSOTCPv4, 54, 1448, 34, 16), dropped: true},
		{name: "segment size 0", packet: offload(hdrFlagNeedsCsum, hdrGSOTCPv4, 54, 0, 34, 16), dropped: true},
		{name: "header length past the frame", packet: offload(hdrFlagNeedsCsum, hdrGSOTCPv4, 200, 1448, 34, 16), dropped: true},
		{name: "UDP segmentation (not offered)", packet: offload(hdrFlagNeedsCsum, 3, 42, 1000, 34, 6), dropped: true},
		{name: "ECN (not offered)", packet: offload(hdrFlagNeedsCsum, hdrGSOTCPv4|hdrGSOECN, 54, 1448, 34, 16), dropped: true},
		{name: "stale offload fields zeroed", packet: offload(0, 0, 54, 1448, 34, 16), send: withHeader(frame)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.activate()
			if tc.feat != 0 {
				h.env.Features = tc.feat // read by the device at each transmit
			}
			copy(h.ram[dataBase:], tc.packet)
			var segs []seg
			addr, rest := dataBase, uint32(len(tc.packet))
			for _, n := range tc.split {
				segs = append(segs, seg{addr: addr, len: uint32(n)})
				addr += guestmem.GPA(n)
				rest -= uint32(n)
			}
			segs = append(segs, seg{addr: addr, len: rest})
			head := h.tx.post(segs...)
			h.dev.Notify(TXQueue)
			h.waitIRQ(TXQueue)
			if u := h.tx.reap(); len(u) != 1 || u[0] != (usedElem{uint32(head), 0}) {
				t.Errorf("used = %v, want [{%d 0}]", u, head)
			}
			got := h.be.written()
			st := h.dev.Stats()
			if tc.send == nil {
				if len(got) != 0 || st.TxDropped != 1 || st.TxPackets != 0 {
					t.Errorf("sent %d frames, stats %+v; want the frame dropped", len(got), st)
				}
				return
			}
			if len(got) != 1 || !bytes.Equal(got[0], tc.send) {
				t.Fatalf("backend got %d frames, want the header and frame", len(got))
			}
			if st.TxPackets != 1 || st.TxBytes != uint64(len(tc.send)-HeaderSize) || st.TxDropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestTransmitBatch(t *testing.T) {
	h := newHarness(t)
	h.activate()
	for i := 0; i < 10; i++ {
		p := withHeader(ethFrame(60+i, byte(i)))
		a := dataBase + guestmem.GPA(i)*0x1000
		copy(h.ram[a:], p)
		h.tx.post(seg{addr: a, len: uint32(len(p))})
	}
	h.dev.Notify(TXQueue)
	h.waitIRQ(TXQueue)
	if u := h.tx.reap(); len(u) != 10 {
		t.Errorf("%d used entries, want 10", len(u))
	}
	got := h.be.written()
	for i, f := range got {
		if !bytes.Equal(f, withHeader(ethFrame(60+i, byte(i)))) {
			t.Errorf("frame %d differs", i)
		}
	}
	if len(got) != 10 {
		t.Errorf("%d frames sent, want 10", len(got))
	}
	select {
	case q := <-h.irq:
		t.Errorf("second interrupt (queue %d) for one batch", q)
	default:
	}
}

func TestTransmitBackendError(t *testing.T) {
	h := newHarness(t)
	h.activate()
	h.be.writeErr = errors.New("host interface down")
	p := withHeader(ethFrame(60, 0))
	copy(h.ram[dataBase:], p)
	h.tx.post(seg{addr: dataBase, len: uint32(len(p))})
	h.dev.Notify(TXQueue)
	h.waitIRQ(TXQueue) // the chain still goes back
	if st := h.dev.Stats(); st.TxErrors != 1 || st.TxPackets != 0 {
		t.Errorf("stats %+v, want one tx error", st)
	}
}

// rxFrame reads the header and frame the device put at gpa.
func (h *harness) rxFrame(gpa guestmem.GPA, n uint32) ([]byte, []byte) {
	p := h.ram[gpa : gpa+guestmem.GPA(n)]
	return p[:HeaderSize], p[HeaderSize:]
}

// §5.1.6.3, §5.1.6.4: one frame per chain, num_buffers = 1.
func TestReceive(t *testing.T) {
	wantHdr := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	cases := []struct {
		name  string
		frame []byte
		hdr   func([]byte) // changes to the backend's header
		bufs  []uint32     // writable buffer lengths
		drop  bool
	}{
		{name: "1526-byte buffer", frame: ethFrame(1514, 3), bufs: []uint32{1526}},
		{name: "exact fit", frame: ethFrame(60, 3), bufs: []uint32{72}},
		{name: "header in its own buffer", frame: ethFrame(600, 3), bufs: []uint32{12, 300, 0, 1000}},
		{name: "header split", frame: ethFrame(600, 3), bufs: []uint32{5, 7, 2000}},
		{name: "DATA_VALID from the host cleared", frame: ethFrame(60, 3), hdr: func(p []byte) { p[0] = 2 }, bufs: []uint32{1526}},
		{name: "buffer one byte short", frame: ethFrame(1514, 3), bufs: []uint32{1525}, drop: true},
		{name: "buffer shorter than the header", frame: ethFrame(60, 3), bufs: []uint32{10}, drop: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.activate()
			var segs []seg
			a := dataBase
			for _, n := range tc.bufs {
				segs = append(segs, seg{addr: a, len: n, write: true})
				a += guestmem.GPA(n)
			}
			head := h.rx.post(segs...)
			h.dev.Notify(RXQueue)
			p := withHeader(tc.frame)
			if tc.hdr != nil {
				tc.hdr(p)
			}
			h.be.in <- p
			h.waitIRQ(RXQueue)
			u := h.rx.reap()
			st := h.dev.Stats()
			if tc.drop {
				if len(u) != 1 || u[0] != (usedElem{uint32(head), 0}) || st.RxDropped != 1 || st.RxPackets != 0 {
					t.Errorf("used %v, stats %+v; want the chain back empty and a drop", u, st)
				}
				return
			}
			n := uint32(HeaderSize + len(tc.frame))
			if len(u) != 1 || u[0] != (usedElem{uint32(head), n}) {
				t.Fatalf("used = %v, want [{%d %d}]", u, head, n)
			}
			// Reassemble what the driver sees across its buffers.
			var got []byte
			for _, s := range segs {
				got = append(got, h.ram[s.addr:s.addr+guestmem.GPA(s.len)]...)
			}
			got = got[:n]
			if !bytes.Equal(got[:HeaderSize], wantHdr) {
				t.Errorf("header % x, want % x", got[:HeaderSize], wantHdr)
			}
			if !bytes.Equal(got[HeaderSize:], tc.frame) {
				t.Error("frame differs")
			}
			if st.RxPackets != 1 || st.RxBytes != uint64(len(tc.frame)) || st.RxDropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// Host frames the driver cannot take are dropped without using a chain.
func TestReceiveBadHostFrame(t *testing.T) {
	h := newHarness(t)
	h.activate()
	head := h.rx.post(seg{addr: dataBase, len: 1526, write: true})
	h.dev.Notify(RXQueue)
	csum := withHeader(ethFrame(60, 0))
	csum[0] = hdrFlagNeedsCsum
	gso := withHeader(ethFrame(60, 0))
	gso[1] = 4
	h.be.in <- csum
	h.be.in <- gso
	h.be.in <- make([]byte, HeaderSize+5) // runt
	good := withHeader(ethFrame(70, 9))
	h.be.in <- good
	h.waitIRQ(RXQueue)
	if u := h.rx.reap(); len(u) != 1 || u[0] != (usedElem{uint32(head), uint32(len(good))}) {
		t.Errorf("used = %v", u)
	}
	if st := h.dev.Stats(); st.RxDropped != 3 || st.RxPackets != 1 {
		t.Errorf("stats %+v, want 3 dropped, 1 delivered", st)
	}
}

// A frame that arrives before the driver posts a buffer waits for one; it
// is not dropped.
func TestReceiveWaitsForBuffers(t *testing.T) {
	h := newHarness(t)
	h.activate()
	frame := ethFrame(200, 5)
	h.be.in <- withHeader(frame)
	h.be.in <- withHeader(ethFrame(300, 6))
	// The stall counter is also what makes the test race-free: the
	// device bumps it (an atomic) after its last look at the ring, so the
	// driver's writes below happen after that look.
	h.waitStalls(1)
	select {
	case q := <-h.irq:
		t.Fatalf("interrupt on queue %d with no buffers posted", q)
	case <-time.After(20 * time.Millisecond):
	}
	if st := h.dev.Stats(); st.RxDropped != 0 || st.RxPackets != 0 || st.RxStalls != 1 {
		t.Fatalf("stats %+v before buffers were posted, want one stall", st)
	}
	head := h.rx.post(seg{addr: dataBase, len: 1526, write: true})
	h.dev.Notify(RXQueue)
	h.waitIRQ(RXQueue)
	if u := h.rx.reap(); len(u) != 1 || u[0] != (usedElem{uint32(head), uint32(HeaderSize + len(frame))}) {
		t.Fatalf("used = %v", u)
	}
	if _, got := h.rxFrame(dataBase, uint32(HeaderSize+len(frame))); !bytes.Equal(got, frame) {
		t.Error("the first frame is not the one delivered")
	}
	h.waitStalls(2) // the second frame is waiting too
	head = h.rx.post(seg{addr: dataBase + 0x1000, len: 1526, write: true})
	h.dev.Notify(RXQueue)
	h.waitIRQ(RXQueue)
	if u := h.rx.reap(); len(u) != 1 || u[0] != (usedElem{uint32(head), HeaderSize + 300}) {
		t.Fatalf("used = %v", u)
	}
}

// A broken driver puts the device into DEVICE_NEEDS_RESET; it never
// panics, and it stops touching the queues.
func TestHostileChains(t *testing.T) {
	frame := withHeader(ethFrame(60, 0))
	cases := []struct {
		name string
		q    int
		segs []seg
	}{
		{"tx writable buffer", TXQueue, []seg{{addr: dataBase, len: uint32(len(frame)), write: true}}},
		{"tx readable then writable", TXQueue, []seg{{addr: dataBase, len: uint32(len(frame))}, {addr: dataBase + 0x1000, len: 10, write: true}}},
		{"tx buffer outside RAM", TXQueue, []seg{{addr: outside, len: uint32(len(frame))}}},
		{"tx buffer past the end of RAM", TXQueue, []seg{{addr: ramSize - 10, len: uint32(len(frame))}}},
		{"tx buffer wrapping 2^64", TXQueue, []seg{{addr: ^guestmem.GPA(0) - 5, len: 100}}},
		{"tx chain shorter than the header", TXQueue, []seg{{addr: dataBase, len: HeaderSize - 1}}},
		{"tx empty chain", TXQueue, []seg{{addr: dataBase, len: 0}}},
		{"rx readable buffer", RXQueue, []seg{{addr: dataBase, len: 1526}}},
		{"rx buffer outside RAM", RXQueue, []seg{{addr: outside, len: 1526, write: true}}},
		{"rx second buffer outside RAM", RXQueue, []seg{{addr: dataBase, len: 12, write: true}, {addr: outside, len: 1514, write: true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.activate()
			copy(h.ram[dataBase:], frame)
			r := h.tx
			if tc.q == RXQueue {
				r = h.rx
			}
			r.post(tc.segs...)
			h.dev.Notify(tc.q)
			if tc.q == RXQueue {
				h.be.in <- frame
			}
			err := h.waitFail()
			if !errors.Is(err, virtio.ErrNeedsReset) {
				t.Errorf("Fail(%v): does not wrap virtio.ErrNeedsReset", err)
			}
			// Failed: later chains are left alone until Reset.
			h.tx.post(seg{addr: dataBase, len: uint32(len(frame))})
			h.dev.Notify(TXQueue)
			h.be.in <- frame
			h.rx.post(seg{addr: dataBase + 0x1000, len: 1526, write: true})
			h.dev.Notify(RXQueue)
			time.Sleep(20 * time.Millisecond)
			h.tx.reap()
			h.rx.reap()
			if h.tx.completed+h.rx.completed != 0 {
				t.Errorf("%d chains completed after Fail", h.tx.completed+h.rx.completed)
			}
			select {
			case err := <-h.fails:
				t.Errorf("Fail called twice: %v", err)
			default:
			}
			if len(h.be.written()) != 0 {
				t.Error("a frame was sent after Fail")
			}
		})
	}
}

// A broken ring (a head index beyond the queue size) fails through Pop.
func TestHostileRing(t *testing.T) {
	for _, q := range []int{RXQueue, TXQueue} {
		h := newHarness(t)
		h.activate()
		r := []*ring{h.rx, h.tx}[q]
		r.put16(r.avail+4, testQLen+3) // head out of range
		if err := h.mem.StoreUint16(r.avail+2, 1); err != nil {
			t.Fatal(err)
		}
		if q == RXQueue {
			h.be.in <- withHeader(ethFrame(60, 0))
		}
		h.dev.Notify(q)
		if err := h.waitFail(); !errors.Is(err, virtio.ErrNeedsReset) {
			t.Errorf("queue %d: Fail(%v)", q, err)
		}
	}
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReset(t *testing.T) {
	base := runtime.NumGoroutine()
	h := newHarness(t)
	for round := 0; round < 3; round++ {
		h.activate()
		if runtime.NumGoroutine() <= base {
			t.Fatal("Activate started no receive goroutine")
		}
		switch round {
		case 1: // Reset while the goroutine holds a frame and waits for buffers
			h.be.in <- withHeader(ethFrame(60, 0))
			h.waitStalls(1)
		case 2: // Reset with a frame delivered and the goroutine back in Read
			h.rx.post(seg{addr: dataBase, len: 1526, write: true})
			h.dev.Notify(RXQueue)
			h.be.in <- withHeader(ethFrame(60, 0))
			h.waitIRQ(RXQueue)
		}
		done := make(chan struct{})
		go func() { h.dev.Reset(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Reset did not return")
		}
		waitGoroutines(t, base)
		h.dev.Reset() // twice is harmless
		// Reset forgot the env: notifications do nothing.
		h.tx.post(seg{addr: dataBase, len: 100})
		h.dev.Notify(TXQueue)
		h.dev.Notify(RXQueue)
		if u := h.tx.reap(); len(u) != 0 {
			t.Fatalf("round %d: device served a queue after Reset", round)
		}
	}
	if st := h.dev.Stats(); st.RxDropped != 1 || st.RxPackets != 1 {
		t.Errorf("stats %+v, want the held frame dropped by Reset", st)
	}
	// And it still works after all that.
	h.activate()
	h.rx.post(seg{addr: dataBase, len: 1526, write: true})
	h.dev.Notify(RXQueue)
	h.be.in <- withHeader(ethFrame(80, 0))
	h.waitIRQ(RXQueue)
	if u := h.rx.reap(); len(u) != 1 || u[0].len != HeaderSize+80 {
		t.Errorf("used after re-activation: %v", u)
	}
}

// A transport may answer Fail with a Reset from inside the callback; that
// must not deadlock on either path.
func TestFailThenResetInCallback(t *testing.T) {
	for _, q := range []int{RXQueue, TXQueue} {
		base := runtime.NumGoroutine()
		h := newHarness(t)
		done := make(chan struct{})
		h.onFail = func(error) { h.dev.Reset(); close(done) }
		h.activate()
		frame := withHeader(ethFrame(60, 0))
		if q == RXQueue {
			h.rx.post(seg{addr: outside, len: 1526, write: true})
			h.be.in <- frame
		} else {
			h.tx.post(seg{addr: outside, len: uint32(len(frame))})
		}
		h.dev.Notify(q)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("queue %d: Reset inside Fail deadlocked", q)
		}
		waitGoroutines(t, base)
	}
}

// The receive goroutine stops when the backend goes away; Reset still
// returns.
func TestBackendClosed(t *testing.T) {
	h := newHarness(t)
	h.activate()
	close(h.be.closed)
	time.Sleep(10 * time.Millisecond)
	h.dev.Reset()
	if st := h.dev.Stats(); st.RxErrors != 1 {
		t.Errorf("stats %+v, want one rx error", st)
	}
}

// A transient backend error is counted and the device keeps receiving.
func TestBackendReadError(t *testing.T) {
	h := newHarness(t)
	h.setup = func() { h.rx.post(seg{addr: dataBase, len: 1526, write: true}) }
	h.activate()
	h.be.readErr <- errors.New("no buffer space available")
	for deadline := time.Now().Add(5 * time.Second); h.dev.Stats().RxErrors == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("read error not counted")
		}
	}
	h.be.in <- withHeader(ethFrame(60, 0))
	h.waitIRQ(RXQueue)
	if st := h.dev.Stats(); st.RxErrors != 1 || st.RxPackets != 1 {
		t.Errorf("stats %+v, want one error, then the frame", st)
	}
}

// Notify for both queues from many goroutines at once (run with -race).
func TestConcurrentNotify(t *testing.T) {
	h := newHarness(t)
	h.activate()
	const frames = 8
	for i := 0; i < frames; i++ {
		a := dataBase + guestmem.GPA(i)*0x1000
		p := withHeader(ethFrame(64, byte(i)))
		copy(h.ram[a:], p)
		h.tx.post(seg{addr: a, len: uint32(len(p))})
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				h.dev.Notify(TXQueue)
				h.dev.Notify(RXQueue)
				h.dev.Notify(7) // no such queue
			}
		}()
	}
	wg.Wait()
	if n := len(h.be.written()); n != frames {
		t.Errorf("%d frames sent, want %d", n, frames)
	}
}

// ---- fuzzing ---------------------------------------------------------------

// Fuzz RAM: region A at 0 (rings and data), a hole, region B. Both are
// carved out of one allocation with guard bytes around them, which must
// never change: the device reaches RAM only through kvmlab/guestmem.
const (
	fuzzASize = 0x40000
	fuzzBBase = 0x80000
	fuzzBSize = 0x20000
	fuzzGuard = 64
)

type fuzzRAM struct {
	backing []byte
	a, b    []byte
}

func newFuzzHarness(t testing.TB) (*harness, *fuzzRAM) {
	r := &fuzzRAM{backing: make([]byte, fuzzASize+fuzzBSize+3*fuzzGuard)}
	r.a = r.backing[fuzzGuard : fuzzGuard+fuzzASize : fuzzGuard+fuzzASize]
	bStart := 2*fuzzGuard + fuzzASize
	r.b = r.backing[bStart : bStart+fuzzBSize : bStart+fuzzBSize]
	for _, g := range r.guards() {
		for i := range g {
			g[i] = 0xee
		}
	}
	mem, err := guestmem.FromRegions(guestmem.Region{Base: 0, Data: r.a}, guestmem.Region{Base: fuzzBBase, Data: r.b})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ram: r.a, mem: mem, be: newFakeBackend()}
	h.dev = New(h.be, testMAC)
	return h, r
}

// guards returns the bytes around the two regions.
func (r *fuzzRAM) guards() [][]byte {
	return [][]byte{
		r.backing[:fuzzGuard],
		r.backing[fuzzGuard+fuzzASize : 2*fuzzGuard+fuzzASize],
		r.backing[2*fuzzGuard+fuzzASize+fuzzBSize:],
	}
}

// fuzzPattern fills the data area of transmit fuzzing: bytes that differ
// from one offset to the next, so a frame assembled from the wrong place
// shows.
var fuzzPattern = func() []byte {
	p := make([]byte, fuzzASize-dataBase)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}()

func (r *fuzzRAM) checkGuards(t testing.TB) {
	t.Helper()
	for _, g := range r.guards() {
		for _, v := range g {
			if v != 0xee {
				t.Fatal("a guard byte outside guest RAM changed")
			}
		}
	}
}

// decodeSeg turns 5 fuzz bytes into a buffer:
//
//	kind bits 0-1: 0 data area of A, 1 region B, 2 just below the end of A
//	               (runs into the hole when long), 3 far outside RAM
//	kind bit 2:    device-writable
//	kind bit 3:    length times 4 (beyond MaxFrame)
//	kind bit 4:    the driver zeroes the first 12 bytes (a clean header)
//	off:           16-bit offset, len: 16-bit length
func decodeSeg(h *harness, in []byte) (seg, bool) {
	kind := in[0]
	off := guestmem.GPA(in[1])<<8 | guestmem.GPA(in[2])
	n := uint32(in[3])<<8 | uint32(in[4])
	if kind&8 != 0 {
		n <<= 2
	}
	var a guestmem.GPA
	switch kind & 3 {
	case 0:
		a = dataBase + off
	case 1:
		a = fuzzBBase + off
	case 2:
		a = fuzzASize - off
	case 3:
		a = ^guestmem.GPA(0) - off
	}
	s := seg{addr: a, len: n, write: kind&4 != 0}
	if kind&16 != 0 {
		if p, err := h.mem.Slice(a, uint64(min(n, HeaderSize))); err == nil {
			clear(p)
		}
	}
	return s, true
}

// bytesOf returns the bytes of the non-empty segs, or ok false when one is
// not in RAM.
func bytesOf(mem *guestmem.Memory, segs []seg) (out []byte, ok bool) {
	for _, s := range segs {
		if s.len == 0 {
			continue
		}
		p, err := mem.Slice(s.addr, uint64(s.len))
		if err != nil {
			return nil, false
		}
		out = append(out, p...)
	}
	return out, true
}

// FuzzNetTX posts transmit chains decoded from random bytes and checks every
// outcome against a model: the exact frame sent, a drop, or
// DEVICE_NEEDS_RESET for a chain that breaks §5.1.6.2 or points outside RAM.
//
//	batch:  1 byte, chains = 1 + b&3, then per chain
//	chain:  1 byte, buffers = 1 + b&3, then 5 bytes per buffer (decodeSeg)
//
// The batch is sent with one Notify(1).
func FuzzNetTX(f *testing.F) {
	clean := func(n uint16) []byte { // one clean header+frame buffer in A
		return []byte{0x10, 0, 0, byte(n >> 8), byte(n)}
	}
	f.Add(append([]byte{0, 0}, clean(72)...))
	f.Add(append(append([]byte{1, 0}, clean(100)...), append([]byte{1}, append(clean(12), 0x00, 0x01, 0x00, 0x00, 0x40)...)...))
	f.Add([]byte{0, 0, 0x14, 0, 0, 0, 100})     // writable
	f.Add([]byte{0, 0, 0x13, 0, 0, 0, 100})     // outside RAM
	f.Add([]byte{0, 0, 0x12, 0, 0x10, 0, 0x40}) // runs into the hole
	f.Add([]byte{0, 0, 0x18, 0, 0, 0xff, 0xff}) // too long
	f.Add([]byte{0, 3, 0x10, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0x10, 0, 0, 0x20})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, ram := newFuzzHarness(t)
		copy(h.ram[dataBase:], fuzzPattern)
		h.activate()
		defer h.dev.Reset()
		type expect struct {
			fail, mayFail, drop bool
			frame               []byte
		}
		sent := 0
		for batch := 0; batch < 8 && len(in) > 0; batch++ {
			nChains := 1 + int(in[0]&3)
			in = in[1:]
			// Decode the whole batch first: decoding may write clean
			// headers into RAM that an earlier chain's buffer covers.
			var chains [][]seg
			for c := 0; c < nChains && len(in) > 0; c++ {
				nBufs := 1 + int(in[0]&3)
				in = in[1:]
				var segs []seg
				for b := 0; b < nBufs && len(in) >= 5; b++ {
					s, _ := decodeSeg(h, in)
					segs = append(segs, s)
					in = in[5:]
				}
				if len(segs) == 0 {
					break
				}
				chains = append(chains, segs)
			}
			var want []expect
			for _, segs := range chains {
				var e expect
				data, inRAM := bytesOf(h.mem, segs)
				for _, s := range segs {
					// The queue leaves empty buffers out of the chain,
					// but they count for its readable-before-writable
					// rule.
					e.fail = e.fail || (s.write && s.len > 0)
					e.mayFail = e.mayFail || s.len == 0
				}
				n := len(data)
				switch {
				case e.fail || !inRAM || n < HeaderSize:
					e.fail = true
				case n > HeaderSize+MaxFrame || n < HeaderSize+minFrame:
					e.drop = true
				default:
					// The offload header rules are TestTransmit's
					// table; here they only decide what to expect.
					hdr := append([]byte(nil), data[:HeaderSize]...)
					if txHeader(hdr, n-HeaderSize, h.env.Features) {
						e.frame = append(hdr, data[HeaderSize:]...)
					} else {
						e.drop = true
					}
				}
				h.tx.post(segs...)
				want = append(want, e)
			}
			if len(want) == 0 {
				break
			}
			h.dev.Notify(TXQueue)
			used := h.tx.reap()
			got := h.be.written()
			var failed error
			select {
			case failed = <-h.fails:
			default:
			}
			done := len(want)
			if failed != nil {
				done = len(used)
				if done >= len(want) || (!want[done].fail && !want[done].mayFail) {
					t.Fatalf("Fail(%v) after %d of %d chains, model %+v", failed, done, len(want), want)
				}
			} else if len(used) != len(want) {
				t.Fatalf("%d chains returned, want %d", len(used), len(want))
			}
			for i := 0; i < done; i++ {
				e := want[i]
				if e.fail {
					t.Fatalf("chain %d should have failed the device", i)
				}
				if used[i].len != 0 {
					t.Fatalf("transmit chain returned with %d bytes written", used[i].len)
				}
				if e.frame != nil {
					if len(got) == 0 || !bytes.Equal(got[0], e.frame) {
						t.Fatalf("chain %d: frame sent differs from the chain's bytes", i)
					}
					got = got[1:]
					sent++
				}
			}
			if len(got) != 0 {
				t.Fatalf("%d frames sent that the model did not expect", len(got))
			}
			if st := h.dev.Stats(); st.TxPackets != uint64(sent) {
				t.Fatalf("TxPackets = %d, want %d", st.TxPackets, sent)
			}
			ram.checkGuards(t)
			if failed != nil {
				return
			}
		}
	})
}

// FuzzNetRX delivers host frames into receive chains decoded from random
// bytes and checks the outcome against a model: the frame with a clean
// header, an empty chain and a drop when it does not fit, or
// DEVICE_NEEDS_RESET for a chain that breaks §5.1.6.3 or points outside RAM.
//
//	op:     3 bytes: frame length (16 bits, at least 14 used), flags: bit 0
//	        the host sets NEEDS_CSUM (dropped, no chain posted), bits 1-2
//	        buffers - 1; then 5 bytes per buffer (decodeSeg)
func FuzzNetRX(f *testing.F) {
	f.Add([]byte{0x05, 0xea, 0x00, 0x04, 0, 0, 0x05, 0xf6})                   // 1514 bytes into 1526
	f.Add([]byte{0x05, 0xea, 0x00, 0x04, 0, 0, 0x05, 0xf5})                   // one byte short
	f.Add([]byte{0x00, 0x40, 0x02, 0x04, 0, 0, 0, 12, 0x04, 1, 0, 0, 0x40})   // header alone
	f.Add([]byte{0x00, 0x40, 0x00, 0x00, 0, 0, 0x05, 0xf6})                   // readable
	f.Add([]byte{0x00, 0x40, 0x00, 0x07, 0, 0, 0x05, 0xf6})                   // outside RAM
	f.Add([]byte{0x00, 0x40, 0x01, 0x00, 0x40, 0x00, 0x04, 0x06, 0, 0, 0x40}) // host NEEDS_CSUM, then a frame
	f.Fuzz(func(t *testing.T, in []byte) {
		h, ram := newFuzzHarness(t)
		h.activate()
		defer h.dev.Reset()
		var delivered, dropped uint64
		for op := 0; op < 8 && len(in) >= 3; op++ {
			n := int(in[0])<<8 | int(in[1])
			flags := in[2]
			in = in[3:]
			frame := withHeader(ethFrame(max(n, minFrame), byte(op)))
			if flags&1 != 0 {
				frame[0] = hdrFlagNeedsCsum
				h.be.in <- frame
				dropped++
				deadline := time.Now().Add(5 * time.Second)
				for h.dev.Stats().RxDropped < dropped {
					if time.Now().After(deadline) {
						t.Fatal("host frame with NEEDS_CSUM not dropped")
					}
					time.Sleep(50 * time.Microsecond)
				}
				continue
			}
			var segs []seg
			for b := 0; b <= int(flags>>1&3) && len(in) >= 5; b++ {
				s, _ := decodeSeg(h, in)
				segs = append(segs, s)
				in = in[5:]
			}
			if len(segs) == 0 {
				return
			}
			fail, mayFail, overlap := false, false, false
			var room uint64
			for i, s := range segs {
				// Empty buffers: see FuzzNetTX.
				mayFail = mayFail || s.len == 0
				if s.len == 0 {
					continue
				}
				fail = fail || !s.write
				if _, err := h.mem.Slice(s.addr, uint64(s.len)); err != nil {
					fail = true
				}
				room += uint64(s.len)
				for _, o := range segs[:i] {
					if o.len > 0 && s.addr < o.addr+guestmem.GPA(o.len) && o.addr < s.addr+guestmem.GPA(s.len) {
						overlap = true
					}
				}
			}
			head := h.rx.post(segs...)
			h.dev.Notify(RXQueue)
			h.be.in <- frame
			select {
			case err := <-h.fails:
				if !fail && !mayFail {
					t.Fatalf("Fail(%v) for a well-formed chain %+v", err, segs)
				}
				ram.checkGuards(t)
				return
			case <-h.irq:
			case <-time.After(5 * time.Second):
				t.Fatal("neither an interrupt nor Fail")
			}
			if fail {
				t.Fatalf("chain %+v accepted", segs)
			}
			u := h.rx.reap()
			if len(u) != 1 || u[0].id != uint32(head) {
				t.Fatalf("used = %v, want head %d", u, head)
			}
			if room < uint64(len(frame)) {
				dropped++
				if u[0].len != 0 {
					t.Fatalf("a %d-byte frame was written into %d bytes", len(frame), room)
				}
			} else {
				delivered++
				if u[0].len != uint32(len(frame)) {
					t.Fatalf("used length %d, want %d", u[0].len, len(frame))
				}
				got, _ := bytesOf(h.mem, segs)
				want := append([]byte(nil), frame...)
				clear(want[:HeaderSize])
				want[10] = 1
				if !overlap && !bytes.Equal(got[:len(want)], want) {
					t.Fatal("delivered bytes differ from header and frame")
				}
			}
			if st := h.dev.Stats(); st.RxPackets != delivered || st.RxDropped != dropped {
				t.Fatalf("stats %+v, want %d delivered, %d dropped", st, delivered, dropped)
			}
			ram.checkGuards(t)
		}
	})
}

// FuzzNetConfig reads and writes the configuration space at any offset and
// length: reads match §5.1.4 byte for byte, zero beyond it, and writes
// change nothing.
func FuzzNetConfig(f *testing.F) {
	f.Add(uint64(0), uint8(6), []byte{1, 2, 3, 4, 5, 6})
	f.Add(uint64(6), uint8(2), []byte{0, 0})
	f.Add(uint64(8), uint8(4), []byte{})
	f.Add(^uint64(0), uint8(8), []byte{0xff})
	f.Fuzz(func(t *testing.T, off uint64, n uint8, data []byte) {
		d := New(newFakeBackend(), testMAC)
		var model [configSize]byte
		copy(model[:], testMAC)
		model[6], model[8] = StatusLinkUp, 1
		check := func() {
			got := make([]byte, n%64)
			for i := range got {
				got[i] = 0x5a
			}
			d.ReadConfig(off, got)
			for i, v := range got {
				want := byte(0)
				if o := off + uint64(i); o >= off && o < configSize {
					want = model[o]
				}
				if v != want {
					t.Fatalf("config byte %d (offset %#x + %d) = %#02x, want %#02x", i, off, i, v, want)
				}
			}
		}
		check()
		d.WriteConfig(off, data)
		check()
		all := make([]byte, configSize)
		d.ReadConfig(0, all)
		if !bytes.Equal(all, model[:]) {
			t.Fatalf("config after WriteConfig = % x", all)
		}
	})
}

// ---- TAP (root only) -------------------------------------------------------

// tapEtherType is IEEE 802's "local experimental" EtherType: frames with it
// are ours, whatever else the host sends on a fresh interface (IPv6 router
// solicitations, MLD reports).
const tapEtherType = 0x88b5

// needTAP skips the test unless this process can create TAP interfaces.
func needTAP(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a TAP interface needs root (CAP_NET_ADMIN)")
	}
	if _, err := os.Stat(tunDevice); err != nil {
		t.Skipf("no TUN/TAP support: %v", err)
	}
}

// openTestTAP creates a TAP for the test, closed at its end. Root in a
// container without CAP_NET_ADMIN gets EPERM: that skips, not fails.
func openTestTAP(t *testing.T, name string) *TAP {
	t.Helper()
	tap, err := OpenTAP(name)
	if errors.Is(err, unix.EPERM) {
		t.Skipf("no CAP_NET_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatalf("OpenTAP(%q): %v", name, err)
	}
	t.Cleanup(func() { tap.Close() })
	return tap
}

// tapName returns an interface name no other test run uses (IFNAMSIZ is
// 16 with the NUL).
func tapName(tag string) string {
	return fmt.Sprintf("kvl%s%d", tag, os.Getpid()%1000000)
}

// linkUp sets IFF_UP on the interface, as "ip link set NAME up" does.
func linkUp(t *testing.T, name string) {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCGIFFLAGS %s: %v", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCSIFFLAGS %s: %v", name, err)
	}
}

// packetSocket opens an AF_PACKET socket on the interface: the host
// stack's end of the TAP.
func packetSocket(t *testing.T, name string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	proto := htons(unix.ETH_P_ALL)
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		t.Fatalf("bind AF_PACKET to %s: %v", name, err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// testFrame is an Ethernet frame with tapEtherType and a payload that says
// which way it went.
func testFrame(src net.HardwareAddr, payload string) []byte {
	f := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f = append(f, src...)
	f = append(f, tapEtherType>>8, tapEtherType&0xff)
	f = append(f, payload...)
	for len(f) < 60 { // the Ethernet minimum, FCS excluded
		f = append(f, 0)
	}
	return f
}

func TestTAP(t *testing.T) {
	needTAP(t)
	name := tapName("t")
	tap := openTestTAP(t, name)
	if tap.Name() != name {
		t.Errorf("Name() = %q, want %q", tap.Name(), name)
	}

	t.Run("busy", func(t *testing.T) {
		_, err := OpenTAP(name)
		if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "another process") {
			t.Errorf("second OpenTAP(%q) = %v, want EBUSY explained", name, err)
		}
	})
	t.Run("not a TAP", func(t *testing.T) {
		_, err := OpenTAP("lo")
		if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "not a single-queue TAP") {
			t.Errorf("OpenTAP(lo) = %v, want EINVAL explained", err)
		}
	})
	t.Run("name too long", func(t *testing.T) {
		if _, err := OpenTAP(strings.Repeat("x", unix.IFNAMSIZ)); err == nil {
			t.Error("OpenTAP accepted a name of IFNAMSIZ bytes")
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		// What Reset relies on: a past deadline wakes a blocked Read.
		buf := make([]byte, HeaderSize+MaxFrame)
		if err := tap.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := tap.Read(buf)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read with a deadline on a down TAP = %v, want os.ErrDeadlineExceeded", err)
		}
		if err := tap.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	})

	linkUp(t, name)
	ps := packetSocket(t, name)
	src := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

	t.Run("write reaches the host", func(t *testing.T) {
		frame := testFrame(src, "guest to host")
		if _, err := tap.Write(append(make([]byte, HeaderSize), frame...)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		buf := make([]byte, 2048)
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			n, err := unix.Read(ps, buf)
			if err != nil {
				continue // SO_RCVTIMEO
			}
			if bytes.Equal(buf[:n], frame) {
				return
			}
		}
		t.Error("the frame written to the TAP never showed up on the interface")
	})

	t.Run("host frame is read with a header", func(t *testing.T) {
		frame := testFrame(src, "host to guest")
		if _, err := unix.Write(ps, frame); err != nil {
			t.Fatalf("AF_PACKET write: %v", err)
		}
		buf := make([]byte, HeaderSize+MaxFrame)
		if err := tap.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		defer tap.SetReadDeadline(time.Time{})
		for {
			n, err := tap.Read(buf)
			if err != nil {
				t.Fatalf("Read: %v (the frame sent on the interface never arrived)", err)
			}
			if n < HeaderSize+14 || buf[HeaderSize+12] != tapEtherType>>8 || buf[HeaderSize+13] != tapEtherType&0xff {
				continue // the host's own traffic
			}
			if buf[0]&hdrFlagNeedsCsum != 0 || buf[1] != hdrGSONone {
				t.Errorf("header %x asks for offloads the TAP should have off", buf[:HeaderSize])
			}
			if !bytes.Equal(buf[HeaderSize:n], frame) {
				t.Errorf("read % x\nwant % x", buf[HeaderSize:n], frame)
			}
			return
		}
	})

	t.Run("close unblocks read", func(t *testing.T) {
		other, err := OpenTAP(tapName("c"))
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := other.Read(make([]byte, HeaderSize+MaxFrame))
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read after Close = %v, want os.ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not unblock Read")
		}
	})
}

// TestDeviceOverTAP runs the device on a real TAP: a frame the host sends
// on the interface lands in a guest receive buffer, and a frame the guest
// transmits appears on the interface.
func TestDeviceOverTAP(t *testing.T) {
	needTAP(t)
	name := tapName("d")
	tap := openTestTAP(t, name)
	// Fewer frames of the host's own (router solicitations, MLD) to wade
	// through; best effort.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	linkUp(t, name)
	ps := packetSocket(t, name)

	h := newHarness(t)
	h.dev = New(tap, testMAC)
	// Post every receive buffer before Activate, as Linux does before
	// DRIVER_OK: the host may send frames at any time, and the test
	// must not write the ring while the device reads it.
	heads := map[uint32]guestmem.GPA{}
	h.setup = func() {
		for i := 0; i < testQLen; i++ {
			a := dataBase + guestmem.GPA(i)*0x800
			heads[uint32(h.rx.post(seg{addr: a, len: 1526, write: true}))] = a
		}
	}
	h.activate()

	t.Run("host to guest", func(t *testing.T) {
		frame := testFrame(net.HardwareAddr{0x52, 0x54, 0, 9, 9, 9}, "host to guest over TAP")
		if _, err := unix.Write(ps, frame); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(5 * time.Second)
		for {
			select {
			case <-h.irq:
			case err := <-h.fails:
				t.Fatal(err)
			case <-timeout:
				t.Fatal("the frame never reached the guest")
			}
			for _, u := range h.rx.reap() {
				hdr, got := h.rxFrame(heads[u.id], u.len)
				if !bytes.Equal(got, frame) {
					continue // host noise
				}
				if want := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}; !bytes.Equal(hdr, want) {
					t.Errorf("header % x, want % x", hdr, want)
				}
				return
			}
		}
	})

	t.Run("guest to host", func(t *testing.T) {
		frame := testFrame(testMAC, "guest to host over TAP")
		p := withHeader(frame)
		a := dataBase + 0x10000
		copy(h.ram[a:], p)
		h.tx.post(seg{addr: a, len: uint32(len(p))})
		h.dev.Notify(TXQueue)
		h.waitIRQ(TXQueue)
		buf := make([]byte, 2048)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			n, err := unix.Read(ps, buf)
			if err == nil && bytes.Equal(buf[:n], frame) {
				if st := h.dev.Stats(); st.TxPackets != 1 || st.TxBytes != uint64(len(frame)) {
					t.Errorf("stats %+v", st)
				}
				return
			}
		}
		t.Error("the guest's frame never appeared on the interface")
	})

	done := make(chan struct{})
	go func() { h.dev.Reset(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Reset did not wake the receive goroutine blocked on the TAP")
	}
}

// TestReceiveIntoTruncatedSnapshotRAM: guest RAM restored from a snapshot
// is mapped from its file (vmm/restore.go); when the file is truncated under
// the running machine, the receive goroutine's write of a frame faults. The
// device must fail (needs reset) instead of taking the VMM down, and give
// back rxGate, so that a later snapshot's PauseIO and the Reset do not wait
// for ever.
func TestReceiveIntoTruncatedSnapshotRAM(t *testing.T) {
	h := newHarness(t)
	mem, err := guestmem.New(ramSize)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	h.mem, h.ram = mem, mem.Regions()[0].Data
	path := filepath.Join(t.TempDir(), "snapshot-ram")
	if err := os.WriteFile(path, make([]byte, 2*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := mem.MapFile(dataBase, 2*4096, f, 0); err != nil {
		t.Fatal(err)
	}
	h.activate()
	h.rx.post(seg{addr: dataBase, len: 1526, write: true})
	h.dev.Notify(RXQueue)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	h.be.in <- withHeader(ethFrame(60, 1))
	if err := h.waitFail(); err == nil || !strings.Contains(err.Error(), "could not be accessed") {
		t.Fatalf("Fail(%v), want the fault on guest RAM reported", err)
	}
	done := make(chan struct{})
	go func() {
		if err := h.dev.PauseIO(time.Now().Add(time.Second)); err != nil {
			t.Errorf("PauseIO after the fault: %v", err)
		}
		h.dev.ResumeIO()
		h.dev.Reset()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("PauseIO or Reset waited for ever after the fault: rxGate was not given back")
	}
}
