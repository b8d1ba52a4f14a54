package virtio

// Snapshots: quiescing a virtio device and saving and restoring what the
// transport knows.
//
// # What the state of a virtio device is
//
// Most of it is already in guest RAM: the descriptor table and both rings
// (§2.7) belong to the driver, and a snapshot of RAM carries them. What the
// VMM holds on its own side is small:
//
//   - the common configuration registers the driver wrote (§4.1.4.3):
//     device_status, the two feature selects, driver_features,
//     queue_select, config_msix_vector and, per queue, size, the three
//     ring addresses, queue_enable and queue_msix_vector;
//   - per queue, the device's private positions: last_avail_idx (how far
//     into the driver ring it has popped), the used idx it published, and
//     the used idx of the last interrupt decision (§2.7.7.2). The driver
//     never sees last_avail_idx; lose it and the device would serve every
//     request again from 0;
//   - the ISR status byte (§4.1.4.5);
//   - PCI state: configuration space (BAR0's address, the command
//     register) and the MSI-X table (pci.ConfigSpace, pci.MSIX);
//   - whatever the device model holds between requests (StateSaver).
//
// # Why quiesce first
//
// The transport's workers run device code on their own goroutines, not on
// vCPU threads, so parking every vCPU does not stop them: a worker may be
// halfway through a request, with the data read from disk copied into
// guest RAM but the used ring entry not yet written, or the used idx
// written but last_avail_idx not. A copy of RAM and registers taken then
// holds half a request, and the restored machine would either lose it or
// serve it twice. Quiesce closes that window: workers take no new
// notification and the ones in flight finish, used entries, used idx and
// interrupts included. The doorbells (ioeventfds) stay assigned: a kick
// from a vCPU that was already on its way stays counted in the eventfd,
// and Unquiesce looks at every queue once.

import (
	"errors"
	"fmt"
	"time"

	"kvmlab/devices/pci"
	"kvmlab/guestmem"
)

// QuiesceTimeout bounds how long Quiesce waits for requests in flight. A
// disk request on a healthy host takes milliseconds; one that takes
// seconds is a stuck backend, and the snapshot is refused rather than
// hung.
const QuiesceTimeout = 5 * time.Second

// ErrNotQuiesced is returned by SaveState on a transport that is not
// quiesced.
var ErrNotQuiesced = errors.New("virtio: save state: transport is not quiesced (call Quiesce first)")

// StateSaver is implemented by a device model that holds state between
// requests that the transport does not know. SaveDeviceState is called on
// a quiesced transport; RestoreDeviceState on a freshly built device, before
// it is activated, with bytes that come from a user's file: it validates
// them and changes nothing on error.
type StateSaver interface {
	SaveDeviceState() ([]byte, error)
	RestoreDeviceState([]byte) error
}

// IOPauser is implemented by a device model that touches guest memory
// from goroutines of its own, outside Notify (virtio-net's receive
// goroutine). PauseIO returns once none of them is inside a request and
// none will start one until ResumeIO, or an error if that did not happen
// by deadline (the device is then left running).
type IOPauser interface {
	PauseIO(deadline time.Time) error
	ResumeIO()
}

// Quiesce stops the transport for a snapshot. Call it once every vCPU is
// out of KVM_RUN. It stops the workers from taking new notifications,
// waits up to QuiesceTimeout for the ones in flight to return (their used
// entries and interrupts are written by then), then pauses the device's
// own goroutines (IOPauser). On error nothing is paused. Call Unquiesce
// after SaveState.
func (t *PCI) Quiesce() error {
	return t.quiesce(QuiesceTimeout)
}

