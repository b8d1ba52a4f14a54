package vmm

// Virtio devices on the PCI bus, and the two kernel shortcuts that make
// them cheap: ioeventfd (a doorbell write that never leaves the kernel) and
// irqfd (an interrupt injected by writing an eventfd). Config.NoEventFDs
// turns both off, so every doorbell is a KVM_EXIT_MMIO handled here and
// every interrupt a KVM_SIGNAL_MSI ioctl: the exit statistics then show
// what the shortcuts save.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"

	"kvmlab/devices/bus"
	"kvmlab/devices/pci"
	"kvmlab/devices/virtio"
	"kvmlab/devices/virtio/blk"
	virtionet "kvmlab/devices/virtio/net"
	"kvmlab/devices/virtio/rng"
	"kvmlab/guestmem"
	"kvmlab/vmm/kvm"

	"golang.org/x/sys/unix"
)

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	Path     string
	ReadOnly bool
}

// NetConfig is one virtio-net interface on a host TAP.
type NetConfig struct {
	TAP string
	MAC net.HardwareAddr // nil: a random locally administered address
}

// The PCI memory window (the root bridge's _CRS in the DSDT): from the end
// of low RAM up to the I/O APIC.
const (
	pciWindowBase = uint64(guestmem.MMIOHoleStart)
	pciWindowEnd  = 0xFEC0_0000
)

// virtioDev is one virtio function and what it owns.
type virtioDev struct {
	slot   int
	t      *virtio.PCI
	closer func() error // the disk image or TAP
	sink   *irqfdSink   // nil with NoEventFDs
}

// addVirtio creates the configured virtio devices, one per PCI slot from
// slot 1, with BAR0 pre-assigned as firmware would (the guest may move it).
func (m *Machine) addVirtio() (err error) {
	if err := m.bus.Register(bus.MMIO, pciWindowBase, pciWindowEnd-pciWindowBase, "pci-window", m.pci.MemoryWindow(pciWindowBase)); err != nil {
		return err
	}
	type made struct {
		dev    virtio.Device
		closer func() error
	}
	var devs []made
	owned := 0 // devs[:owned] are in m.virtio, which Close releases
	defer func() {
		if err != nil {
			for _, d := range devs[owned:] {
				_ = d.closer()
			}
		}
	}()
	for _, d := range m.cfg.Disks {
		b, err := blk.Open(d.Path, d.ReadOnly)
		if err != nil {
			return fmt.Errorf("%w: --disk %s: %w", ErrConfig, d.Path, err)
		}
		devs = append(devs, made{b, b.Close})
		m.diskSizes = append(m.diskSizes, int64(b.Capacity()*blk.SectorSize))
	}
	for _, n := range m.cfg.Nets {
		tap, err := virtionet.OpenTAP(n.TAP)
		if err != nil {
			return fmt.Errorf("%w: --net tap=%s: %w", ErrConfig, n.TAP, err)
		}
		devs = append(devs, made{virtionet.New(tap, n.MAC), tap.Close})
	}
	if m.cfg.RNG {
		devs = append(devs, made{rng.New(), func() error { return nil }})
	}
	if len(devs) > 0 && !m.cfg.NoEventFDs {
		for _, c := range []kvm.Cap{kvm.CapIRQFD, kvm.CapIOEventFD, kvm.CapIRQRouting} {
			if m.sys.Check(c) <= 0 {
				m.logf("kvm: %v missing: virtio falls back to exits and KVM_SIGNAL_MSI", c)
				m.cfg.NoEventFDs = true
			}
		}
	}
	m.msi = &msiRouter{vm: m.vm, next: 24}
	for i, d := range devs {
		slot := i + 1
		if slot >= pci.NumSlots {
			return fmt.Errorf("%w: more than %d PCI devices", ErrConfig, pci.NumSlots-1)
		}
		// What a virtio transport logs, the guest's driver causes
		// (features refused, a broken ring, MSI-X misuse): through the
		// report limiter, one source per function.
		opts := virtio.PCIOptions{Mem: m.mem, Log: m.guestLogf(fmt.Sprintf("virtio-%v 00:%02x.0", d.dev.Type(), slot))}
		vd := &virtioDev{slot: slot, closer: d.closer}
		if m.cfg.NoEventFDs {
			opts.MSI = signalMSI{m.vm}
		} else {
			vd.sink = &irqfdSink{r: m.msi}
			opts.MSI = vd.sink
			opts.Bell = ioeventfds{m.vm}
		}
		t, err := virtio.NewPCI(d.dev, opts)
		if err != nil {
			return err
		}
		vd.t = t
		m.virtio = append(m.virtio, vd)
		owned++
		if err := t.SetBARAddress(0, pciWindowBase+uint64(i)*virtio.BARSize); err != nil {
			return err
		}
		if err := m.pci.Add(slot, t); err != nil {
			return err
		}
	}
	return nil
}

