package virtio_test

// Tests of the virtio-over-PCI transport (virtio 1.2 §4.1) driven the way
// Linux's virtio_pci_modern driver drives it: find the vendor capabilities
// in configuration space (§4.1.4), reset, negotiate features (§3.1.1), set
// up the queue through the common configuration (§4.1.4.3) with 64-bit
// fields written as two dwords (vp_iowrite64_twopart), enable MSI-X (PCI
// 3.0 §6.8.2) and assign vectors (§4.1.5.1.2), set DRIVER_OK, then post
// buffers and ring the doorbell (§4.1.4.4). The device behind the
// transport is the real virtio-rng model over fake guest RAM
// (virtiotest); notifications are served on the transport's worker
// goroutines, so every wait for the device has a timeout.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/devices/bus"
	"kvmlab/devices/pci"
	"kvmlab/devices/virtio"
	"kvmlab/devices/virtio/rng"
	"kvmlab/devices/virtio/virtiotest"
	"kvmlab/guestmem"
)

// The root's memory window and the exit tracer reach the transport through
// these interfaces.
var (
	_ pci.BARHandler   = (*virtio.PCI)(nil)
	_ pci.BARDescriber = (*virtio.PCI)(nil)
)

// Common configuration register offsets (§4.1.4.3, struct
// virtio_pci_common_cfg), as a driver knows them.
const (
	ccDeviceFeatureSelect = 0x00
	ccDeviceFeature       = 0x04
	ccDriverFeatureSelect = 0x08
	ccDriverFeature       = 0x0c
	ccConfigMSIXVector    = 0x10
	ccNumQueues           = 0x12
	ccDeviceStatus        = 0x14
	ccConfigGeneration    = 0x15
	ccQueueSelect         = 0x16
	ccQueueSize           = 0x18
	ccQueueMSIXVector     = 0x1a
	ccQueueEnable         = 0x1c
	ccQueueNotifyOff      = 0x1e
	ccQueueDesc           = 0x20
	ccQueueDriver         = 0x28
	ccQueueDevice         = 0x30
	ccLength              = 0x38
)

const (
	statusAckDriver = virtio.StatusAcknowledge | virtio.StatusDriver
	statusFeatOK    = statusAckDriver | virtio.StatusFeaturesOK
	statusLive      = statusFeatOK | virtio.StatusDriverOK

	featV1       = uint64(1) << virtio.FeatureVersion1
	featIndirect = uint64(1) << virtio.FeatureIndirectDesc
	featEventIdx = uint64(1) << virtio.FeatureEventIdx

	barAddr     = 0xc000_0000 // where the tests place BAR0
	waitTimeout = 5 * time.Second
)

// msiFor is the message the tests program into table entry v: an x86
// interrupt address (0xfeeXXXXX, destination in bits 19:12) and a vector.
func msiFor(v int) (addr uint64, data uint32) { return 0xfee00000 | uint64(v)<<12, 0x4020 + uint32(v) }

// ---- Fakes ------------------------------------------------------------------

// msi is one message the sink got.
type msi struct {
	vector int
	addr   uint64
	data   uint32
}

// fakeSink is a pci.MSIXSink that records every message and also queues it
// on ch (dropping when full), so a test can wait for the worker goroutine
// to send one.
type fakeSink struct {
	mu   sync.Mutex
	msgs []msi
	ch   chan msi
}

func newFakeSink() *fakeSink { return &fakeSink{ch: make(chan msi, 256)} }

func (s *fakeSink) SendMSI(vector int, addr uint64, data uint32) error {
	m := msi{vector, addr, data}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	select {
	case s.ch <- m:
	default:
	}
	return nil
}

func (s *fakeSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// wait returns the next message, or false after timeout.
func (s *fakeSink) wait(timeout time.Duration) (msi, bool) {
	select {
	case m := <-s.ch:
		return m, true
	case <-time.After(timeout):
		return msi{}, false
	}
}

// bell is one Doorbells call.
type bell struct {
	assign bool
	addr   uint64
	length uint32
	fd     int
}

// fakeBells is a virtio.Doorbells that records Assign and Deassign, as
// KVM_IOEVENTFD would see them.
type fakeBells struct {
	mu         sync.Mutex
	calls      []bell
	active     map[uint64]int // doorbell address → eventfd
	failAssign bool
}

func (b *fakeBells) Assign(addr uint64, length uint32, fd int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, bell{true, addr, length, fd})
	if b.failAssign {
		return errors.New("fake: no ioeventfd")
	}
	if b.active == nil {
		b.active = map[uint64]int{}
	}
	b.active[addr] = fd
	return nil
}

func (b *fakeBells) Deassign(addr uint64, length uint32, fd int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, bell{false, addr, length, fd})
	if b.active[addr] != fd {
		return fmt.Errorf("fake: deassign of %#x fd %d, which is not assigned", addr, fd)
	}
	delete(b.active, addr)
	return nil
}

func (b *fakeBells) take() []bell {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.calls
	b.calls = nil
	return c
}

// fd returns the eventfd assigned at addr, or -1.
func (b *fakeBells) fd(addr uint64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if fd, ok := b.active[addr]; ok {
		return fd
	}
	return -1
}

// ---- The driver side -----------------------------------------------------------

// guest accesses the transport as MMIO and PCI configuration exits would:
// ConfigRead/ConfigWrite, and BARRead/BARWrite at offsets of BAR0. It never
// fails a test itself, so the fuzzer can use it too.
type guest struct{ tr *virtio.PCI }

func leValue(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func leBytes(v uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(v >> (8 * (i % 8)))
	}
	return b
}

func (g guest) cfgRead(off, n int) uint32 {
	b := make([]byte, n)
	g.tr.ConfigRead(off, b)
	return uint32(leValue(b))
}

func (g guest) cfgWrite(off, n int, v uint32) { g.tr.ConfigWrite(off, leBytes(uint64(v), n)) }

func (g guest) read(off uint64, n int) uint64 {
	b := make([]byte, n)
	_ = g.tr.BARRead(0, off, b)
	return leValue(b)
}

func (g guest) write(off uint64, n int, v uint64) error { return g.tr.BARWrite(0, off, leBytes(v, n)) }

// write64 is vp_iowrite64_twopart: low dword, then high dword.
func (g guest) write64(off uint64, v uint64) error {
	return errors.Join(g.write(off, 4, v&0xffffffff), g.write(off+4, 4, v>>32))
}

func (g guest) status() uint8 { return uint8(g.read(ccDeviceStatus, 1)) }

func (g guest) setStatus(s uint8) error { return g.write(ccDeviceStatus, 1, uint64(s)) }

// deviceFeatures reads both feature words as vp_modern_get_features does.
func (g guest) deviceFeatures() uint64 {
	_ = g.write(ccDeviceFeatureSelect, 4, 0)
	lo := g.read(ccDeviceFeature, 4)
	_ = g.write(ccDeviceFeatureSelect, 4, 1)
	return lo | g.read(ccDeviceFeature, 4)<<32
}

// setFeatures is vp_modern_set_features.
func (g guest) setFeatures(f uint64) error {
	return errors.Join(
		g.write(ccDriverFeatureSelect, 4, 0), g.write(ccDriverFeature, 4, f&0xffffffff),
		g.write(ccDriverFeatureSelect, 4, 1), g.write(ccDriverFeature, 4, f>>32))
}

// vcap is one virtio vendor capability (§4.1.4, struct virtio_pci_cap).
type vcap struct {
	at                    int // offset in configuration space
	capLen, cfgType, bar  uint8
	offset, length, multi uint32 // multi: notify_off_multiplier (cfg_type 2)
}

// caps walks the capability list as pci_find_capability and
// virtio_pci_find_capability do, and returns the vendor capabilities in
// list order and the offset of the MSI-X capability.
func (g guest) caps() (vendor []vcap, msix int) {
	off := int(g.cfgRead(pci.RegCapPointer, 1))
	for n := 0; off != 0 && n < 48; n++ {
		switch uint8(g.cfgRead(off, 1)) {
		case pci.CapVendor:
			c := vcap{at: off, capLen: uint8(g.cfgRead(off+2, 1)), cfgType: uint8(g.cfgRead(off+3, 1)),
				bar: uint8(g.cfgRead(off+4, 1)), offset: g.cfgRead(off+8, 4), length: g.cfgRead(off+12, 4)}
			if c.cfgType == 2 {
				c.multi = g.cfgRead(off+16, 4)
			}
			vendor = append(vendor, c)
		case pci.CapMSIX:
			msix = off
		}
		off = int(g.cfgRead(off+1, 1))
	}
	return vendor, msix
}

