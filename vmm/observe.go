package vmm

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"kvmlab/devices/bus"
	"kvmlab/guestmem"
	"kvmlab/vmm/exits"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/trace"
)

// The exit observatory hooks. When neither tracing, statistics nor stepping
// is on, vcpuLoop never comes here: one predictable branch on a bool is all
// the exit path pays (BenchmarkDispatch measures it).

// Debugger is the stepper's view of the machine: Stop is called on the vCPU's
// goroutine after an exit was handled and before the vCPU re-enters the
// guest, and the vCPU waits until it returns.
type Debugger interface {
	Stop(c *Control, ev *trace.Event)
}

// Control lets a Debugger inspect and steer the stopped vCPU.
type Control struct {
	m *Machine
	v *vcpu
}

// VCPU is the stopped vCPU's index.
func (c *Control) VCPU() int { return c.v.ID }

// VCPUs is how many vCPUs the machine has.
func (c *Control) VCPUs() int { return len(c.m.vcpus) }

// Regs reads the general registers.
func (c *Control) Regs() (kvm.Regs, error) { return c.v.GetRegs() }

// Sregs reads segment and control registers.
func (c *Control) Sregs() (kvm.Sregs, error) { return c.v.GetSregs() }

// SetRegs writes the general registers.
func (c *Control) SetRegs(r kvm.Regs) error { return c.v.SetRegs(r) }

// ReadPhys copies guest-physical memory.
func (c *Control) ReadPhys(gpa uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	if err := c.m.mem.ReadAt(b, guestmem.GPA(gpa)); err != nil {
		return nil, err
	}
	return b, nil
}

// WritePhys stores into guest-physical memory, through the same checked
// layer as every device (used to plant and remove INT3 breakpoints).
func (c *Control) WritePhys(gpa uint64, p []byte) error {
	return c.m.mem.WriteAt(p, guestmem.GPA(gpa))
}

// SetSWBreakpoints turns the interception of the guest's #BP exception on or
// off (KVM_GUESTDBG_USE_SW_BP). With it on, an INT3 (0xCC) the debugger
// wrote into guest code stops the vCPU with KVM_EXIT_DEBUG, exception 3,
// instead of being delivered to the guest's own #BP handler (Intel SDM
// Vol. 3 §6.15 "Interrupt 3", §26.2 "exception bitmap"; AMD APM Vol. 2
// §15.12 "Exception intercepts"). Unlike single-step and the debug
// registers, this needs no #DB intercept.
func (c *Control) SetSWBreakpoints(on bool) error {
	if on {
		c.v.debug.Control |= kvm.GuestDebugEnable | kvm.GuestDebugUseSWBP
	} else {
		c.v.debug.Control &^= kvm.GuestDebugUseSWBP
	}
	return c.applyDebug()
}

// DebugException is the exception vector of the KVM_EXIT_DEBUG this vCPU
// stopped on: 1 (#DB) for single-step and the debug registers, 3 (#BP) for
// an INT3. ok is false for any other exit.
func (c *Control) DebugException() (vector uint32, ok bool) {
	if c.v.exit.Reason != exits.Debug || c.v.exit.Debug == nil {
		return 0, false
	}
	return c.v.exit.Debug.Exception, true
}

// ReinjectBreakpoint hands the #BP this vCPU stopped on back to the guest:
// with KVM_GUESTDBG_USE_SW_BP on, KVM intercepts every INT3, the guest's own
// as well as the debugger's (Linux runs one in its boot-time self-test,
// int3_selftest), and one that is not the debugger's must reach the guest's
// #BP handler as if nothing had intercepted it, or the guest executes it
// again forever. KVM queues the exception in the ioctl (with the INT3's
// length, so the handler sees RIP past it); the stored debug state is
// unchanged. Run by TestStepDebug/sbreak in the emulated Intel host (QEMU's
// emulated SVM mishandles INT3 intercepts, so the AMD host skips it).
func (c *Control) ReinjectBreakpoint() error {
	d := c.v.debug
	d.Control |= kvm.GuestDebugInjectBP
	return c.v.SetGuestDebug(d)
}

// Translate maps a guest-virtual address through the guest's page tables.
func (c *Control) Translate(gva uint64) (kvm.Translation, error) { return c.v.Translate(gva) }

// ReadVirt reads guest-virtual memory page by page.
func (c *Control) ReadVirt(gva uint64, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for n > 0 {
		t, err := c.v.Translate(gva)
		if err != nil {
			return out, err
		}
		if t.Valid == 0 {
			return out, fmt.Errorf("guest-virtual %#x is not mapped", gva)
		}
		chunk := min(n, int(0x1000-gva&0xfff))
		b, err := c.ReadPhys(t.PhysicalAddress, chunk)
		if err != nil {
			return out, err
		}
		out = append(out, b...)
		gva += uint64(chunk)
		n -= chunk
	}
	return out, nil
}

// SetSingleStep turns instruction single-stepping on or off: with it on, the
// next KVM_RUN executes one guest instruction and returns KVM_EXIT_DEBUG.
func (c *Control) SetSingleStep(on bool) error {
	if on {
		c.v.debug.Control |= kvm.GuestDebugEnable | kvm.GuestDebugSingleStep
	} else {
		c.v.debug.Control &^= kvm.GuestDebugSingleStep
	}
	return c.applyDebug()
}

// SetHWBreakpoints programs up to four hardware execution breakpoints (debug
// registers DR0-DR3, DR7 local-enable bits with R/W=00 "instruction
// execution", Intel SDM Vol. 3B §18.2): the guest stops with KVM_EXIT_DEBUG
// before executing an instruction at one of these linear addresses. The
// guest's own memory is not modified, unlike INT3 breakpoints.
func (c *Control) SetHWBreakpoints(addrs []uint64) error {
	bps := make([]HWBreakpoint, len(addrs))
	for i, a := range addrs {
		bps[i] = HWBreakpoint{Addr: a, Kind: HWExec}
	}
	return c.SetDebugRegisters(bps) // debugregs.go encodes DR7
}

