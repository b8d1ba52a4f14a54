package hostile

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"kvmlab/devices/pci"
	"kvmlab/devices/virtio"
)

// flood makes n MMIO accesses of each kind the VMM must refuse. Every one
// is an exit the VMM answers with an error; what it must not do is write
// a line per exit.
func flood(d *device, n int, r *reporter) error {
	if err := d.start(); err != nil {
		return err
	}
	// Memory decoding off: the BAR no longer claims its addresses, so the
	// loads land on an empty part of the PCI window (they read all ones).
	cmd := d.cfg16(cfgCommand)
	d.setCommand(cmd &^ cmdMemory)
	var ones uint32 = 0xffffffff
	for i := 0; i < n; i++ {
		ones &= d.bar.r32(virtio.CommonOffset)
	}
	d.setCommand(cmd)
	r.step("window-loads", true, fmt.Sprintf("read=%#x", ones))

	if err := d.start(); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d.bar.w8(virtio.MSIXTable+1, 0xee) // MSI-X table: dword or qword only (PCI 3.0 §6.8.2)
	}
	r.step("msix-byte-writes", true, "")

	if err := d.start(); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d.bar.w64(virtio.CommonOffset+0x34, 0) // runs past the 0x38-byte structure
	}
	r.step("common-overrun", true, "")
	return nil
}

// doorbells rings what should not be rung.
func doorbells(d *device, n int, r *reporter) error {
	if err := d.start(); err != nil {
		return err
	}
	// The notify area is 0x1000 bytes; only queue 0 exists.
	for off := uint64(4); off < 0x1000; off += 4 {
		d.bar.w16(virtio.NotifyOffset+off, uint16(off/4))
		d.bar.w8(virtio.NotifyOffset+off, 0xff)
		d.bar.w32(virtio.NotifyOffset+off, 0xffffffff)
	}
	d.bar.w8(virtio.NotifyOffset, 0)
	d.bar.w32(virtio.NotifyOffset, 0xffff)
	d.bar.w64(virtio.NotifyOffset, 0)
	r.step("absent-queues-and-widths", true, "")

	// A request posted and rung before DRIVER_OK: the device may only
	// look at it once DRIVER_OK is set (§3.1.1), and then must.
	if err := d.reset(); err != nil {
		return err
	}
	if err := d.negotiate(); err != nil {
		return err
	}
	d.setupQueue()
	d.desc(0, d.mem.phys[bufPage], 64, virtio.DescFlagWrite, 0)
	d.post(0)
	d.setStatus(statusLive)
	_, answered := d.waitUsed(2 * time.Second)
	r.step("before-driver-ok", true, "answered-after-driver-ok="+bit(answered))

	if err := d.start(); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d.ring()
	}
	r.step("empty-flood", true, "")

	if err := d.reset(); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d.ring()
	}
	r.step("reset-device-flood", false, "")
	return nil
}

// reconfig changes the queue under a running device, and enables queues
// the device must refuse.
func reconfig(d *device, r *reporter) error {
	if err := d.start(); err != nil {
		return err
	}
	// §4.1.4.3.2: the driver must not change a queue after enabling it;
	// the device ignores such writes once DRIVER_OK is set.
	for _, q := range []uint16{0, 5, 0xffff, 0} {
		d.common16(regQueueSelect, q)
		d.common16(regQueueSize, 3)
		d.common16(regQueueMSIXVector, 7)
		d.bar.w64(virtio.CommonOffset+regQueueDesc, 0xdead_beef_f000)
		d.bar.w64(virtio.CommonOffset+regQueueDriver, 1)
		d.bar.w64(virtio.CommonOffset+regQueueDevice, 0xffff_ffff_ffff_fff0)
		d.common16(regQueueEnable, 0)
		d.common16(regQueueEnable, 1)
	}
	d.bar.w32(virtio.CommonOffset+regDriverFeatureSelect, 0)
	d.bar.w32(virtio.CommonOffset+regDriverFeature, 0xffffffff)
	d.bar.w32(virtio.CommonOffset+regDriverFeatureSelect, 7)
	d.bar.w32(virtio.CommonOffset+regDriverFeature, 0xffffffff)
	r.step("queue-after-driver-ok", true, "")

	if err := d.start(); err != nil {
		return err
	}
	// Status bits other than reset are only ever added; NEEDS_RESET is
	// the device's to set, not the driver's (§2.1).
	d.setStatus(virtio.StatusAcknowledge)
	d.setStatus(virtio.StatusDeviceNeedsReset | statusLive)
	r.step("status-games", true, "")

	enable := func(size uint16, desc, avail, used uint64) {
		_ = d.reset()
		_ = d.negotiate()
		d.common16(regQueueSelect, 0)
		d.common16(regQueueSize, size)
		d.bar.w64(virtio.CommonOffset+regQueueDesc, desc)
		d.bar.w64(virtio.CommonOffset+regQueueDriver, avail)
		d.bar.w64(virtio.CommonOffset+regQueueDevice, used)
		d.common16(regQueueEnable, 1)
	}
	ring := d.mem.phys[0]
	enable(qSize, 0xfff_0000_0000, ring+availOff, ring+usedOff)
	r.step("rings-outside-ram", false, "")
	enable(qSize, ring+descOff, ring+availOff, 0xffff_fff0) // in the MMIO hole
	r.step("used-ring-in-mmio-hole", false, "")
	enable(3, ring+descOff, ring+availOff, ring+usedOff)
	r.step("size-3", false, "")
	enable(0, ring+descOff, ring+availOff, ring+usedOff)
	r.step("size-0", false, "")
	enable(qSize*2, ring+descOff, ring+availOff, ring+usedOff)
	r.step("size-above-max", false, "")
	enable(qSize, ring+descOff+8, ring+availOff+1, ring+usedOff+2)
	r.step("misaligned-rings", false, "")
	return nil
}

