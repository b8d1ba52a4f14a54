// Package mydevice is your device for lab 4 of kvmlab's guided labs: an
// accumulator on I/O ports 0x700-0x707 (README.md has its specification).
//
// `kvmlab lab check 4 DIR` compiles this file into a kvmlab of its own
// (it is imported by the build, and its init adds the device through
// kvmlab/devices/labdev), then boots the lab's guest, which talks to the
// device with IN and OUT instructions and prints PASS or FAIL on COM1.
package mydevice

import (
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

// Accumulator is the device. TODO: give it the state it needs. Read and
// Write run on a vCPU goroutine; with more than one vCPU two of them can
// run at once.
type Accumulator struct{}

// Read is an IN instruction: fill data (1, 2 or 4 bytes, little-endian)
// with the register at offset (0-7, relative to port 0x700).
// TODO: offset 0 is the sum, offset 4 the ID byte 'K'.
func (a *Accumulator) Read(offset uint64, data []byte) error {
	return nil
}

// Write is an OUT instruction: data holds the bytes the guest wrote.
// TODO: offset 0 adds the value to the sum, offset 4 resets it.
func (a *Accumulator) Write(offset uint64, data []byte) error {
	return nil
}
