// Package virtionet is a virtio network device (virtio 1.2 §5.1): an
// Ethernet card whose "wire" is a host TAP interface.
//
// # What the guest sees
//
// A virtio-net device is an Ethernet NIC without registers. The driver
// hands it buffers in guest memory through two virtqueues (§5.1.2):
//
//	queue 0  receiveq1   device → driver: empty buffers the driver posts,
//	                     the device fills each with one received frame
//	queue 1  transmitq1  driver → device: one frame to send per chain
//
// (A device with VIRTIO_NET_F_MQ has more pairs, and one with
// VIRTIO_NET_F_CTRL_VQ a control queue; this one offers neither.)
//
// Every frame, in both directions, is preceded by a struct virtio_net_hdr
// (§5.1.6). With VIRTIO_F_VERSION_1, which kvmlab's modern-only transport
// always negotiates, it is 12 bytes, all little-endian:
//
//	0  flags        u8    NEEDS_CSUM 1, DATA_VALID 2, RSC_INFO 4
//	1  gso_type     u8    NONE 0, TCPV4 1, UDP 3, TCPV6 4, ECN 0x80
//	2  hdr_len      le16  segmentation / checksum offload hints
//	4  gso_size     le16
//	6  csum_start   le16
//	8  csum_offset  le16
//	10 num_buffers  le16  receive: how many chains this frame spans
//
// The header exists for offloads: a driver that negotiated checksum or
// segmentation offload sends a 64 KiB TCP "frame" with a partial checksum
// and lets the host cut it up. This device offers none of them, on purpose:
// without VIRTIO_NET_F_GUEST_CSUM, GUEST_TSO4/6, GUEST_UFO and MRG_RXBUF,
// Linux's driver (drivers/net/virtio_net.c) posts receive chains of a
// full-sized frame plus header, 1514 + 12 bytes (§5.1.6.3.1 asks for at
// least 1526), and every frame the host hands over fits in exactly one
// chain, so num_buffers is always 1 and there is no buffer merging to get
// wrong. Without CSUM and HOST_TSO4/6 the driver checksums and segments in
// software and sends plain frames. The cost is throughput, which is not
// what kvmlab is for. So the header carries nothing here: on receive the
// device writes a zero header with num_buffers = 1 (§5.1.6.4.1: flags MUST
// be zero without GUEST_CSUM), and on transmit it drops the rare frame
// whose header asks for an offload that was never negotiated
// (§5.1.6.2.1) instead of sending it out with a wrong checksum.
//
// Only VIRTIO_NET_F_MAC (the address below is the NIC's) and
// VIRTIO_NET_F_STATUS (the link is up) are offered.
//
// # Configuration space (§5.1.4)
//
//	0  mac                  6 bytes
//	6  status               le16  VIRTIO_NET_S_LINK_UP 1
//	8  max_virtqueue_pairs  le16  1 (meaningful only with MQ)
//
// Bytes beyond read as zero. Nothing is writable: without
// VIRTIO_NET_F_CTRL_MAC_ADDR the driver must not change the MAC through
// the configuration space of a VERSION_1 device.
//
// # The host side: TAP with IFF_VNET_HDR
//
// A TAP interface (Linux Documentation/networking/tuntap.rst) is a host
// network interface whose other end is a file descriptor: every frame the
// host stack sends out of it becomes one read(2) on /dev/net/tun, and every
// write(2) becomes one frame received on it. Opened with IFF_VNET_HDR and
// TUNSETVNETHDRSZ 12, each read and write carries the same virtio_net_hdr
// in front of the frame, which is exactly the virtio layout. OpenTAP opens
// one; it also turns every TAP offload off (TUNSETOFFLOAD 0) so that the
// host stack checksums and segments before handing a frame over, which is
// what a guest without offloads needs.
//
// The device talks to a Backend, not to the TAP directly, so unit tests use
// in-memory packet queues.
//
// # Goroutines
//
// Transmit runs in the goroutine that calls Notify(1), typically the
// vCPU's: it pops every chain, writes each frame to the backend and returns
// the chains with one interrupt for the batch. Receive needs a goroutine of
// its own because frames arrive when the host sends them: Activate starts
// one that blocks in Backend.Read, and for each frame waits until the
// driver has a receive chain posted. Notify(0) only wakes it. A frame that
// finds no buffer is kept, not dropped, until the driver posts one (the
// backend queues the frames behind it, and the host drops when that queue
// is full, as a real NIC does). Reset wakes the goroutine through the
// backend's read deadline and waits for it.
package virtionet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"kvmlab/devices/virtio"
	"kvmlab/guestmem"
)