func (c *Control) applyDebug() error {
	d := c.v.debug
	if d.Control&(kvm.GuestDebugSingleStep|kvm.GuestDebugUseHWBP|kvm.GuestDebugUseSWBP) == 0 {
		d.Control = 0
	}
	return c.v.SetGuestDebug(d)
}

// Vendor is the host's virtualisation flavour ("vmx" or "svm").
func (c *Control) Vendor() hwexit.Vendor { return c.m.vendor }

// Bus gives the device bus (for naming devices).
func (c *Control) Bus() *bus.Bus { return c.m.bus }

// observe handles an exit with tracing, statistics or stepping on.
func (m *Machine) observe(v *vcpu) {
	exitAt := time.Now()
	e := &v.exit
	ev := trace.Event{
		Seq:     m.seq.Add(1),
		TimeNS:  m.sinceStart(exitAt).Nanoseconds(),
		VCPU:    v.ID,
		Reason:  e.Reason.String(),
		Code:    uint32(e.Reason),
		GuestNS: exitAt.Sub(v.enter).Nanoseconds(),
		HW:      hwexit.HWFor(e.Reason, m.vendor, e),
	}
	if m.syncRegs {
		ev.RIP = exits.SyncedRIP(v.Run)
	} else if r, err := v.GetRegs(); err == nil {
		ev.RIP = r.RIP
	}
	v.last, v.lastData = bus.Result{}, nil
	isDebug := e.Reason == exits.Debug
	if isDebug {
		ev.RIP = e.Debug.PC
	} else {
		m.handle(v)
	}
	ev.HandleNS = time.Since(exitAt).Nanoseconds()
	switch {
	case e.IO != nil && e.Reason == exits.IO:
		ev.IO = &trace.IO{Port: e.IO.Port, Size: e.IO.Size, Dir: e.IO.Direction.String(), Count: e.IO.Count,
			Data: hex.EncodeToString(v.lastData)}
	case e.MMIO != nil && e.Reason == exits.MMIO:
		ev.MMIO = &trace.MMIO{Addr: e.MMIO.PhysAddr, Len: e.MMIO.Len, Write: e.MMIO.IsWrite, Data: hex.EncodeToString(v.lastData)}
	}
	if v.last.Handled {
		ev.Device = v.last.Name
		if d, ok := v.last.Dev.(bus.Describer); ok {
			write := (ev.IO != nil && ev.IO.Dir == "out") || (ev.MMIO != nil && ev.MMIO.Write)
			ev.Action = d.Describe(v.last.Offset, write, v.lastData)
		}
	} else if ev.IO != nil {
		ev.Action = fmt.Sprintf("unclaimed port %#x %s (reads as all ones)", ev.IO.Port, ev.IO.Dir)
	} else if ev.MMIO != nil {
		ev.Action = fmt.Sprintf("unclaimed MMIO %#x (reads as all ones)", ev.MMIO.Addr)
	}
	if m.cfg.Trace != nil {
		m.cfg.Trace.Record(&ev)
	}
	if m.cfg.Debugger != nil && !m.stopped.Load() {
		m.cfg.Debugger.Stop(&Control{m: m, v: v}, &ev)
	}
}

// setupObservation prepares the vCPUs for tracing or stepping.
func (m *Machine) setupObservation() {
	m.observed = m.cfg.Trace != nil || m.cfg.Debugger != nil
	if !m.observed {
		return
	}
	if m.sys.Check(kvm.CapSyncRegs) > 0 {
		// Ask KVM to copy the registers into the run page at every
		// exit, so reading RIP costs no ioctl.
		m.syncRegs = true
		for _, v := range m.vcpus {
			exits.EnableSyncRegs(v.Run)
		}
	}
}

// hostVendor reads the CPU vendor string from CPUID leaf 0.
func hostVendor(cpuid []kvm.CPUIDEntry) hwexit.Vendor {
	for _, e := range cpuid {
		if e.Function == 0 {
			var b [12]byte
			binary.LittleEndian.PutUint32(b[0:], e.EBX)
			binary.LittleEndian.PutUint32(b[4:], e.EDX)
			binary.LittleEndian.PutUint32(b[8:], e.ECX)
			return hwexit.VendorFromCPUID(string(b[:]))
		}
	}
	return hwexit.VendorFromCPUID("")
}

// KernelStats reads every vCPU's KVM binary statistics (exits handled in the
// kernel included). The files were opened with the vCPUs (createVCPUs says
// why then); their descriptors are parsed on first use and kept.
func (m *Machine) KernelStats() ([]map[string]uint64, error) {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	if len(m.statsFiles) == 0 {
		return nil, fmt.Errorf("this host's KVM has no %v", kvm.CapBinaryStatsFD)
	}
	if m.statsReaders == nil {
		for _, f := range m.statsFiles {
			r, err := kvm.NewStatsReader(f)
			if err != nil {
				m.statsReaders = nil
				return nil, err
			}
			m.statsReaders = append(m.statsReaders, r)
		}
	}
	out := make([]map[string]uint64, len(m.statsReaders))
	for i, r := range m.statsReaders {
		s, err := r.Read()
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// sinceStart is how long after Run started the vCPUs t is (0 before).
func (m *Machine) sinceStart(t time.Time) time.Duration {
	if s := m.started.Load(); s != nil {
		return t.Sub(*s)
	}
	return 0
}
