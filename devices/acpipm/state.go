package acpipm

// Saving and restoring the PM1a registers (snapshots, issue 14).
//
// The three registers are the whole state. The SCI is a level, computed
// from them, so after a restore the line is driven to that level again: a
// restored guest with a pressed power button still pending gets its SCI
// and shuts down, and one without keeps the line low.
//
// A State comes from a user's file: RestoreState refuses bits the hardware
// could not hold, naming the register, and changes nothing when it refuses.

import (
	"errors"
	"fmt"
)

// ErrBadState is wrapped by every error RestoreState returns.
var ErrBadState = errors.New("invalid ACPI PM1 state")

// State is the saveable state of the PM1a event and control blocks (ACPI
// 6.4 §4.8.4.1-§4.8.4.2), each register as a read returns it.
type State struct {
	// PM1Status is PM1a_STS: the fixed-event status bits not yet cleared
	// by the guest. This model sets only PWRBTN_STS (bit 8, the power
	// button) and WAK_STS (bit 15, woken from an unsupported sleep
	// state); any other bit is refused.
	PM1Status uint16
	// PM1Enable is PM1a_EN: TMR_EN (0), GBL_EN (5), PWRBTN_EN (8),
	// SLPBTN_EN (9), RTC_EN (10) and PCIEXP_WAKE_DIS (14). Reserved bits
	// read 0 and must be 0.
	PM1Enable uint16
	// PM1Control is PM1a_CNT as read: SCI_EN (bit 0) always 1, since the
	// machine is always in ACPI mode; BM_RLD (bit 1) and SLP_TYP (bits
	// 12:10) as last written. GBL_RLS (bit 2) and SLP_EN (bit 13) are
	// write-only and read 0, as do the reserved bits.
	PM1Control uint16
}

// SaveState returns the registers, under the device's lock.
func (p *PM) SaveState() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return State{PM1Status: p.sts, PM1Enable: p.en, PM1Control: p.cntValue()}
}

func (s *State) check() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadState, field, fmt.Sprintf(format, args...))
	}
	if s.PM1Status&^(StsPwrBtn|StsWak) != 0 {
		return bad("PM1Status", "%#04x: only PWRBTN_STS (0x100) and WAK_STS (0x8000) are ever set", s.PM1Status)
	}
	if s.PM1Enable&^enMask != 0 {
		return bad("PM1Enable", "%#04x sets reserved bits (defined: %#04x)", s.PM1Enable, uint16(enMask))
	}
	if s.PM1Control&CntSCIEn == 0 {
		return bad("PM1Control", "%#04x has SCI_EN clear; the machine is always in ACPI mode", s.PM1Control)
	}
	if s.PM1Control&^(cntStoreMask|CntSCIEn) != 0 {
		return bad("PM1Control", "%#04x sets write-only or reserved bits (readable: %#04x)", s.PM1Control, uint16(cntStoreMask|CntSCIEn))
	}
	return nil
}

// RestoreState puts the registers into state s. An invalid s is refused
// with an error wrapping ErrBadState, and the device is left as it was.
//
// The SCI line is then driven to the level the restored registers call for,
// whether or not that differs from what this device last drove: the SCI is
// level-triggered, so driving a level twice is harmless, while the line of
// a restored VM starts wherever its interrupt controller's saved state left
// it, not where this device object remembers.
func (p *PM) RestoreState(s State) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("acpipm: %w", err)
	}
	p.lineMu.Lock()
	defer p.lineMu.Unlock()
	p.mu.Lock()
	p.sts, p.en, p.cnt = s.PM1Status, s.PM1Enable, s.PM1Control&cntStoreMask
	want := p.sciWanted()
	p.sciLevel = want
	l := p.sci
	p.mu.Unlock()
	// As in syncSCI, a line error is the VMM's to report.
	_ = l.Set(want)
	return nil
}