// Queue indices and sizes (§5.1.2).
const (
	RXQueue   = 0 // receiveq1
	TXQueue   = 1 // transmitq1
	QueueSize = 256
)

// Feature bits (§5.1.3).
const (
	FeatureCsum     = 0  // VIRTIO_NET_F_CSUM: the device takes frames with a partial checksum
	FeatureMAC      = 5  // VIRTIO_NET_F_MAC: config space holds the MAC
	FeatureHostTSO4 = 11 // VIRTIO_NET_F_HOST_TSO4: the device takes TCP/IPv4 segments up to 64 KiB
	FeatureHostTSO6 = 12 // VIRTIO_NET_F_HOST_TSO6: the same for TCP/IPv6
	FeatureStatus   = 16 // VIRTIO_NET_F_STATUS: config space holds the link status
)

// StatusLinkUp is VIRTIO_NET_S_LINK_UP in the config status field.
const StatusLinkUp = 1

const (
	// HeaderSize is the virtio_net_hdr length with VIRTIO_F_VERSION_1
	// (§5.1.6), num_buffers included. Backend frames carry it too.
	HeaderSize = 12
	// MaxFrame bounds an Ethernet frame, header excluded: the largest IP
	// packet (65535 bytes) behind an Ethernet header and one 802.1Q tag.
	// A TAP's MTU cannot exceed 65535, so no host frame is longer.
	MaxFrame = 65535 + 14 + 4
	// minFrame is an Ethernet header: anything shorter is not a frame.
	minFrame = 14

	configSize = 10

	hdrFlagNeedsCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM
	hdrGSONone       = 0    // VIRTIO_NET_HDR_GSO_NONE
	hdrGSOTCPv4      = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	hdrGSOTCPv6      = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	hdrGSOECN        = 0x80 // VIRTIO_NET_HDR_GSO_ECN (needs HOST_ECN, not offered)
)

// Backend is the host end of the wire: TAP semantics. Every frame, in both
// directions, starts with a HeaderSize-byte virtio_net_hdr, the layout a
// TAP opened with IFF_VNET_HDR uses.
type Backend interface {
	// Read returns exactly one frame (header included) per call. A frame
	// longer than p may be truncated.
	Read(p []byte) (int, error)
	// Write sends p, header included, as exactly one frame.
	Write(p []byte) (int, error)
	// SetReadDeadline makes a Read that is blocked now, or called later,
	// fail with an error wrapping os.ErrDeadlineExceeded once t has
	// passed; a zero t removes the deadline (os.File semantics). Reset
	// uses it to wake the receive goroutine.
	SetReadDeadline(t time.Time) error
}

// Stats counts what the device did since New. Bytes are frame bytes, the
// virtio_net_hdr excluded.
type Stats struct {
	RxPackets, RxBytes uint64
	// RxDropped counts host frames never delivered: no room in the
	// driver's chain, an offload header this device cannot pass on, a
	// frame held when the device was reset.
	RxDropped uint64
	// RxErrors counts failed backend reads.
	RxErrors uint64
	// RxStalls counts the times a host frame had to wait for the driver
	// to post a receive buffer: a guest that does not keep up.
	RxStalls uint64

	TxPackets, TxBytes uint64
	// TxDropped counts guest frames not sent: longer than MaxFrame,
	// shorter than an Ethernet header, or asking for an offload that was
	// not negotiated.
	TxDropped uint64
	// TxErrors counts failed backend writes (the frame is lost).
	TxErrors uint64
}

