// Package virtio models paravirtual devices the way the virtio 1.2
// specification (OASIS, 2022) defines them: a device that a guest driver
// talks to through shared memory rings instead of through emulated
// hardware registers.
//
// # Why virtio
//
// Emulating a real disk controller or network card costs one VM exit per
// register access, and real hardware was designed for wires, not for a
// hypervisor that can read guest memory directly. Virtio (spec §1) is an
// interface designed for virtual machines: the driver puts requests in
// guest memory, in a ring of buffer descriptors (a virtqueue, §2.7), and
// rings a doorbell once; the device reads the requests straight out of
// guest RAM, does the work and puts the answers in a second ring, then
// raises one interrupt. A whole disk read is two exits, or none when the
// doorbell is an ioeventfd and the interrupt an irqfd.
//
// # The three parts
//
// Like Firecracker and kvmtool, kvmlab splits virtio in three:
//
//   - the device model (blk, net, rng here): what a request means;
//   - the transport (pci.go, virtio over PCI, spec §4.1): how the driver
//     finds the device, negotiates features, sets up queues and gets
//     interrupts;
//   - the queue (queue.go, the split virtqueue of §2.7): how buffers move
//     between driver and device.
//
// A Device never sees the transport, and the transport never parses a
// request. Both reach guest RAM only through kvmlab/guestmem, which
// checks every address and length.
//
// # Device status (§2.1)
//
// The driver walks the device through ACKNOWLEDGE → DRIVER → FEATURES_OK →
// DRIVER_OK by writing the status register. Writing 0 resets the device.
// The device sets DEVICE_NEEDS_RESET when the driver broke the rules (a
// descriptor pointing outside RAM, a loop in a chain): the device stops
// serving its queues, and the VMM logs why and carries on.
//
// # Snapshots
//
// snapshot.go saves what the transport holds outside guest RAM (the
// registers the driver wrote, each queue's device-side indices, PCI
// configuration space and MSI-X) after Quiesce has let every request in
// flight finish, and restores it into a freshly built device so that the
// driver carries on without noticing.
package virtio

import (
	"errors"
	"strconv"

	"kvmlab/guestmem"
)

// Device status bits (§2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 64
	StatusFailed           = 128
)

// Reserved feature bits (§6), offered by the transport for every device.
const (
	FeatureIndirectDesc = 28 // VIRTIO_F_INDIRECT_DESC, §2.7.5.3
	FeatureEventIdx     = 29 // VIRTIO_F_EVENT_IDX, §2.7.7
	FeatureVersion1     = 32 // VIRTIO_F_VERSION_1: a modern (non-legacy) device
)

// DeviceType is the virtio device ID (§5): the PCI device ID is 0x1040 plus
// it.
type DeviceType uint16

// Device types kvmlab implements.
const (
	TypeNet   DeviceType = 1
	TypeBlock DeviceType = 2
	TypeRNG   DeviceType = 4
)

func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "net"
	case TypeBlock:
		return "blk"
	case TypeRNG:
		return "rng"
	}
	return "virtio-type-" + strconv.Itoa(int(t))
}

// ErrNeedsReset is wrapped by errors that put a device into
// DEVICE_NEEDS_RESET: the driver broke the protocol.
var ErrNeedsReset = errors.New("virtio: driver error, device needs reset")

// Device is one virtio device model. The transport calls it; it never calls
// the transport except through the Env it is given at Activate.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType
	// Features are the device-specific feature bits offered (the transport
	// adds VERSION_1, INDIRECT_DESC and EVENT_IDX).
	Features() uint64
	// QueueSizes is the maximum size of each queue; its length is the
	// number of queues.
	QueueSizes() []uint16
	// ReadConfig fills data from the device-specific configuration space
	// at offset; bytes beyond it read as zero.
	ReadConfig(offset uint64, data []byte)
	// WriteConfig applies a driver write to the configuration space;
	// writes to read-only fields are ignored.
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device when the driver sets DRIVER_OK. env holds
	// guest memory, the queues the driver set up and the negotiated
	// features.
	Activate(env *Env) error
	// Notify is called when the driver notifies queue q (a doorbell
	// write). It may be called from any goroutine, concurrently for
	// different queues; the device serialises what it must.
	Notify(q int)
	// Reset stops the device and drops everything the driver set up. It
	// returns when no goroutine of the device touches guest memory any
	// more.
	Reset()
}

// Env is what an activated device works with.
type Env struct {
	Mem      *guestmem.Memory
	Queues   []*Queue
	Features uint64 // negotiated
	// Interrupt tells the driver that queue q has new used buffers. The
	// transport decides, from the queue's EVENT_IDX / NO_INTERRUPT state,
	// whether an interrupt is actually sent.
	Interrupt func(q int)
	// Fail puts the device into DEVICE_NEEDS_RESET and logs err. The device
	// must stop using its queues after calling it.
	Fail func(err error)
}