func (t *PCI) quiesce(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	t.qmu.Lock()
	if t.paused {
		t.qmu.Unlock()
		return fmt.Errorf("%s: quiesce: already quiesced", t.name)
	}
	if t.closed {
		t.qmu.Unlock()
		return fmt.Errorf("%s: quiesce: transport is closed", t.name)
	}
	t.paused = true
	// sync.Cond has no timed wait: a timer wakes the waiter instead.
	expired := false
	timer := time.AfterFunc(timeout, func() {
		t.qmu.Lock()
		expired = true
		t.qcond.Broadcast()
		t.qmu.Unlock()
	})
	for t.busy > 0 && !expired {
		t.qcond.Wait()
	}
	busy := t.busy
	t.qmu.Unlock()
	timer.Stop()
	if busy > 0 {
		t.Unquiesce()
		return fmt.Errorf("%s: quiesce: %d notification(s) still being served after %v (backend stuck?)", t.name, busy, timeout)
	}
	if p, ok := t.dev.(IOPauser); ok {
		if err := p.PauseIO(deadline); err != nil {
			t.Unquiesce()
			return fmt.Errorf("%s: quiesce: %w", t.name, err)
		}
	}
	t.qmu.Lock()
	t.pausedIO = true
	t.qmu.Unlock()
	return nil
}

// Unquiesce undoes Quiesce: the device's goroutines and the workers run
// again, and every queue is looked at once, because a kick may have been
// counted in an eventfd while the transport was quiesced. On a transport
// that is not quiesced it does nothing.
func (t *PCI) Unquiesce() {
	t.qmu.Lock()
	if !t.paused {
		t.qmu.Unlock()
		return
	}
	pausedIO := t.pausedIO
	t.paused, t.pausedIO = false, false
	t.qcond.Broadcast()
	t.qmu.Unlock()
	if p, ok := t.dev.(IOPauser); ok && pausedIO {
		p.ResumeIO()
	}
	t.kickAll()
}

// kickAll signals every queue's eventfd: the workers then call Notify on
// each queue the device serves (the worker drops it when the device is not
// active).
func (t *PCI) kickAll() {
	for q := range t.queues {
		t.kick(q)
	}
}

// Quiesced reports whether the transport is quiesced.
func (t *PCI) Quiesced() bool {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	return t.paused && t.pausedIO
}

// QueueState is one virtqueue as the transport knows it: the per-queue
// registers of the common configuration (§4.1.4.3, as they read with
// queue_select on this queue) and the device's private ring positions
// (§2.7).
type QueueState struct {
	// Size is queue_size: the number of entries the driver chose, a
	// power of two no larger than the device's maximum (§2.7).
	Size uint16 `json:"size"`
	// DescAddr is queue_desc: the guest-physical address of the
	// descriptor table (§2.7.5), 16-byte aligned.
	DescAddr uint64 `json:"desc_addr"`
	// DriverAddr is queue_driver: the driver (available) ring (§2.7.6),
	// 2-byte aligned.
	DriverAddr uint64 `json:"driver_addr"`
	// DeviceAddr is queue_device: the device (used) ring (§2.7.8),
	// 4-byte aligned.
	DeviceAddr uint64 `json:"device_addr"`
	// Enable is queue_enable: the driver enabled the queue and the rings
	// were checked against guest RAM.
	Enable bool `json:"enable"`
	// MSIXVector is queue_msix_vector: the MSI-X table entry for this
	// queue's interrupts, or 0xffff (VIRTIO_MSI_NO_VECTOR).
	MSIXVector uint16 `json:"msix_vector"`
	// LastAvailIdx is the device's last_avail_idx: the driver ring's idx
	// up to which chains were taken. Never visible to the driver.
	LastAvailIdx uint16 `json:"last_avail_idx"`
	// UsedIdx is the used ring's idx as the device last wrote it; guest
	// RAM holds the same value.
	UsedIdx uint16 `json:"used_idx"`
	// SignalledUsedIdx is the used idx at the last interrupt decision:
	// the "old" of vring_need_event with VIRTIO_F_EVENT_IDX (§2.7.7.2).
	SignalledUsedIdx uint16 `json:"signalled_used_idx"`
}

