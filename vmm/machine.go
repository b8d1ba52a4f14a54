// Package vmm builds and runs a kvmlab virtual machine: guest RAM, the
// in-kernel interrupt controllers and timer, the vCPUs, the legacy PC devices
// on the port bus, and the Linux kernel loaded through the x86 boot protocol.
//
// The run loop is the heart of every VMM: each vCPU is a goroutine locked to
// its own OS thread (KVM binds a vCPU's state to the thread that runs it) that
// calls KVM_RUN, decodes why it came back (package exits), dispatches port and
// MMIO accesses to the device bus, and goes round again. Everything the guest
// does that KVM handles in the kernel (most exits) never shows up here.
//
// The machine wires parts that live elsewhere and holds none of their
// details: guest RAM and its checked access are package guestmem's, the x86
// CPU state at entry (segments, control registers, MSRs, CPUID) and the
// PC's fixed addresses and ports are package x86's, the kernel's placement
// in RAM is package boot's, and every device, the POST port included, is a
// package under devices/ that sees only offsets on the bus.
//
// The machine ends when the guest powers off (ACPI PM1a_CNT SLP_EN with
// SLP_TYP=S5), reboots (i8042 pulse-reset or the ACPI reset register, which
// is the same i8042 port), triple-faults (KVM_EXIT_SHUTDOWN), or KVM reports
// an error. Power-off and reboot end the VMM with success: kvmlab does not
// restart the guest, it hands the result back to the learner. A machine
// built for `run --exec` (Config.Exec, exec.go) also ends when the guest
// writes its command's exit status to the exit-status port, when its
// kernel panics, or when its time is up.
//
// A Config is what the machine is built from; a Spec (spec.go) is the same
// machine as a user describes it, files by path and sizes as text, read
// with bounds and checked against the host before anything is built.
package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/devices/acpipm"
	"kvmlab/devices/bus"
	"kvmlab/devices/cmos"
	"kvmlab/devices/i8042"
	"kvmlab/devices/labdev"
	"kvmlab/devices/pci"
	"kvmlab/devices/post"
	"kvmlab/devices/serial"
	"kvmlab/guestmem"
	"kvmlab/vmm/acpi"
	"kvmlab/vmm/boot"
	"kvmlab/vmm/exits"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/reportlimit"
	"kvmlab/vmm/trace"
	"kvmlab/vmm/x86"
)

// Config describes a machine.
type Config struct {
	Kernel   []byte // bzImage or ELF vmlinux
	Initrd   []byte // may be nil
	Cmdline  string
	MemBytes uint64
	CPUs     int

	// DecompressCache, when not "", is where a bzImage's kernel,
	// decompressed on the host, is kept (hostdecompress.go); "" leaves
	// the decompression to the guest.
	DecompressCache string

	Console io.Writer // guest serial output; nil discards
	Input   io.Reader // host input to the serial port; nil for none
	// Escapes enables Ctrl-A x (quit) on Input.
	Escapes bool
	// Log receives VMM diagnostics (one line each); nil discards.
	Log io.Writer
	// Stats counts port and MMIO accesses per device (a map update per
	// exit; off by default to keep the exit path lean).
	Stats bool
	// Trace receives one event per user-space exit (nil: off).
	Trace trace.Sink
	// Debugger stops every vCPU after each exit (nil: off).
	Debugger Debugger

	// Virtio devices on the PCI bus.
	Disks []DiskConfig
	Nets  []NetConfig
	RNG   bool
	// NoEventFDs makes virtio doorbells exit to user space and interrupts
	// go through KVM_SIGNAL_MSI, instead of ioeventfd and irqfd.
	NoEventFDs bool

	// Exec adds COM2, COM4 and the exit-status port for `run --exec`,
	// and watches the console for a panic (exec.go); nil: none of it.
	Exec *ExecConfig
}

// StopReason says why a machine stopped.
type StopReason int

// Reasons a machine stops.
const (
	StopPoweroff StopReason = iota
	StopReboot
	StopQuit
	StopTripleFault
	StopInternalError
	StopFailEntry
	StopError
	StopExit       // the guest reported an exit status (Config.Exec; Outcome.Status)
	StopGuestPanic // the guest kernel panicked (Config.Exec)
	StopTimeout    // StopTimeout was called
)

func (r StopReason) String() string {
	return [...]string{"poweroff", "reboot", "quit", "triple fault", "KVM internal error", "VM entry failed", "error", "exit status", "guest panic", "timeout"}[r]
}

