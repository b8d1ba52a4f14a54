package hostile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kvmlab/devices/pci"
	"kvmlab/devices/virtio"
)

// Common configuration registers (virtio 1.2 §4.1.4.3), at BAR0 offset
// virtio.CommonOffset on a kvmlab device.
const (
	regDriverFeatureSelect = 0x08
	regDriverFeature       = 0x0c
	regConfigMSIXVector    = 0x10
	regDeviceStatus        = 0x14
	regQueueSelect         = 0x16
	regQueueSize           = 0x18
	regQueueMSIXVector     = 0x1a
	regQueueEnable         = 0x1c
	regQueueDesc           = 0x20
	regQueueDriver         = 0x28
	regQueueDevice         = 0x30
)

// Queue layout in the first DMA page: a 64-entry split ring (§2.7) fits in
// one page. The second page holds small buffers.
const (
	qSize    = 64
	descOff  = 0x000 // 64 × 16 bytes
	availOff = 0x400 // flags, idx, ring[64], used_event
	usedOff  = 0x800 // flags, idx, ring[64] of {id, len}, avail_event
	bufPage  = 1
	indOff   = 0x800 // an indirect table in the buffer page
)

// PCI configuration registers used here (PCI 3.0 §6.1).
const (
	cfgCommand = 0x04
	cfgBAR0    = 0x10
	cmdMemory  = 1 << 1
	cmdMaster  = 1 << 2
)

// device is one virtio-pci function taken away from Linux: its
// configuration space through sysfs, its BAR0 mapped, and a queue in DMA
// memory this program owns.
type device struct {
	name string // 0000:00:02.0
	dir  string // /sys/bus/pci/devices/NAME
	cfg  *os.File
	bar  barMap
	mem  *dma
	msix int // offset of the MSI-X capability in configuration space

	availIdx uint16 // the driver's next avail idx
	usedSeen uint16 // used idx up to which answers were collected
}

// findDevice returns the first function under sysfs with the given virtio
// device ID (0x1040 + type, §4.1.2).
func findDevice(sysfs string, deviceID uint16) (string, error) {
	ents, err := os.ReadDir(sysfs)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		v := readHex(filepath.Join(sysfs, e.Name(), "vendor"))
		d := readHex(filepath.Join(sysfs, e.Name(), "device"))
		if v == virtio.PCIVendor && d == uint64(deviceID) {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("no PCI function with vendor %#x device %#x under %s", virtio.PCIVendor, deviceID, sysfs)
}

func readHex(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var v uint64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "0x%x", &v); err != nil {
		return 0
	}
	return v
}

const sysfsPCI = "/sys/bus/pci/devices"

// openDevice unbinds name from its driver (so Linux no longer drives the
// device while this program does), turns on memory decoding and maps BAR0.
func openDevice(name string) (*device, error) {
	d := &device{name: name, dir: filepath.Join(sysfsPCI, name)}
	if _, err := os.Stat(filepath.Join(d.dir, "driver")); err == nil {
		if err := os.WriteFile(filepath.Join(d.dir, "driver", "unbind"), []byte(name), 0); err != nil {
			return nil, fmt.Errorf("unbind %s: %w", name, err)
		}
	}
	var err error
	if d.cfg, err = os.OpenFile(filepath.Join(d.dir, "config"), os.O_RDWR, 0); err != nil {
		return nil, err
	}
	d.setCommand(d.cfg16(cfgCommand) | cmdMemory | cmdMaster)
	if d.bar, err = mapBAR(filepath.Join(d.dir, "resource0"), virtio.BARSize); err != nil {
		return nil, err
	}
	if d.mem, err = allocDMA(2); err != nil {
		return nil, err
	}
	var space [pci.ConfigSize]byte
	if _, err := d.cfg.ReadAt(space[:], 0); err != nil {
		return nil, fmt.Errorf("read %s config: %w", name, err)
	}
	d.msix = findCap(space[:], pci.CapMSIX)
	if d.msix == 0 {
		return nil, errors.New("no MSI-X capability")
	}
	return d, nil
}

// findCap walks the capability list (PCI 3.0 §6.7), at most 48 entries
// (a looped list must not hang the walk), and returns the offset of the
// first capability with the given ID, or 0.
func findCap(space []byte, id uint8) int {
	if len(space) < 0x40 {
		return 0
	}
	off := int(space[pci.RegCapPointer]) &^ 3
	for n := 0; n < 48 && off >= 0x40 && off+1 < len(space); n++ {
		if space[off] == id {
			return off
		}
		off = int(space[off+1]) &^ 3
	}
	return 0
}

func (d *device) cfg16(off int64) uint16 {
	var b [2]byte
	_, _ = d.cfg.ReadAt(b[:], off)
	return binary.LittleEndian.Uint16(b[:])
}

func (d *device) cfg32(off int64) uint32 {
	var b [4]byte
	_, _ = d.cfg.ReadAt(b[:], off)
	return binary.LittleEndian.Uint32(b[:])
}

func (d *device) setCfg16(off int64, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	_, _ = d.cfg.WriteAt(b[:], off)
}

func (d *device) setCfg32(off int64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	_, _ = d.cfg.WriteAt(b[:], off)
}

func (d *device) setCommand(v uint16) { d.setCfg16(cfgCommand, v) }

func (d *device) status() uint8 { return d.bar.r8(virtio.CommonOffset + regDeviceStatus) }

func (d *device) setStatus(s uint8) { d.bar.w8(virtio.CommonOffset+regDeviceStatus, s) }

func (d *device) common16(reg uint64, v uint16) { d.bar.w16(virtio.CommonOffset+reg, v) }