// chains posts descriptor chains the device must refuse, and one at the
// 4 GiB - 1 limit it must accept.
func chains(d *device, r *reporter) error {
	buf := d.mem.phys[bufPage]
	type chain struct {
		name  string
		build func()
		head  uint16
	}
	// Big buffers are readable (the device only writes into writable
	// ones), at 1 MiB, inside a 512 MiB guest's RAM: were one accepted, the
	// device would have nothing to write into the guest's kernel.
	const bigAt, big = 0x10_0000, 0x1000_0000 // 256 MiB
	direct := func(k int, last uint32) func() {
		return func() {
			for i := 0; i < k; i++ {
				n, flags := uint32(big), virtio.DescFlagNext
				if i == k-1 {
					n, flags = last, 0
				}
				d.desc(i, bigAt, n, flags, uint16(i+1))
			}
		}
	}
	indirect := func(k int) func() {
		return func() {
			for i := 0; i < k; i++ {
				flags := virtio.DescFlagNext
				if i == k-1 {
					flags = 0
				}
				d.indirect(i, bigAt, big, flags, uint16(i+1))
			}
			d.desc(0, buf+indOff, uint32(16*k), virtio.DescFlagIndirect, 0)
		}
	}
	for _, c := range []chain{
		{"loop", func() {
			d.desc(0, buf, 16, virtio.DescFlagNext, 1)
			d.desc(1, buf+16, 16, virtio.DescFlagNext, 0)
		}, 0},
		{"self-loop", func() { d.desc(0, buf, 16, virtio.DescFlagNext, 0) }, 0},
		{"indirect-loop", func() {
			d.indirect(0, buf, 16, virtio.DescFlagNext, 1)
			d.indirect(1, buf+16, 16, virtio.DescFlagNext, 0)
			d.desc(0, buf+indOff, 32, virtio.DescFlagIndirect, 0)
		}, 0},
		// 15 × 256 MiB + (256 MiB - 1) = 4 GiB - 1: the most a chain
		// may hold (the used ring's len is 32 bits).
		{"4g-minus-1", direct(16, big-1), 0},
		{"4g-plus", direct(17, big), 0},
		{"4g-plus-indirect", indirect(17), 0},
		{"zero-length-garbage-address", func() {
			d.desc(0, 0xffff_ffff_ffff_0000, 0, virtio.DescFlagNext, 1)
			d.desc(1, buf, 64, virtio.DescFlagWrite, 0)
		}, 0},
		{"head-beyond-queue", func() {}, 1000},
		{"next-beyond-queue", func() { d.desc(0, buf, 16, virtio.DescFlagNext, 999) }, 0},
		{"buffer-outside-ram", func() { d.desc(0, 0x7fff_0000_0000, 64, virtio.DescFlagWrite, 0) }, 0},
		{"indirect-and-next", func() { d.desc(0, buf+indOff, 16, virtio.DescFlagIndirect|virtio.DescFlagNext, 1) }, 0},
		{"readable-after-writable", func() {
			d.desc(0, buf, 16, virtio.DescFlagWrite|virtio.DescFlagNext, 1)
			d.desc(1, buf+16, 16, 0, 0)
		}, 0},
	} {
		if err := d.start(); err != nil {
			return err
		}
		c.build()
		d.post(c.head)
		n, answered := d.waitUsed(2 * time.Second)
		// A refused chain leaves the device in NEEDS_RESET with
		// nothing on the used ring; the step reports both.
		r.step(c.name, false, fmt.Sprintf("answered=%s len=%d", bit(answered), n))
	}

	if err := d.start(); err != nil {
		return err
	}
	d.desc(0, buf, 64, virtio.DescFlagWrite, 0)
	d.postIdx(0, d.availIdx+1000) // §2.7.6: never more than Size ahead
	n, answered := d.waitUsed(2 * time.Second)
	r.step("avail-idx-jump", false, fmt.Sprintf("answered=%s len=%d", bit(answered), n))
	return nil
}

