package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The KVM ioctls take pointers to C structures. Every Go struct passed here
// mirrors its C counterpart field for field (sizes are asserted in
// kvm_test.go), lives on the Go heap or stack for the duration of the call
// (the pointer is converted to uintptr inside the Syscall argument list, which
// the Go compiler keeps alive, per the unsafe.Pointer rules, case 4), and the
// kernel reads or writes exactly sizeof(struct) bytes through it.

func ioctlInt(fd, req, arg uintptr) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

func ioctlPtr(fd, req uintptr, p unsafe.Pointer) error {
	// SAFETY: p points to a live Go value of the size the request encodes;
	// the conversion happens in the call expression so it stays valid.
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
	if e != 0 {
		return e
	}
	return nil
}

func ioctlPtrU64(fd, req uintptr, v uint64) error {
	// SAFETY: &v is a live uint64 for the duration of the call.
	return ioctlPtr(fd, req, unsafe.Pointer(&v))
}

// SAFETY (for the ptr* helpers): each returns the address of a Go value whose
// layout matches the kernel structure named in its type's comment.
func ptrPITConfig(p *PITConfig) unsafe.Pointer     { return unsafe.Pointer(p) }
func ptrU32Pair(p *[2]uint32) unsafe.Pointer       { return unsafe.Pointer(p) }
func ptrU32(p *uint32) unsafe.Pointer              { return unsafe.Pointer(p) }
func ptrRegs(p *Regs) unsafe.Pointer               { return unsafe.Pointer(p) }
func ptrSregs(p *Sregs) unsafe.Pointer             { return unsafe.Pointer(p) }
func ptrTranslation(p *Translation) unsafe.Pointer { return unsafe.Pointer(p) }
func ptrGuestDebug(p *GuestDebug) unsafe.Pointer   { return unsafe.Pointer(p) }

// SetUserMemoryRegion registers host memory mem as guest-physical memory at
// gpa in the given slot (KVM_SET_USER_MEMORY_REGION).
func (v *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	r := MemoryRegion{
		Slot:          slot,
		GuestPhysAddr: gpa,
		MemorySize:    uint64(len(mem)),
		// SAFETY: mem is an mmap'ed region that outlives the VM (the
		// Machine unmaps it only after closing the VM fd); KVM needs its
		// host virtual address, which is what this is.
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem)))),
	}
	if err := ioctlPtr(v.fd(), ioSetUserMemoryRegion, unsafe.Pointer(&r)); err != nil {
		return wrapf(err, "KVM_SET_USER_MEMORY_REGION slot %d gpa %#x size %#x", slot, gpa, len(mem))
	}
	return nil
}

// cpuidBuf is struct kvm_cpuid2 with room for n entries.
func cpuidBuf(n int) []byte {
	return make([]byte, 8+n*int(unsafe.Sizeof(CPUIDEntry{})))
}

func getSupportedCPUID(fd uintptr, n int) ([]CPUIDEntry, error) {
	buf := cpuidBuf(n)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(n)
	// SAFETY: buf is a kvm_cpuid2 header followed by n entries; nent tells
	// the kernel how many it may write.
	if err := ioctlPtr(fd, ioGetSupportedCPUID, unsafe.Pointer(&buf[0])); err != nil {
		return nil, err
	}
	got := *(*uint32)(unsafe.Pointer(&buf[0]))
	out := make([]CPUIDEntry, got)
	// SAFETY: the kernel wrote got <= n entries after the 8-byte header.
	copy(out, unsafe.Slice((*CPUIDEntry)(unsafe.Pointer(&buf[8])), got))
	return out, nil
}

func setCPUID2(fd uintptr, entries []CPUIDEntry) error {
	buf := cpuidBuf(len(entries))
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	// SAFETY: same layout as getSupportedCPUID.
	copy(unsafe.Slice((*CPUIDEntry)(unsafe.Pointer(&buf[8])), len(entries)), entries)
	return ioctlPtr(fd, ioSetCPUID2, unsafe.Pointer(&buf[0]))
}

func getMSRIndexList(fd uintptr, n int) ([]uint32, error) {
	buf := make([]uint32, 1+n)
	buf[0] = uint32(n)
	// SAFETY: struct kvm_msr_list is nmsrs followed by nmsrs u32 indices.
	if err := ioctlPtr(fd, ioGetMSRIndexList, unsafe.Pointer(&buf[0])); err != nil {
		return nil, err
	}
	got := buf[0]
	if int(got) > n {
		got = uint32(n)
	}
	return append([]uint32(nil), buf[1:1+got]...), nil
}

func msrBuf(msrs []MSR) []byte {
	buf := make([]byte, 8+len(msrs)*int(unsafe.Sizeof(MSR{})))
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(msrs))
	// SAFETY: struct kvm_msrs is a header of 8 bytes and then entries.
	copy(unsafe.Slice((*MSR)(unsafe.Pointer(&buf[8])), len(msrs)), msrs)
	return buf
}

func setMSRs(fd uintptr, msrs []MSR) (int, error) {
	if len(msrs) == 0 {
		return 0, nil
	}
	buf := msrBuf(msrs)
	// SAFETY: buf is a complete struct kvm_msrs.
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, ioSetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func getMSRs(fd uintptr, msrs []MSR) (int, error) {
	if len(msrs) == 0 {
		return 0, nil
	}
	buf := msrBuf(msrs)
	// SAFETY: buf is a complete struct kvm_msrs; the kernel fills Data.
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, ioGetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if e != 0 {
		return 0, e
	}
	copy(msrs, unsafe.Slice((*MSR)(unsafe.Pointer(&buf[8])), len(msrs)))
	return int(r), nil
}

// structSizes reports the sizes of the mirrored structures, for the test that
// checks them against the kernel's.
func structSizes() map[string]uintptr {
	return map[string]uintptr{
		"kvm_regs": unsafe.Sizeof(Regs{}), "kvm_sregs": unsafe.Sizeof(Sregs{}),
		"kvm_segment": unsafe.Sizeof(Segment{}), "kvm_cpuid_entry2": unsafe.Sizeof(CPUIDEntry{}),
		"kvm_msr_entry": unsafe.Sizeof(MSR{}), "kvm_userspace_memory_region": unsafe.Sizeof(MemoryRegion{}),
		"kvm_pit_config": unsafe.Sizeof(PITConfig{}), "kvm_translation": unsafe.Sizeof(Translation{}),
		"kvm_guest_debug": unsafe.Sizeof(GuestDebug{}),
		"kvm_ioeventfd":   unsafe.Sizeof(IOEventFD{}), "kvm_irqfd": unsafe.Sizeof(IRQFD{}),
	}
}

func ptrIOEventFD(p *IOEventFD) unsafe.Pointer { return unsafe.Pointer(p) }
func ptrIRQFD(p *IRQFD) unsafe.Pointer         { return unsafe.Pointer(p) }

// ioctlBytes passes a byte buffer holding a C structure the caller encoded
// (variable-length ones such as struct kvm_irq_routing) and returns the
// ioctl's non-negative result.
func ioctlBytes(fd, req uintptr, b []byte) (int, error) {
	// SAFETY: b is a live, non-empty Go slice for the duration of the
	// call, at least as long as the structure the request describes (the
	// callers encode exactly that structure into it).
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}
