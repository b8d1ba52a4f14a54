package kvm

import (
	"fmt"
)

// VCPUState is everything KVM holds about one vCPU that a snapshot needs,
// read by SaveState and written back by RestoreState. It is plain data:
// every field but MSRs and XSAVEExtra has a fixed size, so encoding/binary
// can write each fixed field as it is, and gob can write the whole.
type VCPUState struct {
	// MPState is one of the MPState* constants (KVM_GET_MP_STATE).
	MPState uint32
	Regs    Regs  // KVM_GET_REGS
	Sregs   Sregs // KVM_GET_SREGS, including the APIC base MSR and EFER

	// HasXSAVE says the x87/SSE/AVX state is in XSAVE (and XSAVEExtra),
	// read with KVM_GET_XSAVE or KVM_GET_XSAVE2; without KVM_CAP_XSAVE it
	// is in FPU. FPU is read either way (it is small), but restored only
	// when HasXSAVE is false: the XSAVE area holds all of it.
	HasXSAVE bool
	FPU      FPU
	XSAVE    XSAVE
	// XSAVEExtra is the XSAVE area beyond 4096 bytes, when
	// KVM_CAP_XSAVE2 says it is larger (empty otherwise).
	XSAVEExtra []byte

	HasXCRs bool // KVM_CAP_XCRS
	XCRs    XCRs

	HasDebugRegs bool // KVM_CAP_DEBUGREGS
	DebugRegs    DebugRegs

	LAPIC LAPICState // KVM_GET_LAPIC

	// MSRs are the model-specific registers SaveState was asked for, with
	// their values, in the order asked.
	MSRs []MSR

	// TSCKHz is the guest's TSC frequency (KVM_GET_TSC_KHZ), 0 when KVM
	// lacks KVM_CAP_GET_TSC_KHZ.
	TSCKHz uint32

	HasEvents bool // KVM_CAP_VCPU_EVENTS
	Events    VCPUEvents
}

// has reports whether the vCPU's VM has capability want; a VCPU built by
// hand, without a VM, is assumed to have everything.
func (c *VCPU) has(want Cap) bool {
	return c.vm == nil || c.vm.Check(want) > 0
}

// SaveState reads the vCPU's whole state. msrIndices are the MSRs to save:
// normally SaveableMSRs(System.MSRIndexList()), computed once per machine.
//
// The vCPU must be out of KVM_RUN (paused) and stay out until SaveState
// returns, or the state read is a mix of moments. The order follows what
// each read does to the state:
//
//  1. MP state first: KVM_GET_MP_STATE makes the local APIC accept pending
//     INIT and SIPI signals, which changes the vCPU's registers and mode;
//     everything read after it sees the result.
//  2. Registers, special registers, FPU/XSAVE, XCRs, debug registers: plain
//     reads.
//  3. LAPIC: KVM computes the timer's current count as of the call.
//  4. MSRs, TSC frequency.
//  5. Events last: KVM_GET_VCPU_EVENTS first folds NMIs queued meanwhile
//     into the pending count, and the last word on what is in flight is the
//     one to keep (Firecracker saves in this order for the same reasons).
func (c *VCPU) SaveState(msrIndices []uint32) (*VCPUState, error) {
	s := &VCPUState{}
	var err error
	if s.MPState, err = c.MPState(); err != nil {
		return nil, c.stateErr("save", err)
	}
	if s.Regs, err = c.GetRegs(); err != nil {
		return nil, c.stateErr("save", err)
	}
	if s.Sregs, err = c.GetSregs(); err != nil {
		return nil, c.stateErr("save", err)
	}
	if s.FPU, err = c.GetFPU(); err != nil {
		return nil, c.stateErr("save", err)
	}
	if c.has(CapXSAVE) {
		s.HasXSAVE = true
		if c.xsaveBufSize() > XSAVESize {
			b, err := c.GetXSAVE2()
			if err != nil {
				return nil, c.stateErr("save", err)
			}
			s.XSAVE.SetBytes(b)
			s.XSAVEExtra = b[XSAVESize:]
		} else if s.XSAVE, err = c.GetXSAVE(); err != nil {
			return nil, c.stateErr("save", err)
		}
	}
	if c.has(CapXCRs) {
		s.HasXCRs = true
		if s.XCRs, err = c.GetXCRs(); err != nil {
			return nil, c.stateErr("save", err)
		}
	}
	if c.has(CapDebugRegs) {
		s.HasDebugRegs = true
		if s.DebugRegs, err = c.GetDebugRegs(); err != nil {
			return nil, c.stateErr("save", err)
		}
	}
	if s.LAPIC, err = c.GetLAPIC(); err != nil {
		return nil, c.stateErr("save", err)
	}
	if s.MSRs, err = c.ReadMSRs(msrIndices); err != nil {
		return nil, c.stateErr("save", err)
	}
	if c.has(CapGetTSCKHz) {
		if s.TSCKHz, err = c.GetTSCKHz(); err != nil {
			return nil, c.stateErr("save", err)
		}
	}
	if c.has(CapVCPUEvents) {
		s.HasEvents = true
		if s.Events, err = c.GetVCPUEvents(); err != nil {
			return nil, c.stateErr("save", err)
		}
	}
	return s, nil
}

