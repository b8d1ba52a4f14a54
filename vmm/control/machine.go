package control

import (
	"os"
	"time"

	"kvmlab/vmm"
)

// machine is a running vmm.Machine as the control socket's Handler.
type machine struct{ m *vmm.Machine }

func (c machine) Pause() error  { return c.m.Pause() }
func (c machine) Resume() error { c.m.Resume(); return nil }
func (c machine) Paused() bool  { return c.m.Paused() }
func (c machine) Quit()         { c.m.Quit() }

// Snapshot writes the machine into out, the file kvmlab control created
// and passed (vmm.Machine.SaveSnapshot).
func (c machine) Snapshot(path string, out *os.File, stayPaused bool) (SnapshotResult, error) {
	res, err := c.m.SaveSnapshot(out, stayPaused)
	if err != nil {
		return SnapshotResult{}, err
	}
	return SnapshotResult{Path: path, Bytes: res.FileBytes, DurationNS: res.Took.Nanoseconds(),
		RAMBytes: res.RAMBytes, SavedRAMBytes: res.SavedBytes, PausedNS: res.Paused.Nanoseconds()}, nil
}

func (c machine) Stats() (Stats, error) {
	st := c.m.Stats()
	return Stats{
		RanNS: st.Ran.Nanoseconds(), Paused: c.m.Paused(), TotalExits: st.TotalExits,
		ExitsByReason: st.ExitsByReason, AccessesByDevice: st.AccessesByDevice,
		RSSBytes: st.RSS, GuestResident: st.GuestResident, GuestRAM: st.GuestRAM,
	}, nil
}

// ServeMachine serves the socket l for m until stop is called, which
// closes it and removes its file. A nil l serves nothing.
func ServeMachine(l *Listener, m *vmm.Machine) (stop func()) {
	if l == nil {
		return func() {}
	}
	go l.Serve(machine{m})
	return func() {
		_ = l.Close()
		done := make(chan struct{})
		go func() { l.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second): // a handler stuck in a snapshot must not hold the exit
		}
	}
}
