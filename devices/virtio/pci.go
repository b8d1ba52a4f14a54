package virtio

// Virtio over PCI (virtio 1.2 §4.1), the "modern" interface only.
//
// The driver finds a virtio device like any PCI device: vendor 0x1af4,
// device 0x1040 + the virtio device type (§4.1.2). Everything else is
// described by vendor-specific capabilities (ID 0x09) in configuration
// space, each pointing at a region of a memory BAR (§4.1.4):
//
//	cfg_type 1  common configuration   features, status, queue setup
//	cfg_type 2  notifications          one doorbell per queue
//	cfg_type 3  ISR status             interrupt cause, cleared by reading
//	cfg_type 4  device configuration   e.g. a disk's capacity
//
// kvmlab puts all four and the MSI-X table in BAR0, a 32 KiB 32-bit
// memory BAR:
//
//	0x0000 common configuration (0x38 bytes, §4.1.4.3)
//	0x1000 ISR status (1 byte)
//	0x2000 device configuration
//	0x3000 notifications: queue q's doorbell at 0x3000 + 4*q
//	0x4000 MSI-X table, one entry per queue plus one for configuration changes
//	0x6000 MSI-X pending bits
//
// A doorbell write is the hot path. When the VMM gives the transport a
// Doorbells (KVM_IOEVENTFD), KVM turns a write to a doorbell into a signal
// on that queue's eventfd without leaving the kernel; otherwise the write
// exits to user space as KVM_EXIT_MMIO and the transport signals the same
// eventfd itself. Either way one goroutine per queue waits on the eventfd
// and calls Device.Notify, so devices never run on a vCPU thread.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"kvmlab/devices/pci"
	"kvmlab/guestmem"

	"golang.org/x/sys/unix"
)

// PCI identity (§4.1.2).
const (
	PCIVendor     = 0x1af4
	PCIDeviceBase = 0x1040
	// SubsystemID: non-transitional devices use 0x40 or above (§4.1.2.1).
	SubsystemID = 0x40
)

// BAR0 layout.
const (
	BARSize        = 0x8000
	CommonOffset   = 0x0000
	CommonLength   = 0x38
	ISROffset      = 0x1000
	DeviceOffset   = 0x2000
	DeviceLength   = 0x1000
	NotifyOffset   = 0x3000
	NotifyMultiple = 4
	MSIXTable      = 0x4000
	MSIXPBA        = 0x6000
)

// Capability cfg_type values (§4.1.4).
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
)

// Common configuration register offsets (§4.1.4.3).
const (
	regDeviceFeatureSelect = 0x00
	regDeviceFeature       = 0x04
	regDriverFeatureSelect = 0x08
	regDriverFeature       = 0x0c
	regConfigMSIXVector    = 0x10
	regNumQueues           = 0x12
	regDeviceStatus        = 0x14
	regConfigGeneration    = 0x15
	regQueueSelect         = 0x16
	regQueueSize           = 0x18
	regQueueMSIXVector     = 0x1a
	regQueueEnable         = 0x1c
	regQueueNotifyOff      = 0x1e
	regQueueDesc           = 0x20
	regQueueDriver         = 0x28
	regQueueDevice         = 0x30
)

// Doorbells registers doorbell addresses with the hypervisor (KVM_IOEVENTFD)
// so that a guest write of length bytes at addr signals eventfd fd in the
// kernel.
type Doorbells interface {
	Assign(addr uint64, length uint32, fd int) error
	Deassign(addr uint64, length uint32, fd int) error
}

// PCIOptions configure a transport.
type PCIOptions struct {
	Mem  *guestmem.Memory
	MSI  pci.MSIXSink // delivers MSI-X messages
	Bell Doorbells    // nil: doorbells exit to user space
	// Log receives one line per notable event (driver errors, resets).
	Log func(format string, args ...any)
}