// msixControl writes MSI-X message control.
func (g guest) msixControl(v uint16) {
	_, at := g.caps()
	g.cfgWrite(at+2, 2, uint32(v))
}

// tableWrite writes a dword of MSI-X table entry v.
func (g guest) tableWrite(v int, field uint64, val uint32) error {
	return g.write(uint64(virtio.MSIXTable+pci.MSIXEntrySize*v)+field, 4, uint64(val))
}

// enableMSIX does what Linux's msix_capability_init and request_irq do:
// enable with the function masked, mask every entry, program address and
// data, lift the function mask, then unmask each entry.
func (g guest) enableMSIX(n int) {
	g.msixControl(pci.MSIXEnable | pci.MSIXFunctionMask)
	for v := range n {
		addr, data := msiFor(v)
		_ = g.tableWrite(v, 12, 1)
		_ = g.tableWrite(v, 0, uint32(addr))
		_ = g.tableWrite(v, 4, uint32(addr>>32))
		_ = g.tableWrite(v, 8, data)
	}
	g.msixControl(pci.MSIXEnable)
	for v := range n {
		_ = g.tableWrite(v, 12, 0)
	}
}

// pending reads vector v's PBA bit through the BAR.
func (g guest) pending(v int) bool { return g.read(virtio.MSIXPBA, 8)&(1<<v) != 0 }

// setup is what the driver programs for queue 0.
type setup struct {
	features                  uint64
	size                      uint16
	desc, avail, used         guestmem.GPA
	configVector, queueVector uint16
	noMSIX                    bool
}

var errRefused = errors.New("device refused the features (FEATURES_OK did not stick)")

// init brings the device up like virtio_dev_probe and vp_modern_find_vqs:
// reset and wait for status 0, ACKNOWLEDGE, DRIVER, features,
// FEATURES_OK (read back, §3.1.1 step 6), MSI-X, the configuration vector,
// queue 0, queue_enable, DRIVER_OK.
func (g guest) init(s setup) error {
	if err := g.setStatus(0); err != nil {
		return err
	}
	if st := g.status(); st != 0 {
		return fmt.Errorf("status %#x after reset", st)
	}
	_ = g.setStatus(virtio.StatusAcknowledge)
	_ = g.setStatus(statusAckDriver)
	if err := g.setFeatures(s.features); err != nil {
		return err
	}
	_ = g.setStatus(statusFeatOK)
	if g.status()&virtio.StatusFeaturesOK == 0 {
		return errRefused
	}
	if !s.noMSIX {
		g.enableMSIX(2)
	}
	_ = g.write(ccConfigMSIXVector, 2, uint64(s.configVector))
	_ = g.write(ccQueueSelect, 2, 0)
	if g.read(ccQueueSize, 2) == 0 {
		return errors.New("queue 0 is not available")
	}
	if err := errors.Join(
		g.write(ccQueueSize, 2, uint64(s.size)),
		g.write64(ccQueueDesc, uint64(s.desc)),
		g.write64(ccQueueDriver, uint64(s.avail)),
		g.write64(ccQueueDevice, uint64(s.used)),
		g.write(ccQueueMSIXVector, 2, uint64(s.queueVector)),
	); err != nil {
		return err
	}
	if err := g.write(ccQueueEnable, 2, 1); err != nil {
		return fmt.Errorf("queue_enable: %w", err)
	}
	return g.setStatus(statusLive)
}

// placeBAR is what the PCI core does before the driver probes: size BAR0
// with decoding off, program its address, then enable memory decoding and
// bus mastering (§6.2.5.1, §6.2.2).
func (g guest) placeBAR(addr uint32) (size uint32) {
	cmd := g.cfgRead(pci.RegCommand, 2)
	g.cfgWrite(pci.RegCommand, 2, cmd&^pci.CmdMemory)
	g.cfgWrite(pci.RegBAR0, 4, 0xffffffff)
	size = ^(g.cfgRead(pci.RegBAR0, 4) &^ 0xf) + 1
	g.cfgWrite(pci.RegBAR0, 4, addr)
	g.cfgWrite(pci.RegCommand, 2, cmd|pci.CmdMemory|pci.CmdBusMaster)
	return size
}

// ---- The rig -------------------------------------------------------------------

// rig is a virtio-rng device behind the transport over 64 KiB of RAM, a
// 4 KiB hole and 4 KiB more RAM, with a virtiotest driver whose rings are
// at the start of RAM.
type rig struct {
	guest
	t     testing.TB
	ram   *virtiotest.RAM
	drv   *virtiotest.Driver
	dev   *rng.Device
	sink  *fakeSink
	bells *fakeBells

	logMu sync.Mutex
	logs  []string
}

// newRig's transport is closed when the test ends.
func newRig(t testing.TB) *rig {
	t.Helper()
	ram := virtiotest.NewRAM(64<<10, 4<<10, 4<<10)
	drv, err := virtiotest.NewDriver(ram, 16)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, ram: ram, drv: drv, dev: rng.New(), sink: newFakeSink(), bells: &fakeBells{}}
	tr, err := virtio.NewPCI(r.dev, virtio.PCIOptions{Mem: ram.Memory, MSI: r.sink, Bell: r.bells, Log: r.logf})
	if err != nil {
		t.Fatal(err)
	}
	r.guest = guest{tr}
	t.Cleanup(tr.Close)
	return r
}

func (r *rig) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func (r *rig) logText() string {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	return strings.Join(r.logs, "\n")
}

func (r *rig) logged(substr string) bool { return strings.Contains(r.logText(), substr) }

// setup is the Linux-like setup for the rig's driver rings: VERSION_1,
// configuration changes on vector 0, queue 0 on vector 1.
func (r *rig) setup() setup {
	return setup{features: featV1, size: r.drv.Size, desc: r.drv.DescAddr, avail: r.drv.AvailAddr,
		used: r.drv.UsedAddr, configVector: 0, queueVector: 1}
}

// start brings the device up and checks it is live.
func (r *rig) start() {
	r.t.Helper()
	if err := r.init(r.setup()); err != nil {
		r.t.Fatalf("init: %v", err)
	}
	if got := r.status(); got != statusLive {
		r.t.Fatalf("status %#x after DRIVER_OK, want %#x", got, statusLive)
	}
}

// post posts one chain of writable buffers of the given lengths.
func (r *rig) post(lens ...uint32) uint16 {
	r.t.Helper()
	head, err := r.drv.Post(nil, lens)
	if err != nil {
		r.t.Fatal(err)
	}
	return head
}

// doorbell writes queue 0's index to its doorbell through the BAR: the
// path of a guest write that no ioeventfd caught (§4.1.4.4).
func (r *rig) doorbell() {
	r.t.Helper()
	if err := r.write(virtio.NotifyOffset, 2, 0); err != nil {
		r.t.Fatal(err)
	}
}

// waitMSI waits for the next message and checks it is vector v's.
func (r *rig) waitMSI(v int) {
	r.t.Helper()
	m, ok := r.sink.wait(waitTimeout)
	if !ok {
		r.t.Fatalf("no MSI-X message within %v (status %#x)", waitTimeout, r.status())
	}
	addr, data := msiFor(v)
	if m != (msi{v, addr, data}) {
		r.t.Fatalf("message %+v, want vector %d addr %#x data %#x", m, v, addr, data)
	}
}

// noMSI checks that no message is waiting.
func (r *rig) noMSI(what string) {
	r.t.Helper()
	select {
	case m := <-r.sink.ch:
		r.t.Fatalf("%s: unexpected message %+v", what, m)
	default:
	}
}

// waitUntil polls cond until it holds or the timeout passes.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// usedIdx waits until the device's used idx reaches n.
func (r *rig) waitUsed(n uint16) {
	r.t.Helper()
	waitUntil(r.t, fmt.Sprintf("used idx %d", n), func() bool {
		idx, err := r.drv.UsedIdx()
		return err == nil && idx == n
	})
}

// workers counts the transport notification goroutines alive in the
// process: those NewPCI started (a goroutine that has not run yet shows a
// compiler wrapper, not worker, at the top of its stack, so the "created
// by" line is what identifies it).
func workers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "created by kvmlab/devices/virtio.NewPCI")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// ---- Tests -----------------------------------------------------------------------

