package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/guest/tiny"
	kvmexits "kvmlab/vmm/exits"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/x86"
)

// The Go floor of the exit benchmark: exitfloor.c's VM, guest and loop,
// written in Go on kvmlab's KVM bindings. Between the C floor and kvmlab
// it splits the price of an exit in two: what any Go program pays to make
// the KVM_RUN system call (the runtime's bookkeeping around a system call,
// its scheduler), and what kvmlab adds on top (decoding the exit into a
// typed value, the device bus, the device). It is run as its own process,
// `kvmlab bench --go-floor N` (an internal flag: GoFloor), and prints what
// exitfloor prints.

// GoFloorVariant says how the Go floor enters the guest.
type GoFloorVariant string

const (
	// GoFloorPlain is kvmlab's way: unix.Syscall, and a yield to the
	// scheduler every few milliseconds (schedYield).
	GoFloorPlain GoFloorVariant = "syscall"
	// goFloorNoYield never yields: the runtime's monitor then takes the
	// P of the vCPU's thread on each of its ticks.
	goFloorNoYield GoFloorVariant = "no-yield"
	// goFloorRaw enters with unix.RawSyscall: no scheduler bookkeeping
	// at all (runRaw; not safe in a VMM).
	goFloorRaw GoFloorVariant = "raw"
	// goFloorPinned is GoFloorPlain with the vCPU thread pinned to the
	// last CPU (sched_setaffinity), so that the host's scheduler cannot
	// move it between CPUs, which costs a nested vCPU a reload of its
	// state on the new CPU.
	goFloorPinned GoFloorVariant = "pinned"
)

// GoFloor runs n exits and returns how long the loop took.
func GoFloor(n uint32, variant GoFloorVariant) (time.Duration, error) {
	switch variant {
	case GoFloorPlain, goFloorNoYield, goFloorRaw, goFloorPinned:
	default:
		return 0, fmt.Errorf("unknown variant %q: give %s, %s, %s or %s", variant, GoFloorPlain, goFloorNoYield, goFloorRaw, goFloorPinned)
	}
	sys, err := kvm.Open()
	if err != nil {
		return 0, err
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	// kvmlab's Intel-only set-up (vmm.New; harmless on AMD), as in the
	// C floor: the identity map before any vCPU. Run on VT-x by
	// TestExitLoopGuests in the tests' emulated Intel host group.
	if err := vm.SetIdentityMapAddr(x86.IdentityMapAddr); err != nil {
		return 0, err
	}
	if err := vm.SetTSSAddr(x86.TSSAddr); err != nil {
		return 0, err
	}
	// The same in-kernel devices as kvmlab's VM and the C floor's.
	if err := vm.CreateIRQChip(); err != nil {
		return 0, err
	}
	if err := vm.CreatePIT2(); err != nil {
		return 0, err
	}
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(mem)
	// The guest of exitfloor.c and of kvmlab's side: tiny.PortLoopCode at
	// 0x1000, a GDT at 0x500, and an identity map of the first 2 MiB.
	copy(mem[0x1000:], tiny.PortLoopCode(n))
	for i, d := range []uint64{0, 0x00af9a000000ffff, 0x00cf92000000ffff} {
		binary.LittleEndian.PutUint64(mem[0x500+8*i:], d)
	}
	binary.LittleEndian.PutUint64(mem[0x2000:], 0x3000|3)
	binary.LittleEndian.PutUint64(mem[0x3000:], 0x4000|3)
	binary.LittleEndian.PutUint64(mem[0x4000:], 0x83)
	if err := vm.SetUserMemoryRegion(0, 0, mem); err != nil {
		return 0, err
	}
	vc, err := vm.CreateVCPU(0)
	if err != nil {
		return 0, err
	}
	defer vc.Close()
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		return 0, err
	}
	if err := vc.SetCPUID2(cpuid); err != nil {
		return 0, err
	}
	s, err := vc.GetSregs()
	if err != nil {
		return 0, err
	}
	s.CS = kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	data := kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: 1, S: 1, DB: 1, G: 1}
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: 0x500, Limit: 23}
	s.CR0, s.CR3, s.CR4, s.EFER = 0x80050033, 0x2000, 0x20, 0x500
	if err := vc.SetSregs(s); err != nil {
		return 0, err
	}
	if err := vc.SetRegs(kvm.Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		return 0, err
	}

	// The loop: kvmlab's vCPU loop without kvmlab. The thread is locked
	// and yields to the scheduler as kvmlab's does (schedYield); the
	// rest is exitfloor.c's switch, on kvm_run read in place: exit_reason
	// at offset 8, io.port at 34. The guest's poweroff write to PM1a_CNT
	// (port 0x604) ends it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if variant == goFloorPinned {
		var set unix.CPUSet
		set.Set(runtime.NumCPU() - 1)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return 0, fmt.Errorf("sched_setaffinity: %w", err)
		}
	}
	enter := vc.RunOnce
	if variant == goFloorRaw {
		fd, err := vcpuFD(0)
		if err != nil {
			return 0, err
		}
		enter = func() error { return runRaw(fd) }
	}
	var yield schedYield
	var exits uint32
	start := time.Now()
	for {
		if variant != goFloorNoYield {
			yield.exit()
		}
		if err := enter(); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, err
		}
		// The two fields the C floor reads, at the offsets package exits
		// owns, without the rest of Decode.
		reason, port := kvmexits.PeekReason(vc.Run), kvmexits.PeekIOPort(vc.Run)
		if reason == kvmexits.IO && port == 0x80 {
			exits++
			continue
		}
		if reason == kvmexits.IO && port == 0x604 {
			break
		}
		return 0, fmt.Errorf("unexpected exit %d (port %#x)", reason, port)
	}
	d := time.Since(start)
	if exits != n {
		return 0, fmt.Errorf("counted %d exits, want %d", exits, n)
	}
	return d, nil
}