// PCI is a virtio device behind the PCI transport: a pci.Function for the
// root bus and the handler of its BAR.
type PCI struct {
	*pci.ConfigSpace
	dev   Device
	name  string
	opts  PCIOptions
	msix  *pci.MSIX
	kicks []*os.File // one eventfd per queue

	mu           sync.Mutex
	status       uint8
	devFeatSel   uint32
	drvFeatSel   uint32
	drvFeatures  uint64
	queueSel     uint16
	queues       []*Queue
	active       bool
	bellAddr     uint64 // BAR0 address the doorbells are assigned at (0: none)
	vectors      []atomic.Uint32
	configVector atomic.Uint32
	isr          atomic.Uint32
	failed       atomic.Bool

	// Quiescing (snapshot.go). qmu guards the three fields; qcond is
	// signalled when busy drops to zero, paused is cleared or closed is
	// set.
	qmu    sync.Mutex
	qcond  *sync.Cond
	paused bool // Quiesce: workers take no new notification
	busy   int  // workers between taking a notification and Notify's return
	// pausedIO: Quiesce finished, the device's own goroutines included.
	pausedIO bool
	closed   bool // Close: workers waiting in a pause return

	// Counters.
	exitNotifies atomic.Uint64 // doorbells that reached user space
	notifies     atomic.Uint64 // all notifications seen by the workers
	interrupts   atomic.Uint64 // interrupts requested and sent
	suppressed   atomic.Uint64 // interrupts the driver asked not to get
}

// NewPCI wraps dev in the PCI transport. Call Close when done.
func NewPCI(dev Device, opts PCIOptions) (*PCI, error) {
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	if opts.Mem == nil || opts.MSI == nil {
		return nil, errors.New("virtio: PCI transport needs guest memory and an MSI sink")
	}
	class := uint32(0xff0000) // unclassified
	switch dev.Type() {
	case TypeNet:
		class = 0x020000 // network controller, Ethernet
	case TypeBlock:
		class = 0x010000 // mass storage, SCSI (as QEMU reports virtio-blk)
	case TypeRNG:
		class = 0xff0000
	}
	cs := pci.NewConfigSpace(PCIVendor, PCIDeviceBase+uint16(dev.Type()), class, 1)
	cs.SetSubsystem(PCIVendor, SubsystemID)
	if err := cs.SetBAR(0, pci.BARMem32, BARSize, false); err != nil {
		return nil, err
	}
	sizes := dev.QueueSizes()
	t := &PCI{ConfigSpace: cs, dev: dev, name: "virtio-" + dev.Type().String(), opts: opts,
		vectors: make([]atomic.Uint32, len(sizes))}
	t.qcond = sync.NewCond(&t.qmu)
	for _, s := range sizes {
		t.queues = append(t.queues, NewQueue(s))
	}
	add := func(cfgType uint8, off, length uint32, extra []byte) error {
		body := make([]byte, 14+len(extra))
		body[0] = byte(16 + len(extra)) // cap_len, header included
		body[1] = cfgType
		body[2] = 0 // BAR0
		le := binary.LittleEndian
		le.PutUint32(body[6:], off)
		le.PutUint32(body[10:], length)
		copy(body[14:], extra)
		_, err := cs.AddCapability(pci.CapVendor, body, nil)
		return err
	}
	mult := make([]byte, 4)
	binary.LittleEndian.PutUint32(mult, NotifyMultiple)
	for _, c := range []struct {
		typ         uint8
		off, length uint32
		extra       []byte
	}{
		{capCommon, CommonOffset, CommonLength, nil},
		{capISR, ISROffset, 1, nil},
		{capDevice, DeviceOffset, DeviceLength, nil},
		{capNotify, NotifyOffset, uint32(NotifyMultiple * len(sizes)), mult},
	} {
		if err := add(c.typ, c.off, c.length, c.extra); err != nil {
			return nil, err
		}
	}
	var err error
	if t.msix, err = pci.AddMSIX(cs, len(sizes)+1, 0, MSIXTable, MSIXPBA, opts.MSI); err != nil {
		return nil, err
	}
	for q := range sizes {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("virtio: eventfd for queue %d: %w", q, err)
		}
		f := os.NewFile(uintptr(fd), fmt.Sprintf("%s-kick%d", t.name, q))
		t.kicks = append(t.kicks, f)
		go t.worker(q, f)
	}
	t.resetLocked()
	return t, nil
}