// reset writes 0 to device_status and waits for it to read back 0
// (§4.1.4.3.2).
func (d *device) reset() error {
	d.setStatus(0)
	for i := 0; i < 1000; i++ {
		if d.status() == 0 {
			d.availIdx, d.usedSeen = 0, 0
			clear(d.mem.b)
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("device status did not read 0 after reset")
}

// negotiate runs §3.1.1 up to FEATURES_OK: VERSION_1 and INDIRECT_DESC.
func (d *device) negotiate() error {
	d.setStatus(virtio.StatusAcknowledge)
	d.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
	feat := uint64(1)<<virtio.FeatureVersion1 | 1<<virtio.FeatureIndirectDesc
	for sel := uint32(0); sel < 2; sel++ {
		d.bar.w32(virtio.CommonOffset+regDriverFeatureSelect, sel)
		d.bar.w32(virtio.CommonOffset+regDriverFeature, uint32(feat>>(32*sel)))
	}
	d.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	if d.status()&virtio.StatusFeaturesOK == 0 {
		return fmt.Errorf("FEATURES_OK did not stick (status %#x)", d.status())
	}
	return nil
}

// setupQueue programs queue 0 onto the DMA page and enables it, with no
// MSI-X vector: this driver polls the used ring.
func (d *device) setupQueue() {
	ring := d.mem.phys[0]
	d.common16(regQueueSelect, 0)
	d.common16(regQueueSize, qSize)
	d.common16(regQueueMSIXVector, virtio.NoVector)
	d.bar.w64(virtio.CommonOffset+regQueueDesc, ring+descOff)
	d.bar.w64(virtio.CommonOffset+regQueueDriver, ring+availOff)
	d.bar.w64(virtio.CommonOffset+regQueueDevice, ring+usedOff)
	d.common16(regQueueEnable, 1)
}

const statusLive = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK

// start resets the device and brings queue 0 up to DRIVER_OK.
func (d *device) start() error {
	if err := d.reset(); err != nil {
		return err
	}
	if err := d.negotiate(); err != nil {
		return err
	}
	d.setupQueue()
	d.setStatus(statusLive)
	if s := d.status(); s != statusLive {
		return fmt.Errorf("status %#x after DRIVER_OK, want %#x", s, statusLive)
	}
	return nil
}

// desc writes descriptor i (§2.7.5).
func (d *device) desc(i int, addr uint64, n uint32, flags, next uint16) {
	b := d.mem.b[descOff+16*i:]
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// indirect writes entry i of the indirect table in the buffer page.
func (d *device) indirect(i int, addr uint64, n uint32, flags, next uint16) {
	b := d.mem.b[bufPage*pageSize+indOff+16*i:]
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// post puts head on the avail ring and publishes it: the entry, then idx
// (as one ordered 32-bit store of flags and idx), then the doorbell.
func (d *device) post(head uint16) {
	d.postIdx(head, d.availIdx+1)
}

// postIdx publishes head with an avail idx of the caller's choosing.
func (d *device) postIdx(head, idx uint16) {
	binary.LittleEndian.PutUint16(d.mem.b[availOff+4+2*int(d.availIdx%qSize):], head)
	d.availIdx = idx
	d.mem.store32(availOff, uint32(idx)<<16)
	d.ring()
}

// ring writes queue 0's doorbell as Linux does: a 16-bit write of the
// queue index at notify offset 0 (§4.1.4.4).
func (d *device) ring() { d.bar.w16(virtio.NotifyOffset, 0) }

// waitUsed polls the used ring until the device returned a chain, for up
// to timeout, and returns the length it wrote.
func (d *device) waitUsed(timeout time.Duration) (uint32, bool) {
	deadline := time.Now().Add(timeout)
	for {
		idx := uint16(d.mem.load32(usedOff) >> 16)
		if idx != d.usedSeen {
			e := d.mem.b[usedOff+4+8*int(d.usedSeen%qSize):]
			d.usedSeen++
			return binary.LittleEndian.Uint32(e[4:]), true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(time.Millisecond)
	}
}

// request asks the entropy device for 64 bytes in the buffer page and
// reports whether it answered with them.
func (d *device) request() bool {
	buf := d.mem.phys[bufPage]
	clear(d.mem.b[bufPage*pageSize : bufPage*pageSize+64])
	d.desc(0, buf, 64, virtio.DescFlagWrite, 0)
	d.post(0)
	n, ok := d.waitUsed(2 * time.Second)
	if !ok || n != 64 {
		return false
	}
	for _, c := range d.mem.b[bufPage*pageSize : bufPage*pageSize+64] {
		if c != 0 {
			return true
		}
	}
	return false
}

// waitStatus polls device_status until one of the bits in mask is set,
// for up to timeout: the device refuses a chain on its own goroutine, after
// the doorbell write has returned.
func (d *device) waitStatus(mask uint8, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for d.status()&mask == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// works is the recovery check: a reset, a fresh start and one request.
func (d *device) works() bool {
	return d.start() == nil && d.request()
}

// pagemapPhys decodes one /proc/PID/pagemap entry
// (Documentation/admin-guide/mm/pagemap.rst): bit 63 says the page is
// present, bits 0-54 are its page frame number, which reads as 0 to a
// process without CAP_SYS_ADMIN.
func pagemapPhys(e [8]byte) (uint64, error) {
	v := binary.LittleEndian.Uint64(e[:])
	if v&(1<<63) == 0 {
		return 0, errors.New("pagemap: page not present (not locked in RAM?)")
	}
	pfn := v & (1<<55 - 1)
	if pfn == 0 {
		return 0, errors.New("pagemap: page frame number hidden (needs CAP_SYS_ADMIN: run as root)")
	}
	return pfn * pageSize, nil
}
