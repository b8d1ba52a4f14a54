package cmos

// Saving and restoring the RTC and NVRAM (snapshots, issue 14).
//
// # Why the clock is saved as an offset
//
// A real MC146818 runs on its battery while the machine is off: switch a PC
// off on Monday and on again on Friday, and the RTC says Friday. The guest's
// clock here is the host clock plus an offset the guest set, so State keeps
// that offset (guest seconds minus host seconds), not the time the
// registers showed when the snapshot was taken. A restored guest's RTC then
// continues from the host clock at restore time, as a battery-backed RTC
// continues through a power cycle: the time the snapshot spent on disk has
// passed for the guest too, and a guest without NTP reads the right date.
// Saving the absolute time instead would make every restore turn the
// guest's clock back by however long the file sat on disk. (The guest's
// other clocks, kvm-clock and the TSC, are the VMM's to restore; an OS
// that reads the RTC only at boot, as Linux does, is not affected by the
// RTC at all until it reboots.)
//
// While the clock is stopped (status B SET), the time registers read what
// was written to them, which is in RAM, and the offset is not used until
// SET is cleared: then as now, the clock starts from the written values.
//
// A State comes from a user's file: RestoreState refuses what the chip
// could not hold, naming the field, and changes nothing when it refuses.

import (
	"errors"
	"fmt"
)

// ErrBadState is wrapped by every error RestoreState returns.
var ErrBadState = errors.New("invalid CMOS state")

// MaxOffset bounds State.Offset: about 34,800 years, beyond anything the
// clock registers can express (century and year registers reach year
// 25,599 at most), and far from overflowing the host clock's seconds.
const MaxOffset = 1 << 40

// State is the saveable state of the MC146818A RTC and its NVRAM. It is
// plain data for encoding/json (RAM becomes base64).
type State struct {
	// Index is the last byte written to port 0x70: bits 6:0 select the
	// register the data port 0x71 reaches, bit 7 masks NMI on a PC.
	Index byte
	// RAM is the chip's 128 bytes (the MC146818A address map): the time
	// and alarm registers 0x00-0x09, status A-D at 0x0A-0x0D, and
	// battery-backed RAM from 0x0E (the century at 0x32). While the clock
	// runs, the time bytes hold the last latched time, unused until SET
	// stops the clock; while it is stopped they are what the guest
	// wrote. Status A bit 7 (UIP) must be 0: no update is ever in
	// progress here. Status C (0x0C) is read-only and computed, so its
	// RAM byte must be 0; status D (0x0D) is read-only and holds VRT
	// (0x80, battery good) from reset on. Status B must not have SET
	// and UIE both set: setting SET clears UIE. Exactly 128 bytes.
	RAM []byte
	// Offset is the guest's clock minus the host's (Unix) clock, in
	// seconds: the time the guest set, as a distance from real time.
	// |Offset| <= MaxOffset.
	Offset int64
	// StatusCFlags are the status C flags (bits 6:4: PF, AF, UF) set
	// and not yet read. Only UF (0x10) is ever set by this model; IRQF
	// (bit 7) is not stored, it is computed from the flags and the
	// enables in status B.
	StatusCFlags byte
}

// SaveState returns the RTC's state, under its lock.
func (c *CMOS) SaveState() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A UF that would be due now is recorded before the save, so a
	// guest polling status C across the snapshot still sees the update.
	c.updateFlags()
	return State{
		Index:        c.indexByte,
		RAM:          append([]byte(nil), c.ram[:]...),
		Offset:       c.offset,
		StatusCFlags: c.flags,
	}
}

func (s *State) check() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadState, field, fmt.Sprintf(format, args...))
	}
	if len(s.RAM) != Size {
		return bad("RAM", "%d bytes, the MC146818A has %d", len(s.RAM), Size)
	}
	if s.RAM[RegA]&AUIP != 0 {
		return bad("RAM", "status A %#02x has UIP set; no update is ever in progress", s.RAM[RegA])
	}
	if s.RAM[RegC] != 0 {
		return bad("RAM", "status C byte %#02x: status C is computed (see StatusCFlags), its RAM byte is 0", s.RAM[RegC])
	}
	if s.RAM[RegD] != DefaultD {
		return bad("RAM", "status D byte %#02x: status D is read-only and holds VRT (0x80)", s.RAM[RegD])
	}
	if b := s.RAM[RegB]; b&BSET != 0 && b&BUIE != 0 {
		return bad("RAM", "status B %#02x has SET and UIE both set; setting SET clears UIE", b)
	}
	if s.Offset > MaxOffset || s.Offset < -MaxOffset {
		return bad("Offset", "%d seconds is beyond ±%d", s.Offset, int64(MaxOffset))
	}
	if s.StatusCFlags&^CUF != 0 {
		return bad("StatusCFlags", "%#02x: only UF (0x10) is ever set", s.StatusCFlags)
	}
	return nil
}

// RestoreState puts the RTC into state s; see the comment at the top of
// this file for what the clock does. An invalid s is refused with an error
// wrapping ErrBadState and the RTC is left as it was. The chip drives no
// interrupt here (IRQ8 is not wired), so there is nothing to re-drive.
func (c *CMOS) RestoreState(s State) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("cmos: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.indexByte = s.Index
	copy(c.ram[:], s.RAM)
	c.offset = s.Offset
	c.flags = s.StatusCFlags
	// The next UF is due when the restored clock next shows another
	// second, as after a clock set: the time that passed on disk is not
	// one update cycle the guest missed.
	c.lastSec = c.guestSec()
	return nil
}
