// Package exitport models an exit-status port: one I/O port through which
// a guest program tells the VMM "I am done, and this is my exit status", and
// the machine stops.
//
// # Where the idea comes from
//
// Test harnesses that run a program in a VM need its result on the host.
// QEMU's answer is the isa-debug-exit device (hw/misc/debugexit.c): a port,
// by default 0x501, whose write makes QEMU exit with a status computed from
// the value ((value << 1) | 1, so that a status from the guest is never 0).
// Bare-metal test kernels (Rust's bootimage, many OS courses) use it. kvmlab
// keeps the port, 0x501, but hands the byte back as it is: the guest
// program (kvmlab's uinit) writes its command's exit status, 0 to 255, and
// that is what `kvmlab run --exec` exits with.
//
// Why a port and not a line of text on the console: text on a stream the
// command also writes to can be produced by the command by accident (a
// `cat` of a log holding the marker). An OUT instruction to port 0x501 is
// made on purpose or not at all. Linux user space reaches the port without
// privileged instructions of its own by writing one byte at offset 0x501 of
// /dev/port (drivers/char/mem.c, write_port: one outb per byte).
//
// # What is modelled
//
// A one-byte write-only register. The first write of one byte calls the
// report function with that byte; the VMM stops the machine there. Later
// writes (a second vCPU racing the first, or the stopping machine's last
// exits) are ignored: the first status is the one that counts. Wider writes
// are refused, since an OUT of a word or a doubleword is not what the guest
// program does and would leave the meaning of the other bytes to guess;
// reads return 0xff, what an ISA bus floats to when no device answers. The
// device does not know where it sits: the VMM registers it at Base.
//
// Data flows one way, as everywhere in kvmlab: the vCPU loop decodes the
// I/O exit, the bus finds this device and calls Write with the offset, and
// Write calls report, which records the status and asks the machine to
// stop. Nothing here reaches back into the vCPU loop.
package exitport

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Base and Size place the device on the port bus: QEMU's isa-debug-exit
// port, one byte wide.
const (
	Base = 0x501
	Size = 1
)

// ErrWidth is returned for a write that is not exactly one byte.
var ErrWidth = errors.New("exit-status port: write one byte (OUT of a byte); wider writes are refused")

// Port is the exit-status port. Write may be called from several vCPU
// goroutines at once.
type Port struct {
	report   func(status uint8)
	reported atomic.Bool
	status   atomic.Uint32
}

// New returns a port that calls report once, with the first status
// written. report runs on the writing vCPU's goroutine and must not block.
func New(report func(status uint8)) *Port {
	if report == nil {
		report = func(uint8) {}
	}
	return &Port{report: report}
}

// Write takes one byte: the guest program's exit status.
func (p *Port) Write(_ uint64, data []byte) error {
	if len(data) != 1 {
		return fmt.Errorf("%w (%d bytes)", ErrWidth, len(data))
	}
	if !p.reported.CompareAndSwap(false, true) {
		return nil
	}
	p.status.Store(uint32(data[0]))
	p.report(data[0])
	return nil
}

// Read returns 0xff in every byte: there is nothing to read.
func (p *Port) Read(_ uint64, data []byte) error {
	for i := range data {
		data[i] = 0xff
	}
	return nil
}

// Status returns the status reported, and whether there was one.
func (p *Port) Status() (uint8, bool) {
	if !p.reported.Load() {
		return 0, false
	}
	return uint8(p.status.Load()), true
}

// Describe says what an access means, for the exit tracer and the stepper.
func (p *Port) Describe(_ uint64, write bool, data []byte) string {
	switch {
	case write && len(data) == 1:
		return fmt.Sprintf("exit status %d", data[0])
	case write:
		return fmt.Sprintf("exit-status write of %d bytes (refused)", len(data))
	}
	return "exit-status port read"
}
