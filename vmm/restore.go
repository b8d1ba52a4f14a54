package vmm

// Restoring a machine from a snapshot file (savestate.go writes them).
//
// A restore builds the same machine a cold boot would (build: the VM, RAM,
// the in-kernel interrupt controllers and PIT, the devices, the vCPUs), but
// loads no kernel and writes no ACPI tables: guest RAM comes from the file,
// tables and kernel included, and then every part gets its state back, in
// an order set by what each part's restore does to the others:
//
//  1. RAM, first: the virtio transports check their rings against it.
//  2. Each vCPU (package kvm's RestoreState has its own order inside).
//  3. The VM: PICs, I/O APIC, PIT, and kvm-clock last of all.
//  4. The device models. Their restores re-drive interrupt lines and send
//     pending MSI-X messages, which the interrupt controllers restored in
//     step 3 must be there to receive (restored after, they would wipe them).
//
// The snapshot file is user input. Its layout is checked by package
// vmstate, the description here, and each part's state by the part itself
// (the device packages and KVM refuse what they cannot hold); a refusal
// comes before any vCPU runs.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"time"

	"kvmlab/guestmem"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/vmstate"
)

// Bounds on a snapshot's description, checked before anything is built.
const (
	maxRestoreCPUs = 1024
	maxRestoreMSRs = 4096
	maxXSAVEExtra  = 1 << 20
	maxDisks       = 16
	maxNets        = 8
)

// ErrSnapshot is wrapped by every refusal of a snapshot's content.
var ErrSnapshot = errors.New("snapshot cannot be restored")

// SnapshotConfig reads the machine configuration out of a snapshot's
// description: what the command line shows and checks (disks present, enough
// memory) before Restore builds anything.
func SnapshotConfig(f *vmstate.File) (Config, []SavedDisk, error) {
	d, err := decodeDescription(f.Description)
	if err != nil {
		return Config{}, nil, err
	}
	f.Parsed = d // for Restore: the JSON is parsed once
	return d.Config.config(), d.Config.Disks, nil
}

// described returns f's description decoded: what SnapshotConfig kept, or
// decoded now. It takes what was kept (Restore changes it), so a second
// Restore of the same File decodes again.
func described(f *vmstate.File) (*savedMachine, error) {
	if d, ok := f.Parsed.(*savedMachine); ok {
		f.Parsed = nil
		return d, nil
	}
	return decodeDescription(f.Description)
}

func decodeDescription(b []byte) (*savedMachine, error) {
	var d savedMachine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: its description: %w", ErrSnapshot, err)
	}
	c := d.Config
	switch {
	case c.CPUs < 1 || c.CPUs > maxRestoreCPUs:
		return nil, fmt.Errorf("%w: %d vCPUs", ErrSnapshot, c.CPUs)
	case len(d.VCPUs) != c.CPUs:
		return nil, fmt.Errorf("%w: %d vCPUs configured, %d saved", ErrSnapshot, c.CPUs, len(d.VCPUs))
	case d.VM == nil:
		return nil, fmt.Errorf("%w: no VM state", ErrSnapshot)
	case len(c.Disks) > maxDisks || len(c.Nets) > maxNets:
		return nil, fmt.Errorf("%w: %d disks and %d network interfaces", ErrSnapshot, len(c.Disks), len(c.Nets))
	}
	for i, v := range d.VCPUs {
		if v == nil || len(v.MSRs) > maxRestoreMSRs || len(v.XSAVEExtra) > maxXSAVEExtra {
			return nil, fmt.Errorf("%w: vCPU %d's state is missing or too large", ErrSnapshot, i)
		}
	}
	for _, n := range c.Nets {
		if _, err := net.ParseMAC(n.MAC); err != nil {
			return nil, fmt.Errorf("%w: network interface on %s: MAC %q: %w", ErrSnapshot, n.TAP, n.MAC, err)
		}
	}
	want := len(c.Disks) + len(c.Nets)
	if c.RNG {
		want++
	}
	if len(d.Devices.Virtio) != want {
		return nil, fmt.Errorf("%w: %d virtio devices configured, %d saved", ErrSnapshot, want, len(d.Devices.Virtio))
	}
	return &d, nil
}

// config is the Config a restore builds, before the caller adds its
// console, log and observation settings.
func (c savedConfig) config() Config {
	cfg := Config{MemBytes: c.MemBytes, CPUs: c.CPUs, Cmdline: c.Cmdline, RNG: c.RNG, NoEventFDs: c.NoEventFDs}
	for _, d := range c.Disks {
		cfg.Disks = append(cfg.Disks, DiskConfig{Path: d.Path, ReadOnly: d.ReadOnly})
	}
	for _, n := range c.Nets {
		mac, _ := net.ParseMAC(n.MAC) // checked by decodeDescription
		cfg.Nets = append(cfg.Nets, NetConfig{TAP: n.TAP, MAC: mac})
	}
	return cfg
}

