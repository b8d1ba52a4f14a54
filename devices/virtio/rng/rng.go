// Package rng is a virtio entropy device (virtio 1.2 §5.4): the guest posts
// empty buffers and the device fills them with random bytes from the host.
//
// # Why a guest wants host entropy
//
// A kernel seeds its random number generator from events it cannot predict:
// interrupt timings, disk seek jitter, keyboard input, RDRAND. A fresh
// virtual machine has little of that — no spinning disk, no keyboard,
// interrupts paced by the host, and every clone of one snapshot starting
// from the same state — so early in boot, exactly when it generates SSH
// host keys or TLS secrets, its pool can be nearly empty, and getrandom(2)
// in the guest blocks or, in older kernels, /dev/urandom hands out
// predictable bytes. The host has been collecting entropy for a long time.
// virtio-rng (the hw_random "virtio_rng" driver in Linux) lets the guest
// credit its pool from the host's.
//
// # The device
//
// One queue, requestq (§5.4.2); no feature bits (§5.4.3); no configuration
// space (§5.4.4, reads as zero). Each chain the driver posts is a set of
// device-writable buffers (§5.4.6); the device writes random bytes into
// them, from the front, and returns the chain with the number of bytes
// written. It may write fewer than the buffers hold (§5.4.6.2 asks only
// for "as much entropy as possible"); this one writes at most MaxRequest
// bytes a chain, so one notification cannot make it generate gigabytes.
//
// A chain with driver-readable buffers breaks §5.4.6.1 ("the driver MUST NOT
// place driver-readable buffers into the queue"). They are ignored rather
// than treated as fatal: the device never reads them, so they cannot
// confuse it, and a reset would only stop the guest's entropy. A buffer
// outside guest RAM is a different matter: the device cannot write it, and
// it puts itself into DEVICE_NEEDS_RESET (virtio.ErrNeedsReset).
//
// The bytes come from the host kernel's getrandom(2) (golang.org/x/sys/unix;
// crypto/rand.Read uses the same system call on Linux but since Go 1.24
// crashes the process if it fails, and a failure here should cost one
// request, not the VMM). getrandom blocks only until the host's pool is
// initialised once after boot, which a host running a VMM is long past.
package rng

import (
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"kvmlab/devices/virtio"
	"kvmlab/guestmem"
)

const (
	// QueueSize is the largest requestq the device accepts.
	QueueSize = 64
	// MaxRequest bounds the random bytes written into one chain.
	MaxRequest = 64 << 10
)

// Stats counts what the device did since New.
type Stats struct {
	Requests uint64 // chains returned
	Bytes    uint64 // random bytes written
	Errors   uint64 // getrandom failures
}

// Device is a virtio-rng device. It implements virtio.Device.
type Device struct {
	// fill writes random bytes over p; tests replace it.
	fill func(p []byte) error

	// RequestQueue runs Activate, Reset and the batch loop of Notify.
	virtio.RequestQueue

	requests, bytes, errs atomic.Uint64
}

var _ virtio.Device = (*Device)(nil)

// New returns a device that draws from the host's getrandom(2).
func New() *Device { return &Device{fill: getrandom, RequestQueue: virtio.RequestQueue{Name: "rng"}} }

// getrandom fills p from the host kernel's random pool.
func getrandom(p []byte) error {
	for len(p) > 0 {
		n, err := unix.Getrandom(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("rng: getrandom: %w", err)
		}
		p = p[n:]
	}
	return nil
}

// Stats returns the counters.
func (d *Device) Stats() Stats {
	return Stats{Requests: d.requests.Load(), Bytes: d.bytes.Load(), Errors: d.errs.Load()}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeRNG }

// Features implements virtio.Device: virtio-rng defines none.
func (d *Device) Features() uint64 { return 0 }

// QueueSizes implements virtio.Device: one requestq.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device: there is no configuration space.
func (d *Device) ReadConfig(offset uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device: there is nothing to write.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Notify implements virtio.Device: it fills every chain posted on
// requestq and asks for one interrupt for the batch.
func (d *Device) Notify(q int) { d.Serve(q, d.serve) }

// needsReset blames the driver for err: the device cannot go on without a
// reset.
func needsReset(what string, err error) error {
	return fmt.Errorf("rng: %s: %w: %w", what, virtio.ErrNeedsReset, err)
}

// serve fills one chain's writable buffers, up to MaxRequest bytes, and
// returns how many it wrote. Every writable buffer is checked against guest
// RAM, also those past the bound: one outside RAM is a driver error even if
// this request would not have reached it.
func (d *Device) serve(mem *guestmem.Memory, c *virtio.Chain) (uint32, error) {
	bufs := make([][]byte, 0, len(c.Writable))
	for _, b := range c.Writable {
		if b.Len == 0 {
			continue // nothing to write; its address does not matter
		}
		p, err := mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return 0, needsReset("request buffer", err)
		}
		bufs = append(bufs, p)
	}
	var n uint32
	for _, p := range bufs {
		if room := MaxRequest - n; uint64(len(p)) > uint64(room) {
			p = p[:room]
		}
		if len(p) == 0 {
			break
		}
		// Straight into guest RAM: the bytes are the guest's to see, so
		// there is nothing to gain from a bounce buffer.
		if err := d.fill(p); err != nil {
			// What was written before stays valid; the driver asks again.
			d.errs.Add(1)
			break
		}
		n += uint32(len(p))
	}
	d.bytes.Add(uint64(n))
	d.requests.Add(1)
	return n, nil
}