// Name is "virtio-blk" and so on.
func (t *PCI) Name() string { return t.name }

// Device returns the device model.
func (t *PCI) Device() Device { return t.dev }

// MSIX returns the function's MSI-X state.
func (t *PCI) MSIX() *pci.MSIX { return t.msix }

// Close stops the device and the notification workers and releases the
// eventfds.
func (t *PCI) Close() {
	t.mu.Lock()
	t.setDoorbellsLocked(0)
	t.mu.Unlock()
	t.dev.Reset()
	t.qmu.Lock()
	t.closed = true
	t.qcond.Broadcast()
	t.qmu.Unlock()
	for _, f := range t.kicks {
		_ = f.Close()
	}
}

// worker turns signals on queue q's eventfd into Device.Notify calls.
//
// While the transport is quiesced (snapshot.go) the worker reads nothing:
// kicks pile up in the eventfd's counter. A worker that was already
// blocked in Read when Quiesce began and then gets a kick writes it back
// into the eventfd and waits, so the kick is neither served during the
// pause nor lost.
func (t *PCI) worker(q int, f *os.File) {
	// A fault reading guest RAM becomes a panic notify can recover (see
	// there) rather than a crash of the whole VMM.
	debug.SetPanicOnFault(true)
	var b [8]byte
	for {
		if !t.waitUnpaused() {
			return // closed
		}
		if _, err := f.Read(b[:]); err != nil {
			return // closed
		}
		t.qmu.Lock()
		if t.closed {
			t.qmu.Unlock()
			return
		}
		if t.paused {
			t.qmu.Unlock()
			t.kick(q) // keep it counted for Unquiesce
			continue
		}
		t.busy++
		t.qmu.Unlock()

		t.notifies.Add(1)
		t.mu.Lock()
		ok := t.active && !t.failed.Load()
		t.mu.Unlock()
		if ok {
			t.notify(q)
		}

		t.qmu.Lock()
		t.busy--
		if t.busy == 0 {
			t.qcond.Broadcast()
		}
		t.qmu.Unlock()
	}
}

// waitUnpaused blocks while the transport is quiesced and reports false
// once it is closed.
func (t *PCI) waitUnpaused() bool {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	for t.paused && !t.closed {
		t.qcond.Wait()
	}
	return !t.closed
}

// kick signals queue q's eventfd, as KVM does for an ioeventfd. It writes
// through the *os.File, which holds a reference on the descriptor for the
// write: a doorbell racing Close then gets os.ErrClosed instead of writing
// to a descriptor number that Close freed and something else may reuse.
// The write never waits: the counter would have to near 2^64 first.
func (t *PCI) kick(q int) {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, _ = t.kicks[q].Write(one[:])
}

// ConfigWrite applies a configuration-space write, then reacts to what
// changed: MSI-X unmasked, BAR0 moved or memory decoding switched.
func (t *PCI) ConfigWrite(off int, data []byte) {
	t.ConfigSpace.ConfigWrite(off, data)
	if err := t.msix.Unmasked(); err != nil {
		t.opts.Log("%s: MSI-X: %v", t.name, err)
	}
	addr := uint64(0)
	if t.Command()&pci.CmdMemory != 0 {
		addr = t.BAR(0).Address
	}
	t.mu.Lock()
	t.setDoorbellsLocked(addr)
	t.mu.Unlock()
}

