// Package mydevice is a reference solution of lab 4: the accumulator on
// ports 0x700-0x707, as README.md specifies it.
package mydevice

import (
	"fmt"
	"sync"

	"kvmlab/devices/bus"
	"kvmlab/devices/labdev"
)

func init() {
	labdev.Add(labdev.Device{
		Name: "accumulator",
		Port: 0x700,
		Size: 8,
		New:  func() bus.Device { return &Accumulator{} },
	})
}

// Register offsets, relative to port 0x700.
const (
	regSum     = 0 // 32-bit: OUT adds, IN reads the sum
	regControl = 4 // 8-bit: OUT resets, IN reads the ID
	id         = 'K'
)

// Accumulator sums what the guest writes. A mutex, because two vCPUs may
// access it at once.
type Accumulator struct {
	mu  sync.Mutex
	sum uint32
}

// Read fills data with the register at offset, little-endian, as wide as
// the access; bytes beyond a register read 0.
func (a *Accumulator) Read(offset uint64, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var v uint32
	switch offset {
	case regSum:
		v = a.sum
	case regControl:
		v = id
	}
	for i := range data {
		data[i] = byte(v >> (8 * i)) // shifts past 31 give 0
	}
	return nil
}

// Write adds to the sum (offset 0) or resets it (offset 4). A narrower
// write adds a narrower value: the bytes the guest did not send are 0.
func (a *Accumulator) Write(offset uint64, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch offset {
	case regSum:
		var v uint32
		for i := 0; i < len(data) && i < 4; i++ {
			v |= uint32(data[i]) << (8 * i)
		}
		a.sum += v // uint32 arithmetic wraps, as the specification asks
	case regControl:
		a.sum = 0
	}
	return nil
}

// Describe says what an access means, for `kvmlab run --trace` and
// `kvmlab step`.
func (a *Accumulator) Describe(offset uint64, write bool, data []byte) string {
	switch {
	case offset == regSum && write:
		return fmt.Sprintf("accumulator add % x", data)
	case offset == regSum:
		return "accumulator read sum"
	case offset == regControl && write:
		return "accumulator reset"
	case offset == regControl:
		return "accumulator read ID"
	}
	return fmt.Sprintf("accumulator unused register %d", offset)
}