// logf writes a line about the host (a missing KVM capability) to the log.
// Lines the guest can cause go through guestLogf instead.
func (m *Machine) logf(format string, args ...any) {
	fmt.Fprintf(m.log, "kvmlab: "+format+"\n", args...)
}

// guestLogf returns a Printf-like function for messages the guest can cause
// from source: they are rate-limited and summarised by the report limiter,
// and never block the caller.
func (m *Machine) guestLogf(source string) func(format string, args ...any) {
	return func(format string, args ...any) {
		m.reports.Report(source, func(b []byte) []byte { return fmt.Appendf(b, format, args...) })
	}
}

// closeVirtio stops the devices (their goroutines stop touching guest RAM)
// and releases images, TAPs and eventfds.
func (m *Machine) closeVirtio() {
	for _, d := range m.virtio {
		if d.t != nil {
			d.t.Close()
		}
		if d.sink != nil {
			d.sink.close(m.vm)
		}
		_ = d.closer()
	}
	m.virtio = nil
}

// VirtioStats describes each virtio device's activity, one line each.
func (m *Machine) VirtioStats() []string {
	var out []string
	for _, d := range m.virtio {
		ts := d.t.Stats()
		line := fmt.Sprintf("%s at 00:%02x.0: %d notifications (%d as MMIO exits), %d interrupts (%d suppressed by the driver)",
			d.t.Name(), d.slot, ts.Notifies, ts.ExitNotifies, ts.Interrupts, ts.Suppressed)
		switch dev := d.t.Device().(type) {
		case *blk.Device:
			s := dev.Stats()
			line += fmt.Sprintf("; %d reads (%d B), %d writes (%d B), %d flushes, %d errors", s.Reads, s.BytesRead, s.Writes, s.BytesWritten, s.Flushes, s.IOErrors)
		case *virtionet.Device:
			s := dev.Stats()
			line += fmt.Sprintf("; rx %d frames (%d B, %d dropped), tx %d frames (%d B, %d dropped)", s.RxPackets, s.RxBytes, s.RxDropped, s.TxPackets, s.TxBytes, s.TxDropped)
		case *rng.Device:
			s := dev.Stats()
			line += fmt.Sprintf("; %d requests, %d B", s.Requests, s.Bytes)
		}
		out = append(out, line)
	}
	return out
}

// ioeventfds implements virtio.Doorbells with KVM_IOEVENTFD.
type ioeventfds struct{ vm *kvm.VM }

func (b ioeventfds) Assign(addr uint64, length uint32, fd int) error {
	return b.vm.IOEventFD(kvm.IOEventFD{Addr: addr, Len: length, FD: int32(fd)})
}

func (b ioeventfds) Deassign(addr uint64, length uint32, fd int) error {
	return b.vm.IOEventFD(kvm.IOEventFD{Addr: addr, Len: length, FD: int32(fd), Flags: kvm.IOEventFDDeassign})
}

// signalMSI delivers MSI-X messages with KVM_SIGNAL_MSI, one ioctl each.
type signalMSI struct{ vm *kvm.VM }

func (s signalMSI) SendMSI(_ int, addr uint64, data uint32) error {
	_, err := s.vm.SignalMSI(kvm.MSI{Addr: addr, Data: data})
	return err
}

// msiRouter owns the VM's GSI routing table: the default irqchip routes
// plus one MSI route per irqfd. KVM_SET_GSI_ROUTING replaces the table
// wholesale, so every change sends all of it.
type msiRouter struct {
	vm     *kvm.VM
	mu     sync.Mutex
	routes map[uint32]kvm.MSI
	next   uint32
}

// ErrNoGSI is returned when the routing table is full.
var ErrNoGSI = errors.New("no free GSI for an MSI route")

