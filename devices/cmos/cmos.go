// Package cmos models the PC's real-time clock and its battery-backed
// "CMOS" memory: a Motorola MC146818A (today a block inside the chipset)
// reached through two I/O ports.
//
// # The hardware
//
// The chip holds 128 bytes of registers and RAM, but occupies only two
// ports: the CPU writes a register number to the index port 0x70, then reads
// or writes that register through the data port 0x71. On the PC, bit 7 of the
// byte written to port 0x70 is not part of the index at all: it gates the
// NMI line (1 = NMI disabled; IBM PC AT Technical Reference, "Real-Time Clock
// and CMOS RAM"), which is why software writes index|0x80 around sensitive
// sequences. The index is the low seven bits.
//
// Register map (MC146818A datasheet, "Address Map", "Time, Calendar and
// Alarm Locations", "Registers"):
//
//	0x00 seconds     0x01 seconds alarm     0x0A status A
//	0x02 minutes     0x03 minutes alarm     0x0B status B
//	0x04 hours       0x05 hours alarm       0x0C status C (read-only)
//	0x06 day of week (1 = Sunday)           0x0D status D (read-only)
//	0x07 day of month  0x08 month  0x09 year (two digits)
//	0x0E-0x7F general purpose RAM; on the PC AT, 0x32 holds the century,
//	          and ACPI's FADT CENTURY field names that byte (ACPI 6.4 §5.2.9)
//
// Status A: bit 7 UIP (update in progress: the time registers are about to
// change and must not be read), bits 6-4 DV (oscillator divider, 010 =
// 32.768 kHz crystal), bits 3-0 RS (periodic interrupt rate).
//
// Status B: bit 7 SET (stop updates so software can set the time), bit 6
// PIE, bit 5 AIE, bit 4 UIE (periodic/alarm/update-ended interrupt enables),
// bit 3 SQWE, bit 2 DM (1 = binary, 0 = BCD), bit 1 24/12 (1 = 24-hour), bit
// 0 DSE (daylight saving).
//
// Status C: bit 7 IRQF (some enabled flag is set), bit 6 PF, bit 5 AF, bit 4
// UF (periodic, alarm, update-ended flags); reading it clears it.
//
// Status D: bit 7 VRT (valid RAM and time: the battery is good).
//
// BCD ("binary-coded decimal") stores each decimal digit in a nibble, so 59
// seconds is 0x59. In 12-hour mode the hour is 1-12 with bit 7 set for PM.
//
// # What is modelled
//
// The clock is the host's: every read of a time register converts now() in
// UTC, in the format status B selects (reset default 0x02: BCD, 24-hour).
// Nothing ticks inside the device, so an update is never in progress and UIP
// always reads 0. A reader that reads the registers one by one can still see
// a second boundary pass between two reads (59 s, then the new minute);
// Linux's mc146818_get_time guards against that by re-reading the seconds.
//
// The guest may set the clock. Writing a time register while SET is clear
// moves the guest's clock: the device keeps an offset in seconds from the
// host clock. Setting SET freezes the time registers (they then read back
// what is written, as the datasheet describes) and clearing SET starts the
// clock again from the values written, decoded in the mode status B then
// selects. Setting SET also clears UIE, as on the chip. Day of week is
// always derived from the date, so a written weekday is not kept once the
// clock runs. Out-of-range values are normalised the way time.Date does
// (month 13 is January of the next year). DSE is stored but ignored (the
// clock is UTC).
//
// There is no interrupt line (IRQ8) and no periodic timer: PIE, AIE and UIE
// are stored, PF and AF never set. UF is set in status C when the clock has
// moved to another second since status C was last read, so software that
// polls status C for the update-ended flag sees it; IRQF follows the flags
// and enables as on the chip. Alarm registers, status A's divider and rate
// bits and the rest of the 128 bytes are plain storage. Status D always reads
// 0x80.
//
// A 16-bit access at port 0x70 is split into a byte to 0x70 and a byte to
// 0x71, as the ISA bus splits a word access to an 8-bit device. Port 0x70
// reads back the last byte written to it; real chipsets vary.
package cmos

import (
	"fmt"
	"sync"
	"time"
)

// Register indexes.
const (
	RegSeconds      = 0x00
	RegSecondsAlarm = 0x01
	RegMinutes      = 0x02
	RegMinutesAlarm = 0x03
	RegHours        = 0x04
	RegHoursAlarm   = 0x05
	RegWeekday      = 0x06
	RegDay          = 0x07
	RegMonth        = 0x08
	RegYear         = 0x09
	RegA            = 0x0A
	RegB            = 0x0B
	RegC            = 0x0C
	RegD            = 0x0D
	RegCentury      = 0x32
)