// setDoorbellsLocked moves the ioeventfds to BAR0 at addr (0: remove).
func (t *PCI) setDoorbellsLocked(addr uint64) {
	if t.opts.Bell == nil || addr == t.bellAddr {
		return
	}
	for q, f := range t.kicks {
		if t.bellAddr != 0 {
			if err := t.opts.Bell.Deassign(t.bellAddr+NotifyOffset+uint64(NotifyMultiple*q), 2, int(f.Fd())); err != nil {
				t.opts.Log("%s: %v", t.name, err)
			}
		}
		if addr != 0 {
			if err := t.opts.Bell.Assign(addr+NotifyOffset+uint64(NotifyMultiple*q), 2, int(f.Fd())); err != nil {
				t.opts.Log("%s: %v (doorbell %d will exit to user space)", t.name, err, q)
			}
		}
	}
	t.bellAddr = addr
}

// BARRead implements pci.BARHandler.
func (t *PCI) BARRead(bar int, off uint64, data []byte) error {
	clear(data)
	if bar != 0 {
		return nil
	}
	switch {
	case off >= CommonOffset && off < CommonOffset+CommonLength:
		t.mu.Lock()
		img := t.commonLocked()
		t.mu.Unlock()
		o := off - CommonOffset
		copy(data, img[o:])
	case off == ISROffset && len(data) > 0:
		// Reading the ISR clears it (§4.1.4.5). An empty read reads
		// nothing, so it clears nothing (and must not index data[0]).
		data[0] = byte(t.isr.Swap(0))
	case off >= DeviceOffset && off < DeviceOffset+DeviceLength:
		t.dev.ReadConfig(off-DeviceOffset, data)
	default:
		if table, pba := t.msix.Contains(0, off); table || pba {
			t.msix.TableRead(off, data)
		}
	}
	return nil
}

// BARWrite implements pci.BARHandler.
func (t *PCI) BARWrite(bar int, off uint64, data []byte) error {
	if bar != 0 {
		return nil
	}
	switch {
	case off >= CommonOffset && off < CommonOffset+CommonLength:
		return t.writeCommon(off-CommonOffset, data)
	case off >= NotifyOffset && off < NotifyOffset+uint64(NotifyMultiple*len(t.queues)):
		// A doorbell that was not caught by an ioeventfd.
		t.exitNotifies.Add(1)
		t.kick(int(off-NotifyOffset) / NotifyMultiple)
	case off >= DeviceOffset && off < DeviceOffset+DeviceLength:
		t.dev.WriteConfig(off-DeviceOffset, data)
	default:
		if table, _ := t.msix.Contains(0, off); table {
			return t.msix.TableWrite(off, data)
		}
	}
	return nil
}

// commonLocked renders the common configuration structure as the driver
// sees it now.
func (t *PCI) commonLocked() []byte {
	b := make([]byte, CommonLength)
	le := binary.LittleEndian
	feat := t.offered()
	le.PutUint32(b[regDeviceFeatureSelect:], t.devFeatSel)
	if t.devFeatSel < 2 {
		le.PutUint32(b[regDeviceFeature:], uint32(feat>>(32*t.devFeatSel)))
	}
	le.PutUint32(b[regDriverFeatureSelect:], t.drvFeatSel)
	if t.drvFeatSel < 2 {
		le.PutUint32(b[regDriverFeature:], uint32(t.drvFeatures>>(32*t.drvFeatSel)))
	}
	le.PutUint16(b[regConfigMSIXVector:], uint16(t.configVector.Load()))
	le.PutUint16(b[regNumQueues:], uint16(len(t.queues)))
	b[regDeviceStatus] = t.status
	b[regConfigGeneration] = 0 // the device configuration never changes under the driver
	le.PutUint16(b[regQueueSelect:], t.queueSel)
	if q := t.selected(); q != nil {
		le.PutUint16(b[regQueueSize:], q.Size)
		le.PutUint16(b[regQueueMSIXVector:], uint16(t.vectors[t.queueSel].Load()))
		if q.Ready {
			le.PutUint16(b[regQueueEnable:], 1)
		}
		le.PutUint16(b[regQueueNotifyOff:], t.queueSel)
		le.PutUint64(b[regQueueDesc:], uint64(q.DescAddr))
		le.PutUint64(b[regQueueDriver:], uint64(q.AvailAddr))
		le.PutUint64(b[regQueueDevice:], uint64(q.UsedAddr))
	}
	return b
}