// msixEntry is one MSI-X table entry (PCI 3.0 §6.8.2.9).
type msixEntry struct{ addrLo, addrHi, data, ctl uint32 }

// garbage MSI-X messages. The destination APIC ID (address bits 19:12,
// Intel SDM Vol. 3 §11.11.1) is never 0 (the guest's only vCPU) nor 0xff
// (broadcast): the messages are garbage to the VMM and to KVM, but they
// must not reach the guest's own CPU, which would take a vector-0
// "interrupt" as a divide error, or an INIT as a reset.
var garbage = []msixEntry{
	{0x1234_5000, 0xdead_beef, 0xffff_ffff, 0}, // not an APIC address, high half set, all data bits
	{0xfee4_5000, 0, 0x0000_0000, 0},           // vector 0, fixed
	{0xfee4_6000, 0, 0x0000_04ff, 0},           // NMI
	{0xfee4_7000, 0, 0x0000_0500, 0},           // INIT
	{0xfee4_8000, 0, 0x0000_0200, 0},           // SMI
	{0xfee4_a004, 0, 0x0000_0730, 0},           // logical mode, ExtINT (logical ID bit 0 clear: not CPU 0's)
	{0xfee5_a00c, 0xffff_ffff, 0x0000_c0ff, 0}, // logical, redirection hint, level trigger
}

func (d *device) writeEntry(i int, e msixEntry) {
	base := uint64(virtio.MSIXTable + 16*i)
	d.bar.w32(base, e.addrLo)
	d.bar.w32(base+4, e.addrHi)
	d.bar.w32(base+8, e.data)
	d.bar.w32(base+12, e.ctl)
}

// msix fills the MSI-X table with garbage and makes the device use it.
func msix(d *device, n int, r *reporter) error {
	ctl := int64(d.msix + 2)
	vectors := int(d.cfg16(ctl)&0x7ff) + 1
	restore := func() {
		for i := 0; i < vectors; i++ {
			d.writeEntry(i, msixEntry{ctl: 1})
		}
		d.setCfg16(ctl, 0)
	}
	defer restore()

	try := func(name string, e msixEntry) error {
		if err := d.reset(); err != nil {
			return err
		}
		if err := d.negotiate(); err != nil {
			return err
		}
		d.setCfg16(ctl, pci.MSIXEnable)
		for i := 0; i < vectors; i++ {
			d.writeEntry(i, e)
		}
		d.setupQueue()
		// Vectors may be set until DRIVER_OK (§4.1.5.1.2): queue 0
		// gets vector 0, configuration changes vector 1.
		d.bar.w16(virtio.CommonOffset+regConfigMSIXVector, 1)
		d.common16(regQueueSelect, 0)
		d.common16(regQueueMSIXVector, 0)
		d.setStatus(statusLive)
		served := 0
		for i := 0; i < 8; i++ {
			if d.request() {
				served++
			}
		}
		// A broken chain: NEEDS_RESET and a configuration-change
		// interrupt through vector 1.
		d.desc(0, 0x7fff_0000_0000, 64, virtio.DescFlagWrite, 0)
		d.post(0)
		d.waitStatus(virtio.StatusDeviceNeedsReset, 2*time.Second)
		r.step(name, false, fmt.Sprintf("requests-served=%d/8", served))
		return nil
	}
	for i, e := range garbage {
		if err := try(fmt.Sprintf("garbage-%d", i), e); err != nil {
			return err
		}
	}

	// Masks flapped with messages pending: every unmask sends what is
	// pending (§6.8.2.9), and a request now and then makes a new one.
	if err := d.reset(); err != nil {
		return err
	}
	if err := d.negotiate(); err != nil {
		return err
	}
	d.setCfg16(ctl, pci.MSIXEnable)
	for i := 0; i < vectors; i++ {
		d.writeEntry(i, msixEntry{0xfee4_5000, 0, 0x31, 1})
	}
	d.setupQueue()
	d.common16(regQueueMSIXVector, 0)
	d.setStatus(statusLive)
	for i := 0; i < n; i++ {
		if i%1000 == 0 {
			d.request()
		}
		d.bar.w32(virtio.MSIXTable+12, uint32(i&1))
	}
	for i := 0; i < n/20; i++ {
		if i%100 == 0 {
			d.request()
		}
		d.setCfg16(ctl, pci.MSIXEnable|uint16(i&1)*pci.MSIXFunctionMask)
	}
	r.step("mask-flapping", true, "")

	if err := d.reset(); err != nil {
		return err
	}
	if err := d.negotiate(); err != nil {
		return err
	}
	d.common16(regQueueSelect, 0)
	d.common16(regQueueMSIXVector, 0x7ff)
	got := d.bar.r16(virtio.CommonOffset + regQueueMSIXVector)
	d.bar.w16(virtio.CommonOffset+regConfigMSIXVector, 0x1234)
	gotCfg := d.bar.r16(virtio.CommonOffset + regConfigMSIXVector)
	r.step("vector-beyond-table", false, fmt.Sprintf("queue-vector=%#x config-vector=%#x", got, gotCfg))
	return nil
}

