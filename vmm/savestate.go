package vmm

// Saving a running machine to a snapshot file, and the description the file
// holds. The file's layout is package vmstate's; what goes into it, layer by
// layer, is here (and in docs/snapshot.md):
//
//   - the configuration the machine was built with (RAM size, vCPUs, disks,
//     network, rng), which a restore builds again;
//   - each vCPU as KVM holds it (package kvm's VCPUState: registers, FPU
//     and XSAVE, MSRs, local APIC, pending events, MP state);
//   - the VM-wide state KVM emulates in the kernel: both 8259 PICs, the I/O
//     APIC, the PIT, and kvm-clock;
//   - every device model kvmlab emulates in user space, each saving its own
//     registers (packages under devices/);
//   - guest RAM, the pages the guest touched.
//
// Order matters. The vCPUs are paused first (pause.go): KVM only reads a
// vCPU's state consistently while it is outside KVM_RUN. Then the virtio
// transports are quiesced: their workers finish the requests in flight, so
// that guest RAM and the queue indices agree. Only then is anything read.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"kvmlab/devices/acpipm"
	"kvmlab/devices/cmos"
	"kvmlab/devices/i8042"
	"kvmlab/devices/pci"
	"kvmlab/devices/post"
	"kvmlab/devices/serial"
	"kvmlab/devices/virtio"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/vmstate"
)

// savedMachine is a snapshot's description (JSON): everything but RAM.
type savedMachine struct {
	// Kvmlab is the version of kvmlab that wrote it, for people.
	Kvmlab string `json:"kvmlab"`
	// Created is when the guest stopped for the snapshot, in UTC: the
	// local zone would be read from /etc/localtime at the first use,
	// an open(2) the running VMM's seccomp filter forbids.
	Created time.Time `json:"created"`
	// Vendor is the host CPU's ("GenuineIntel", "AuthenticAMD"): a vCPU's
	// state holds MSRs and an XSAVE layout of its vendor, and KVM refuses
	// or misreads them on the other.
	Vendor  string           `json:"vendor"`
	Config  savedConfig      `json:"config"`
	VM      *kvm.VMState     `json:"vm"`
	VCPUs   []*kvm.VCPUState `json:"vcpus"`
	Devices savedDevices     `json:"devices"`
}

// savedConfig is the part of Config a restore builds the machine from.
type savedConfig struct {
	MemBytes   uint64      `json:"mem_bytes"`
	CPUs       int         `json:"cpus"`
	Cmdline    string      `json:"cmdline"`
	Disks      []SavedDisk `json:"disks,omitempty"`
	Nets       []SavedNet  `json:"nets,omitempty"`
	RNG        bool        `json:"rng,omitempty"`
	NoEventFDs bool        `json:"no_eventfds,omitempty"`
}

// SavedDisk is a disk of a snapshot's machine. The image itself is not in
// the snapshot (like Firecracker's, a snapshot holds the machine, not its
// disks): a restore opens the same path, and refuses an image whose size
// changed.
type SavedDisk struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Size     int64  `json:"size"`
}

// SavedNet is a network interface of a snapshot's machine: the TAP it was
// attached to and the MAC address the guest knows it by.
type SavedNet struct {
	TAP string `json:"tap"`
	MAC string `json:"mac"`
}

// savedDevices is every device model's state.
type savedDevices struct {
	COM1   serial.State  `json:"com1"`
	I8042  i8042.State   `json:"i8042"`
	CMOS   cmos.State    `json:"cmos"`
	ACPIPM acpipm.State  `json:"acpi_pm"`
	POST   post.State    `json:"post"`
	PCI    pci.State     `json:"pci"`
	Virtio []savedVirtio `json:"virtio,omitempty"`
}

// savedVirtio is one virtio function: its PCI slot and transport state.
type savedVirtio struct {
	Slot  int          `json:"slot"`
	State virtio.State `json:"state"`
}

// SaveResult says what a snapshot wrote and what it cost.
type SaveResult struct {
	vmstate.Info
	// Paused is how long the guest was stopped for the snapshot (until
	// the file was written; the whole time when it stays paused).
	Paused time.Duration
	// Took is how long SaveSnapshot took in all.
	Took time.Duration
}

// Version is written into snapshots for people reading them (package main
// sets it from the build).
var Version = "dev"