// Device is a virtio-net device. It implements virtio.Device.
type Device struct {
	backend Backend
	config  [configSize]byte // immutable after New

	life sync.Mutex // serialises Activate and Reset
	cur  atomic.Pointer[session]

	txMu  sync.Mutex // serialises transmit batches; guards txBuf
	txBuf []byte

	// rxGate holds one token, taken by the receive goroutine while it
	// pops, fills and returns a receive chain, and by PauseIO for the
	// length of a snapshot (snapshot.go).
	rxGate chan struct{}
	// pausedIO says PauseIO holds rxGate's token (snapshot.go).
	pausedIO atomic.Bool
	// restoredRX is a frame from a snapshot that the next session
	// delivers before reading the backend (RestoreDeviceState).
	restoredRX []byte

	rxPackets, rxBytes, rxDropped atomic.Uint64
	rxErrors, rxStalls            atomic.Uint64
	txPackets, txBytes, txDropped atomic.Uint64
	txErrors                      atomic.Uint64
}

// session is one activation: Activate to Reset.
type session struct {
	env      *virtio.Env
	kick     chan struct{} // capacity 1: the driver posted receive buffers
	quit     chan struct{} // closed by Reset or on a driver error
	quitOnce sync.Once
	done     chan struct{} // closed when the receive goroutine stops touching guest memory
	failed   atomic.Bool

	pending []byte // a restored frame to deliver first; receive goroutine only

	heldMu sync.Mutex
	held   []byte // the frame the receive goroutine holds, waiting for a chain
}

func (s *session) setHeld(frame []byte) {
	s.heldMu.Lock()
	s.held = frame
	s.heldMu.Unlock()
}

func (s *session) stop() { s.quitOnce.Do(func() { close(s.quit) }) }

func (s *session) stopped() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

var _ virtio.Device = (*Device)(nil)

// CheckMAC reports whether mac can be a NIC's address: six bytes, unicast,
// not all zero.
func CheckMAC(mac net.HardwareAddr) error {
	switch {
	case len(mac) != 6:
		return fmt.Errorf("virtio-net: MAC %v is %d bytes, want 6", mac, len(mac))
	case mac[0]&1 != 0:
		return fmt.Errorf("virtio-net: MAC %v is a multicast address", mac)
	case [6]byte(mac) == [6]byte{}:
		return fmt.Errorf("virtio-net: MAC %v is all zero", mac)
	}
	return nil
}

// RandomMAC returns 52:54:00:xx:xx:xx with random low bytes: 0x52 has the
// locally-administered bit (0x02) set and the multicast bit (0x01) clear,
// so it never collides with a vendor's address. It need not be
// unpredictable, only unlikely to repeat on one host bridge.
func RandomMAC() net.HardwareAddr {
	r := rand.Uint32()
	return net.HardwareAddr{0x52, 0x54, 0x00, byte(r >> 16), byte(r >> 8), byte(r)}
}

// New returns a device on backend with the given MAC, or RandomMAC when mac
// is nil. It panics when backend is nil or CheckMAC rejects mac: check user
// input first. The device never closes the backend; its owner does, after
// Reset.
func New(backend Backend, mac net.HardwareAddr) *Device {
	if backend == nil {
		panic("virtio-net: nil backend")
	}
	if mac == nil {
		mac = RandomMAC()
	}
	if err := CheckMAC(mac); err != nil {
		panic(err)
	}
	d := &Device{backend: backend, txBuf: make([]byte, HeaderSize+MaxFrame), rxGate: make(chan struct{}, 1)}
	d.rxGate <- struct{}{}
	copy(d.config[0:6], mac)
	binary.LittleEndian.PutUint16(d.config[6:], StatusLinkUp)
	binary.LittleEndian.PutUint16(d.config[8:], 1)
	return d
}

// MAC returns the device's address.
func (d *Device) MAC() net.HardwareAddr { return net.HardwareAddr(d.config[0:6:6]) }

