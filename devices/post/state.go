package post

// Saving and restoring the latch (snapshots, issue 14). The whole state of
// a POST diagnostic card is the byte it shows.

// State is the saveable state of the port 0x80 latch.
type State struct {
	// Code is the last POST code written to port 0x80, which the latch
	// shows on its two digits and reads back (0 before any write).
	Code byte
}

// SaveState returns the latched code.
func (p *Port) SaveState() State { return State{Code: p.Last()} }

// RestoreState latches s.Code. Every byte is a valid POST code, so there is
// nothing to refuse: a value outside a byte never reaches it, because
// encoding/json refuses to decode one into Code. The error result keeps the
// signature every device's RestoreState has. The port drives no interrupt.
func (p *Port) RestoreState(s State) error {
	p.last.Store(uint32(s.Code))
	return nil
}