// RestoreState writes a state SaveState read into this vCPU, which must be
// freshly created, with its CPUID already set (KVM_SET_CPUID2: KVM checks
// XCR0 and several MSRs against it) and not yet run. The order is the one
// KVM needs:
//
//  1. TSC frequency first: KVM converts the TSC MSR, the TSC deadline and
//     kvm-clock with it.
//  2. Special registers before everything that depends on the mode: they
//     carry CR0/CR4/EFER and the APIC base MSR, which decides whether the
//     LAPIC is in xAPIC or x2APIC mode, and so how KVM_SET_LAPIC reads the
//     APIC ID.
//  3. General registers, then XSAVE (or FPU) and XCRs, then the debug
//     registers: plain writes.
//  4. LAPIC, after the APIC base (2) and before the MSRs: a write to the
//     TSC-deadline MSR only takes effect when the LAPIC timer is already
//     in TSC-deadline mode.
//  5. MSRs.
//  6. MP state: whether the vCPU is runnable, halted or waiting for
//     INIT/SIPI.
//  7. Events last, because earlier writes clobber them: KVM_SET_REGS
//     drops a pending exception, KVM_SET_SREGS queues an interrupt from its
//     interrupt bitmap. Set last, the interrupt, exception or NMI that was
//     in flight is the one the vCPU delivers when it next runs.
//
// QEMU (target/i386/kvm/kvm.c, kvm_arch_put_registers) and Firecracker
// (its x86-64 vCPU restore_state) work within the same constraints; they
// differ only where KVM does not care (QEMU sets MP state after the
// events, Firecracker first).
func (c *VCPU) RestoreState(s *VCPUState) error {
	if s == nil {
		return fmt.Errorf("vCPU %d: restore: no state", c.ID)
	}
	if s.TSCKHz != 0 {
		cur, err := c.GetTSCKHz()
		if err != nil {
			return c.stateErr("restore", err)
		}
		if cur != s.TSCKHz {
			if err := c.SetTSCKHz(s.TSCKHz); err != nil {
				return c.stateErr("restore", fmt.Errorf("TSC at %d kHz, snapshot at %d kHz: %w", cur, s.TSCKHz, err))
			}
		}
	}
	if err := c.SetSregs(s.Sregs); err != nil {
		return c.stateErr("restore", err)
	}
	if err := c.SetRegs(s.Regs); err != nil {
		return c.stateErr("restore", err)
	}
	if s.HasXSAVE {
		var err error
		if len(s.XSAVEExtra) > 0 || c.xsaveBufSize() > XSAVESize {
			b := append(s.XSAVE.Bytes(), s.XSAVEExtra...)
			if n := c.xsaveBufSize(); len(b) < n {
				// A snapshot from a host whose XSAVE area was
				// smaller: the rest are components in their
				// initial state (XSTATE_BV does not name them).
				b = append(b, make([]byte, n-len(b))...)
			}
			err = c.SetXSAVEBytes(b)
		} else {
			err = c.SetXSAVE(s.XSAVE)
		}
		if err != nil {
			return c.stateErr("restore", err)
		}
	} else if err := c.SetFPU(s.FPU); err != nil {
		return c.stateErr("restore", err)
	}
	if s.HasXCRs {
		if err := c.SetXCRs(s.XCRs); err != nil {
			return c.stateErr("restore", err)
		}
	}
	if s.HasDebugRegs {
		if err := c.SetDebugRegs(s.DebugRegs); err != nil {
			return c.stateErr("restore", err)
		}
	}
	if err := c.SetLAPIC(s.LAPIC); err != nil {
		return c.stateErr("restore", err)
	}
	if err := c.SetMSRs(s.MSRs); err != nil {
		return c.stateErr("restore", err)
	}
	if err := c.SetMPState(s.MPState); err != nil {
		return c.stateErr("restore", err)
	}
	if s.HasEvents {
		if err := c.SetVCPUEvents(s.Events); err != nil {
			return c.stateErr("restore", err)
		}
	}
	return nil
}