// Status register bits.
const (
	AUIP = 0x80 // status A: update in progress

	BSET  = 0x80 // status B: updates stopped
	BPIE  = 0x40 // periodic interrupt enable
	BAIE  = 0x20 // alarm interrupt enable
	BUIE  = 0x10 // update-ended interrupt enable
	BSQWE = 0x08 // square wave enable
	BDM   = 0x04 // binary (1) or BCD (0)
	B24H  = 0x02 // 24-hour (1) or 12-hour (0)
	BDSE  = 0x01 // daylight saving enable

	CIRQF = 0x80 // status C: an enabled flag is set
	CPF   = 0x40 // periodic
	CAF   = 0x20 // alarm
	CUF   = 0x10 // update ended

	DVRT = 0x80 // status D: battery good
)

// Reset values.
const (
	DefaultA = 0x26 // 32.768 kHz divider, 1024 Hz periodic rate
	DefaultB = B24H // 24-hour, BCD
	DefaultD = DVRT
)

// Size is the number of registers and RAM bytes behind the index port.
const Size = 128

// IndexNMIDisable is bit 7 of the byte written to port 0x70.
const IndexNMIDisable = 0x80

// timeRegs are the registers the running clock drives.
var timeRegs = [...]byte{RegSeconds, RegMinutes, RegHours, RegWeekday, RegDay, RegMonth, RegYear, RegCentury}

func isTimeReg(i byte) bool {
	for _, r := range timeRegs {
		if r == i {
			return true
		}
	}
	return false
}

// CMOS is one RTC and its NVRAM. Its methods are safe for concurrent use.
type CMOS struct {
	mu  sync.Mutex
	now func() time.Time

	indexByte byte // last byte written to port 0x70, NMI bit included
	ram       [Size]byte

	offset  int64 // guest clock minus host clock, in seconds
	lastSec int64 // guest second when status C was last read
	flags   byte  // status C flags not yet read
}

// New returns a CMOS at its reset state, whose clock reads now() (time.Now
// when nil).
func New(now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.ram[RegA] = DefaultA
	c.ram[RegB] = DefaultB
	c.ram[RegD] = DefaultD
	c.lastSec = c.guestSec()
	return c
}

// NMIDisabled reports bit 7 of the last index written: whether the guest
// asked for NMIs to be masked.
func (c *CMOS) NMIDisabled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.indexByte&IndexNMIDisable != 0
}

func (c *CMOS) index() byte { return c.indexByte &^ IndexNMIDisable }

func (c *CMOS) guestSec() int64 { return c.now().Unix() + c.offset }

func (c *CMOS) guestTime() time.Time { return time.Unix(c.guestSec(), 0).UTC() }

// Read implements bus.Device: offset 0 is port 0x70, offset 1 port 0x71.
func (c *CMOS) Read(offset uint64, data []byte) error {
	if err := check(offset, data); err != nil {
		for i := range data {
			data[i] = 0xff
		}
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		if offset+uint64(i) == 0 {
			data[i] = c.indexByte
		} else {
			data[i] = c.readReg(c.index())
		}
	}
	return nil
}

// Write implements bus.Device.
func (c *CMOS) Write(offset uint64, data []byte) error {
	if err := check(offset, data); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range data {
		if offset+uint64(i) == 0 {
			c.indexByte = v
		} else {
			c.writeReg(c.index(), v)
		}
	}
	return nil
}

// check accepts a byte at either port, or a word at port 0x70 (which the ISA
// bus splits into 0x70 then 0x71).
func check(offset uint64, data []byte) error {
	switch {
	case len(data) == 1 && offset <= 1, len(data) == 2 && offset == 0:
		return nil
	}
	return fmt.Errorf("cmos: %d-byte access at offset %d: only bytes at ports 0x70/0x71 or a word at 0x70", len(data), offset)
}

func (c *CMOS) readReg(i byte) byte {
	switch {
	case isTimeReg(i):
		if c.ram[RegB]&BSET != 0 {
			return c.ram[i] // frozen: what was latched or written
		}
		return encode(c.guestTime(), i, c.ram[RegB])
	case i == RegA:
		return c.ram[RegA] &^ AUIP
	case i == RegC:
		c.updateFlags()
		v := c.flags
		if v&c.ram[RegB]&(CPF|CAF|CUF) != 0 {
			v |= CIRQF
		}
		c.flags = 0
		return v
	case i == RegD:
		return DefaultD
	}
	return c.ram[i]
}

// updateFlags sets UF if an update cycle would have run since the last look:
// the clock runs and shows another second.
func (c *CMOS) updateFlags() {
	if c.ram[RegB]&BSET != 0 {
		return
	}
	if s := c.guestSec(); s != c.lastSec {
		c.flags |= CUF
		c.lastSec = s
	}
}

func (c *CMOS) writeReg(i byte, v byte) {
	switch {
	case isTimeReg(i):
		if c.ram[RegB]&BSET != 0 {
			c.ram[i] = v
			return
		}
		// The clock runs: set this one register of the current time.
		c.latch()
		c.ram[i] = v
		c.commit()
	case i == RegA:
		c.ram[RegA] = v &^ AUIP // UIP is read-only
	case i == RegB:
		old := c.ram[RegB]
		if v&BSET != 0 {
			v &^= BUIE
		}
		c.ram[RegB] = v
		switch {
		case old&BSET == 0 && v&BSET != 0:
			// Stop the clock: freeze the registers in the old mode,
			// which is what they showed a moment ago.
			c.ram[RegB] = old
			c.latch()
			c.ram[RegB] = v
		case old&BSET != 0 && v&BSET == 0:
			c.commit()
		}
	case i == RegC, i == RegD:
		// Read-only.
	default:
		c.ram[i] = v
	}
}

