// Package exits turns the kvm_run page that KVM_RUN leaves behind into typed
// values, before anything acts on them, and writes the VMM's answers back
// into it. It decodes and does nothing else: it imports no other kvmlab
// package, allocates nothing on the hot path, and knows only the kernel's
// layer of an exit, the KVM_EXIT_* reason.
//
// A VM exit is the moment the processor leaves guest mode and returns control
// to the hypervisor: a VMEXIT on AMD SVM (AMD64 APM Vol. 2 §15.6), a VM exit
// on Intel VT-x (Intel SDM Vol. 3C §27). Most exits are handled inside the
// kernel by KVM (CPUID, most MSRs, HLT with the in-kernel irqchip, page faults
// on nested page tables) and the guest resumes without user space hearing of
// it. The rest come back from KVM_RUN with a KVM_EXIT_* reason in
// kvm_run.exit_reason and the details in a union that depends on the reason
// (include/uapi/linux/kvm.h, struct kvm_run; Documentation/virt/kvm/api.rst,
// "The kvm_run structure").
//
// The package has two halves. exits.go is the vocabulary: the reasons and one
// Go type per union member, the way kvm-ioctls' VcpuExit names them.
// runpage.go is the only code in kvmlab that knows the page's byte layout:
// Decode, the VMM's writes (MMIO read data, immediate_exit, the sync-regs
// request) and the encoders tests use to fake an exit.
//
// Decode is a pure function of those bytes, so the whole dispatch path can be
// unit-tested and fuzzed with hand-made run pages, without /dev/kvm. It
// bounds-checks every offset the kernel gives (e.g. the I/O data offset)
// against the page, so a corrupted or unexpected page yields an error, never
// an out-of-range slice.
//
// The layer beneath, which VT-x or SVM exit made the CPU leave the guest,
// and the plain-words explanations of both layers, are in package hwexit;
// they are for the observatory, not for the vCPU loop.
package exits

import (
	"fmt"
	"slices"
)

// Reason is a KVM_EXIT_* value.
type Reason uint32

// KVM exit reasons (include/uapi/linux/kvm.h).
const (
	Unknown        Reason = 0
	Exception      Reason = 1
	IO             Reason = 2
	Hypercall      Reason = 3
	Debug          Reason = 4
	HLT            Reason = 5
	MMIO           Reason = 6
	IRQWindowOpen  Reason = 7
	Shutdown       Reason = 8
	FailEntry      Reason = 9
	Intr           Reason = 10
	SetTPR         Reason = 11
	TPRAccess      Reason = 12
	NMI            Reason = 16
	InternalError  Reason = 17
	SystemEvent    Reason = 24
	IOAPICEOI      Reason = 26
	X86RDMSR       Reason = 29
	X86WRMSR       Reason = 30
	DirtyRingFull  Reason = 31
	APResetHold    Reason = 32
	X86BusLock     Reason = 33
	Notify         Reason = 37
	MemoryFault    Reason = 39
	maxKnownReason        = 39
)

var reasonNames = map[Reason]string{
	Unknown: "UNKNOWN", Exception: "EXCEPTION", IO: "IO", Hypercall: "HYPERCALL", Debug: "DEBUG",
	HLT: "HLT", MMIO: "MMIO", IRQWindowOpen: "IRQ_WINDOW_OPEN", Shutdown: "SHUTDOWN",
	FailEntry: "FAIL_ENTRY", Intr: "INTR", SetTPR: "SET_TPR", TPRAccess: "TPR_ACCESS", NMI: "NMI",
	InternalError: "INTERNAL_ERROR", SystemEvent: "SYSTEM_EVENT", IOAPICEOI: "IOAPIC_EOI",
	X86RDMSR: "X86_RDMSR", X86WRMSR: "X86_WRMSR", DirtyRingFull: "DIRTY_RING_FULL",
	APResetHold: "AP_RESET_HOLD", X86BusLock: "X86_BUS_LOCK", Notify: "NOTIFY", MemoryFault: "MEMORY_FAULT",
}

// Reasons lists every KVM_EXIT_* value this package names, in numeric order.
func Reasons() []Reason {
	rs := make([]Reason, 0, len(reasonNames))
	for r := range reasonNames {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	return rs
}

// String returns the KVM_EXIT_ name.
func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return "KVM_EXIT_" + n
	}
	return fmt.Sprintf("KVM_EXIT_%d", uint32(r))
}

// ParseReason accepts "IO", "io", "KVM_EXIT_IO" or a number.
func ParseReason(s string) (Reason, bool) {
	var n uint32
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil {
		return Reason(n), true
	}
	up := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		up = append(up, c)
	}
	name := string(up)
	if len(name) > 9 && name[:9] == "KVM_EXIT_" {
		name = name[9:]
	}
	for r, n := range reasonNames {
		if n == name {
			return r, true
		}
	}
	return 0, false
}

// Direction of a port I/O exit.
type Direction uint8

// I/O directions (KVM_EXIT_IO_IN / KVM_EXIT_IO_OUT).
const (
	In  Direction = 0
	Out Direction = 1
)

func (d Direction) String() string {
	if d == Out {
		return "out"
	}
	return "in"
}

// IOExit is KVM_EXIT_IO: the guest executed IN/OUT/INS/OUTS on a port no
// in-kernel device claims.
type IOExit struct {
	Direction Direction
	Size      uint8  // 1, 2 or 4 bytes per element
	Port      uint16 // I/O port
	Count     uint32 // >1 for REP INS/OUTS
	// DataOffset is where, inside the run page, the Count*Size bytes live:
	// written by the kernel for OUT, to be filled by the VMM for IN.
	DataOffset uint64
}

// MMIOExit is KVM_EXIT_MMIO: the guest touched a guest-physical address that
// is neither RAM nor an in-kernel device.
type MMIOExit struct {
	PhysAddr uint64
	Data     [8]byte
	Len      uint32
	IsWrite  bool
}

// SystemEventExit is KVM_EXIT_SYSTEM_EVENT (e.g. a PSCI shutdown on Arm; on
// x86 rarely seen).
type SystemEventExit struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

// System event types.
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// InternalErrorExit is KVM_EXIT_INTERNAL_ERROR: KVM could not proceed (for
// instance its instruction emulator met an instruction it cannot emulate).
type InternalErrorExit struct {
	Suberror uint32
	NData    uint32
	Data     [16]uint64
}

// Internal error sub-reasons.
const (
	InternalErrorEmulation    = 1
	InternalErrorSimulEx      = 2
	InternalErrorDeliveryEv   = 3
	InternalErrorUnexpectedEx = 4
)

// FailEntryExit is KVM_EXIT_FAIL_ENTRY: VM entry itself failed; the reason is
// the hardware's (a VT-x exit reason with bit 31 set, or an SVM exit code).
type FailEntryExit struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// DebugExit is KVM_EXIT_DEBUG: a single-step or breakpoint trap requested with
// KVM_SET_GUEST_DEBUG.
type DebugExit struct {
	Exception uint32
	PC        uint64
	DR6, DR7  uint64
}

// Exit is one decoded exit. Exactly the pointer that matches Reason is set.
type Exit struct {
	Reason        Reason
	IO            *IOExit
	MMIO          *MMIOExit
	SystemEvent   *SystemEventExit
	InternalError *InternalErrorExit
	FailEntry     *FailEntryExit
	Debug         *DebugExit
	// HardwareExitReason is set for KVM_EXIT_UNKNOWN (kvm_run.hw).
	HardwareExitReason uint64
}