// Restore builds the machine saved in f and puts every part back where the
// snapshot left it; Run then continues it. cfg gives what is not part of the
// machine (Console, Input, Escapes, Log, Stats, Trace, Debugger); the
// machine's own configuration comes from the snapshot and overrides cfg's.
func Restore(cfg Config, f *vmstate.File) (m *Machine, err error) {
	d, err := described(f)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	mc := d.Config.config()
	cfg.MemBytes, cfg.CPUs, cfg.Cmdline = mc.MemBytes, mc.CPUs, mc.Cmdline
	cfg.Disks, cfg.Nets, cfg.RNG, cfg.NoEventFDs = mc.Disks, mc.Nets, mc.RNG, mc.NoEventFDs
	cfg.Kernel, cfg.Initrd = nil, nil
	built, err := build(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			built.Close() // not m: a failed return has set it to nil
		}
	}()
	m = built
	for i, dk := range d.Config.Disks {
		if m.diskSizes[i] != dk.Size {
			return nil, fmt.Errorf("%w: disk %s is %d bytes now, %d when the snapshot was taken: restore with the image as it was", ErrSnapshot, dk.Path, m.diskSizes[i], dk.Size)
		}
	}
	if err := m.createVCPUs(nil); err != nil {
		return nil, err
	}
	if string(m.vendor) != d.Vendor {
		return nil, fmt.Errorf("%w: it was taken on a host with %s, this one has %s: restore it on a host like the one that took it", ErrSnapshot, vendorName(d.Vendor), m.vendor.Technology())
	}

	t1 := time.Now()
	var ram []vmstate.Region
	for _, r := range m.mem.Regions() {
		ram = append(ram, vmstate.Region{GPA: uint64(r.Base), Data: r.Data})
	}
	if osf := f.OSFile(); osf != nil {
		// RAM is not copied: each run of the file is mapped over guest
		// RAM, copy-on-write, and the guest reads the pages it touches
		// from the page cache as it goes (what Firecracker does with its
		// memory file). The checksum is then computed through that
		// mapping, before any vCPU runs: a damaged file is refused, and
		// a good one's pages are all mapped in kvmlab's page tables when
		// the guest first touches them.
		err = f.MapRAM(ram, func(r vmstate.Run, off int64) error {
			return m.mem.MapFile(guestmem.GPA(r.GPA), r.Len, osf, off)
		})
		if err == nil {
			err = m.verifyMapped(f, ram)
		}
	} else {
		err = f.LoadRAM(ram)
	}
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	for i, v := range m.vcpus {
		if err := v.RestoreState(d.VCPUs[i]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
		}
	}
	// kvm-clock continues from the instant the snapshot was taken, as if
	// the guest had been paused all along, rather than jumping by the time
	// the file spent on disk (a jump of hours in CLOCK_MONOTONIC makes
	// the guest's watchdogs report lockups). Two restores of one file then
	// start at the same guest time.
	d.VM.Clock.Flags = 0
	if err := m.vm.RestoreState(d.VM); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if err := m.restoreDevices(&d.Devices); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	m.setupObservation()
	m.restored = RestoreTimes{Build: t1.Sub(t0), RAM: t2.Sub(t1), State: time.Since(t2), RAMBytes: f.SavedBytes}
	return m, nil
}

// RestoreTimes says where a restore's time went: building the machine
// (KVM, RAM mapping, devices, vCPUs), checking RAM in the file and mapping
// it over guest RAM (or reading it, for a File not opened from a file), and
// putting every part's state back.
type RestoreTimes struct {
	Build, RAM, State time.Duration
	RAMBytes          uint64
}

// Restored returns how the machine's restore went (zero for a cold boot).
func (m *Machine) Restored() RestoreTimes { return m.restored }

// restoreDevices gives every device model its saved state.
func (m *Machine) restoreDevices(s *savedDevices) error {
	for _, r := range []struct {
		name string
		do   func() error
	}{
		{"COM1", func() error { return m.uart.RestoreState(s.COM1) }},
		{"i8042", func() error { return m.kbd.RestoreState(s.I8042) }},
		{"CMOS", func() error { return m.cmos.RestoreState(s.CMOS) }},
		{"ACPI PM", func() error { return m.pm.RestoreState(s.ACPIPM) }},
		{"POST", func() error { return m.post.RestoreState(s.POST) }},
		{"PCI", func() error { return m.pci.RestoreState(s.PCI) }},
	} {
		if err := r.do(); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	for i, vd := range m.virtio {
		sv := s.Virtio[i]
		if sv.Slot != vd.slot {
			return fmt.Errorf("%s: saved in slot %d, built in slot %d", vd.t.Name(), sv.Slot, vd.slot)
		}
		if err := vd.t.RestoreState(sv.State); err != nil {
			return fmt.Errorf("%s: %w", vd.t.Name(), err)
		}
	}
	return nil
}

func vendorName(v string) string {
	if v == "" {
		return "unknown"
	}
	return hwexit.Vendor(v).Technology()
}

// verifyMapped checks the RAM mapped from the snapshot file against the
// file's checksum. Reading a page of a file truncated after it was mapped
// is a SIGBUS; with SetPanicOnFault it is a panic, recovered here into a
// refusal (this goroutine's setting is put back afterwards).
func (m *Machine) verifyMapped(f *vmstate.File, ram []vmstate.Region) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if !m.mem.IsRAMFault(r) {
				panic(r)
			}
			err = fmt.Errorf("%w: its RAM could not be read (%v): was the file truncated while kvmlab read it?", vmstate.ErrFormat, r)
		}
	}()
	return f.VerifyMapped(ram)
}