func TestNewPCIErrors(t *testing.T) {
	ram := virtiotest.NewRAM(4096, 0, 0)
	for _, opts := range []virtio.PCIOptions{
		{MSI: newFakeSink()},
		{Mem: ram.Memory},
	} {
		if tr, err := virtio.NewPCI(rng.New(), opts); err == nil {
			tr.Close()
			t.Errorf("NewPCI(%+v) succeeded", opts)
		}
	}
}

// TestPCIIdentity checks the header a driver matches on (§4.1.2): vendor
// 0x1af4, device 0x1040 + 4 for an entropy device, subsystem ID ≥ 0x40
// (non-transitional, §4.1.2.1), revision 1, a capability list, and BAR0 a
// 32-bit non-prefetchable memory BAR.
func TestPCIIdentity(t *testing.T) {
	r := newRig(t)
	if r.tr.Name() != "virtio-rng" || r.tr.Device() != virtio.Device(r.dev) {
		t.Errorf("Name %q, Device %v", r.tr.Name(), r.tr.Device())
	}
	for _, tc := range []struct {
		name   string
		off, n int
		want   uint32
	}{
		{"vendor ID", pci.RegVendorID, 2, virtio.PCIVendor},
		{"device ID", pci.RegDeviceID, 2, virtio.PCIDeviceBase + uint32(virtio.TypeRNG)},
		{"revision", pci.RegRevisionID, 1, 1},
		{"revision and class code", pci.RegRevisionID, 4, 0xff000001}, // class 0xff0000: unclassified
		{"subsystem vendor", pci.RegSubsysVendor, 2, virtio.PCIVendor},
		{"subsystem ID", pci.RegSubsysID, 2, virtio.SubsystemID},
		{"status: capability list", pci.RegStatus, 2, pci.StatusCapList},
		{"header type", pci.RegHeaderType, 1, 0},
		{"BAR0 type bits", pci.RegBAR0, 4, 0},
		{"BAR1", pci.RegBAR0 + 4, 4, 0},
		{"BAR5", pci.RegBAR0 + 20, 4, 0},
		{"interrupt pin", pci.RegInterruptPin, 1, 0},
	} {
		if got := r.cfgRead(tc.off, tc.n); got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, got, tc.want)
		}
	}
}

// TestPCICapabilities walks the capability list as vp_modern_probe does
// and checks that it describes BAR0 as the package comment lays it out,
// and passes the checks of vp_modern_map_capability: each structure in a
// memory BAR, inside it, at least as long as the driver needs.
func TestPCICapabilities(t *testing.T) {
	r := newRig(t)
	vendor, msixAt := r.caps()
	want := []struct {
		cfgType                uint8
		capLen                 uint8
		offset, length, minLen uint32
		multi                  uint32
	}{
		{1, 16, virtio.CommonOffset, virtio.CommonLength, ccLength, 0}, // common, §4.1.4.3
		{3, 16, virtio.ISROffset, 1, 1, 0},                             // ISR, §4.1.4.5
		{4, 16, virtio.DeviceOffset, virtio.DeviceLength, 0, 0},        // device, §4.1.4.6
		{2, 20, virtio.NotifyOffset, virtio.NotifyMultiple, 2, 4},      // notify, §4.1.4.4
	}
	if len(vendor) != len(want) {
		t.Fatalf("%d vendor capabilities %+v, want %d", len(vendor), vendor, len(want))
	}
	seen := map[uint8]bool{}
	for i, w := range want {
		c := vendor[i]
		if seen[c.cfgType] {
			t.Errorf("cfg_type %d twice", c.cfgType)
		}
		seen[c.cfgType] = true
		if c.cfgType != w.cfgType || c.capLen != w.capLen || c.bar != 0 || c.offset != w.offset ||
			c.length != w.length || c.multi != w.multi {
			t.Errorf("capability %d: %+v, want cfg_type %d cap_len %d BAR0 offset %#x length %#x multiplier %d",
				i, c, w.cfgType, w.capLen, w.offset, w.length, w.multi)
		}
		if c.length < w.minLen || uint64(c.offset)+uint64(c.length) > virtio.BARSize {
			t.Errorf("cfg_type %d: %#x+%#x does not fit BAR0 or is shorter than %#x", c.cfgType, c.offset, c.length, w.minLen)
		}
		if c.at%4 != 0 || c.at < pci.HeaderSize {
			t.Errorf("cfg_type %d at config offset %#x", c.cfgType, c.at)
		}
	}
	// vp_modern_map_vq_notify: queue_notify_off * multiplier + 2 must
	// lie inside the notify structure.
	if off := r.read(ccQueueNotifyOff, 2); off*virtio.NotifyMultiple+2 > uint64(vendor[3].length) {
		t.Errorf("queue 0 notify_off %d falls outside the notify structure", off)
	}
	if msixAt == 0 {
		t.Fatal("no MSI-X capability")
	}
	// One vector per queue plus one for configuration changes, table and
	// PBA in BAR0 (BIR 0).
	if got := r.cfgRead(msixAt+2, 2); got != 1 {
		t.Errorf("MSI-X message control %#x, want table size 2 (field 1), disabled", got)
	}
	if got := r.cfgRead(msixAt+4, 4); got != virtio.MSIXTable {
		t.Errorf("MSI-X table offset/BIR %#x, want %#x", got, virtio.MSIXTable)
	}
	if got := r.cfgRead(msixAt+8, 4); got != virtio.MSIXPBA {
		t.Errorf("MSI-X PBA offset/BIR %#x, want %#x", got, virtio.MSIXPBA)
	}
	if r.tr.MSIX().Vectors() != 2 {
		t.Errorf("MSIX().Vectors() = %d", r.tr.MSIX().Vectors())
	}
}

// TestPCIDoorbellAssignment: the doorbells follow BAR0 and the memory
// decode bit, as KVM_IOEVENTFD registrations must, since an ioeventfd at
// a stale address would swallow writes meant for another device.
func TestPCIDoorbellAssignment(t *testing.T) {
	r := newRig(t) // Close is also a step below; a second Close is harmless
	// Sizing with decoding off (§6.2.5.1): all ones in, size out.
	g := r.guest
	g.cfgWrite(pci.RegBAR0, 4, 0xffffffff)
	if got := g.cfgRead(pci.RegBAR0, 4); got != 0xffff8000 {
		t.Fatalf("BAR0 after writing all ones: %#x, want 0xffff8000 (32 KiB, 32-bit memory)", got)
	}
	if size := ^(g.cfgRead(pci.RegBAR0, 4) &^ 0xf) + 1; size != virtio.BARSize {
		t.Fatalf("BAR0 size %#x", size)
	}
	fd := -1
	cmd := func(v uint32) func() { return func() { g.cfgWrite(pci.RegCommand, 2, v) } }
	bar := func(v uint32) func() { return func() { g.cfgWrite(pci.RegBAR0, 4, v) } }
	for _, step := range []struct {
		what string
		do   func()
		want []bell // fd left out
	}{
		{"address, decoding off", bar(barAddr), nil},
		{"memory decoding on", cmd(pci.CmdMemory | pci.CmdBusMaster), []bell{{true, barAddr + 0x3000, 2, 0}}},
		{"unrelated config write", func() { g.cfgWrite(pci.RegLatencyTimer, 1, 0x40) }, nil},
		{"same address again", bar(barAddr), nil},
		{"moved with decoding on", bar(0xd000_0000), []bell{{false, barAddr + 0x3000, 2, 0}, {true, 0xd000_3000, 2, 0}}},
		{"decoding off", cmd(pci.CmdBusMaster), []bell{{false, 0xd000_3000, 2, 0}}},
		{"moved with decoding off", bar(barAddr + 0x8000), nil},
		{"decoding on", cmd(pci.CmdMemory), []bell{{true, barAddr + 0xb000, 2, 0}}},
		{"Close", r.tr.Close, []bell{{false, barAddr + 0xb000, 2, 0}}},
	} {
		step.do()
		got := r.bells.take()
		if len(got) != len(step.want) {
			t.Fatalf("%s: doorbell calls %+v, want %+v", step.what, got, step.want)
		}
		for i, b := range got {
			if fd == -1 {
				fd = b.fd
			}
			if b.fd != fd || fd < 0 {
				t.Errorf("%s: eventfd %d, queue 0's is %d", step.what, b.fd, fd)
			}
			b.fd = 0
			if b != step.want[i] {
				t.Errorf("%s: call %d %+v, want %+v", step.what, i, b, step.want[i])
			}
		}
	}
}

