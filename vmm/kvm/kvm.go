// Package kvm is a typed binding to the Linux KVM API
// (Documentation/virt/kvm/api.rst): the three kinds of file descriptor it
// hands out and the ioctls each one takes.
//
//   - /dev/kvm, the System: API version, capabilities, the CPUID and MSRs the
//     host can virtualise, and KVM_CREATE_VM.
//   - the VM fd: guest memory slots, the in-kernel interrupt controllers and
//     timer, KVM_CREATE_VCPU, interrupt lines.
//   - the vCPU fd: registers, CPUID, MSRs, and KVM_RUN, which enters the guest
//     (VMRUN on AMD SVM, VMLAUNCH/VMRESUME on Intel VT-x) and returns when the
//     guest does something the kernel wants user space to handle. Why it
//     returned is written to the vCPU's shared "run" page (struct kvm_run),
//     which user space maps with mmap.
//
// The structures passed to ioctls mirror include/uapi/linux/kvm.h and
// arch/x86/include/uapi/asm/kvm.h byte for byte. The run page is mapped here
// but not interpreted here: package exits is the one owner of its layout
// (decoding exits, writing answers and immediate_exit), reading it with
// encoding/binary from the mapped byte slice, so only the ioctl calls that
// pass pointers need `unsafe` (kvm_unsafe.go).
package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// APIVersion is the only stable KVM API version there has ever been.
const APIVersion = 12

// ioctl request numbers: _IO/_IOR/_IOW/_IOWR(KVMIO=0xAE, nr, size).
const (
	ioGetAPIVersion       = 0xAE00
	ioCreateVM            = 0xAE01
	ioGetMSRIndexList     = 0xC004AE02
	ioCheckExtension      = 0xAE03
	ioGetVCPUMmapSize     = 0xAE04
	ioGetSupportedCPUID   = 0xC008AE05
	ioCreateVCPU          = 0xAE41
	ioSetUserMemoryRegion = 0x4020AE46
	ioSetTSSAddr          = 0xAE47
	ioSetIdentityMapAddr  = 0x4008AE48
	ioCreateIRQChip       = 0xAE60
	ioIRQLine             = 0x4008AE61
	ioCreatePIT2          = 0x4040AE77
	ioRun                 = 0xAE80
	ioGetRegs             = 0x8090AE81
	ioSetRegs             = 0x4090AE82
	ioGetSregs            = 0x8138AE83
	ioSetSregs            = 0x4138AE84
	ioTranslate           = 0xC018AE85
	ioGetMSRs             = 0xC008AE88
	ioSetMSRs             = 0x4008AE89
	ioSetCPUID2           = 0x4008AE90
	ioGetMPState          = 0x8004AE98
	ioSetGuestDebug       = 0x4048AE9B
	ioGetStatsFD          = 0xAECE
)

// Cap is a KVM capability number (KVM_CAP_*), asked with KVM_CHECK_EXTENSION.
type Cap uint32

// Capabilities kvmlab uses.
const (
	CapIRQChip            Cap = 0
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVCPUs            Cap = 9
	CapMPState            Cap = 14
	CapSetGuestDebug      Cap = 23
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapIOEventFD          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapAdjustClock        Cap = 39
	CapMaxVCPUs           Cap = 66
	CapTSCDeadlineTimer   Cap = 72
	CapImmediateExit      Cap = 136
	CapBinaryStatsFD      Cap = 203
	CapSyncRegs           Cap = 74
)

var capNames = map[Cap]string{
	CapIRQChip: "KVM_CAP_IRQCHIP", CapUserMemory: "KVM_CAP_USER_MEMORY", CapSetTSSAddr: "KVM_CAP_SET_TSS_ADDR",
	CapExtCPUID: "KVM_CAP_EXT_CPUID", CapNrVCPUs: "KVM_CAP_NR_VCPUS", CapMPState: "KVM_CAP_MP_STATE",
	CapSetGuestDebug: "KVM_CAP_SET_GUEST_DEBUG", CapIRQFD: "KVM_CAP_IRQFD", CapPIT2: "KVM_CAP_PIT2",
	CapIOEventFD: "KVM_CAP_IOEVENTFD", CapSetIdentityMapAddr: "KVM_CAP_SET_IDENTITY_MAP_ADDR",
	CapAdjustClock: "KVM_CAP_ADJUST_CLOCK", CapMaxVCPUs: "KVM_CAP_MAX_VCPUS",
	CapTSCDeadlineTimer: "KVM_CAP_TSC_DEADLINE_TIMER", CapImmediateExit: "KVM_CAP_IMMEDIATE_EXIT",
	CapBinaryStatsFD: "KVM_CAP_BINARY_STATS_FD", CapSyncRegs: "KVM_CAP_SYNC_REGS",
}