// Success reports whether the reason is a clean end (exit status 0).
func (r StopReason) Success() bool { return r <= StopQuit }

// Outcome is how a run ended.
type Outcome struct {
	Reason StopReason
	VCPU   int    // the vCPU that caused it, -1 if none
	Detail string // one line
	Dump   string // register dump for failures
	Err    error
	// Ran is how long the machine ran: from Run starting the vCPUs to
	// the moment it was told to stop.
	Ran time.Duration
	// With Config.Exec: the status the guest reported (StopExit), and
	// the last of the console's output.
	Status  int
	Console string
}

// Machine is one VM.
type Machine struct {
	cfg     Config
	sys     *kvm.System
	vm      *kvm.VM
	mem     *guestmem.Memory
	bus     *bus.Bus
	vcpus   []*vcpu
	uart    *serial.UART
	kbd     *i8042.Controller
	cmos    *cmos.CMOS
	pm      *acpipm.PM
	post    *post.Port
	pci     *pci.Root
	virtio  []*virtioDev
	msi     *msiRouter
	out     *asyncWriter
	log     io.Writer
	reports *reportlimit.Limiter // what the guest makes us say, to log: rate-limited, never blocking
	stopMu  sync.Mutex
	stopC   chan struct{}
	stopped atomic.Bool
	outcome Outcome

	exitCounts [exitCountSlots]atomic.Uint64
	started    atomic.Pointer[time.Time] // set once, by Run; read by Stats, Snapshot and stop from other goroutines

	devMu     sync.Mutex
	devCounts map[string]uint64
	devAddrs  int // unclaimed ports and addresses named in devCounts

	observed bool
	syncRegs bool

	statsMu      sync.Mutex
	statsFiles   []*os.File
	statsReaders []*kvm.StatsReader
	vendor       hwexit.Vendor
	seq          atomic.Uint64

	snapMu   sync.Mutex
	snapPrev snapState

	pause pauseState // Pause and Resume (pause.go)
	exec  *execState // Config.Exec's devices (exec.go)

	restored  RestoreTimes // how the restore went (restore.go); zero for a cold boot
	saveMu    sync.Mutex   // one SaveSnapshot at a time (savestate.go)
	diskSizes []int64      // each disk's size in bytes when opened, for snapshots
}

const exitCountSlots = 64

type vcpu struct {
	*kvm.VCPU
	tid  atomic.Int32
	exit exits.Exit

	// Observation state (tracing, stats, stepping); untouched when off.
	enter    time.Time  // when KVM_RUN was entered
	last     bus.Result // who handled the last port/MMIO access
	lastData []byte
	debug    kvm.GuestDebug

	// Snapshots (snapshot.go): a pending request, and the exits that
	// reached user space, counted by the vCPU's goroutine alone.
	snap  atomic.Pointer[snapRequest]
	exits uint64
}

// ErrConfig is wrapped by configuration errors.
var ErrConfig = errors.New("invalid machine configuration")