// Stats returns the counters.
func (d *Device) Stats() Stats {
	return Stats{
		RxPackets: d.rxPackets.Load(), RxBytes: d.rxBytes.Load(),
		RxDropped: d.rxDropped.Load(), RxErrors: d.rxErrors.Load(), RxStalls: d.rxStalls.Load(),
		TxPackets: d.txPackets.Load(), TxBytes: d.txBytes.Load(),
		TxDropped: d.txDropped.Load(), TxErrors: d.txErrors.Load(),
	}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features implements virtio.Device.
//
// Transmit offloads (CSUM, HOST_TSO4, HOST_TSO6) let the guest hand over
// a TCP segment of up to 64 KiB with its checksum left to compute, instead
// of 44 checksummed 1,500-byte frames: one chain, one doorbell and one TAP
// write where there were 44. The TAP (IFF_VNET_HDR) takes the header as it
// is and the host kernel segments and checksums, or delivers the segment
// whole to a local socket. Receive offloads (GUEST_*) are not offered: the
// TAP is told to send plain frames (TUNSETOFFLOAD 0).
func (d *Device) Features() uint64 {
	return 1<<FeatureCsum | 1<<FeatureMAC | 1<<FeatureHostTSO4 | 1<<FeatureHostTSO6 | 1<<FeatureStatus
}

// txHeader checks the virtio_net_hdr h of a transmit frame of frameLen
// bytes (Ethernet header included) against the negotiated features and
// reports whether the frame may go to the backend (§5.1.6.2). It rewrites h
// into what the backend gets: the offload fields the frame uses, zero
// elsewhere, num_buffers 0. The host kernel checks the fields once more
// when the TAP takes the frame (virtio_net_hdr_to_skb); this check keeps
// what the guest did not negotiate from reaching it at all.
func txHeader(h []byte, frameLen int, features uint64) bool {
	flags, gso := h[0], h[1]
	hdrLen := binary.LittleEndian.Uint16(h[2:])
	gsoSize := binary.LittleEndian.Uint16(h[4:])
	csumStart := binary.LittleEndian.Uint16(h[6:])
	csumOffset := binary.LittleEndian.Uint16(h[8:])
	has := func(bit uint) bool { return features&(1<<bit) != 0 }
	csum := flags&hdrFlagNeedsCsum != 0
	if csum && (!has(FeatureCsum) || int(csumStart)+int(csumOffset)+2 > frameLen) {
		return false
	}
	switch gso {
	case hdrGSONone:
		hdrLen, gsoSize = 0, 0
	case hdrGSOTCPv4, hdrGSOTCPv6:
		bit := uint(FeatureHostTSO4)
		if gso == hdrGSOTCPv6 {
			bit = FeatureHostTSO6
		}
		// A TSO segment always carries a partial checksum (the host
		// fills in one per segment) and a segment size.
		if !has(bit) || !csum || gsoSize == 0 || int(hdrLen) > frameLen {
			return false
		}
	default: // UDP, ECN, anything else: not offered
		return false
	}
	if !csum {
		csumStart, csumOffset = 0, 0
	}
	clear(h[:HeaderSize])
	h[0] = flags & hdrFlagNeedsCsum // DATA_VALID is a receive flag
	h[1] = gso
	binary.LittleEndian.PutUint16(h[2:], hdrLen)
	binary.LittleEndian.PutUint16(h[4:], gsoSize)
	binary.LittleEndian.PutUint16(h[6:], csumStart)
	binary.LittleEndian.PutUint16(h[8:], csumOffset)
	return true
}

// QueueSizes implements virtio.Device: receiveq1 and transmitq1.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device. The transport may call it at any
// time, from any goroutine; the space never changes, so no lock.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	for i := range data {
		o := offset + uint64(i)
		if o >= offset && o < configSize { // o < offset: wrapped
			data[i] = d.config[o]
		} else {
			data[i] = 0
		}
	}
}

// WriteConfig implements virtio.Device: every field is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device: it starts the receive goroutine.
func (d *Device) Activate(env *virtio.Env) error {
	if env == nil || env.Mem == nil || len(env.Queues) < 2 || env.Queues[RXQueue] == nil ||
		env.Queues[TXQueue] == nil || env.Interrupt == nil || env.Fail == nil {
		return errors.New("virtio-net: activate: incomplete environment (need memory, receiveq1, transmitq1, Interrupt and Fail)")
	}
	d.life.Lock()
	defer d.life.Unlock()
	if d.cur.Load() != nil {
		return errors.New("virtio-net: activate: already active (reset first)")
	}
	if err := d.backend.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("virtio-net: activate: backend: %w", err)
	}
	s := &session{
		env:     env,
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		pending: d.restoredRX,
	}
	d.restoredRX = nil
	d.cur.Store(s)
	go d.receive(s)
	return nil
}

