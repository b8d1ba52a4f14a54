package virtionet

// Snapshots (see kvmlab/devices/virtio's snapshot.go for the transport's
// part).
//
// Transmit runs inside Notify, on the transport's workers, so quiescing the
// transport quiesces it. Receive has a goroutine of its own that writes
// into guest RAM whenever the host sends a frame: PauseIO takes rxGate,
// the token that goroutine holds from popping a receive chain to returning
// it, so a snapshot never sees a chain popped but not returned.
//
// What the device holds between requests is the MAC (configuration: the
// restoring VMM builds the device with the same one, and the state says
// which it was, so a mismatch is caught) and, at most, one host frame the
// receive goroutine read but could not deliver yet because the driver had
// no receive buffer posted. That frame is saved and delivered first by the
// restored device: a snapshot loses no packet the host already handed
// over.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"kvmlab/devices/virtio"
)

var (
	_ virtio.StateSaver = (*Device)(nil)
	_ virtio.IOPauser   = (*Device)(nil)
)

// State is what SaveDeviceState encodes, as JSON.
type State struct {
	// MAC is the device's address (configuration space, §5.1.4).
	MAC string `json:"mac"`
	// RXFrame is a received frame, virtio_net_hdr included (§5.1.6),
	// waiting for a receive buffer; empty when none was held.
	RXFrame []byte `json:"rx_frame,omitempty"`
}

// PauseIO implements virtio.IOPauser: it returns once the receive
// goroutine is not between popping a receive chain and returning it, and
// keeps it from starting one until ResumeIO.
func (d *Device) PauseIO(deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-d.rxGate:
		d.pausedIO.Store(true)
		return nil
	case <-t.C:
		return errors.New("virtio-net: receive path still delivering a frame at the deadline")
	}
}

// ResumeIO implements virtio.IOPauser: it gives back the token PauseIO
// took, and does nothing when PauseIO took none. Whether the gate's
// channel is empty cannot tell: it is empty too while the receive
// goroutine holds the token, and a token added then would be a second
// one, on which that goroutine's leaveRX would block for ever (and a
// Reset waiting for it). A test that resumed twice met exactly that.
func (d *Device) ResumeIO() {
	if d.pausedIO.CompareAndSwap(true, false) {
		d.rxGate <- struct{}{}
	}
}

// SaveDeviceState implements virtio.StateSaver. Call it between PauseIO
// and ResumeIO.
func (d *Device) SaveDeviceState() ([]byte, error) {
	st := State{MAC: d.MAC().String()}
	if s := d.cur.Load(); s != nil {
		s.heldMu.Lock()
		st.RXFrame = append([]byte(nil), s.held...)
		s.heldMu.Unlock()
		if len(st.RXFrame) == 0 {
			st.RXFrame = nil
		}
	}
	return json.Marshal(st)
}

// RestoreDeviceState implements virtio.StateSaver on a device that is not
// active: it checks that the state is of a device with this MAC and keeps
// the held frame, if any, for the next activation. b comes from a user's
// file; on error nothing changes.
func (d *Device) RestoreDeviceState(b []byte) error {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("virtio-net: device state: %w", err)
	}
	mac, err := net.ParseMAC(st.MAC)
	if err != nil {
		return fmt.Errorf("virtio-net: device state: %w", err)
	}
	if mac.String() != d.MAC().String() {
		return fmt.Errorf("virtio-net: device state is of MAC %v, this device has %v", mac, d.MAC())
	}
	if len(st.RXFrame) != 0 && !rxFrameOK(st.RXFrame) {
		return fmt.Errorf("virtio-net: device state holds a receive frame of %d bytes that no device would hold (want %d to %d bytes, no offload flags)",
			len(st.RXFrame), HeaderSize+minFrame, HeaderSize+MaxFrame)
	}
	if len(st.RXFrame) == 0 {
		st.RXFrame = nil
	}
	d.life.Lock()
	defer d.life.Unlock()
	if d.cur.Load() != nil {
		return errors.New("virtio-net: device state: device is active (restore into a fresh device)")
	}
	d.restoredRX = st.RXFrame
	return nil
}
