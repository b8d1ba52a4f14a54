// Package post models port 0x80, the PC's power-on self-test (POST) code
// port.
//
// # The hardware
//
// On the IBM PC/AT the BIOS wrote a progress code to I/O port 0x80 at each
// step of its self-test, and a diagnostic card in an ISA slot latched the
// byte and showed it on two seven-segment digits, so a board that stopped
// booting said where. The port is not a register of any chip the operating
// system uses: on most boards writes go out on the LPC/ISA bus and nobody
// answers, and reads return whatever the bus floats to (or, on chipsets
// that latch it, the last code written).
//
// Because an access to an unclaimed ISA port costs about a microsecond,
// Linux uses `outb %al, $0x80` as its I/O delay between accesses to slow
// legacy chips (arch/x86/kernel/io_delay.c, io_delay_type 0x80, the default
// unless the kernel is built with CONFIG_IO_DELAY_NONE like kvmlab's). Under
// KVM every such write is an exit to user space, so a VMM must claim the
// port or every delay shows up as an unhandled access.
//
// # What is modelled
//
// The latch of a diagnostic card and nothing more: Write remembers the first
// byte written, Read returns it in every byte of the access (a chipset that
// latches port 0x80 reads back the last code). There is one register, so
// the offset is ignored, and any access width is accepted: the guest cannot
// make this device fail. The device does not know where it sits; the VMM
// registers it on the port bus at 0x80 (package x86's POSTPort).
package post

import (
	"fmt"
	"sync/atomic"
)

// Size is the device's extent in the I/O port space: one port.
const Size = 1

// Port is the POST code latch. The zero value is ready: it reads 0 until
// the guest writes a code. Read and Write may be called from several vCPU
// goroutines at once.
type Port struct {
	last atomic.Uint32
}

// New returns a POST port that has seen no code yet.
func New() *Port { return &Port{} }

// Read fills data with the last code written.
func (p *Port) Read(_ uint64, data []byte) error {
	c := byte(p.last.Load())
	for i := range data {
		data[i] = c
	}
	return nil
}

// Write latches data[0], the byte an OUT to port 0x80 carries; an empty
// access changes nothing.
func (p *Port) Write(_ uint64, data []byte) error {
	if len(data) > 0 {
		p.last.Store(uint32(data[0]))
	}
	return nil
}

// Last returns the last code written (0 before any).
func (p *Port) Last() byte { return byte(p.last.Load()) }

// Describe says what an access means, for the exit tracer and the stepper:
// a write is almost always Linux's I/O delay, not a real progress code.
func (p *Port) Describe(_ uint64, write bool, data []byte) string {
	if write && len(data) > 0 {
		return fmt.Sprintf("POST code %#02x (I/O delay)", data[0])
	}
	return "POST read"
}