// Reset implements virtio.Device. It returns once the receive goroutine
// has stopped touching guest memory and no transmit batch is running.
// env.Interrupt is called from those goroutines, so it must not wait for a
// lock that the caller of Reset holds.
func (d *Device) Reset() {
	d.life.Lock()
	defer d.life.Unlock()
	d.restoredRX = nil // a restore that failed after RestoreDeviceState
	s := d.cur.Swap(nil)
	if s == nil {
		return
	}
	s.stop()
	// Wake a receive goroutine blocked in Read. An error means the
	// backend is closed, and then Read has returned already.
	_ = d.backend.SetReadDeadline(time.Unix(1, 0))
	<-s.done
	// A transmit batch that loaded s before the Swap may still run: wait
	// for it. Later ones see no session and return.
	d.txMu.Lock()
	//lint:ignore SA2001 the empty critical section is a barrier
	d.txMu.Unlock()
	_ = d.backend.SetReadDeadline(time.Time{})
}

// Notify implements virtio.Device.
func (d *Device) Notify(q int) {
	s := d.cur.Load()
	if s == nil {
		return
	}
	switch q {
	case RXQueue:
		select {
		case s.kick <- struct{}{}:
		default: // a wake-up is pending already
		}
	case TXQueue:
		d.transmit()
	}
	// Any other q: there is no such queue and the transport never sends
	// it.
}

// fail records a driver error in s and stops it. It reports whether the
// caller is the first to fail s and must therefore call env.Fail, which it
// does once it holds no lock and touches no guest memory: the transport
// may answer Fail with a Reset.
func (d *Device) fail(s *session) bool {
	if !s.failed.CompareAndSwap(false, true) {
		return false
	}
	s.stop()
	_ = d.backend.SetReadDeadline(time.Unix(1, 0))
	return true
}

// needsReset wraps err so that it says virtio.ErrNeedsReset whatever the
// queue or memory layer put in it.
func needsReset(what string, err error) error {
	if errors.Is(err, virtio.ErrNeedsReset) {
		return fmt.Errorf("virtio-net: %s: %w", what, err)
	}
	return fmt.Errorf("virtio-net: %s: %w: %w", what, virtio.ErrNeedsReset, err)
}

// resolve checks every non-empty buffer against guest RAM and returns the
// slices and their total length. The guest may change the bytes at any
// time; callers copy before they look at them.
func resolve(mem *guestmem.Memory, bufs []virtio.Buffer) ([][]byte, uint64, error) {
	out := make([][]byte, 0, len(bufs))
	var n uint64
	for _, b := range bufs {
		if b.Len == 0 {
			continue
		}
		p, err := mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return nil, 0, err
		}
		out = append(out, p)
		n += uint64(len(p))
	}
	return out, n, nil
}

// transmit serves transmitq1: every chain posted is one frame.
func (d *Device) transmit() {
	d.txMu.Lock()
	s := d.cur.Load()
	if s == nil || s.stopped() {
		d.txMu.Unlock()
		return
	}
	env := s.env
	q := env.Queues[TXQueue]
	pushed := false
	var failure error
	for !s.stopped() {
		c, err := q.Pop(env.Mem)
		if err != nil {
			failure = needsReset("pop transmitq1", err)
			break
		}
		if c == nil {
			break
		}
		if err := d.send(env.Mem, c, env.Features); err != nil {
			failure = err
			break
		}
		// Transmit buffers are read-only to the device: nothing written.
		if err := q.Push(env.Mem, c.Head, 0); err != nil {
			failure = needsReset("push transmitq1", err)
			break
		}
		pushed = true
	}
	if failure != nil && !d.fail(s) {
		failure = nil // failed elsewhere already
	}
	if pushed && failure == nil {
		env.Interrupt(TXQueue)
	}
	d.txMu.Unlock()
	if failure != nil {
		env.Fail(failure)
	}
}