func (t *PCI) selected() *Queue {
	if int(t.queueSel) < len(t.queues) {
		return t.queues[t.queueSel]
	}
	return nil // §4.1.4.3.2: a queue that does not exist reads size 0
}

// offered is every feature the device offers: its own and the transport's.
func (t *PCI) offered() uint64 {
	return t.dev.Features() | 1<<FeatureVersion1 | 1<<FeatureIndirectDesc | 1<<FeatureEventIdx
}

// writeCommon applies a write to the common configuration. The write is
// merged into the current image, then each writable field it touched is
// applied, so any access width the driver uses works the same.
func (t *PCI) writeCommon(off uint64, data []byte) error {
	if off+uint64(len(data)) > CommonLength {
		return fmt.Errorf("%s: common config write of %d bytes at %#x runs past the structure", t.name, len(data), off)
	}
	t.mu.Lock()
	img := t.commonLocked()
	copy(img[off:], data)
	touched := func(reg, n uint64) bool { return off < reg+n && reg < off+uint64(len(data)) }
	le := binary.LittleEndian
	var errs []error
	var activate bool
	if touched(regDeviceFeatureSelect, 4) {
		t.devFeatSel = le.Uint32(img[regDeviceFeatureSelect:])
	}
	if touched(regDriverFeatureSelect, 4) {
		t.drvFeatSel = le.Uint32(img[regDriverFeatureSelect:])
	}
	if touched(regDriverFeature, 4) && t.drvFeatSel < 2 && t.status&StatusFeaturesOK == 0 {
		shift := 32 * t.drvFeatSel
		t.drvFeatures = t.drvFeatures&^(0xffffffff<<shift) | uint64(le.Uint32(img[regDriverFeature:]))<<shift
	}
	if touched(regConfigMSIXVector, 2) {
		t.configVector.Store(uint32(t.checkVector(le.Uint16(img[regConfigMSIXVector:]))))
	}
	if touched(regQueueSelect, 2) {
		t.queueSel = le.Uint16(img[regQueueSelect:])
	}
	if q := t.selected(); q != nil && t.status&StatusDriverOK == 0 {
		if touched(regQueueSize, 2) {
			q.Size = le.Uint16(img[regQueueSize:])
		}
		if touched(regQueueMSIXVector, 2) {
			v := t.checkVector(le.Uint16(img[regQueueMSIXVector:]))
			t.vectors[t.queueSel].Store(uint32(v))
			q.MSIXVector = v
		}
		if touched(regQueueDesc, 8) {
			q.DescAddr = guestmem.GPA(le.Uint64(img[regQueueDesc:]))
		}
		if touched(regQueueDriver, 8) {
			q.AvailAddr = guestmem.GPA(le.Uint64(img[regQueueDriver:]))
		}
		if touched(regQueueDevice, 8) {
			q.UsedAddr = guestmem.GPA(le.Uint64(img[regQueueDevice:]))
		}
		if touched(regQueueEnable, 2) && le.Uint16(img[regQueueEnable:]) == 1 && !q.Ready {
			// §4.1.4.3.2: the driver only ever writes 1; check the
			// rings before the device may use them.
			if err := q.Validate(t.opts.Mem); err != nil {
				errs = append(errs, fmt.Errorf("queue %d: %w", t.queueSel, err))
			} else {
				q.Ready = true
			}
		}
	}
	if touched(regDeviceStatus, 1) {
		s := img[regDeviceStatus]
		if s == 0 {
			t.mu.Unlock()
			t.Reset()
			return nil
		}
		activate = t.setStatusLocked(s)
	}
	t.mu.Unlock()
	if activate {
		errs = append(errs, t.activate())
	}
	if err := errors.Join(errs...); err != nil {
		t.fail(err)
		return err
	}
	return nil
}

// checkVector maps a vector number the table does not have to NO_VECTOR,
// which is how the driver learns the assignment failed (§4.1.5.1.2.1).
func (t *PCI) checkVector(v uint16) uint16 {
	if int(v) >= t.msix.Vectors() {
		return NoVector
	}
	return v
}