// TestPCIDoorbellAssignFails: without an ioeventfd the doorbell still
// works, by exiting to the VMM.
func TestPCIDoorbellAssignFails(t *testing.T) {
	r := newRig(t)
	r.bells.failAssign = true
	if size := r.placeBAR(barAddr); size != virtio.BARSize {
		t.Fatalf("BAR0 size %#x", size)
	}
	if !r.logged("doorbell 0 will exit to user space") {
		t.Errorf("assignment failure not logged: %q", r.logText())
	}
	r.start()
	r.post(16)
	r.doorbell()
	r.waitMSI(1)
}

// TestPCIFeatures: the device offers VERSION_1, INDIRECT_DESC and
// EVENT_IDX (§6) and nothing else for virtio-rng (§5.4.3); FEATURES_OK
// sticks only for a subset of that including VERSION_1 (§2.2.2, §3.1.1
// step 6: the driver re-reads it to learn the device's verdict).
func TestPCIFeatures(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		sel  uint64
		want uint64
	}{
		{0, featIndirect | featEventIdx},
		{1, featV1 >> 32},
		{2, 0},
		{0xffffffff, 0},
	} {
		_ = r.write(ccDeviceFeatureSelect, 4, tc.sel)
		if got := r.read(ccDeviceFeatureSelect, 4); got != tc.sel {
			t.Errorf("device_feature_select reads %#x after writing %#x", got, tc.sel)
		}
		if got := r.read(ccDeviceFeature, 4); got != tc.want {
			t.Errorf("device_feature[%d] = %#x, want %#x", tc.sel, got, tc.want)
		}
	}

	for _, tc := range []struct {
		name   string
		driver uint64
		ok     bool
	}{
		{"VERSION_1 only", featV1, true},
		{"everything offered", featV1 | featIndirect | featEventIdx, true},
		{"no VERSION_1 (a legacy driver)", featIndirect, false},
		{"nothing", 0, false},
		{"unoffered device bit 0", featV1 | 1, false},
		{"unoffered bit 33", featV1 | 1<<33, false},
		{"unoffered bit 63", featV1 | 1<<63, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			_ = r.setStatus(0)
			_ = r.setStatus(statusAckDriver)
			if got := r.deviceFeatures(); got != featV1|featIndirect|featEventIdx {
				t.Fatalf("device features %#x", got)
			}
			if err := r.setFeatures(tc.driver); err != nil {
				t.Fatal(err)
			}
			_ = r.write(ccDriverFeatureSelect, 4, 1)
			hi := r.read(ccDriverFeature, 4)
			_ = r.write(ccDriverFeatureSelect, 4, 0)
			if got := r.read(ccDriverFeature, 4) | hi<<32; got != tc.driver {
				t.Fatalf("driver_feature reads back %#x, want %#x", got, tc.driver)
			}
			_ = r.setStatus(statusFeatOK)
			st := r.status()
			if ok := st&virtio.StatusFeaturesOK != 0; ok != tc.ok {
				t.Fatalf("status %#x: FEATURES_OK %v, want %v", st, ok, tc.ok)
			}
			if st&statusAckDriver != statusAckDriver {
				t.Fatalf("status %#x lost ACKNOWLEDGE|DRIVER", st)
			}
			if !tc.ok {
				if !r.logged("refused") {
					t.Errorf("refusal not logged")
				}
				return
			}
			// Accepted features are frozen (§3.1.1: FEATURES_OK means
			// the driver will not accept new feature bits).
			_ = r.write(ccDriverFeature, 4, 0)
			if got := r.read(ccDriverFeature, 4); got != tc.driver&0xffffffff {
				t.Errorf("driver_feature changed after FEATURES_OK: %#x", got)
			}
		})
	}
}

// TestPCIQueueRegisters: per-queue registers through queue_select
// (§4.1.4.3): the maximum size is offered, the driver's values read back,
// a queue that does not exist reads size 0 and takes no writes, and the
// read-only fields stay put.
func TestPCIQueueRegisters(t *testing.T) {
	r := newRig(t)
	_ = r.setStatus(statusAckDriver)
	if got := r.read(ccNumQueues, 2); got != 1 {
		t.Fatalf("num_queues %d, want 1 (requestq)", got)
	}
	_ = r.write(ccNumQueues, 2, 7)
	if got := r.read(ccNumQueues, 2); got != 1 {
		t.Fatalf("num_queues %d after a write, want it read-only", got)
	}
	for _, tc := range []struct {
		reg  uint64
		n    int
		want uint64
	}{
		{ccQueueSelect, 2, 0},
		{ccQueueSize, 2, rng.QueueSize},
		{ccQueueMSIXVector, 2, uint64(virtio.NoVector)},
		{ccQueueEnable, 2, 0},
		{ccQueueNotifyOff, 2, 0},
		{ccQueueDesc, 8, 0},
		{ccQueueDriver, 8, 0},
		{ccQueueDevice, 8, 0},
		{ccConfigMSIXVector, 2, uint64(virtio.NoVector)},
		{ccConfigGeneration, 1, 0},
	} {
		if got := r.read(tc.reg, tc.n); got != tc.want {
			t.Errorf("register %#x after reset: %#x, want %#x", tc.reg, got, tc.want)
		}
	}
	// Addresses above 4 GiB: the high halves must land.
	_ = r.write(ccQueueSize, 2, 16)
	_ = r.write64(ccQueueDesc, 0x1_0000_1000)
	_ = r.write64(ccQueueDriver, 0x2_0000_2000)
	_ = r.write64(ccQueueDevice, 0x3_0000_3000)
	_ = r.write(ccQueueNotifyOff, 2, 5)
	for _, tc := range []struct {
		reg  uint64
		n    int
		want uint64
	}{
		{ccQueueSize, 2, 16},
		{ccQueueDesc, 8, 0x1_0000_1000},
		{ccQueueDesc + 4, 4, 1},
		{ccQueueDriver, 8, 0x2_0000_2000},
		{ccQueueDevice, 4, 0x3000},
		{ccQueueDevice + 4, 4, 3},
		{ccQueueNotifyOff, 2, 0},
	} {
		if got := r.read(tc.reg, tc.n); got != tc.want {
			t.Errorf("register %#x: %#x, want %#x", tc.reg, got, tc.want)
		}
	}
	// §4.1.4.3: "queue_size ... 0 if unavailable".
	for _, sel := range []uint64{1, 2, 0x8000, 0xffff} {
		_ = r.write(ccQueueSelect, 2, sel)
		_ = r.write(ccQueueSize, 2, 8)
		_ = r.write(ccQueueEnable, 2, 1)
		if got := r.read(ccQueueSelect, 2); got != sel {
			t.Errorf("queue_select %#x reads %#x", sel, got)
		}
		if got := r.read(ccQueueSize, 2); got != 0 {
			t.Errorf("queue %#x: size %d, want 0", sel, got)
		}
		if got := r.read(ccQueueEnable, 2); got != 0 {
			t.Errorf("queue %#x: enable %d", sel, got)
		}
		if r.status()&virtio.StatusDeviceNeedsReset != 0 {
			t.Errorf("queue %#x: writes to a missing queue set DEVICE_NEEDS_RESET", sel)
		}
	}
	_ = r.write(ccQueueSelect, 2, 0)
	if got := r.read(ccQueueSize, 2); got != 16 {
		t.Errorf("queue 0 size %d after writes to missing queues", got)
	}
}

// TestPCIVectors: a vector the table does not have reads back as
// VIRTIO_MSI_NO_VECTOR, which is how the driver learns the assignment
// failed (§4.1.5.1.2.1); the table has entries 0 and 1.
func TestPCIVectors(t *testing.T) {
	for _, reg := range []struct {
		name string
		off  uint64
	}{{"config_msix_vector", ccConfigMSIXVector}, {"queue_msix_vector", ccQueueMSIXVector}} {
		for _, tc := range []struct {
			write, want uint16
		}{
			{0, 0},
			{1, 1},
			{2, virtio.NoVector},
			{0x7ff, virtio.NoVector},
			{0x8000, virtio.NoVector},
			{virtio.NoVector, virtio.NoVector},
		} {
			r := newRig(t)
			_ = r.setStatus(statusAckDriver)
			_ = r.write(reg.off, 2, uint64(tc.write))
			if got := uint16(r.read(reg.off, 2)); got != tc.want {
				t.Errorf("%s: wrote %#x, reads %#x, want %#x", reg.name, tc.write, got, tc.want)
			}
		}
	}
	// A missing queue has no vector to set.
	r := newRig(t)
	_ = r.write(ccQueueSelect, 2, 1)
	_ = r.write(ccQueueMSIXVector, 2, 1)
	_ = r.write(ccQueueSelect, 2, 0)
	if got := uint16(r.read(ccQueueMSIXVector, 2)); got != virtio.NoVector {
		t.Errorf("queue 0's vector %#x after a write to queue 1's", got)
	}
}