func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("KVM_CAP(%d)", uint32(c))
}

// Required lists the capabilities a kvmlab VM cannot be built without.
var Required = []Cap{CapIRQChip, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapPIT2, CapSetIdentityMapAddr, CapImmediateExit}

// ErrMissingCap is wrapped by the error CheckRequired returns.
var ErrMissingCap = errors.New("KVM capability missing")

// ErrAPIVersion means /dev/kvm speaks an API other than 12.
var ErrAPIVersion = errors.New("unexpected KVM API version")

// System is an open /dev/kvm.
type System struct {
	f        *os.File
	mmapSize int
}

// DevicePath is where KVM lives.
var DevicePath = devicePath()

// Open opens /dev/kvm and checks the API version. The errors it returns wrap
// the os error, so errors.Is(err, fs.ErrNotExist) and fs.ErrPermission work.
func Open() (*System, error) {
	f, err := os.OpenFile(DevicePath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", DevicePath, err)
	}
	s := &System{f: f}
	v, err := ioctlInt(s.fd(), ioGetAPIVersion, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != APIVersion {
		f.Close()
		return nil, fmt.Errorf("%w: %d, kvmlab speaks %d", ErrAPIVersion, v, APIVersion)
	}
	n, err := ioctlInt(s.fd(), ioGetVCPUMmapSize, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	s.mmapSize = n
	return s, nil
}

func (s *System) fd() uintptr { return s.f.Fd() }

// Close closes /dev/kvm.
func (s *System) Close() error { return s.f.Close() }

// RunPageSize is the size of each vCPU's kvm_run mapping.
func (s *System) RunPageSize() int { return s.mmapSize }

// Check returns the KVM_CHECK_EXTENSION answer for c (0 = unsupported; some
// capabilities answer with a number, e.g. the vCPU limit).
func (s *System) Check(c Cap) int {
	n, err := ioctlInt(s.fd(), ioCheckExtension, uintptr(c))
	if err != nil {
		return 0
	}
	return n
}

// CheckRequired returns an error naming the first required capability the
// host lacks.
func (s *System) CheckRequired() error {
	for _, c := range Required {
		if s.Check(c) <= 0 {
			return fmt.Errorf("%w: %v", ErrMissingCap, c)
		}
	}
	return nil
}

// MaxVCPUs is the most vCPUs one VM may have.
func (s *System) MaxVCPUs() int {
	if n := s.Check(CapMaxVCPUs); n > 0 {
		return n
	}
	if n := s.Check(CapNrVCPUs); n > 0 {
		return n
	}
	return 4 // api.rst: "assume 4" when KVM_CAP_NR_VCPUS is absent
}

// CPUIDEntry is struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUID entry flags.
const (
	CPUIDFlagSignificantIndex = 1 << 0
)

// SupportedCPUID returns the CPUID leaves KVM can present to a guest on this
// host (KVM_GET_SUPPORTED_CPUID): the host's features, minus what KVM cannot
// virtualise, plus what it emulates (such as the KVM paravirtual leaves at
// 0x40000000).
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 64; n <= 4096; n *= 2 {
		entries, err := getSupportedCPUID(s.fd(), n)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		return entries, nil
	}
	return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: more than 4096 entries: %w", unix.E2BIG)
}

// MSRIndexList returns the MSRs KVM saves and restores for a guest.
func (s *System) MSRIndexList() ([]uint32, error) {
	for n := 64; n <= 8192; n *= 2 {
		l, err := getMSRIndexList(s.fd(), n)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", unix.E2BIG)
}

// CreateVM makes a new, empty VM.
func (s *System) CreateVM() (*VM, error) {
	// Type 0 is the default VM type on x86. KVM_CREATE_VM can fail with
	// EINTR on some kernels; api.rst says to retry.
	var fd int
	var err error
	for range 8 {
		fd, err = ioctlInt(s.fd(), ioCreateVM, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	return &VM{f: os.NewFile(uintptr(fd), "kvm-vm"), sys: s}, nil
}

// VM is a virtual machine file descriptor.
type VM struct {
	f   *os.File
	sys *System
}

func (v *VM) fd() uintptr { return v.f.Fd() }

// Close closes the VM.
func (v *VM) Close() error { return v.f.Close() }

// MemoryRegion is struct kvm_userspace_memory_region.
type MemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// SetTSSAddr reserves three pages of guest-physical address space for the
// task state segment Intel VT-x needs to emulate real mode on CPUs without
// "unrestricted guest" (api.rst §4.48 KVM_SET_TSS_ADDR). AMD SVM runs real
// mode natively and KVM accepts and ignores the call there; on Intel the call
// is required before the first KVM_RUN. The emulated Intel host's groups with
// kvm_intel.ept=0 and with kvm_intel.unrestricted_guest=0 (intelGroups in
// tests/main_test.go) run real-mode code on this TSS: a second vCPU's start
// in TestBootDefaultGuest/2cpu.
func (v *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctlInt(v.fd(), ioSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr places the one page that VT-x uses for an identity page
// table while the guest runs in real mode with EPT (api.rst §4.65
// KVM_SET_IDENTITY_MAP_ADDR). As with SetTSSAddr, only Intel hosts use it,
// and only with EPT and without unrestricted guest: the emulated Intel host's
// kvm_intel.unrestricted_guest=0 group (intelGroups in tests/main_test.go)
// runs it, in TestBootDefaultGuest/2cpu. The address must not overlap RAM or
// devices, so it sits just below the TSS.
func (v *VM) SetIdentityMapAddr(addr uint64) error {
	if err := ioctlPtrU64(v.fd(), ioSetIdentityMapAddr, addr); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel interrupt controllers: two 8259A PICs,
// one I/O APIC, and a local APIC per vCPU (created with each vCPU).
func (v *VM) CreateIRQChip() error {
	if _, err := ioctlInt(v.fd(), ioCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// PITConfig is struct kvm_pit_config.
type PITConfig struct {
	Flags uint32
	_     [15]uint32
}

// PITSpeakerDummy makes KVM's PIT also claim port 0x61 (the PC speaker and
// PIT channel 2 gate), which Linux reads when calibrating against the PIT.
const PITSpeakerDummy = 1

// CreatePIT2 creates the in-kernel i8254 programmable interval timer, wired to
// IRQ 0.
func (v *VM) CreatePIT2() error {
	cfg := PITConfig{Flags: PITSpeakerDummy}
	if err := ioctlPtr(v.fd(), ioCreatePIT2, ptrPITConfig(&cfg)); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine sets the level of interrupt line irq (a GSI) on the in-kernel
// PIC and I/O APIC.
func (v *VM) IRQLine(irq uint32, high bool) error {
	lvl := [2]uint32{irq, 0}
	if high {
		lvl[1] = 1
	}
	if err := ioctlPtr(v.fd(), ioIRQLine, ptrU32Pair(&lvl)); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE %d=%d: %w", irq, lvl[1], err)
	}
	return nil
}

// Line is an interrupt line of this VM; it implements irq.Line.
type Line struct {
	VM  *VM
	IRQ uint32
}

// Set drives the line.
func (l Line) Set(high bool) error { return l.VM.IRQLine(l.IRQ, high) }

// CreateVCPU creates vCPU id and maps its run page.
func (v *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctlInt(v.fd(), ioCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("kvm-vcpu:%d", id))
	run, err := unix.Mmap(fd, 0, v.sys.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{ID: id, f: f, Run: run, vm: v}, nil
}

// VCPU is a virtual CPU file descriptor and its mapped kvm_run page.
type VCPU struct {
	ID  int
	f   *os.File
	Run []byte // struct kvm_run, shared with the kernel; package exits reads and writes it
	// vm is the VM the vCPU belongs to, for the capabilities only a VM fd
	// answers (KVM_CAP_XSAVE2 sizes the vCPU's XSAVE buffer); nil in a
	// VCPU a test built by hand.
	vm *VM
}

func (c *VCPU) fd() uintptr { return c.f.Fd() }

// Close unmaps the run page and closes the vCPU.
func (c *VCPU) Close() error {
	err := unix.Munmap(c.Run)
	if e := c.f.Close(); err == nil {
		err = e
	}
	return err
}

// RunOnce enters the guest until the next exit to user space (KVM_RUN). It
// returns unix.EINTR when a signal interrupted it (or immediate_exit was
// set), which is how another goroutine kicks this vCPU out of the guest.
func (c *VCPU) RunOnce() error {
	_, err := ioctlInt(c.fd(), ioRun, 0)
	return err
}

// Regs is struct kvm_regs: the general-purpose registers.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment: a segment register with its hidden
// descriptor cache unpacked.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable: GDTR or IDTR.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs: segment, descriptor-table and control registers.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64
}

// GetRegs reads the general registers.
func (c *VCPU) GetRegs() (Regs, error) {
	var r Regs
	err := ioctlPtr(c.fd(), ioGetRegs, ptrRegs(&r))
	if err != nil {
		return r, fmt.Errorf("KVM_GET_REGS: %w", err)
	}
	return r, nil
}

// SetRegs writes the general registers.
func (c *VCPU) SetRegs(r Regs) error {
	if err := ioctlPtr(c.fd(), ioSetRegs, ptrRegs(&r)); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// GetSregs reads the special registers.
func (c *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	if err := ioctlPtr(c.fd(), ioGetSregs, ptrSregs(&s)); err != nil {
		return s, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	return s, nil
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s Sregs) error {
	if err := ioctlPtr(c.fd(), ioSetSregs, ptrSregs(&s)); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	return nil
}

// SetCPUID2 sets what CPUID reports to this vCPU.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if err := setCPUID2(c.fd(), entries); err != nil {
		return fmt.Errorf("KVM_SET_CPUID2 (%d entries): %w", len(entries), err)
	}
	return nil
}

// MSR is one struct kvm_msr_entry.
type MSR struct {
	Index uint32
	_     uint32
	Data  uint64
}

// SetMSRs writes model-specific registers. KVM stops at the first MSR it
// rejects and returns how many it set; that is turned into an error naming it.
func (c *VCPU) SetMSRs(msrs []MSR) error {
	n, err := setMSRs(c.fd(), msrs)
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	if n != len(msrs) {
		return fmt.Errorf("KVM_SET_MSRS: KVM refused MSR %#x (set %d of %d)", msrs[n].Index, n, len(msrs))
	}
	return nil
}

// GetMSRs reads the MSRs named in msrs (Index set) and fills in Data.
func (c *VCPU) GetMSRs(msrs []MSR) error {
	n, err := getMSRs(c.fd(), msrs)
	if err != nil {
		return fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	if n != len(msrs) {
		return fmt.Errorf("KVM_GET_MSRS: read %d of %d", n, len(msrs))
	}
	return nil
}

// Translation is struct kvm_translation.
type Translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	_               [5]uint8
}

// Translate walks the guest's page tables for a guest-virtual address
// (KVM_TRANSLATE).
func (c *VCPU) Translate(gva uint64) (Translation, error) {
	t := Translation{LinearAddress: gva}
	if err := ioctlPtr(c.fd(), ioTranslate, ptrTranslation(&t)); err != nil {
		return t, fmt.Errorf("KVM_TRANSLATE %#x: %w", gva, err)
	}
	return t, nil
}

// MP states (KVM_GET_MP_STATE).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSipiReceived  = 4
)

// MPState reads the vCPU's multiprocessing state: an application processor
// waits in "uninitialized" until the boot CPU sends it INIT and SIPI.
func (c *VCPU) MPState() (uint32, error) {
	var s uint32
	if err := ioctlPtr(c.fd(), ioGetMPState, ptrU32(&s)); err != nil {
		return 0, fmt.Errorf("KVM_GET_MP_STATE: %w", err)
	}
	return s, nil
}

// Guest debug control bits (KVM_SET_GUEST_DEBUG).
const (
	GuestDebugEnable     = 1 << 0
	GuestDebugSingleStep = 1 << 1
	GuestDebugUseSWBP    = 1 << 16
	GuestDebugUseHWBP    = 1 << 17
	// GuestDebugInjectBP queues a #BP for the guest at the next entry
	// (KVM_GUESTDBG_INJECT_BP): how a debugger hands an INT3 that is not
	// its own back to the guest's handler. KVM acts on it in the ioctl and
	// does not keep it.
	GuestDebugInjectBP = 1 << 19
)

// GuestDebug is struct kvm_guest_debug for x86.
type GuestDebug struct {
	Control  uint32
	_        uint32
	DebugReg [8]uint64
}

// SetGuestDebug enables single-stepping and breakpoints.
func (c *VCPU) SetGuestDebug(d GuestDebug) error {
	if err := ioctlPtr(c.fd(), ioSetGuestDebug, ptrGuestDebug(&d)); err != nil {
		return fmt.Errorf("KVM_SET_GUEST_DEBUG: %w", err)
	}
	return nil
}

// StatsFD returns the vCPU's binary statistics file (KVM_GET_STATS_FD).
func (c *VCPU) StatsFD() (*os.File, error) {
	fd, err := ioctlInt(c.fd(), ioGetStatsFD, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_STATS_FD: %w", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("kvm-vcpu-stats:%d", c.ID)), nil
}

// devicePath honours KVMLAB_KVM_DEVICE, so tests (and users with an unusual
// setup) can point kvmlab at another device node.
func devicePath() string {
	if p := os.Getenv("KVMLAB_KVM_DEVICE"); p != "" {
		return p
	}
	return "/dev/kvm"
}