func (c *VCPU) stateErr(what string, err error) error {
	return fmt.Errorf("vCPU %d: %s: %w", c.ID, what, err)
}

// VMState is the VM-wide state KVM holds: the in-kernel interrupt
// controllers, the PIT and kvm-clock. Plain data of fixed size:
// encoding/binary writes it whole (binary.Size(VMState{}) is 1728), and so
// does gob.
type VMState struct {
	PICMaster IRQChip // chip IRQChipPICMaster
	PICSlave  IRQChip // chip IRQChipPICSlave
	IOAPIC    IRQChip // chip IRQChipIOAPIC
	PIT       PITState2
	Clock     ClockData
}

// SaveState reads the VM's state. Call it with every vCPU paused, right
// after they stopped: kvm-clock is read first, so that it is as close as
// can be to the moment the guest stopped.
func (v *VM) SaveState() (*VMState, error) {
	s := &VMState{}
	var err error
	if s.Clock, err = v.GetClock(); err != nil {
		return nil, fmt.Errorf("VM: save: %w", err)
	}
	for _, c := range []struct {
		id  uint32
		dst *IRQChip
	}{{IRQChipPICMaster, &s.PICMaster}, {IRQChipPICSlave, &s.PICSlave}, {IRQChipIOAPIC, &s.IOAPIC}} {
		if *c.dst, err = v.GetIRQChip(c.id); err != nil {
			return nil, fmt.Errorf("VM: save: %w", err)
		}
	}
	if s.PIT, err = v.GetPIT2(); err != nil {
		return nil, fmt.Errorf("VM: save: %w", err)
	}
	return s, nil
}

// RestoreState writes a state SaveState read into this VM, which must have
// its irqchip and PIT created (CreateIRQChip, CreatePIT2). Call it after
// every vCPU's RestoreState and just before the vCPUs run: kvm-clock is set
// last, and from then on it moves.
//
// The clock is set to what was saved, with one choice left to the caller
// through s.Clock.Flags: with ClockRealtime set (KVM sets it on
// KVM_GET_CLOCK when the host's clock source is the TSC), KVM adds the
// wall-clock time since the snapshot, and the guest's clock counts the time
// it spent in the file, as after a suspend (Firecracker passes the flag
// back); with it cleared, the guest continues from the instant it was saved,
// as after a pause (QEMU's choice), and its wall clock is late by that
// much. ClockTSCStable and ClockHostTSC describe the reading and are not
// passed back; neither is a flag this KVM does not accept on set (the
// KVM_CAP_ADJUST_CLOCK answer lists them).
func (v *VM) RestoreState(s *VMState) error {
	if s == nil {
		return fmt.Errorf("VM: restore: no state")
	}
	for i, c := range []IRQChip{s.PICMaster, s.PICSlave, s.IOAPIC} {
		// A snapshot file is user input: a chip under another's
		// name would load PIC state into the I/O APIC.
		if c.ChipID != uint32(i) {
			return fmt.Errorf("VM: restore: irqchip %d has chip id %d", i, c.ChipID)
		}
		if err := v.SetIRQChip(c); err != nil {
			return fmt.Errorf("VM: restore: %w", err)
		}
	}
	if err := v.SetPIT2(s.PIT); err != nil {
		return fmt.Errorf("VM: restore: %w", err)
	}
	clock := s.Clock
	clock.Flags &= ClockRealtime & uint32(v.Check(CapAdjustClock))
	if err := v.SetClock(clock); err != nil {
		return fmt.Errorf("VM: restore: %w", err)
	}
	return nil
}
