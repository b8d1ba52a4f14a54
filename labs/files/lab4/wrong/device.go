// Package mydevice is a plausible but wrong answer to lab 4: the device
// keeps the last value written instead of adding it to the sum.
package mydevice

import (
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

// Accumulator holds the last value written.
type Accumulator struct {
	mu   sync.Mutex
	last uint32
}

// Read returns the last value at offset 0 and 'K' at offset 4.
func (a *Accumulator) Read(offset uint64, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.last
	if offset == 4 {
		v = 'K'
	}
	for i := range data {
		data[i] = byte(v >> (8 * i))
	}
	return nil
}

// Write stores the value (the mistake: the specification says add).
func (a *Accumulator) Write(offset uint64, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if offset == 4 {
		a.last = 0
		return nil
	}
	var v uint32
	for i := 0; i < len(data) && i < 4; i++ {
		v |= uint32(data[i]) << (8 * i)
	}
	a.last = v
	return nil
}