// SaveSnapshot writes the whole machine to out and lets it run on, or
// leaves it paused when stayPaused. out is a file the caller opened (empty,
// regular): kvmlab run's seccomp filter lets it open no file once the
// machine runs, so the client that asks for a snapshot creates the file and
// passes its descriptor (package control), and puts it in place once the
// snapshot is complete. Safe to call from any goroutine while the machine
// runs; one snapshot at a time.
func (m *Machine) SaveSnapshot(out *os.File, stayPaused bool) (SaveResult, error) {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	start := time.Now()
	if st, err := out.Stat(); err != nil {
		return SaveResult{}, fmt.Errorf("snapshot: %w", err)
	} else if !st.Mode().IsRegular() || st.Size() != 0 {
		return SaveResult{}, fmt.Errorf("snapshot: the output must be an empty regular file")
	}
	wasPaused := m.Paused()
	if !wasPaused {
		if err := m.Pause(); err != nil {
			return SaveResult{}, fmt.Errorf("snapshot: %w", err)
		}
	}
	pausedAt := time.Now()
	resumed := false
	resume := func() {
		if !wasPaused && !stayPaused && !resumed {
			resumed = true
			m.Resume()
		}
	}
	defer resume()

	var quiesced []*virtio.PCI
	defer func() {
		for _, t := range quiesced {
			t.Unquiesce()
		}
	}()
	for _, vd := range m.virtio {
		if err := vd.t.Quiesce(); err != nil {
			return SaveResult{}, fmt.Errorf("snapshot: %s: %w", vd.t.Name(), err)
		}
		quiesced = append(quiesced, vd.t)
	}
	desc, err := m.describe(pausedAt)
	if err != nil {
		return SaveResult{}, fmt.Errorf("snapshot: %w", err)
	}
	var ram []vmstate.Region
	for _, r := range m.mem.Regions() {
		res, err := m.mem.ResidentPages(r)
		if err != nil {
			return SaveResult{}, fmt.Errorf("snapshot: %w", err)
		}
		ram = append(ram, vmstate.Region{GPA: uint64(r.Base), Data: r.Data, Resident: res})
	}
	info, err := vmstate.Write(out, desc, ram)
	if err != nil {
		return SaveResult{}, fmt.Errorf("snapshot: %w", err)
	}
	if err := out.Sync(); err != nil {
		return SaveResult{}, fmt.Errorf("snapshot: %w", err)
	}
	for _, t := range quiesced {
		t.Unquiesce()
	}
	quiesced = nil
	paused := time.Since(pausedAt)
	resume()
	return SaveResult{Info: info, Paused: paused, Took: time.Since(start)}, nil
}

// describe collects every part's state but RAM, as JSON. The vCPUs are
// paused and the virtio transports quiesced.
func (m *Machine) describe(at time.Time) ([]byte, error) {
	d := savedMachine{Kvmlab: Version, Created: at.UTC(), Vendor: string(m.vendor), Config: m.savedConfig()}
	var err error
	// kvm-clock first, as close as can be to the instant the guest stopped.
	if d.VM, err = m.vm.SaveState(); err != nil {
		return nil, err
	}
	msrs, err := m.saveableMSRs()
	if err != nil {
		return nil, err
	}
	// Each vCPU is read on its own thread, where it is parked: KVM loads a
	// vCPU's state onto the CPU of the thread that asks, and the thread
	// that runs it already has it there.
	d.VCPUs = make([]*kvm.VCPUState, len(m.vcpus))
	err = m.OnParked(func(id int, v *kvm.VCPU) error {
		s, err := v.SaveState(msrs)
		d.VCPUs[id] = s
		return err
	})
	if err != nil {
		return nil, err
	}
	d.Devices = savedDevices{
		COM1: m.uart.SaveState(), I8042: m.kbd.SaveState(), CMOS: m.cmos.SaveState(),
		ACPIPM: m.pm.SaveState(), POST: m.post.SaveState(), PCI: m.pci.SaveState(),
	}
	for _, vd := range m.virtio {
		s, err := vd.t.SaveState()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", vd.t.Name(), err)
		}
		d.Devices.Virtio = append(d.Devices.Virtio, savedVirtio{Slot: vd.slot, State: s})
	}
	return json.Marshal(&d)
}

// saveableMSRs is the list of MSRs a snapshot saves: every MSR KVM lists
// as worth saving (KVM_GET_MSR_INDEX_LIST) that this vCPU can read.
func (m *Machine) saveableMSRs() ([]uint32, error) {
	if len(m.vcpus) == 0 {
		return nil, errors.New("no vCPUs")
	}
	list, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	return m.vcpus[0].SaveableMSRs(list)
}

func (m *Machine) savedConfig() savedConfig {
	c := savedConfig{MemBytes: m.cfg.MemBytes, CPUs: m.cfg.CPUs, Cmdline: m.cfg.Cmdline,
		RNG: m.cfg.RNG, NoEventFDs: m.cfg.NoEventFDs}
	for i, dk := range m.cfg.Disks {
		c.Disks = append(c.Disks, SavedDisk{Path: dk.Path, ReadOnly: dk.ReadOnly, Size: m.diskSizes[i]})
	}
	for _, n := range m.cfg.Nets {
		c.Nets = append(c.Nets, SavedNet{TAP: n.TAP, MAC: n.MAC.String()})
	}
	return c
}