func (r *msiRouter) allocate() (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next >= 4096 { // KVM_MAX_IRQ_ROUTES
		return 0, ErrNoGSI
	}
	r.next++
	return r.next - 1, nil
}

func (r *msiRouter) set(gsi uint32, msg kvm.MSI) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.routes == nil {
		r.routes = map[uint32]kvm.MSI{}
	}
	r.routes[gsi] = msg
	routes := kvm.DefaultRoutes()
	gsis := make([]uint32, 0, len(r.routes))
	for g := range r.routes {
		gsis = append(gsis, g)
	}
	sort.Slice(gsis, func(i, j int) bool { return gsis[i] < gsis[j] })
	for _, g := range gsis {
		routes = append(routes, kvm.Route{GSI: g, IsMSI: true, MSI: r.routes[g]})
	}
	return r.vm.SetGSIRouting(routes)
}

// irqfdSink delivers a device's MSI-X messages through irqfds: vector v
// gets a GSI whose route is the message, and an eventfd bound to that GSI.
// The route is (re)programmed when the message changes, so the common case
// is one 8-byte write to an eventfd and no ioctl at all.
type irqfdSink struct {
	r    *msiRouter
	mu   sync.Mutex
	vecs map[int]*irqfdVector
}

type irqfdVector struct {
	gsi uint32
	fd  int
	msg kvm.MSI
}

func (s *irqfdSink) SendMSI(v int, addr uint64, data uint32) error {
	msg := kvm.MSI{Addr: addr, Data: data}
	s.mu.Lock()
	if s.vecs == nil {
		s.vecs = map[int]*irqfdVector{}
	}
	vec := s.vecs[v]
	if vec == nil {
		gsi, err := s.r.allocate()
		if err != nil {
			s.mu.Unlock()
			return err
		}
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("eventfd for MSI-X vector %d: %w", v, err)
		}
		if err := s.r.set(gsi, msg); err != nil {
			_ = unix.Close(fd)
			s.mu.Unlock()
			return err
		}
		if err := s.r.vm.IRQFD(fd, gsi, false); err != nil {
			_ = unix.Close(fd)
			s.mu.Unlock()
			return err
		}
		vec = &irqfdVector{gsi: gsi, fd: fd, msg: msg}
		s.vecs[v] = vec
	} else if vec.msg != msg {
		if err := s.r.set(vec.gsi, msg); err != nil {
			s.mu.Unlock()
			return err
		}
		vec.msg = msg
	}
	fd := vec.fd
	s.mu.Unlock()
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil {
		return fmt.Errorf("irqfd write: %w", err)
	}
	return nil
}

func (s *irqfdSink) close(vm *kvm.VM) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.vecs {
		if vm != nil {
			_ = vm.IRQFD(v.fd, v.gsi, true)
		}
		_ = unix.Close(v.fd)
	}
	s.vecs = nil
}

// ParseDisk parses a --disk value: PATH[,ro].
func ParseDisk(s string) (DiskConfig, error) {
	parts := strings.Split(s, ",")
	d := DiskConfig{Path: parts[0]}
	if d.Path == "" {
		return d, errors.New("empty path (want --disk PATH[,ro])")
	}
	for _, p := range parts[1:] {
		switch p {
		case "ro":
			d.ReadOnly = true
		case "rw":
			d.ReadOnly = false
		default:
			return d, fmt.Errorf("unknown option %q (want --disk PATH[,ro])", p)
		}
	}
	// Open it as the device will, lock included, so that a bad or busy
	// image is refused with the other user input, before KVM is touched.
	if err := blk.Check(d.Path, d.ReadOnly); err != nil {
		return d, err
	}
	return d, nil
}

// ParseNet parses a --net value: tap=NAME[,mac=MAC].
func ParseNet(s string) (NetConfig, error) {
	var n NetConfig
	for _, p := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "tap":
			n.TAP = v
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil {
				return n, fmt.Errorf("bad mac %q: %w", v, err)
			}
			if err := virtionet.CheckMAC(mac); err != nil {
				return n, err
			}
			n.MAC = mac
		default:
			return n, fmt.Errorf("unknown option %q (want --net tap=NAME[,mac=MAC])", p)
		}
	}
	if n.TAP == "" || len(n.TAP) >= unix.IFNAMSIZ {
		return n, errors.New("need tap=NAME with a name of 1-15 bytes (want --net tap=NAME[,mac=MAC])")
	}
	return n, nil
}