// TestPCIQueueEnableRefused: rings the device cannot use put it into
// DEVICE_NEEDS_RESET at queue_enable (§2.1.2), the queue stays disabled,
// nothing panics, and a reset recovers.
func TestPCIQueueEnableRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(r *rig, s *setup)
	}{
		{"descriptor table in the hole", func(r *rig, s *setup) { s.desc, _ = r.ram.Hole() }},
		{"device ring runs past the end of RAM", func(r *rig, s *setup) { s.used = r.ram.Low.End() - 8 }},
		{"driver ring beyond all RAM", func(r *rig, s *setup) { s.avail = 1 << 40 }},
		{"descriptor table wraps 2^64", func(r *rig, s *setup) { s.desc = ^guestmem.GPA(0) &^ 15 }},
		{"size 0", func(r *rig, s *setup) { s.size = 0 }},
		{"size not a power of two", func(r *rig, s *setup) { s.size = 12 }},
		{"size above the maximum", func(r *rig, s *setup) { s.size = 2 * rng.QueueSize }},
		{"descriptor table misaligned", func(r *rig, s *setup) { s.desc += 8 }},
		{"device ring misaligned", func(r *rig, s *setup) { s.used += 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			s := r.setup()
			tc.mod(r, &s)
			err := r.init(s)
			if !errors.Is(err, virtio.ErrNeedsReset) || !strings.Contains(err.Error(), "queue_enable") {
				t.Fatalf("init: %v, want a queue_enable error wrapping ErrNeedsReset", err)
			}
			if st := r.status(); st&virtio.StatusDeviceNeedsReset == 0 {
				t.Fatalf("status %#x, want DEVICE_NEEDS_RESET", st)
			}
			if got := r.read(ccQueueEnable, 2); got != 0 {
				t.Fatalf("queue_enable reads %d", got)
			}
			// The driver may carry on regardless: NEEDS_RESET stays,
			// nothing is served.
			_ = r.setStatus(statusLive)
			if st := r.status(); st != statusLive|virtio.StatusDeviceNeedsReset {
				t.Fatalf("status %#x after DRIVER_OK", st)
			}
			_ = r.setStatus(0)
			if st := r.status(); st != 0 {
				t.Fatalf("status %#x after reset", st)
			}
			r.start()
			r.post(8)
			r.doorbell()
			r.waitMSI(1)
		})
	}
}

// TestPCIEndToEnd is the whole life of a virtio-rng device as Linux drives
// it: placement, probe, a request served through each doorbell path,
// interrupts through MSI-X with masking, the ISR, and reset.
func TestPCIEndToEnd(t *testing.T) {
	r := newRig(t)
	r.placeBAR(barAddr)
	if calls := r.bells.take(); len(calls) != 1 || !calls[0].assign || calls[0].addr != barAddr+virtio.NotifyOffset {
		t.Fatalf("doorbell calls %+v, want one Assign at BAR0+0x3000", calls)
	}
	r.start()

	// A request through a doorbell that exits to the VMM.
	head := r.post(32)
	r.doorbell()
	r.waitMSI(1)
	used, err := r.drv.Used()
	if err != nil || len(used) != 1 || used[0] != (virtiotest.UsedElem{ID: uint32(head), Len: 32}) {
		t.Fatalf("used %v (%v), want head %d with 32 bytes", used, err, head)
	}
	if b, _ := r.drv.ReadWritable(head); bytes.Count(b, []byte{0xee}) == len(b) {
		t.Fatal("buffer not filled")
	}
	// The ISR has the queue bit and is cleared by reading (§4.1.4.5).
	if got := r.read(virtio.ISROffset, 1); got != 1 {
		t.Fatalf("ISR %#x, want 1", got)
	}
	if got := r.read(virtio.ISROffset, 1); got != 0 {
		t.Fatalf("ISR %#x on the second read, want 0", got)
	}
	if s := r.tr.Stats(); s.ExitNotifies != 1 || s.Interrupts != 1 || s.Notifies < 1 {
		t.Fatalf("stats %+v, want one exit, one interrupt", s)
	}

	// The same through the ioeventfd: the test writes the eventfd as
	// KVM would on a guest write to the doorbell.
	fd := r.bells.fd(barAddr + virtio.NotifyOffset)
	if fd < 0 {
		t.Fatal("no doorbell assigned")
	}
	r.post(16)
	if _, err := unix.Write(fd, binary.LittleEndian.AppendUint64(nil, 1)); err != nil {
		t.Fatal(err)
	}
	r.waitMSI(1)
	if s := r.tr.Stats(); s.ExitNotifies != 1 || s.Interrupts != 2 {
		t.Fatalf("stats %+v, want still one exit, two interrupts", s)
	}

	// Vector 1 masked: the message is held in the PBA (§6.8.2.9) and
	// sent when the driver unmasks it.
	if err := r.tableWrite(1, 12, 1); err != nil {
		t.Fatal(err)
	}
	r.post(8)
	r.doorbell()
	waitUntil(t, "PBA bit 1", func() bool { return r.pending(1) })
	r.noMSI("vector masked")
	if err := r.tableWrite(1, 12, 0); err != nil {
		t.Fatal(err)
	}
	r.waitMSI(1)
	if r.pending(1) {
		t.Fatal("PBA bit 1 still set after the message went out")
	}

	// The function mask (message control bit 14) does the same; lifting
	// it is a configuration write, which the transport reacts to.
	r.msixControl(pci.MSIXEnable | pci.MSIXFunctionMask)
	r.post(8)
	r.doorbell()
	waitUntil(t, "PBA bit 1", func() bool { return r.pending(1) })
	r.noMSI("function masked")
	r.msixControl(pci.MSIXEnable)
	r.waitMSI(1)

	// MSI-X disabled: no message (there is no INTx), but the ISR still
	// says why.
	_ = r.read(virtio.ISROffset, 1)
	r.msixControl(0)
	r.post(8)
	r.doorbell()
	r.waitUsed(5)
	waitUntil(t, "ISR", func() bool { return r.read(virtio.ISROffset, 1) == 1 })
	r.noMSI("MSI-X disabled")
	r.msixControl(pci.MSIXEnable)

	// Reset (§4.1.4.3.1: status 0): the device forgets the queue and
	// stops serving it.
	if _, err := r.drv.Used(); err != nil {
		t.Fatal(err)
	}
	if err := r.setStatus(0); err != nil {
		t.Fatal(err)
	}
	r.post(8)
	r.doorbell()
	time.Sleep(20 * time.Millisecond)
	if idx, _ := r.drv.UsedIdx(); idx != 5 {
		t.Fatalf("used idx %d after reset, want 5: the device served a reset queue", idx)
	}
}

// TestPCIInterruptSuppressed: with VIRTQ_AVAIL_F_NO_INTERRUPT the driver
// asks for no interrupts (§2.7.7); the transport honours it and counts it.
func TestPCIInterruptSuppressed(t *testing.T) {
	r := newRig(t)
	r.start()
	if err := r.drv.SetNoInterrupt(true); err != nil {
		t.Fatal(err)
	}
	r.post(8)
	r.doorbell()
	r.waitUsed(1)
	waitUntil(t, "a suppressed interrupt", func() bool { return r.tr.Stats().Suppressed == 1 })
	r.noMSI("NO_INTERRUPT")
	if got := r.read(virtio.ISROffset, 1); got != 0 {
		t.Fatalf("ISR %#x for a suppressed interrupt", got)
	}
}

// TestPCIEventIdx runs a request with VIRTIO_F_EVENT_IDX negotiated: the
// device writes avail_event (§2.7.10) and interrupts when used idx passes
// used_event.
func TestPCIEventIdx(t *testing.T) {
	r := newRig(t)
	s := r.setup()
	s.features |= featEventIdx
	if err := r.init(s); err != nil {
		t.Fatal(err)
	}
	r.post(8)
	r.doorbell()
	r.waitMSI(1)
	waitUntil(t, "avail_event 1", func() bool { ev, err := r.drv.AvailEvent(); return err == nil && ev == 1 })
	// used_event far ahead: no interrupt for the next one.
	if err := r.drv.SetUsedEvent(100); err != nil {
		t.Fatal(err)
	}
	r.post(8)
	r.doorbell()
	r.waitUsed(2)
	waitUntil(t, "a suppressed interrupt", func() bool { return r.tr.Stats().Suppressed == 1 })
	r.noMSI("used_event ahead")
}

