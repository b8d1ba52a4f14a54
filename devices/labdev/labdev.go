// Package labdev is where devices of your own join kvmlab: a port device
// written outside kvmlab's tree, compiled into a kvmlab build, and placed on
// the I/O port bus of every machine that build makes.
//
// It works the way database/sql drivers do. A package that holds a device
// calls Add from its init function; a build that imports that package
// (even blank: `import _ "example.com/mydevice"`) has the device, and a
// build that does not has nothing extra. kvmlab as shipped imports no such
// package, so All returns nothing and no machine changes. Lab 4 of the
// guided labs (`kvmlab lab start 4 DIR`, package labs) builds a kvmlab with
// the learner's package imported this way, through `go build -overlay`,
// without touching the source tree.
//
// A device of your own is an ordinary bus.Device (devices/bus): it sees
// offsets from the start of its range, never absolute ports, and it runs on
// a vCPU goroutine, so it must answer quickly and must not panic on any
// access width or offset a guest chooses (the guest is hostile; the bus
// already keeps offsets inside the range). Implementing bus.Describer
// makes `kvmlab run --trace` and `kvmlab step` say what each access means.
//
// Only port I/O is offered: a port device is the smallest thing a guest can
// talk to (Intel SDM Vol. 1 §18.2, "I/O Port Addressing"), one IN or OUT
// instruction and one KVM_EXIT_IO. Devices added here carry no state into
// snapshots (`kvmlab control ... snapshot`): a restored machine gets a new
// instance from New.
package labdev

import (
	"errors"
	"fmt"
	"sync"

	"kvmlab/devices/bus"
)

// Device describes one device of your own.
type Device struct {
	// Name is what traces, --stats and overlap errors call it.
	Name string
	// Port is the first I/O port of its range; Size how many ports.
	Port, Size uint16
	// New returns a fresh device for each machine.
	New func() bus.Device
}

// ErrBadDevice is wrapped by the error Add records for a description that
// cannot be placed on the port bus.
var ErrBadDevice = errors.New("labdev: bad device")

var (
	mu      sync.Mutex
	devices []Device
	bad     []error
)

// Add makes d part of every machine of this build. It is meant for init
// functions, before any machine exists. A description that is unusable (no
// name, no constructor, an empty or wrapping range) is not added; the error
// is kept and returned by All, so the machine refuses to start with a line
// naming the device, instead of a panic during init.
func Add(d Device) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case d.Name == "":
		bad = append(bad, fmt.Errorf("%w: a device at port %#x has no Name", ErrBadDevice, d.Port))
	case d.New == nil:
		bad = append(bad, fmt.Errorf("%w: device %q has no New function", ErrBadDevice, d.Name))
	case d.Size == 0 || uint32(d.Port)+uint32(d.Size) > 0x10000:
		bad = append(bad, fmt.Errorf("%w: device %q at port %#x with size %d does not fit in the 64 KiB port space", ErrBadDevice, d.Name, d.Port, d.Size))
	default:
		devices = append(devices, d)
	}
}

// All returns the devices added so far, in the order they were added, and
// an error when any description was refused.
func All() ([]Device, error) {
	mu.Lock()
	defer mu.Unlock()
	return append([]Device(nil), devices...), errors.Join(bad...)
}