// setStatusLocked applies a status write other than reset and reports
// whether the device should now be activated.
func (t *PCI) setStatusLocked(s uint8) bool {
	old := t.status
	// Bits are only ever added until reset; NEEDS_RESET is the device's.
	s = s&^StatusDeviceNeedsReset | old
	if s&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		// §2.2.2: accept only a subset of what was offered, and a
		// modern driver must accept VERSION_1; otherwise FEATURES_OK
		// does not stick and the driver sees the refusal.
		if t.drvFeatures&^t.offered() != 0 || t.drvFeatures&(1<<FeatureVersion1) == 0 {
			t.opts.Log("%s: driver features %#x refused (offered %#x)", t.name, t.drvFeatures, t.offered())
			s &^= StatusFeaturesOK
		}
	}
	t.status = s
	return s&StatusDriverOK != 0 && old&StatusDriverOK == 0 && s&StatusFeaturesOK != 0 && !t.active
}

// activate starts the device on DRIVER_OK.
func (t *PCI) activate() error {
	t.mu.Lock()
	env := &Env{Mem: t.opts.Mem, Queues: t.queues, Features: t.drvFeatures,
		Interrupt: t.interrupt, Fail: t.fail}
	for _, q := range t.queues {
		q.SetEventIdx(t.drvFeatures&(1<<FeatureEventIdx) != 0)
	}
	t.active = true
	t.mu.Unlock()
	if err := t.dev.Activate(env); err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	// Doorbells rung before DRIVER_OK were dropped by the workers; the
	// driver may have posted buffers already (network receive buffers).
	for q := range t.queues {
		t.kick(q)
	}
	return nil
}

// interrupt is Env.Interrupt: tell the driver queue q has used buffers.
func (t *PCI) interrupt(q int) {
	if q < 0 || q >= len(t.queues) {
		return
	}
	need, err := t.queues[q].NeedsInterrupt(t.opts.Mem)
	if err != nil {
		t.fail(err)
		return
	}
	if !need {
		t.suppressed.Add(1)
		return
	}
	t.isr.Or(1)
	t.send(uint16(t.vectors[q].Load()), "queue")
}

func (t *PCI) send(v uint16, what string) {
	if v == NoVector || !t.msix.Enabled() {
		// No INTx: the machine has no PCI interrupt routing (_PRT),
		// so a driver without MSI-X gets no interrupts. Linux always
		// uses MSI-X when the function has it.
		return
	}
	t.interrupts.Add(1)
	if err := t.msix.Signal(int(v)); err != nil {
		t.opts.Log("%s: %s interrupt: %v", t.name, what, err)
	}
}

// fail is Env.Fail: the driver broke the protocol. The device stops and
// the driver is told through DEVICE_NEEDS_RESET and a configuration change
// interrupt (§2.1.2).
// notify runs the device's handler for queue q on the worker's goroutine.
// Guest RAM restored from a snapshot is mapped from the snapshot file
// (guestmem's MapFile); if that file is truncated while the machine runs,
// reading a page past its new end faults. The fault becomes a failure of
// this device (NEEDS_RESET, and a line in the log), not a crash of the VMM.
// Any other panic is a bug and goes on up.
func (t *PCI) notify(q int) {
	defer func() {
		if r := recover(); r != nil {
			if t.opts.Mem != nil && t.opts.Mem.IsRAMFault(r) {
				t.fail(fmt.Errorf("guest RAM could not be read (%v): was the snapshot file it is mapped from truncated?", r))
				return
			}
			panic(r)
		}
	}()
	t.dev.Notify(q)
}

func (t *PCI) fail(err error) {
	if t.failed.Swap(true) {
		return
	}
	t.opts.Log("%s: device needs reset: %v", t.name, err)
	t.mu.Lock()
	t.status |= StatusDeviceNeedsReset
	ok := t.status&StatusDriverOK != 0
	t.mu.Unlock()
	if ok {
		t.isr.Or(2)
		t.send(uint16(t.configVector.Load()), "configuration change")
	}
}