// bar moves BAR0 where it does not belong, and back.
func bar(d *device, n int, r *reporter) error {
	orig := d.cfg32(cfgBAR0)
	neighbour := uint32(0)
	if other, err := otherDevice(d.name); err == nil {
		neighbour = other
	}
	for _, c := range []struct {
		name string
		addr uint32
	}{
		{"over-ram", 0x0100_0000},
		{"over-lapic", 0xfee0_0000},
		{"over-ioapic", 0xfec0_0000},
		{"over-neighbour", neighbour},
		{"top-of-4g", 0xffff_8000},
		{"zero", 0},
	} {
		if c.name == "over-neighbour" && neighbour == 0 {
			fmt.Fprintf(r.w, "%sbar/over-neighbour skipped: no other virtio function\n", Marker)
			continue
		}
		if err := d.start(); err != nil {
			return err
		}
		d.setCfg32(cfgBAR0, c.addr)
		readBack := d.cfg32(cfgBAR0)
		// The guest keeps running meanwhile: let its timers and
		// devices (the neighbour's doorbells) go on for a moment.
		time.Sleep(50 * time.Millisecond)
		d.setCfg32(cfgBAR0, orig)
		r.step(c.name, true, fmt.Sprintf("bar0=%#x", readBack))
	}
	if err := d.start(); err != nil {
		return err
	}
	for i := 0; i < max(n/100, 1); i++ {
		d.setCfg32(cfgBAR0, orig+0x0100_0000)
		d.setCfg32(cfgBAR0, orig)
	}
	r.step("moved-back-and-forth", true, fmt.Sprintf("moves=%d", 2*max(n/100, 1)))

	// Over the neighbour and back, again and again: each overlap is a
	// doorbell the hypervisor refuses to register twice, which the VMM
	// reports; a guest must not turn that into a flood either.
	if neighbour == 0 {
		return nil
	}
	if err := d.start(); err != nil {
		return err
	}
	k := max(n/20, 1)
	for i := 0; i < k; i++ {
		d.setCfg32(cfgBAR0, neighbour)
		d.setCfg32(cfgBAR0, orig)
	}
	r.step("over-neighbour-repeatedly", true, fmt.Sprintf("moves=%d", 2*k))
	return nil
}

// otherDevice returns BAR0 of another virtio function, to move ours over.
func otherDevice(self string) (uint32, error) {
	ents, err := os.ReadDir(sysfsPCI)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if e.Name() == self || readHex(filepath.Join(sysfsPCI, e.Name(), "vendor")) != virtio.PCIVendor {
			continue
		}
		f, err := os.Open(filepath.Join(sysfsPCI, e.Name(), "config"))
		if err != nil {
			continue
		}
		var b [4]byte
		_, err = f.ReadAt(b[:], cfgBAR0)
		f.Close()
		if err == nil {
			return (uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24) &^ 0xf, nil
		}
	}
	return 0, fmt.Errorf("no other virtio function")
}