// TestPCIDeviceFailure: a driver error found while serving a queue (a
// buffer outside RAM) makes the device call Env.Fail: the transport sets
// DEVICE_NEEDS_RESET and sends a configuration change interrupt (§2.1.2,
// §4.1.5.3) on the configuration vector with ISR bit 1.
func TestPCIDeviceFailure(t *testing.T) {
	r := newRig(t)
	r.start()
	hole, _ := r.ram.Hole()
	if err := r.drv.WriteDesc(15, virtiotest.Desc{Addr: hole, Len: 16, Flags: virtio.DescFlagWrite}); err != nil {
		t.Fatal(err)
	}
	if err := r.drv.Publish(15); err != nil {
		t.Fatal(err)
	}
	r.doorbell()
	r.waitMSI(0)
	if st := r.status(); st != statusLive|virtio.StatusDeviceNeedsReset {
		t.Fatalf("status %#x, want DEVICE_NEEDS_RESET added", st)
	}
	if got := r.read(virtio.ISROffset, 1); got != 2 {
		t.Fatalf("ISR %#x, want 2 (configuration change)", got)
	}
	// A failed device serves nothing more, and says so only once.
	r.post(8)
	r.doorbell()
	time.Sleep(20 * time.Millisecond)
	if idx, _ := r.drv.UsedIdx(); idx != 0 {
		t.Fatalf("used idx %d: a failed device served a request", idx)
	}
	r.noMSI("after failure")
	if !r.logged("device needs reset") {
		t.Errorf("failure not logged: %q", r.logText())
	}

	// Reset, fresh rings (as a driver allocates after reset), and the
	// device works again.
	if err := r.setStatus(0); err != nil {
		t.Fatal(err)
	}
	if err := r.ram.WriteAt(make([]byte, r.ram.Low.Size()), 0); err != nil {
		t.Fatal(err)
	}
	drv, err := virtiotest.NewDriver(r.ram, 16)
	if err != nil {
		t.Fatal(err)
	}
	r.drv = drv
	r.start()
	r.post(8)
	r.doorbell()
	r.waitMSI(1)
}

// TestPCIResetClearsRegisters: after status 0 every register is back to
// its reset value (§4.1.4.3.1: the device must reset the queue registers
// and the driver then reads status 0).
func TestPCIResetClearsRegisters(t *testing.T) {
	r := newRig(t)
	r.start()
	_ = r.write(ccDeviceFeatureSelect, 4, 1)
	_ = r.write(ccQueueSelect, 2, 3)
	if err := r.setStatus(0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		reg  uint64
		n    int
		want uint64
	}{
		{"device_status", ccDeviceStatus, 1, 0},
		{"device_feature_select", ccDeviceFeatureSelect, 4, 0},
		{"driver_feature", ccDriverFeature, 4, 0},
		{"config_msix_vector", ccConfigMSIXVector, 2, uint64(virtio.NoVector)},
		{"queue_select", ccQueueSelect, 2, 0},
		{"queue_size", ccQueueSize, 2, rng.QueueSize},
		{"queue_msix_vector", ccQueueMSIXVector, 2, uint64(virtio.NoVector)},
		{"queue_enable", ccQueueEnable, 2, 0},
		{"queue_desc", ccQueueDesc, 8, 0},
		{"queue_driver", ccQueueDriver, 8, 0},
		{"queue_device", ccQueueDevice, 8, 0},
		{"ISR", virtio.ISROffset, 1, 0},
	} {
		if got := r.read(tc.reg, tc.n); got != tc.want {
			t.Errorf("%s after reset: %#x, want %#x", tc.name, got, tc.want)
		}
	}
	if r.tr.Status() != 0 {
		t.Errorf("Status() = %#x", r.tr.Status())
	}
}

// TestPCICommonConfigReadWidths: the common configuration reads the same
// through any access width at any offset (§4.1.3.1 asks drivers for
// natural widths; the transport must not misbehave on others), and past
// its end reads zero.
func TestPCICommonConfigReadWidths(t *testing.T) {
	r := newRig(t)
	r.start()
	_ = r.write(ccDeviceFeatureSelect, 4, 0)
	const span = 0x48
	var img [span + 8]byte
	for off := range ccLength {
		img[off] = byte(r.read(uint64(off), 1))
	}
	if img[ccNumQueues] != 1 || img[ccDeviceStatus] != statusLive {
		t.Fatalf("bytewise image wrong: % x", img[:ccLength])
	}
	for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8} {
		for off := range span {
			b := make([]byte, n)
			if err := r.tr.BARRead(0, uint64(off), b); err != nil {
				t.Errorf("%d-byte read at %#x: %v", n, off, err)
			}
			if !bytes.Equal(b, img[off:off+n]) {
				t.Errorf("%d-byte read at %#x: % x, want % x", n, off, b, img[off:off+n])
			}
		}
	}
}

// TestPCICommonConfigWriteWidths writes every width at every offset of the
// common configuration and a little past it, with all ones and with
// zeros: nothing panics, and only a write that runs past the end of the
// structure is refused.
func TestPCICommonConfigWriteWidths(t *testing.T) {
	for _, fillByte := range []byte{0xff, 0x00} {
		r := newRig(t)
		r.start()
		for _, n := range []int{1, 2, 3, 4, 5, 8} {
			for off := range 0x48 {
				data := bytes.Repeat([]byte{fillByte}, n)
				err := r.tr.BARWrite(0, uint64(off), data)
				if past := off < ccLength && off+n > ccLength; past != (err != nil) {
					t.Errorf("%d bytes of %#x at %#x: err %v", n, fillByte, off, err)
				}
			}
		}
	}
}

// TestPCI64BitRegisters: the 64-bit queue addresses come out the same
// however the driver splits the write (§4.1.3.1: a 64-bit field may be
// written as two 32-bit halves, low first or high first).
func TestPCI64BitRegisters(t *testing.T) {
	writes := []struct {
		name string
		do   func(g guest, off, v uint64) error
	}{
		{"one qword", func(g guest, off, v uint64) error { return g.write(off, 8, v) }},
		{"two dwords, low first", func(g guest, off, v uint64) error { return g.write64(off, v) }},
		{"two dwords, high first", func(g guest, off, v uint64) error {
			return errors.Join(g.write(off+4, 4, v>>32), g.write(off, 4, v&0xffffffff))
		}},
		{"four words", func(g guest, off, v uint64) error {
			var errs []error
			for i := uint64(0); i < 8; i += 2 {
				errs = append(errs, g.write(off+i, 2, v>>(8*i)&0xffff))
			}
			return errors.Join(errs...)
		}},
		{"eight bytes, backwards", func(g guest, off, v uint64) error {
			var errs []error
			for i := 7; i >= 0; i-- {
				errs = append(errs, g.write(off+uint64(i), 1, v>>(8*i)&0xff))
			}
			return errors.Join(errs...)
		}},
	}
	for _, w := range writes {
		r := newRig(t)
		for i, reg := range []uint64{ccQueueDesc, ccQueueDriver, ccQueueDevice} {
			v := uint64(0x1234_5678_9abc_def0) + uint64(i)<<40
			if err := w.do(r.guest, reg, v); err != nil {
				t.Fatalf("%s at %#x: %v", w.name, reg, err)
			}
			if got := r.read(reg, 8); got != v {
				t.Errorf("%s at %#x: reads %#x, want %#x", w.name, reg, got, v)
			}
			if got := r.read(reg, 4) | r.read(reg+4, 4)<<32; got != v {
				t.Errorf("%s at %#x: dword reads %#x, want %#x", w.name, reg, got, v)
			}
		}
	}
}