// State is everything the virtio-over-PCI transport holds that is not in
// guest RAM. It is plain data for encoding/json. It comes back from a
// user's file, so RestoreState trusts none of it.
type State struct {
	// DeviceType is the virtio device ID (§5): 1 net, 2 block, 4 entropy.
	// It must be the restoring transport's.
	DeviceType uint16 `json:"device_type"`
	// DeviceStatus is device_status (§2.1): ACKNOWLEDGE 1, DRIVER 2,
	// DRIVER_OK 4, FEATURES_OK 8, DEVICE_NEEDS_RESET 64, FAILED 128.
	DeviceStatus uint8 `json:"device_status"`
	// DeviceFeatureSelect is device_feature_select: which 32-bit half of
	// the offered features device_feature shows.
	DeviceFeatureSelect uint32 `json:"device_feature_select"`
	// DriverFeatureSelect is driver_feature_select: which half of
	// driver_feature a write sets.
	DriverFeatureSelect uint32 `json:"driver_feature_select"`
	// DriverFeatures is driver_feature, both halves: the features the
	// driver accepted. Once FEATURES_OK is set it is the negotiated set,
	// a subset of what the device offers, VERSION_1 included (§2.2).
	DriverFeatures uint64 `json:"driver_features"`
	// QueueSelect is queue_select: the queue the per-queue registers
	// show.
	QueueSelect uint16 `json:"queue_select"`
	// ConfigMSIXVector is config_msix_vector: the MSI-X entry for
	// configuration change interrupts, or 0xffff.
	ConfigMSIXVector uint16 `json:"config_msix_vector"`
	// ISR is the ISR status byte (§4.1.4.5): bit 0 queue interrupt, bit
	// 1 configuration change; cleared when the driver reads it.
	ISR uint8 `json:"isr"`
	// Queues holds each virtqueue, in queue index order; there are as
	// many as the device has (num_queues).
	Queues []QueueState `json:"queues"`

	// ConfigSpace is the function's PCI configuration space (command
	// register, BAR0's address, MSI-X message control), checked by
	// package pci against this device's read-only registers.
	ConfigSpace pci.ConfigState `json:"config_space"`
	// MSIX is the MSI-X table, pending bits and message control.
	MSIX pci.MSIXState `json:"msix"`

	// Device is the device model's own state (StateSaver), opaque to the
	// transport; empty for a device that has none.
	Device []byte `json:"device,omitempty"`
}