// New builds a machine: opens KVM, checks capabilities, maps RAM, creates the
// irqchip, PIT and vCPUs, registers devices, writes ACPI tables and loads the
// kernel. Nothing runs until Run.
func New(cfg Config) (m *Machine, err error) {
	img, err := boot.Parse(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	img = hostDecompress(img, cfg.Kernel, cfg.DecompressCache, cfg.Log)
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
	tables, rsdp, err := acpi.Build(acpi.Config{
		CPUs: cfg.CPUs, LAPICAddr: x86.LAPICAddr, IOAPICAddr: x86.IOAPICAddr, IOAPICID: uint8(cfg.CPUs),
		SCIIRQ: x86.SCIIRQ, PM1aEvtBlk: acpipm.EvtBlk, PM1aCntBlk: acpipm.CntBlk, SlpTypS5: acpipm.SlpTypS5,
		ResetPort: x86.ResetPort, ResetValue: x86.ResetValue,
	})
	if err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	if err := m.mem.WriteAt(tables, acpi.Base); err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	entry, err := boot.Load(m.mem, img, cfg.Initrd, cfg.Cmdline, guestmem.GPA(rsdp))
	if err != nil {
		return nil, err
	}
	// Loaded into guest RAM: the machine keeps no reference to the files.
	m.cfg.Kernel, m.cfg.Initrd = nil, nil
	if err := m.createVCPUs(entry); err != nil {
		return nil, err
	}
	m.setupObservation()
	return m, nil
}

// build makes the parts of a machine that a cold boot and a restore from a
// snapshot share: KVM, the VM, RAM (all zeros), the in-kernel interrupt
// controllers and PIT, and the devices at their reset state. A cold boot
// then loads the kernel (New); a restore loads RAM and every part's state
// from the snapshot instead (restore.go).
func build(cfg Config) (m *Machine, err error) {
	if cfg.CPUs < 1 {
		return nil, fmt.Errorf("%w: %d vCPUs", ErrConfig, cfg.CPUs)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	sys, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	m = &Machine{cfg: cfg, sys: sys, log: cfg.Log, stopC: make(chan struct{}), bus: bus.New(),
		reports: newReportLimiter(cfg.Log)}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err := sys.CheckRequired(); err != nil {
		return nil, err
	}
	if max := sys.MaxVCPUs(); cfg.CPUs > max {
		return nil, fmt.Errorf("%w: %d vCPUs requested, KVM allows %d on this host", ErrConfig, cfg.CPUs, max)
	}
	if m.vm, err = sys.CreateVM(); err != nil {
		return nil, err
	}
	// Intel-only setup (see kvm.VM.SetTSSAddr); AMD accepts and ignores
	// both calls (every AMD group of tests/main_test.go). With
	// unrestricted guest (a modern Intel CPU, and the first Intel group)
	// KVM only notes the addresses. Without it, both pages become
	// KVM-private memory at these addresses for every VM: the TSS with
	// kvm_intel.ept=0 or unrestricted_guest=0, the identity map with
	// unrestricted_guest=0 and EPT on. KVM runs a vCPU in real mode in
	// vm86 mode on the TSS, and one with paging off and EPT on, on the
	// identity map as its page table. A second vCPU starts from
	// INIT/SIPI in real mode: TestBootDefaultGuest/2cpu in the emulated
	// Intel host's kvm_intel.ept=0 and kvm_intel.unrestricted_guest=0
	// groups (intelGroups in tests/main_test.go) runs both paths; every guest
	// booted in those groups shows that the pages collide with nothing.
	if err := m.vm.SetIdentityMapAddr(x86.IdentityMapAddr); err != nil {
		return nil, err
	}
	if err := m.vm.SetTSSAddr(x86.TSSAddr); err != nil {
		return nil, err
	}
	if m.mem, err = guestmem.New(cfg.MemBytes); err != nil {
		return nil, err
	}
	for i, r := range m.mem.Regions() {
		if err := m.vm.SetUserMemoryRegion(uint32(i), uint64(r.Base), r.Data); err != nil {
			return nil, err
		}
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err := m.vm.CreatePIT2(); err != nil {
		return nil, err
	}
	if err := m.addDevices(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Machine) addDevices() error {
	m.out = newAsyncWriter(m.consoleSink())
	m.uart = serial.New("COM1", kvm.Line{VM: m.vm, IRQ: x86.COM1IRQ}, m.out)
	m.kbd = i8042.New(func() {
		m.stop(Outcome{Reason: StopReboot, VCPU: -1, Detail: "guest pulsed the reset line through the i8042 (reboot)"})
	})
	m.pm = acpipm.New(func() {
		m.stop(Outcome{Reason: StopPoweroff, VCPU: -1, Detail: "guest entered ACPI S5 through PM1a_CNT (poweroff)"})
	})
	m.cmos, m.post = cmos.New(time.Now), post.New()
	regs := []struct {
		base, size uint64
		name       string
		dev        bus.Device
	}{
		{x86.COM1Port, 8, "COM1", m.uart},
		{x86.I8042DataPort, 1, "i8042-data", m.kbd.DataPort()},
		{x86.I8042CommandPort, 1, "i8042-cmd", m.kbd.CommandPort()},
		{x86.CMOSPort, 2, "CMOS", m.cmos},
		{acpipm.Base, acpipm.Size, "ACPI-PM", m.pm},
		{x86.POSTPort, post.Size, "POST", m.post},
	}
	for _, r := range regs {
		if err := m.bus.Register(bus.PIO, r.base, r.size, r.name, r.dev); err != nil {
			return err
		}
	}
	// Devices of your own (devices/labdev): none unless this build imports
	// a package that adds one, as lab 4's check does. They go after the
	// PC's own devices so an overlap names the built-in one it hit.
	own, err := labdev.All()
	if err != nil {
		return err
	}
	for _, d := range own {
		if err := m.bus.Register(bus.PIO, uint64(d.Port), uint64(d.Size), d.Name, d.New()); err != nil {
			return fmt.Errorf("device of your own: %w", err)
		}
	}
	// The PCI root: a host bridge at 00:00.0 behind configuration
	// mechanism #1, so the guest finds PCI at once instead of probing
	// (a Debian kernel made 33,000 port exits without it).
	m.pci = pci.NewRoot()
	if err := m.pci.Register(m.bus); err != nil {
		return err
	}
	if err := m.addExec(); err != nil {
		return err
	}
	return m.addVirtio()
}

func (m *Machine) createVCPUs(entry *boot.Entry) error {
	cpuid, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	m.vendor = hostVendor(cpuid)
	list, err := m.sys.MSRIndexList()
	if err != nil {
		return err
	}
	supported := make(map[uint32]bool, len(list))
	for _, i := range list {
		supported[i] = true
	}
	statsFD := m.sys.Check(kvm.CapBinaryStatsFD) > 0
	if m.sys.Check(kvm.CapTSCDeadlineTimer) > 0 {
		cpuid = x86.WithTSCDeadline(cpuid) // spares the guest's APIC timer calibration (package x86)
	}
	for id := 0; id < m.cfg.CPUs; id++ {
		kv, err := m.vm.CreateVCPU(id)
		if err != nil {
			return err
		}
		v := &vcpu{VCPU: kv}
		m.vcpus = append(m.vcpus, v)
		if statsFD {
			// Now, before the vCPU first runs: KVM_GET_STATS_FD is a vCPU
			// ioctl, and every vCPU ioctl waits for the vCPU's mutex,
			// which KVM_RUN holds for as long as the guest runs. Asked
			// for later, by a snapshot of a guest that never exits to
			// kvmlab, it would wait for ever (TestSnapshot found it).
			// Reading the file takes no lock: it is pread.
			f, err := kv.StatsFD()
			if err != nil {
				return err
			}
			m.statsFiles = append(m.statsFiles, f)
		}
		if err := kv.SetCPUID2(x86.FilterCPUID(cpuid, uint32(id), m.cfg.CPUs)); err != nil {
			return err
		}
		if err := kv.SetMSRs(x86.BootMSRs(supported)); err != nil {
			return err
		}
		if id != 0 || entry == nil {
			// Application processors stay in wait-for-SIPI until the
			// boot CPU starts them through its local APIC. (A restore
			// passes no entry: every vCPU's state comes from the
			// snapshot.)
			continue
		}
		if entry.RealMode { // a boot sector (vmm/boot/bootsector.go)
			if err := x86.SetupRealMode(kv, entry.RIP, entry.RSP); err != nil {
				return err
			}
			continue
		}
		if err := x86.SetupLongMode(kv, longModeEntry(entry)); err != nil {
			return err
		}
	}
	return nil
}

// longModeEntry is the loader's entry state in the form package x86 loads
// into the boot CPU.
func longModeEntry(e *boot.Entry) x86.LongModeEntry {
	return x86.LongModeEntry{
		RIP: e.RIP, RSP: e.RSP, RSI: e.RSI, CR3: e.CR3,
		GDT:          kvm.DTable{Base: e.GDTBase, Limit: e.GDTLimit},
		CodeSelector: e.CodeSelector, DataSelector: e.DataSelector,
		CodeDescriptor: e.CodeDescriptor, DataDescriptor: e.DataDescriptor,
	}
}

// Bus returns the device bus (for tests and the tracer).
func (m *Machine) Bus() *bus.Bus { return m.bus }

// Memory returns guest RAM.
func (m *Machine) Memory() *guestmem.Memory { return m.mem }

// ExitCounts returns how many user-space exits of each KVM reason there were.
func (m *Machine) ExitCounts() map[exits.Reason]uint64 {
	out := map[exits.Reason]uint64{}
	for i := range m.exitCounts {
		if n := m.exitCounts[i].Load(); n > 0 {
			out[exits.Reason(i)] = n
		}
	}
	return out
}

// Run starts every vCPU and blocks until the machine stops.
func (m *Machine) Run() Outcome {
	now := time.Now()
	m.started.Store(&now)
	var wg sync.WaitGroup
	for _, v := range m.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.vcpuLoop(v)
		}()
	}
	if m.cfg.Input != nil {
		go pumpInput(m.cfg.Input, m.uart, m.cfg.Escapes, func() {
			m.stop(Outcome{Reason: StopQuit, VCPU: -1, Detail: "quit from the console (Ctrl-A x)"})
		}, m.stopC)
	}
	<-m.stopC
	m.kickAll()
	wg.Wait()
	m.out.Close()
	m.finishExec()
	// The last summaries, before the caller prints the outcome.
	m.reports.Flush(reportFlushWait)
	return m.outcome
}

// reportFlushWait bounds how long stopping waits for reports to reach a
// slow log: a full pipe on stderr must not keep the VMM from exiting.
const reportFlushWait = time.Second

func newReportLimiter(log io.Writer) *reportlimit.Limiter {
	return reportlimit.New(log, reportlimit.Options{Prefix: "kvmlab: "})
}

// Reports returns how many reports the guest caused per source (a device),
// and the lines the limiter dropped: for --stats.
func (m *Machine) Reports() ([]reportlimit.Total, reportlimit.Dropped) {
	return m.reports.Totals()
}

// deviceError reports a device's refusal of a guest access. It runs on the
// vCPU goroutine at every such exit, so a guest can call it as often as it
// can exit: it goes through the report limiter, which counts it and only
// now and then asks for the text. The closure does not escape, so counting
// allocates nothing.
func (m *Machine) deviceError(v *vcpu, dev string, space bus.Space, addr uint64, write bool, err error) {
	m.reports.Report(dev, func(b []byte) []byte {
		b = fmt.Appendf(b, "vCPU %d: ", v.ID)
		switch {
		case space == bus.PIO && write:
			b = fmt.Appendf(b, "port %#x out", addr)
		case space == bus.PIO:
			b = fmt.Appendf(b, "port %#x in", addr)
		case write:
			b = fmt.Appendf(b, "MMIO write %#x", addr)
		default:
			b = fmt.Appendf(b, "MMIO read %#x", addr)
		}
		return fmt.Appendf(b, ": %v", err)
	})
}

// stop records the first outcome and tells every vCPU to leave the guest.
func (m *Machine) stop(o Outcome) {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	if m.stopped.Load() {
		return
	}
	if t := m.started.Load(); t != nil {
		o.Ran = time.Since(*t)
	}
	m.outcome = o
	m.stopped.Store(true)
	close(m.stopC)
}

// kickAll forces every vCPU out of KVM_RUN: immediate_exit makes the next
// KVM_RUN return at once, and a signal interrupts one already in the guest.
// SIGURG is the signal the Go runtime itself uses to preempt goroutines, so
// an extra one is harmless to it, and it is not blocked on any Go thread.
func (m *Machine) kickAll() {
	pid := unix.Getpid()
	for i := 0; i < 100; i++ {
		running := false
		for _, v := range m.vcpus {
			exits.SetImmediateExit(v.Run, true)
			if tid := v.tid.Load(); tid > 0 {
				running = true
				_ = unix.Tgkill(pid, int(tid), unix.SIGURG)
			}
		}
		if !running {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// vcpuYieldEvery is how long a busy vCPU goroutine runs before it yields
// to the Go scheduler once.
//
// Why a vCPU loop should yield at all: it spends its life in the KVM_RUN
// system call, coming out for an exit and going straight back in. The Go
// runtime's monitor thread (sysmon) judges a goroutine by the P's
// schedule count: one that has not been rescheduled for 10 ms is "running
// too long", and when it is in a system call the monitor takes its P away
// and hands it off. A goroutine locked to its thread that only ever
// leaves and re-enters system calls is never rescheduled, so after its
// first 10 ms the monitor retakes its P on every one of its ticks, and the
// ticks stay at their fastest, 20 µs: the monitor wakes 50,000 times a
// second and the vCPU thread pays for a stolen P on most exits
// (strace of a 40,000-exit loop: 13,600 sleeps of 20 µs by the monitor).
// Yielding once every few milliseconds resets the count, and the monitor
// backs off to sleeps of up to 10 ms (420 of them in the same loop). A
// yield of a locked goroutine costs two thread hand-offs, a few
// microseconds every vcpuYieldEvery. kvmlab bench's exit loop measures the
// rest of what a Go vCPU loop pays, against a C one (BENCHMARKS.md).
const vcpuYieldEvery = 5 * time.Millisecond

// yieldCheckExits is how many exits pass between two looks at the clock
// for vcpuYieldEvery: 16 exits take microseconds on real hardware and a
// few milliseconds in the emulated host, both well inside the runtime's
// 10 ms. The clock is not read on every exit because on a host whose
// clock source is not the TSC reading it is a system call, and in the
// emulated host a costly one.
const yieldCheckExits = 16

// schedYield is the vCPU loop's yield to the Go scheduler (see
// vcpuYieldEvery). A loop that enters KVM_RUN calls exit once per exit;
// the zero value is ready, and yields first vcpuYieldEvery after the
// first call. (kvmlab bench's Go floor keeps a copy of it, so that it
// runs the same loop as kvmlab; see bench/gofloor.go.)
type schedYield struct {
	last  time.Time
	exits uint
}

// exit counts one exit and yields when vcpuYieldEvery has passed since
// the last yield.
func (y *schedYield) exit() {
	y.exits++
	if y.exits%yieldCheckExits != 1 {
		return
	}
	now := time.Now()
	if y.last.IsZero() {
		y.last = now
		return
	}
	if now.Sub(y.last) >= vcpuYieldEvery {
		y.last = now
		runtime.Gosched()
	}
}

func (m *Machine) vcpuLoop(v *vcpu) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Guest RAM restored from a snapshot is mapped from its file
	// (restore.go). If the file is truncated under the running machine,
	// a read of guest RAM by a device model faults: with SetPanicOnFault
	// that is a panic, recovered here into a clean stop instead of a
	// crash. Only faults inside guest RAM are recovered.
	debug.SetPanicOnFault(true)
	defer func() {
		if r := recover(); r != nil {
			if !m.mem.IsRAMFault(r) {
				panic(r)
			}
			m.stop(Outcome{Reason: StopError, VCPU: v.ID, Err: fmt.Errorf("%v", r),
				Detail: fmt.Sprintf("vCPU %d: guest RAM could not be read (%v): was the snapshot file it is mapped from truncated?", v.ID, r)})
		}
	}()
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	var yield schedYield
	for !m.stopped.Load() {
		if m.observed {
			v.enter = time.Now()
		}
		// Let the scheduler see this goroutine scheduled, so that its
		// monitor does not take our P on every tick (vcpuYieldEvery).
		yield.exit()
		// Paused (pause.go): park here, outside KVM_RUN, until Resume
		// or a stop. KVM state can only be read consistently from
		// outside KVM_RUN, and a parked vCPU thread is where a saved
		// snapshot reads it. Pause's signal makes KVM_RUN return EINTR,
		// and that path comes back here through continue. Before the
		// snapshot check: a request posted while the vCPU woke up is
		// answered before it re-enters the guest.
		m.parkIfPaused(v)
		if m.stopped.Load() {
			return
		}
		if r := v.snapPending(); r != nil {
			m.answerSnapshot(v, r, false)
		}
		err := v.RunOnce()
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				if r := v.snapPending(); r != nil {
					m.answerSnapshot(v, r, true)
				}
				continue
			}
			m.stop(Outcome{Reason: StopError, VCPU: v.ID, Detail: fmt.Sprintf("KVM_RUN on vCPU %d: %v", v.ID, err), Err: err})
			return
		}
		if err := exits.Decode(v.Run, &v.exit); err != nil {
			m.stop(Outcome{Reason: StopError, VCPU: v.ID, Detail: "decode exit: " + err.Error(), Err: err, Dump: m.dump(v)})
			return
		}
		if r := v.exit.Reason; r < exitCountSlots {
			m.exitCounts[r].Add(1)
		}
		v.exits++
		if m.observed {
			m.observe(v)
			continue
		}
		m.handle(v)
	}
}

// handle dispatches one decoded exit.
func (m *Machine) handle(v *vcpu) {
	e := &v.exit
	switch e.Reason {
	case exits.IO:
		m.handleIO(v, e.IO)
	case exits.MMIO:
		m.handleMMIO(v, e.MMIO)
	case exits.Intr, exits.IRQWindowOpen:
		// A signal or an interrupt window: nothing to do but re-enter.
	case exits.HLT:
		// Only reachable without an in-kernel irqchip; ours always has
		// one, but a halted CPU is not an error: keep going.
	case exits.Shutdown:
		m.stop(Outcome{Reason: StopTripleFault, VCPU: v.ID, Dump: m.dump(v),
			Detail: fmt.Sprintf("vCPU %d: triple fault (KVM_EXIT_SHUTDOWN): the guest hit a fault while handling a double fault", v.ID)})
	case exits.SystemEvent:
		switch e.SystemEvent.Type {
		case exits.SystemEventShutdown:
			m.stop(Outcome{Reason: StopPoweroff, VCPU: v.ID, Detail: "KVM system event: shutdown"})
		case exits.SystemEventReset:
			m.stop(Outcome{Reason: StopReboot, VCPU: v.ID, Detail: "KVM system event: reset"})
		default:
			m.stop(Outcome{Reason: StopError, VCPU: v.ID, Detail: fmt.Sprintf("KVM system event %d", e.SystemEvent.Type), Dump: m.dump(v)})
		}
	case exits.InternalError:
		m.stop(Outcome{Reason: StopInternalError, VCPU: v.ID, Dump: m.dump(v),
			Detail: fmt.Sprintf("vCPU %d: KVM internal error, suberror %d%s", v.ID, e.InternalError.Suberror, internalErrorHint(e.InternalError.Suberror))})
	case exits.FailEntry:
		m.stop(Outcome{Reason: StopFailEntry, VCPU: v.ID, Dump: m.dump(v),
			Detail: fmt.Sprintf("vCPU %d: VM entry failed, hardware reason %#x", v.ID, e.FailEntry.HardwareEntryFailureReason)})
	default:
		m.stop(Outcome{Reason: StopError, VCPU: v.ID, Dump: m.dump(v),
			Detail: fmt.Sprintf("vCPU %d: unhandled exit %v", v.ID, e.Reason)})
	}
}

func internalErrorHint(sub uint32) string {
	switch sub {
	case exits.InternalErrorEmulation:
		return " (KVM could not emulate an instruction)"
	case exits.InternalErrorSimulEx:
		return " (exception while delivering an exception)"
	case exits.InternalErrorDeliveryEv:
		return " (event delivery failed)"
	}
	return ""
}

// maxUnclaimedNames bounds how many unclaimed ports and MMIO addresses
// DeviceCounts names one by one. The guest chooses the addresses: one that
// scans the address space would otherwise add a key per address it touches
// and grow the VMM's memory without bound. Beyond the bound, accesses are
// counted under one name per address space.
const maxUnclaimedNames = 32

func (m *Machine) countDevice(space bus.Space, addr uint64, r bus.Result) {
	name := r.Name
	if !r.Handled {
		if space == bus.PIO {
			name = fmt.Sprintf("unhandled port %#x", addr)
		} else {
			name = fmt.Sprintf("unhandled MMIO %#x", addr)
		}
	}
	m.devMu.Lock()
	if m.devCounts == nil {
		m.devCounts = map[string]uint64{}
	}
	if _, seen := m.devCounts[name]; !seen && !r.Handled {
		if m.devAddrs < maxUnclaimedNames {
			m.devAddrs++
		} else if space == bus.PIO {
			name = "unhandled port (other ports)"
		} else {
			name = "unhandled MMIO (other addresses)"
		}
	}
	m.devCounts[name]++
	m.devMu.Unlock()
}

// DeviceCounts returns accesses per device (only with Config.Stats).
func (m *Machine) DeviceCounts() map[string]uint64 {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	out := make(map[string]uint64, len(m.devCounts))
	for k, v := range m.devCounts {
		out[k] = v
	}
	return out
}

func (m *Machine) handleIO(v *vcpu, io *exits.IOExit) {
	data := exits.IOData(v.Run, io)
	size := int(io.Size)
	for i := 0; i < int(io.Count); i++ {
		chunk := data[i*size : (i+1)*size]
		var err error
		var r bus.Result
		if io.Direction == exits.Out {
			r, err = m.bus.Write(bus.PIO, uint64(io.Port), chunk)
		} else {
			r, err = m.bus.Read(bus.PIO, uint64(io.Port), chunk)
		}
		if i == 0 {
			v.last, v.lastData = r, chunk
		}
		if m.cfg.Stats {
			m.countDevice(bus.PIO, uint64(io.Port), r)
		}
		if err != nil {
			m.deviceError(v, r.Name, bus.PIO, uint64(io.Port), io.Direction == exits.Out, err)
		}
	}
}

func (m *Machine) handleMMIO(v *vcpu, mm *exits.MMIOExit) {
	data := mm.Data[:mm.Len]
	if m.cfg.Stats {
		r, _ := m.bus.Lookup(bus.MMIO, mm.PhysAddr)
		m.countDevice(bus.MMIO, mm.PhysAddr, bus.Result{Handled: r.Dev != nil, Name: r.Name})
	}
	if mm.IsWrite {
		r, err := m.bus.Write(bus.MMIO, mm.PhysAddr, data)
		v.last, v.lastData = r, data
		if err != nil {
			m.deviceError(v, r.Name, bus.MMIO, mm.PhysAddr, true, err)
		}
		return
	}
	r, err := m.bus.Read(bus.MMIO, mm.PhysAddr, data)
	v.last, v.lastData = r, data
	if err != nil {
		m.deviceError(v, r.Name, bus.MMIO, mm.PhysAddr, false, err)
	}
	exits.SetMMIOData(v.Run, data)
}

// dump formats a vCPU's registers for a failure report.
func (m *Machine) dump(v *vcpu) string {
	r, err := v.GetRegs()
	if err != nil {
		return "registers unavailable: " + err.Error()
	}
	s, err := v.GetSregs()
	if err != nil {
		return "registers unavailable: " + err.Error()
	}
	return FormatRegs(r, s)
}

// FormatRegs renders registers the way a kernel oops does: compact, hex.
func FormatRegs(r kvm.Regs, s kvm.Sregs) string {
	var b strings.Builder
	fmt.Fprintf(&b, "RIP=%016x RFLAGS=%08x RSP=%016x RBP=%016x\n", r.RIP, r.RFLAGS, r.RSP, r.RBP)
	fmt.Fprintf(&b, "RAX=%016x RBX=%016x RCX=%016x RDX=%016x\n", r.RAX, r.RBX, r.RCX, r.RDX)
	fmt.Fprintf(&b, "RSI=%016x RDI=%016x R8 =%016x R9 =%016x\n", r.RSI, r.RDI, r.R8, r.R9)
	fmt.Fprintf(&b, "R10=%016x R11=%016x R12=%016x R13=%016x\n", r.R10, r.R11, r.R12, r.R13)
	fmt.Fprintf(&b, "R14=%016x R15=%016x\n", r.R14, r.R15)
	fmt.Fprintf(&b, "CS=%04x base=%x L=%d DB=%d  SS=%04x  DS=%04x\n", s.CS.Selector, s.CS.Base, s.CS.L, s.CS.DB, s.SS.Selector, s.DS.Selector)
	fmt.Fprintf(&b, "CR0=%08x CR2=%016x CR3=%016x CR4=%08x EFER=%x\n", s.CR0, s.CR2, s.CR3, s.CR4, s.EFER)
	fmt.Fprintf(&b, "GDT=%x/%x IDT=%x/%x", s.GDT.Base, s.GDT.Limit, s.IDT.Base, s.IDT.Limit)
	return b.String()
}

// Close releases the VM, vCPUs and guest RAM.
func (m *Machine) Close() {
	m.closeVirtio()
	for _, f := range m.statsFiles {
		_ = f.Close()
	}
	m.statsFiles, m.statsReaders = nil, nil
	for _, v := range m.vcpus {
		_ = v.Close()
	}
	m.vcpus = nil
	if m.vm != nil {
		_ = m.vm.Close()
		m.vm = nil
	}
	if m.mem != nil {
		_ = m.mem.Close()
		m.mem = nil
	}
	if m.sys != nil {
		_ = m.sys.Close()
		m.sys = nil
	}
	if m.reports != nil {
		// After the virtio devices: their last words go through it.
		m.reports.Close(reportFlushWait)
	}
}

// RSSBytes returns the VMM process's resident set size from /proc/self/statm
// (through SelfStatm, which a seccomp-confined VMM opened beforehand).
func RSSBytes() uint64 {
	b, err := SelfStatm.ReadAll()
	if err != nil {
		return 0
	}
	var size, rss uint64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		return 0
	}
	return rss * uint64(os.Getpagesize())
}

// Stats is a summary of a run.
type Stats struct {
	Ran              time.Duration
	TotalExits       uint64
	ExitsByReason    map[string]uint64
	AccessesByDevice map[string]uint64
	RSS              uint64 // whole process
	GuestResident    uint64 // guest RAM pages backed by host memory
	GuestRAM         uint64
}

// VMMResident is the VMM's own memory: RSS outside guest RAM.
func (s Stats) VMMResident() uint64 {
	if s.GuestResident > s.RSS {
		return 0
	}
	return s.RSS - s.GuestResident
}

// Stats summarises the run so far.
func (m *Machine) Stats() Stats {
	var ran time.Duration
	if t := m.started.Load(); t != nil {
		ran = time.Since(*t)
	}
	st := Stats{Ran: ran, ExitsByReason: map[string]uint64{}, AccessesByDevice: m.DeviceCounts(), RSS: RSSBytes()}
	for r, n := range m.ExitCounts() {
		st.ExitsByReason[r.String()] = n
		st.TotalExits += n
	}
	if m.mem != nil {
		st.GuestResident, _ = m.mem.Resident()
		st.GuestRAM = m.mem.Size()
	}
	return st
}

// Quit stops the machine from outside the guest (the console's Ctrl-A x, the
// stepper's quit).
func (m *Machine) Quit() {
	m.stop(Outcome{Reason: StopQuit, VCPU: -1, Detail: "quit"})
}