// TestPCIQueueFrozenAfterDriverOK: queue registers do not change under a
// running device (§4.1.4.3.2: the driver must not, the device ignores it).
func TestPCIQueueFrozenAfterDriverOK(t *testing.T) {
	r := newRig(t)
	r.start()
	before := r.read(ccQueueDesc, 8)
	_ = r.write64(ccQueueDesc, 0x5000)
	_ = r.write(ccQueueSize, 2, 4)
	_ = r.write(ccQueueMSIXVector, 2, 0)
	if got := r.read(ccQueueDesc, 8); got != before {
		t.Errorf("queue_desc changed under a live device: %#x", got)
	}
	if got := r.read(ccQueueSize, 2); got != uint64(r.drv.Size) {
		t.Errorf("queue_size changed under a live device: %d", got)
	}
	if got := r.read(ccQueueMSIXVector, 2); got != 1 {
		t.Errorf("queue_msix_vector changed under a live device: %d", got)
	}
	r.post(8)
	r.doorbell()
	r.waitMSI(1)
}

// TestPCIOtherRegions: the device configuration is passed through to the
// device (virtio-rng has none, §5.4.4: reads zero), accesses to BARs other
// than 0 and to holes in BAR0 are ignored, and the doorbell of a queue
// that does not exist does nothing.
func TestPCIOtherRegions(t *testing.T) {
	r := newRig(t)
	r.start()
	for _, tc := range []struct {
		bar int
		off uint64
	}{
		{0, virtio.DeviceOffset},
		{0, virtio.DeviceOffset + virtio.DeviceLength - 4},
		{0, virtio.ISROffset + 4},
		{0, 0x0800},
		{0, virtio.NotifyOffset + virtio.NotifyMultiple}, // queue 1: none
		{0, virtio.MSIXTable + 2*pci.MSIXEntrySize},      // past the table
		{0, virtio.BARSize - 4},
		{0, 1 << 40},
		{1, 0},
		{5, virtio.CommonOffset},
	} {
		if err := r.tr.BARWrite(tc.bar, tc.off, []byte{1, 2, 3, 4}); err != nil {
			t.Errorf("write BAR%d+%#x: %v", tc.bar, tc.off, err)
		}
		b := []byte{9, 9, 9, 9}
		if err := r.tr.BARRead(tc.bar, tc.off, b); err != nil || !bytes.Equal(b, make([]byte, 4)) {
			t.Errorf("read BAR%d+%#x: % x, %v; want zeros", tc.bar, tc.off, b, err)
		}
	}
	if s := r.tr.Stats(); s.ExitNotifies != 0 {
		t.Errorf("stats %+v: a doorbell beyond the queues counted", s)
	}
	// The configuration and queue registers are unchanged.
	if r.status() != statusLive || r.read(ccQueueEnable, 2) != 1 {
		t.Errorf("status %#x, queue_enable %d", r.status(), r.read(ccQueueEnable, 2))
	}
	// MSI-X table accesses must be dwords or qwords (§6.8.2).
	if err := r.tr.BARWrite(0, virtio.MSIXTable, []byte{1}); err == nil {
		t.Error("byte write to the MSI-X table accepted")
	}
}

func TestPCIDescribeBAR(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		bar   int
		off   uint64
		write bool
		data  []byte
		want  string
	}{
		{0, ccQueueSelect, true, []byte{1, 0}, "virtio-rng queue_select write 0x1"},
		{0, ccDeviceStatus, false, []byte{0x0f}, "virtio-rng device_status read 0xf"},
		{0, ccQueueDesc + 4, true, []byte{0, 0, 0, 0}, "virtio-rng queue_desc write 0x0"},
		{0, ccConfigGeneration, false, []byte{0}, "config_generation"},
		{0, virtio.ISROffset, false, []byte{1}, "virtio-rng ISR read 0x1"},
		{0, virtio.DeviceOffset + 4, false, []byte{0, 0}, "device config +0x4 read"},
		{0, virtio.NotifyOffset, true, []byte{0, 0}, "virtio-rng doorbell queue 0"},
		{0, virtio.MSIXTable + 16 + 8, true, []byte{0x21, 0x40, 0, 0}, "virtio-rng MSI-X table entry 1 data write 0x4021"},
		{0, virtio.MSIXTable + 12, true, []byte{1, 0, 0, 0}, "MSI-X table entry 0 vector control"},
		{0, virtio.MSIXPBA, false, []byte{0, 0, 0, 0}, "MSI-X pending bits"},
		{0, 0x7000, false, []byte{0}, "virtio-rng BAR0+0x7000 read"},
		{2, 0, true, []byte{0}, "virtio-rng BAR2+0x0 write"},
	} {
		if got := r.tr.DescribeBAR(tc.bar, tc.off, tc.write, tc.data); !strings.Contains(got, tc.want) {
			t.Errorf("DescribeBAR(%d, %#x) = %q, want it to contain %q", tc.bar, tc.off, got, tc.want)
		}
	}
}