// send passes one transmit chain to the backend. Only driver errors that
// break the queue protocol are returned; a frame the device will not send
// is counted and dropped, and the chain goes back as usual.
func (d *Device) send(mem *guestmem.Memory, c *virtio.Chain, features uint64) error {
	// §5.1.6.2: a transmit chain is the header and the frame, all
	// device-readable. A writable buffer means the driver is confused
	// about which queue this is.
	if len(c.Writable) > 0 {
		return fmt.Errorf("virtio-net: transmit chain %d has %d device-writable buffers: %w",
			c.Head, len(c.Writable), virtio.ErrNeedsReset)
	}
	bufs, n, err := resolve(mem, c.Readable)
	if err != nil {
		return needsReset(fmt.Sprintf("transmit chain %d", c.Head), err)
	}
	if n < HeaderSize {
		return fmt.Errorf("virtio-net: transmit chain %d holds %d bytes, less than the %d-byte header: %w",
			c.Head, n, HeaderSize, virtio.ErrNeedsReset)
	}
	if n > HeaderSize+MaxFrame || n < HeaderSize+minFrame {
		d.txDropped.Add(1)
		return nil
	}
	p := d.txBuf[:0]
	for _, b := range bufs {
		p = append(p, b...) // fits: n <= cap(txBuf)
	}
	// An offload the driver did not negotiate, or one whose fields point
	// outside the frame, is a frame the device cannot send: drop it.
	if !txHeader(p[:HeaderSize], len(p)-HeaderSize, features) {
		d.txDropped.Add(1)
		return nil
	}
	if _, err := d.backend.Write(p); err != nil {
		d.txErrors.Add(1)
		return nil
	}
	d.txPackets.Add(1)
	d.txBytes.Add(uint64(len(p) - HeaderSize))
	return nil
}

// receive is the receive goroutine of session s.
func (d *Device) receive(s *session) {
	debug.SetPanicOnFault(true) // for ramSafe
	err := d.receiveLoop(s)
	first := err != nil && d.fail(s)
	close(s.done)
	// After done: the transport may answer Fail with a Reset, which waits
	// for done.
	if first {
		s.env.Fail(err)
	}
}

// ramSafe runs fn, which reads or writes guest RAM, on the receive
// goroutine, and turns a fault on guest RAM into a driver error. Guest RAM
// restored from a snapshot is mapped from its file; if that file is
// truncated under the running machine, touching RAM faults (SIGBUS), which
// SetPanicOnFault (set by receive) makes a panic. The device then needs a
// reset, as it does when the transport's queue workers meet the same
// fault. Running each RAM access through here, rather than recovering
// around the whole loop, keeps rxGate's token accounted for: the callers
// give it back on an error as on any other. Any other panic is a bug and
// goes on.
func ramSafe(mem *guestmem.Memory, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if !mem.IsRAMFault(r) {
				panic(r)
			}
			err = fmt.Errorf("virtio-net: receive: guest RAM could not be accessed (%v): was the snapshot file it is mapped from truncated?: %w", r, virtio.ErrNeedsReset)
		}
	}()
	return fn()
}