// runRaw is KVM_RUN on the vCPU file descriptor fd without telling the Go
// runtime that the thread is in a system call (unix.RawSyscall instead of
// unix.Syscall, which kvm.VCPU.RunOnce uses): the goroutine keeps its P
// throughout, and no scheduler bookkeeping runs on the way in or out. It
// is here so that the Go floor can measure what that bookkeeping costs. A
// VMM must not enter a guest like this: a vCPU whose guest halts sits in
// KVM_RUN for as long as the guest sleeps, holding its P, and a garbage
// collection that needs every P stopped would wait for it. The ioctl takes
// no argument, so no pointer crosses into the kernel.
func runRaw(fd uintptr) error {
	const kvmRun = 0xAE80 // _IO(KVMIO, 0x80), include/uapi/linux/kvm.h
	if _, _, e := unix.RawSyscall(unix.SYS_IOCTL, fd, kvmRun, 0); e != 0 {
		return e
	}
	return nil
}

// vcpuFD finds the file descriptor of this process's vCPU id. KVM gives
// each vCPU an anonymous inode named "kvm-vcpu:ID" (virt/kvm/kvm_main.c,
// create_vcpu_fd), which /proc/self/fd shows as the link target
// "anon_inode:kvm-vcpu:ID". kvm.VCPU keeps its descriptor to itself, as a
// VMM's bindings should; the Go floor, which makes one VM, finds it here.
func vcpuFD(id int) (uintptr, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("finding the vCPU's descriptor: %w", err)
	}
	want := fmt.Sprintf("anon_inode:kvm-vcpu:%d", id)
	for _, e := range ents {
		if t, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && t == want {
			n, err := strconv.Atoi(e.Name())
			if err == nil {
				return uintptr(n), nil
			}
		}
	}
	return 0, fmt.Errorf("no %s among this process's descriptors", want)
}

// vcpuYieldEvery and yieldCheckExits are kvmlab's vCPU loop's (see vmm's
// vcpuYieldEvery: the Go runtime's monitor takes the P of a goroutine that
// has not been rescheduled for 10 ms, on every tick, so the loop yields
// every 5 ms; it looks at the clock every 16 exits). The Go floor yields as kvmlab does, so that
// the difference between the two is what kvmlab adds, not a different
// schedule.
const (
	vcpuYieldEvery  = 5 * time.Millisecond
	yieldCheckExits = 16
)

// schedYield is a copy of the vCPU loop's yield to the Go scheduler (vmm's
// schedYield): exit is called once per exit and yields when vcpuYieldEvery
// has passed since the last yield. The zero value is ready.
type schedYield struct {
	last  time.Time
	exits uint
}

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