// Reset is a device reset (status 0): the device forgets the driver.
func (t *PCI) Reset() {
	t.dev.Reset()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resetLocked()
}

func (t *PCI) resetLocked() {
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = 0, 0, 0, 0, 0
	t.active = false
	t.failed.Store(false)
	t.isr.Store(0)
	t.configVector.Store(uint32(NoVector))
	for i, q := range t.queues {
		q.Reset()
		t.vectors[i].Store(uint32(NoVector))
	}
	// The MSI-X table is PCI state, not virtio state: a device reset
	// (status 0) leaves it alone, as real hardware and QEMU do, so a
	// driver that resets without re-allocating vectors keeps them.
}

// Status returns the device status register.
func (t *PCI) Status() uint8 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

// TransportStats are the transport's counters.
type TransportStats struct {
	Notifies     uint64 // queue notifications handled
	ExitNotifies uint64 // of which reached the VMM as MMIO exits
	Interrupts   uint64 // MSI-X messages requested
	Suppressed   uint64 // interrupts the driver had suppressed
}

// Stats returns the transport's counters.
func (t *PCI) Stats() TransportStats {
	return TransportStats{Notifies: t.notifies.Load(), ExitNotifies: t.exitNotifies.Load(),
		Interrupts: t.interrupts.Load(), Suppressed: t.suppressed.Load()}
}

var commonNames = []struct {
	off, n uint64
	name   string
}{
	{regDeviceFeatureSelect, 4, "device_feature_select"}, {regDeviceFeature, 4, "device_feature"},
	{regDriverFeatureSelect, 4, "driver_feature_select"}, {regDriverFeature, 4, "driver_feature"},
	{regConfigMSIXVector, 2, "config_msix_vector"}, {regNumQueues, 2, "num_queues"},
	{regDeviceStatus, 1, "device_status"}, {regConfigGeneration, 1, "config_generation"},
	{regQueueSelect, 2, "queue_select"}, {regQueueSize, 2, "queue_size"},
	{regQueueMSIXVector, 2, "queue_msix_vector"}, {regQueueEnable, 2, "queue_enable"},
	{regQueueNotifyOff, 2, "queue_notify_off"}, {regQueueDesc, 8, "queue_desc"},
	{regQueueDriver, 8, "queue_driver"}, {regQueueDevice, 8, "queue_device"},
}

// DescribeBAR implements pci.BARDescriber for the exit tracer.
func (t *PCI) DescribeBAR(bar int, off uint64, write bool, data []byte) string {
	dir := "read"
	if write {
		dir = "write"
	}
	var v uint64
	for i := len(data) - 1; i >= 0; i-- {
		v = v<<8 | uint64(data[i])
	}
	switch {
	case bar != 0:
	case off < CommonLength:
		name := "common config"
		for _, r := range commonNames {
			if off >= r.off && off < r.off+r.n {
				name = r.name
			}
		}
		return fmt.Sprintf("%s %s %s %#x", t.name, name, dir, v)
	case off == ISROffset:
		return fmt.Sprintf("%s ISR %s %#x", t.name, dir, v)
	case off >= DeviceOffset && off < DeviceOffset+DeviceLength:
		return fmt.Sprintf("%s device config +%#x %s %#x", t.name, off-DeviceOffset, dir, v)
	case off >= NotifyOffset && off < NotifyOffset+uint64(NotifyMultiple*len(t.queues)):
		return fmt.Sprintf("%s doorbell queue %d (no ioeventfd: exits to the VMM)", t.name, (off-NotifyOffset)/NotifyMultiple)
	default:
		if d := t.msix.Describe(off); d != "" {
			return fmt.Sprintf("%s %s %s %#x", t.name, d, dir, v)
		}
	}
	return fmt.Sprintf("%s BAR%d+%#x %s %#x", t.name, bar, off, dir, v)
}