// TestPCIThroughRoot puts the transport on a PCI root and reaches it the
// way the VMM does: configuration through CONFIG_ADDRESS/CONFIG_DATA,
// BAR0 through the root's memory window.
func TestPCIThroughRoot(t *testing.T) {
	r := newRig(t)
	root := pci.NewRoot()
	if err := root.Add(2, r.tr); err != nil {
		t.Fatal(err)
	}
	conf := func(reg int, v uint32) {
		t.Helper()
		if err := root.AddressPort().Write(0, binary.LittleEndian.AppendUint32(nil, 0x80000000|2<<11|uint32(reg))); err != nil {
			t.Fatal(err)
		}
		if err := root.DataPort().Write(0, binary.LittleEndian.AppendUint32(nil, v)); err != nil {
			t.Fatal(err)
		}
	}
	const winBase = 0xc000_0000
	win := root.MemoryWindow(winBase)
	conf(pci.RegBAR0, barAddr+0x8000)
	b := make([]byte, 2)
	if err := win.Read(0x8000+ccNumQueues, b); !errors.Is(err, pci.ErrNoBAR) {
		t.Fatalf("read with decoding off: %v, want ErrNoBAR", err)
	}
	conf(pci.RegCommand, pci.CmdMemory|pci.CmdBusMaster)
	if calls := r.bells.take(); len(calls) != 1 || calls[0].addr != barAddr+0x8000+virtio.NotifyOffset {
		t.Fatalf("doorbells %+v after a configuration write through the root", calls)
	}
	if err := win.Read(0x8000+ccNumQueues, b); err != nil || b[0] != 1 {
		t.Fatalf("num_queues through the window: % x, %v", b, err)
	}
	if d, ok := win.(bus.Describer); !ok || !strings.Contains(d.Describe(0x8000+ccNumQueues, false, b), "num_queues") {
		t.Fatal("window does not describe the access with the transport's names")
	}
	// Bring the device up (the registers are the same either way), then
	// ring the doorbell through the window.
	r.start()
	r.post(8)
	if err := win.Write(0x8000+virtio.NotifyOffset, []byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	r.waitMSI(1)
	if got := r.tr.Stats().ExitNotifies; got != 1 {
		t.Fatalf("ExitNotifies %d after a window doorbell", got)
	}
}

// TestPCICloseStopsWorkers: Close ends the notification goroutines, also
// of a device that was serving requests, and a closed transport ignores
// further doorbells.
func TestPCICloseStopsWorkers(t *testing.T) {
	// Earlier tests closed their transports, but Close does not wait for
	// the workers to return: let them finish first, so that the count
	// only moves with this test's transports. (Sampling a count that is
	// still falling would make "4 more than before" unreachable.)
	waitUntil(t, "earlier tests' workers to exit", func() bool { return workers() == 0 })
	const before = 0
	var rigs []*rig
	for range 4 {
		r := newRig(t) // the cleanup's second Close is harmless
		r.start()
		r.post(8)
		r.doorbell()
		rigs = append(rigs, r)
	}
	waitUntil(t, "4 workers", func() bool { return workers() >= before+4 })
	for _, r := range rigs {
		r.tr.Close()
		r.doorbell() // the eventfd is closed: nothing happens
	}
	waitUntil(t, "the workers to exit", func() bool { return workers() <= before })
}

// TestPCIConcurrent serves requests while another goroutine (another vCPU)
// reads every register, for the race detector.
func TestPCIConcurrent(t *testing.T) {
	r := newRig(t)
	r.start()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		g := guest{r.tr}
		for {
			select {
			case <-stop:
				return
			default:
			}
			for off := uint64(0); off < ccLength; off += 4 {
				g.read(off, 4)
			}
			g.read(virtio.ISROffset, 1)
			g.read(virtio.MSIXPBA, 8)
			g.read(virtio.MSIXTable+16, 8)
			_ = r.tr.DescribeBAR(0, ccQueueSelect, false, []byte{0, 0})
			_ = r.tr.Stats()
		}
	}()
	const requests = 100
	for i := range requests {
		r.post(64)
		r.doorbell()
		r.waitUsed(uint16(i + 1))
		if _, err := r.drv.Used(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	// The device may serve two chains in one batch, with one interrupt,
	// when a post lands while it is still looking for more; every
	// interrupt it asked for must have been delivered.
	waitUntil(t, "every interrupt delivered", func() bool {
		n := r.tr.Stats().Interrupts
		return n >= 1 && n <= requests && uint64(r.sink.count()) == n
	})
}

// ---- Fuzzing ---------------------------------------------------------------------

// serialDevice runs a device's Notify under a lock the fuzzer also takes
// while it writes the rings. Guest RAM here is a Go slice, so a hostile
// driver rewriting a descriptor the device is reading would be reported
// by the race detector, although on a real guest it is the guest's own
// doing; the lock keeps the fuzzer about the transport.
type serialDevice struct {
	virtio.Device
	mu sync.Mutex
}

func (d *serialDevice) Notify(q int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Device.Notify(q)
}

// FuzzPCITransport plays a hostile driver against a transport wrapping
// virtio-rng over 16 KiB of RAM, a 4 KiB hole and 4 KiB more, with fake
// ioeventfds. Each operation is 8 bytes: kind, a, b, c, and a 32-bit
// value v.
//
//	kind%8 = 0  configuration write: offset a (or, with kind bit 7, one of
//	            command, BAR0, MSI-X message control), 1/2/4 bytes of v
//	kind%8 = 1  BAR0 read, 2 BAR0 write: region b%8 (common, common, ISR,
//	            device, notify, MSI-X table, PBA, end of BAR) plus a, or
//	            with b bit 7 any offset below 64 KiB from v; width c%8 of
//	            {1, 2, 4, 8, 3, 0, 5, 8}
//	kind%8 = 3  doorbell write for queue a%2 (queue 1 does not exist)
//	kind%8 = 4  doorbell through the ioeventfd, if one is assigned
//	kind%8 = 5  post a chain (a bit 0: collect used entries first; bit 1:
//	            indirect) of writable buffers b+1 and c bytes
//	kind%8 = 6  write descriptor a%20 with hostile fields and publish
//	            head a%16
//	kind%8 = 7  a whole Linux-style init, with variations from a: EVENT_IDX,
//	            MSI-X off, features without VERSION_1, queue vector b,
//	            rings at addresses from v, reset at the end
//
// It checks that nothing panics, that every input finishes within a
// deadline (no deadlock between the vCPU side, the workers and the
// device), that num_queues never changes and the ISR only holds bits 0
// and 1, that messages only go to vectors the table has, and that Close
// leaves no worker goroutine behind.
func FuzzPCITransport(f *testing.F) {
	f.Add([]byte{})
	// Init, post, doorbell.
	f.Add([]byte{7, 0, 1, 0, 0, 0, 0, 0, 5, 0, 31, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxOps = 64
		if len(in) > 8*maxOps {
			in = in[:8*maxOps]
		}
		before := workers()
		ram := virtiotest.NewRAM(16<<10, 4<<10, 4<<10)
		drv, err := virtiotest.NewDriver(ram, 8)
		if err != nil {
			t.Fatal(err)
		}
		dev := &serialDevice{Device: rng.New()}
		sink := newFakeSink()
		bells := &fakeBells{}
		tr, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: ram.Memory, MSI: sink, Bell: bells})
		if err != nil {
			t.Fatal(err)
		}
		g := guest{tr}
		_, msixAt := g.caps()

		var fail string // set by the op goroutine; read after done
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer tr.Close()
			for step := 0; len(in) >= 8; step++ {
				kind, a, b, c := in[0], in[1], in[2], in[3]
				v := binary.LittleEndian.Uint32(in[4:8])
				in = in[8:]
				if msg := fuzzOp(g, drv, dev, bells, msixAt, kind, a, b, c, v); msg != "" {
					fail = fmt.Sprintf("op %d (kind %d): %s", step, kind%8, msg)
					return
				}
				if n := g.read(ccNumQueues, 2); n != 1 {
					fail = fmt.Sprintf("op %d: num_queues %d", step, n)
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("input did not finish in 10s (deadlock?):\n%s", buf[:runtime.Stack(buf, true)])
		}
		if fail != "" {
			t.Fatal(fail)
		}
		sink.mu.Lock()
		for _, m := range sink.msgs {
			if m.vector < 0 || m.vector >= 2 {
				t.Errorf("message for vector %d", m.vector)
			}
		}
		sink.mu.Unlock()
		deadline := time.Now().Add(5 * time.Second)
		for workers() > before {
			if time.Now().After(deadline) {
				t.Fatalf("worker goroutines left after Close: %d, %d before", workers(), before)
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
}

// fuzzOp applies one FuzzPCITransport operation and returns a description
// of a broken invariant, or "".
func fuzzOp(g guest, drv *virtiotest.Driver, dev *serialDevice, bells *fakeBells, msixAt int, kind, a, b, c byte, v uint32) string {
	value := leBytes(uint64(v)|uint64(^v)<<32, 8)
	switch kind % 8 {
	case 0:
		off := int(a)
		if kind&0x80 != 0 {
			hot := []int{pci.RegCommand, pci.RegBAR0, msixAt + 2, msixAt + 3}
			off = hot[int(a)%len(hot)]
		}
		g.tr.ConfigWrite(off, value[:[4]int{1, 2, 4, 4}[b%4]])
	case 1, 2:
		off := [8]uint64{0, 0, virtio.ISROffset, virtio.DeviceOffset, virtio.NotifyOffset,
			virtio.MSIXTable, virtio.MSIXPBA, virtio.BARSize - 0x100}[b%8] + uint64(a)
		if b&0x80 != 0 {
			off = uint64(v & 0xffff)
		}
		width := [8]int{1, 2, 4, 8, 3, 0, 5, 8}[c%8]
		data := make([]byte, width)
		if kind%8 == 2 {
			copy(data, value)
			_ = g.tr.BARWrite(0, off, data)
			return ""
		}
		_ = g.tr.BARRead(0, off, data)
		if off == virtio.ISROffset && width > 0 && data[0]&^3 != 0 {
			return fmt.Sprintf("ISR read %#x", data[0])
		}
	case 3:
		_ = g.write(virtio.NotifyOffset+uint64(a%2)*virtio.NotifyMultiple, 2, uint64(a%2))
	case 4:
		bells.mu.Lock()
		fd := -1
		for _, f := range bells.active {
			fd = f
		}
		if fd >= 0 {
			_, _ = unix.Write(fd, leBytes(1, 8))
		}
		bells.mu.Unlock()
	case 5:
		dev.mu.Lock()
		if a&1 != 0 {
			_, _ = drv.Used()
		}
		lens := []uint32{uint32(b) + 1, uint32(c)}
		if a&2 != 0 {
			_, _ = drv.PostIndirect(nil, lens)
		} else {
			_, _ = drv.Post(nil, lens)
		}
		dev.mu.Unlock()
	case 6:
		hole, _ := drv.RAM.Hole()
		addr := [4]guestmem.GPA{
			guestmem.GPA(v) % guestmem.GPA(drv.RAM.Low.Size()), // somewhere in RAM, rings included
			hole + guestmem.GPA(v%0x1000),
			drv.RAM.High.Base + guestmem.GPA(v%0x1100), // may run past the end
			guestmem.GPA(v)<<32 | guestmem.GPA(v),
		}[c%4]
		d := virtiotest.Desc{Addr: addr, Len: uint32(b) << (c >> 5), Flags: uint16(c>>2) & 7, Next: uint16(a >> 4)}
		dev.mu.Lock()
		_ = drv.WriteDesc(uint16(a%20), d)
		_ = drv.Publish(uint16(a % 16))
		dev.mu.Unlock()
	case 7:
		s := setup{features: featV1 | featIndirect, size: drv.Size, desc: drv.DescAddr, avail: drv.AvailAddr,
			used: drv.UsedAddr, configVector: 0, queueVector: 1}
		if a&1 != 0 {
			s.features |= featEventIdx
		}
		s.noMSIX = a&2 != 0
		if a&4 != 0 {
			s.features &^= featV1
		}
		if a&8 != 0 {
			s.queueVector = uint16(b)
		}
		if a&16 != 0 {
			s.avail = guestmem.GPA(v) &^ 1
		}
		_ = g.init(s)
		if a&32 != 0 {
			_ = g.setStatus(0)
		}
	}
	return ""
}