// SaveState returns the transport's state. The transport must be
// quiesced, so that it matches guest RAM request for request.
func (t *PCI) SaveState() (State, error) {
	if !t.Quiesced() {
		return State{}, fmt.Errorf("%s: %w", t.name, ErrNotQuiesced)
	}
	var st State
	var err error
	if st.ConfigSpace, st.MSIX, err = t.savePCI(); err != nil {
		return State{}, fmt.Errorf("%s: save state: %w", t.name, err)
	}
	if s, ok := t.dev.(StateSaver); ok {
		if st.Device, err = s.SaveDeviceState(); err != nil {
			return State{}, fmt.Errorf("%s: save state: %w", t.name, err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st.DeviceType = uint16(t.dev.Type())
	st.DeviceStatus = t.status
	st.DeviceFeatureSelect, st.DriverFeatureSelect = t.devFeatSel, t.drvFeatSel
	st.DriverFeatures = t.drvFeatures
	st.QueueSelect = t.queueSel
	st.ConfigMSIXVector = uint16(t.configVector.Load())
	st.ISR = uint8(t.isr.Load())
	for i, q := range t.queues {
		last, used, sig := q.DeviceIndices()
		st.Queues = append(st.Queues, QueueState{
			Size: q.Size, DescAddr: uint64(q.DescAddr), DriverAddr: uint64(q.AvailAddr),
			DeviceAddr: uint64(q.UsedAddr), Enable: q.Ready, MSIXVector: uint16(t.vectors[i].Load()),
			LastAvailIdx: last, UsedIdx: used, SignalledUsedIdx: sig,
		})
	}
	return st, nil
}

// statusBits are the device_status bits a driver or the device can set.
const statusBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK |
	StatusDeviceNeedsReset | StatusFailed

// RestoreState brings a freshly built transport (NewPCI, same device type
// and configuration, nothing written by a driver yet) to st, as if the
// driver had set it up: guest RAM must already hold the snapshot's
// contents, because the rings are checked against it. A device the driver
// had started (DRIVER_OK) is activated with the negotiated features, its
// doorbells are assigned at the restored BAR0 address and every queue is
// looked at once; the driver does not negotiate again.
//
// st comes from a file: every field is checked, and on any error the
// transport is left freshly reset, as NewPCI returned it.
func (t *PCI) RestoreState(st State) (err error) {
	if err := t.checkState(&st); err != nil {
		return fmt.Errorf("%s: restore state: %w", t.name, err)
	}
	t.mu.Lock()
	fresh := t.status == 0 && !t.active && t.bellAddr == 0
	t.mu.Unlock()
	if !fresh || t.Quiesced() {
		return fmt.Errorf("%s: restore state: transport is not freshly built", t.name)
	}

	// From here on, undo everything on error.
	cfg0, msix0, err := t.savePCI()
	if err != nil {
		return fmt.Errorf("%s: restore state: %w", t.name, err)
	}
	defer func() {
		if err == nil {
			return
		}
		t.Reset()
		t.mu.Lock()
		t.setDoorbellsLocked(0)
		t.mu.Unlock()
		if rerr := t.restorePCI(cfg0, msix0); rerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the partial restore: %w", rerr))
		}
		err = fmt.Errorf("%s: restore state: %w", t.name, err)
	}()
	if err := t.restorePCI(st.ConfigSpace, st.MSIX); err != nil {
		return err
	}
	s, saver := t.dev.(StateSaver)
	switch {
	case saver:
		if err := s.RestoreDeviceState(st.Device); err != nil {
			return fmt.Errorf("device: %w", err)
		}
	case len(st.Device) != 0:
		return fmt.Errorf("device state of %d bytes for a %s device, which has none", len(st.Device), t.dev.Type())
	}

	t.mu.Lock()
	t.status = st.DeviceStatus
	t.devFeatSel, t.drvFeatSel = st.DeviceFeatureSelect, st.DriverFeatureSelect
	t.drvFeatures = st.DriverFeatures
	t.queueSel = st.QueueSelect
	t.configVector.Store(uint32(st.ConfigMSIXVector))
	t.isr.Store(uint32(st.ISR))
	for i, qs := range st.Queues {
		q := t.queues[i]
		q.Size = qs.Size
		q.DescAddr, q.AvailAddr, q.UsedAddr = guestmem.GPA(qs.DescAddr), guestmem.GPA(qs.DriverAddr), guestmem.GPA(qs.DeviceAddr)
		q.Ready = qs.Enable
		q.MSIXVector = qs.MSIXVector
		t.vectors[i].Store(uint32(qs.MSIXVector))
		q.SetDeviceIndices(qs.LastAvailIdx, qs.UsedIdx, qs.SignalledUsedIdx)
	}
	failed := st.DeviceStatus&StatusDeviceNeedsReset != 0
	t.failed.Store(failed)
	// The condition under which setStatusLocked activates the device.
	live := st.DeviceStatus&StatusDriverOK != 0 && st.DeviceStatus&StatusFeaturesOK != 0
	addr := uint64(0)
	if t.Command()&pci.CmdMemory != 0 {
		addr = t.BAR(0).Address
	}
	t.setDoorbellsLocked(addr)
	t.mu.Unlock()

	if live && !failed {
		// activate kicks every queue: the one look at each that a
		// restored device needs (the driver may have posted buffers
		// after the snapshot's last notification was served).
		if err := t.activate(); err != nil {
			return err
		}
	} else if live {
		// A device that had failed stays stopped until the driver
		// resets it, as before the snapshot.
		t.mu.Lock()
		t.active = true
		t.mu.Unlock()
	}
	return nil
}

// checkState checks everything in st that does not need the restored PCI
// state: the device, the status, the features, the queues against guest
// RAM.
func (t *PCI) checkState(st *State) error {
	if st.DeviceType != uint16(t.dev.Type()) {
		return fmt.Errorf("state is of a virtio device of type %d, this one is %s (%d)",
			st.DeviceType, t.dev.Type(), t.dev.Type())
	}
	if len(st.Queues) != len(t.queues) {
		return fmt.Errorf("state has %d queues, the device has %d", len(st.Queues), len(t.queues))
	}
	s := st.DeviceStatus
	if s&^statusBits != 0 {
		return fmt.Errorf("device_status %#x has bits no driver or device sets", s)
	}
	if s&StatusFeaturesOK != 0 {
		// Only a subset of the offered features, VERSION_1 included,
		// makes FEATURES_OK stick (§2.2.2, setStatusLocked).
		if st.DriverFeatures&^t.offered() != 0 {
			return fmt.Errorf("driver features %#x are not a subset of the offered %#x", st.DriverFeatures, t.offered())
		}
		if st.DriverFeatures&(1<<FeatureVersion1) == 0 {
			return fmt.Errorf("FEATURES_OK without VERSION_1 in driver features %#x", st.DriverFeatures)
		}
	} else if st.DriverFeatures&^t.offered() != 0 {
		return fmt.Errorf("driver features %#x are not a subset of the offered %#x", st.DriverFeatures, t.offered())
	}
	if st.ISR&^3 != 0 {
		return fmt.Errorf("ISR %#x has bits other than queue (1) and configuration (2)", st.ISR)
	}
	for i, qs := range st.Queues {
		if err := t.checkQueue(i, qs); err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
	}
	// The MSI-X table's size is fixed when the transport is built.
	return t.checkVectors(st)
}

func (t *PCI) checkQueue(i int, qs QueueState) error {
	max := t.queues[i].MaxSize()
	if !qs.Enable {
		// A queue the driver never enabled: its registers are inert
		// until queue_enable, which checks them, and its rings were
		// never used.
		if qs.Size > max || qs.Size&(qs.Size-1) != 0 {
			return fmt.Errorf("size %d is not 0 or a power of two up to %d", qs.Size, max)
		}
		if qs.LastAvailIdx != 0 || qs.UsedIdx != 0 || qs.SignalledUsedIdx != 0 {
			return errors.New("a queue that is not enabled has nonzero ring indices")
		}
		return nil
	}
	q := NewQueue(max)
	q.Size = qs.Size
	q.DescAddr, q.AvailAddr, q.UsedAddr = guestmem.GPA(qs.DescAddr), guestmem.GPA(qs.DriverAddr), guestmem.GPA(qs.DeviceAddr)
	if err := q.Validate(t.opts.Mem); err != nil {
		return err
	}
	return q.CheckIndices(t.opts.Mem, qs.LastAvailIdx, qs.UsedIdx)
}

// checkVectors checks the MSI-X vector numbers against the table's size.
func (t *PCI) checkVectors(st *State) error {
	ok := func(v uint16) bool { return v == NoVector || int(v) < t.msix.Vectors() }
	if !ok(st.ConfigMSIXVector) {
		return fmt.Errorf("config_msix_vector %d: the table has %d entries", st.ConfigMSIXVector, t.msix.Vectors())
	}
	for i, qs := range st.Queues {
		if !ok(qs.MSIXVector) {
			return fmt.Errorf("queue %d: msix_vector %d: the table has %d entries", i, qs.MSIXVector, t.msix.Vectors())
		}
	}
	return nil
}
