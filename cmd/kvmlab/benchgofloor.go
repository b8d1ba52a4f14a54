package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/vmm"
	"kvmlab/vmm/boot"
	"kvmlab/vmm/kvm"
)

// The Go floor of the exit benchmark: exitfloor.c's VM, guest and loop,
// written in Go on kvmlab's KVM bindings. Between the C floor and kvmlab
// it splits the price of an exit in two: what any Go program pays to make
// the KVM_RUN system call (the runtime's bookkeeping around a system call,
// its scheduler), and what kvmlab adds on top (decoding the exit into a
// typed value, the device bus, the device). It is run as its own process,
// `kvmlab bench --go-floor N`, and prints what exitfloor prints.

// goFloorVariant says how the Go floor enters the guest.
type goFloorVariant string

const (
	// goFloorPlain is kvmlab's way: unix.Syscall, and a yield to the
	// scheduler every few milliseconds (vmm.SchedYield).
	goFloorPlain goFloorVariant = "syscall"
	// goFloorNoYield never yields: the runtime's monitor then takes the
	// P of the vCPU's thread on each of its ticks.
	goFloorNoYield goFloorVariant = "no-yield"
	// goFloorRaw enters with unix.RawSyscall: no scheduler bookkeeping
	// at all (kvm.VCPU.RunOnceRaw; not safe in a VMM).
	goFloorRaw goFloorVariant = "raw"
	// goFloorPinned is goFloorPlain with the vCPU thread pinned to the
	// last CPU (sched_setaffinity), so that the host's scheduler cannot
	// move it between CPUs, which costs a nested vCPU a reload of its
	// state on the new CPU.
	goFloorPinned goFloorVariant = "pinned"
)

// goFloor runs n exits and returns how long the loop took.
func goFloor(n uint32, variant goFloorVariant) (time.Duration, error) {
	switch variant {
	case goFloorPlain, goFloorNoYield, goFloorRaw, goFloorPinned:
	default:
		return 0, fmt.Errorf("unknown variant %q: give %s, %s, %s or %s", variant, goFloorPlain, goFloorNoYield, goFloorRaw, goFloorPinned)
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
	// The guest of exitfloor.c and of kvmlab's side: boot.PortLoopCode at
	// 0x1000, a GDT at 0x500, and an identity map of the first 2 MiB.
	copy(mem[0x1000:], boot.PortLoopCode(n))
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
	// and yields to the scheduler as kvmlab's does (vmm.SchedYield); the
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
	const kvmExitIO = 2
	enter := vc.RunOnce
	if variant == goFloorRaw {
		enter = vc.RunOnceRaw
	}
	var yield vmm.SchedYield
	var exits uint32
	start := time.Now()
	for {
		if variant != goFloorNoYield {
			yield.Exit()
		}
		if err := enter(); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, err
		}
		reason := binary.LittleEndian.Uint32(vc.Run[8:])
		port := binary.LittleEndian.Uint16(vc.Run[34:])
		if reason == kvmExitIO && port == 0x80 {
			exits++
			continue
		}
		if reason == kvmExitIO && port == 0x604 {
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