// latch copies the running clock into the time registers' RAM slots.
func (c *CMOS) latch() {
	t := c.guestTime()
	for _, r := range timeRegs {
		c.ram[r] = encode(t, r, c.ram[RegB])
	}
}

// commit restarts the clock from the time registers' RAM slots.
func (c *CMOS) commit() {
	t := decode(c.ram, c.ram[RegB])
	c.offset = t.Unix() - c.now().Unix()
	// Setting the clock is not an update cycle: no UF for the jump.
	c.lastSec = c.guestSec()
}

func toBCD(n int) byte { return byte(n/10<<4 | n%10) }

func fromBCD(v byte) int { return int(v>>4)*10 + int(v&0xf) }

// encode renders one time register of t in the mode status B selects.
func encode(t time.Time, reg, b byte) byte {
	conv := toBCD
	if b&BDM != 0 {
		conv = func(n int) byte { return byte(n) }
	}
	mod100 := func(n int) int { return (n%100 + 100) % 100 }
	switch reg {
	case RegSeconds:
		return conv(t.Second())
	case RegMinutes:
		return conv(t.Minute())
	case RegHours:
		h := t.Hour()
		if b&B24H != 0 {
			return conv(h)
		}
		// 12-hour clock: 00:xx is 12 AM, 12:xx is 12 PM.
		h12 := h % 12
		if h12 == 0 {
			h12 = 12
		}
		v := conv(h12)
		if h >= 12 {
			v |= 0x80
		}
		return v
	case RegWeekday:
		return conv(int(t.Weekday()) + 1)
	case RegDay:
		return conv(t.Day())
	case RegMonth:
		return conv(int(t.Month()))
	case RegYear:
		return conv(mod100(t.Year()))
	case RegCentury:
		return conv(mod100(t.Year() / 100))
	}
	return 0
}

// decode reads the time registers of ram in the mode status B selects. Any
// byte decodes to some number (BCD 0xff is 165); time.Date normalises.
func decode(ram [Size]byte, b byte) time.Time {
	conv := fromBCD
	if b&BDM != 0 {
		conv = func(v byte) int { return int(v) }
	}
	var hour int
	if h := ram[RegHours]; b&B24H != 0 {
		hour = conv(h)
	} else {
		hour = conv(h&^0x80) % 12
		if h&0x80 != 0 {
			hour += 12
		}
	}
	year := conv(ram[RegCentury])*100 + conv(ram[RegYear])
	return time.Date(year, time.Month(conv(ram[RegMonth])), conv(ram[RegDay]),
		hour, conv(ram[RegMinutes]), conv(ram[RegSeconds]), 0, time.UTC)
}

// RegName names a register for traces.
func RegName(i byte) string {
	switch i {
	case RegSeconds:
		return "seconds"
	case RegSecondsAlarm:
		return "seconds alarm"
	case RegMinutes:
		return "minutes"
	case RegMinutesAlarm:
		return "minutes alarm"
	case RegHours:
		return "hours"
	case RegHoursAlarm:
		return "hours alarm"
	case RegWeekday:
		return "day of week"
	case RegDay:
		return "day of month"
	case RegMonth:
		return "month"
	case RegYear:
		return "year"
	case RegA:
		return "status A"
	case RegB:
		return "status B"
	case RegC:
		return "status C"
	case RegD:
		return "status D"
	case RegCentury:
		return "century"
	}
	return "NVRAM"
}

// Describe implements bus.Describer: "CMOS read index 0x0b (status B) =
// 0x02". A data-port access is explained with the index currently selected.
func (c *CMOS) Describe(offset uint64, write bool, data []byte) string {
	if check(offset, data) != nil {
		return fmt.Sprintf("CMOS bad %d-byte access at offset %d", len(data), offset)
	}
	c.mu.Lock()
	idx := c.indexByte
	c.mu.Unlock()
	var s string
	for i, v := range data {
		if i > 0 {
			s += "; "
		}
		if offset+uint64(i) == 0 {
			if write {
				idx = v
				nmi := "enabled"
				if v&IndexNMIDisable != 0 {
					nmi = "disabled"
				}
				s += fmt.Sprintf("CMOS select index %#02x (%s), NMI %s", v&^IndexNMIDisable, RegName(v&^IndexNMIDisable), nmi)
			} else {
				s += fmt.Sprintf("CMOS index port read %#02x", v)
			}
			continue
		}
		dir := "read"
		if write {
			dir = "write"
		}
		r := idx &^ IndexNMIDisable
		s += fmt.Sprintf("CMOS %s index %#02x (%s) = %#02x", dir, r, RegName(r), v)
	}
	return s
}