// permanent reports whether a backend read error means no frame will ever
// come again.
func permanent(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// receiveLoop delivers backend frames until s stops. It returns a driver
// error, or nil when the session stopped or the backend went away.
func (d *Device) receiveLoop(s *session) error {
	buf := make([]byte, HeaderSize+MaxFrame)
	for {
		var frame []byte
		if s.pending != nil {
			// A frame the device held when the snapshot was taken
			// (checked by RestoreDeviceState).
			frame, s.pending = s.pending, nil
		} else {
			n, err := d.backend.Read(buf)
			if s.stopped() {
				if err == nil {
					d.rxDropped.Add(1) // read just before Reset
				}
				return nil
			}
			if err != nil {
				d.rxErrors.Add(1)
				if permanent(err) {
					return nil
				}
				// A transient host error: do not spin on it.
				select {
				case <-s.quit:
					return nil
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			frame = buf[:n]
			if !rxFrameOK(frame) {
				d.rxDropped.Add(1)
				continue
			}
		}
		s.setHeld(frame)
		c, err := d.waitChain(s)
		if err != nil || c == nil {
			if c == nil && err == nil {
				d.rxDropped.Add(1) // stopped while holding the frame
			}
			s.setHeld(nil)
			return err
		}
		// waitChain returned holding rxGate.
		err = ramSafe(s.env.Mem, func() error {
			if err := d.deliver(s.env, c, frame); err != nil {
				return err
			}
			s.env.Interrupt(RXQueue) // reads the driver's used_event from RAM
			return nil
		})
		s.setHeld(nil)
		d.leaveRX()
		if err != nil {
			return err
		}
	}
}

// rxFrameOK reports whether a backend frame (header included) can go to a
// driver. The TAP has all offloads off, so it never sets NEEDS_CSUM or a
// GSO type; a backend that does sends something a driver without
// GUEST_CSUM / GUEST_TSO cannot take.
func rxFrameOK(frame []byte) bool {
	return len(frame) >= HeaderSize+minFrame && len(frame) <= HeaderSize+MaxFrame &&
		frame[0]&hdrFlagNeedsCsum == 0 && frame[1] == hdrGSONone
}

// enterRX takes rxGate, or reports false when s stops first.
func (d *Device) enterRX(s *session) bool {
	select {
	case <-d.rxGate:
		return true
	case <-s.quit:
		return false
	}
}

func (d *Device) leaveRX() { d.rxGate <- struct{}{} }

// waitChain pops a receive chain, waiting for Notify(0) while the driver
// has none posted. It returns nil, nil when s stops first. With a chain it
// returns holding rxGate, so that a snapshot cannot see the chain popped
// but not yet returned; the caller calls leaveRX.
func (d *Device) waitChain(s *session) (*virtio.Chain, error) {
	q := s.env.Queues[RXQueue]
	for {
		if !d.enterRX(s) {
			return nil, nil
		}
		// Pop before waiting: buffers posted before the last wake-up was
		// consumed are seen here, and the queue layer publishes
		// avail_event / re-enables notifications when it finds the ring
		// empty, so the driver's next post sends a notification.
		var c *virtio.Chain
		err := ramSafe(s.env.Mem, func() (err error) {
			c, err = q.Pop(s.env.Mem)
			return err
		})
		if err != nil {
			d.leaveRX()
			return nil, needsReset("pop receiveq1", err)
		}
		if c != nil {
			return c, nil
		}
		d.leaveRX()
		d.rxStalls.Add(1)
		select {
		case <-s.kick:
		case <-s.quit:
			return nil, nil
		}
	}
}

// deliver writes the header and frame into chain c and returns it to the
// driver. frame holds the backend's header and the frame.
func (d *Device) deliver(env *virtio.Env, c *virtio.Chain, frame []byte) error {
	// §5.1.6.3: receive buffers are device-writable only.
	if len(c.Readable) > 0 {
		return fmt.Errorf("virtio-net: receive chain %d has %d device-readable buffers: %w",
			c.Head, len(c.Readable), virtio.ErrNeedsReset)
	}
	bufs, room, err := resolve(env.Mem, c.Writable)
	if err != nil {
		return needsReset(fmt.Sprintf("receive chain %d", c.Head), err)
	}
	written := uint32(0)
	if room < uint64(len(frame)) {
		// Smaller than §5.1.6.3.1 asks for (or an MTU raised on the
		// host). Without MRG_RXBUF a frame cannot span chains: drop it
		// and give the chain back empty, so the driver reuses it.
		d.rxDropped.Add(1)
	} else {
		// §5.1.6.4.1: without GUEST_CSUM flags MUST be zero; without
		// MRG_RXBUF num_buffers is 1.
		clear(frame[:HeaderSize])
		binary.LittleEndian.PutUint16(frame[10:], 1)
		rest := frame
		for _, b := range bufs {
			rest = rest[copy(b, rest):]
		}
		written = uint32(len(frame))
	}
	if err := env.Queues[RXQueue].Push(env.Mem, c.Head, written); err != nil {
		return needsReset("push receiveq1", err)
	}
	if written > 0 {
		d.rxPackets.Add(1)
		d.rxBytes.Add(uint64(len(frame) - HeaderSize))
	}
	return nil
}
