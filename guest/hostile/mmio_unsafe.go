package hostile

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// barMap is a device's BAR0 mapped into this process through sysfs
// (/sys/bus/pci/devices/D/resource0): loads and stores on it become MMIO
// accesses of exactly the width the method names, each one a VM exit (or
// an ioeventfd hit) on the host.
//
// Every accessor is a separate non-inlined function with one load or store
// through a pointer: the compiler may merge or drop repeated plain stores
// to one address inside a function (a mask written 1 then 0 would become
// one store), but it cannot see through a call it did not inline, so each
// call is one access on the bus.
type barMap struct{ b []byte }

func mapBAR(path string, size int) (barMap, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return barMap{}, err
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return barMap{}, fmt.Errorf("mmap %s: %w", path, err)
	}
	return barMap{b}, nil
}

func (m barMap) ptr(off uint64, n uint64) unsafe.Pointer {
	if off+n > uint64(len(m.b)) {
		panic(fmt.Sprintf("hostile: BAR access of %d bytes at %#x outside the %d-byte mapping", n, off, len(m.b)))
	}
	// SAFETY: off+n is inside the mapping (checked above), so the
	// pointer addresses n bytes of the BAR mapping, which stays mapped
	// for the life of the process. An unaligned access is allowed on
	// purpose: x86 performs it as one MMIO access, which is one of the
	// things a hostile driver does.
	return unsafe.Pointer(&m.b[off])
}

//go:noinline
func (m barMap) r8(off uint64) uint8 { return *(*uint8)(m.ptr(off, 1)) }

//go:noinline
func (m barMap) r16(off uint64) uint16 { return *(*uint16)(m.ptr(off, 2)) }

//go:noinline
func (m barMap) r32(off uint64) uint32 { return *(*uint32)(m.ptr(off, 4)) }

//go:noinline
func (m barMap) w8(off uint64, v uint8) { *(*uint8)(m.ptr(off, 1)) = v }

//go:noinline
func (m barMap) w16(off uint64, v uint16) { *(*uint16)(m.ptr(off, 2)) = v }

//go:noinline
func (m barMap) w32(off uint64, v uint32) { *(*uint32)(m.ptr(off, 4)) = v }

//go:noinline
func (m barMap) w64(off uint64, v uint64) { *(*uint64)(m.ptr(off, 8)) = v }

// dma is memory this process shares with the device: pages locked in RAM
// (no swap, no migration while locked) whose guest-physical addresses come
// from /proc/self/pagemap (Documentation/admin-guide/mm/pagemap.rst; the
// page frame numbers are shown only to CAP_SYS_ADMIN, which the guest's
// root has).
type dma struct {
	b    []byte
	phys []uint64 // guest-physical address of each page
}

const pageSize = 4096

func allocDMA(pages int) (*dma, error) {
	b, err := unix.Mmap(-1, 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE|unix.MAP_LOCKED)
	if err != nil {
		return nil, fmt.Errorf("mmap %d locked pages: %w", pages, err)
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := &dma{b: b}
	for i := 0; i < pages; i++ {
		// SAFETY: only the address of the mapping is taken, to find
		// its page's entry in pagemap; nothing is accessed through it.
		va := uint64(uintptr(unsafe.Pointer(&b[i*pageSize])))
		var e [8]byte
		if _, err := f.ReadAt(e[:], int64(va/pageSize*8)); err != nil {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		pa, err := pagemapPhys(e)
		if err != nil {
			return nil, err
		}
		d.phys = append(d.phys, pa)
	}
	return d, nil
}

func (d *dma) word(off int) *uint32 {
	if off < 0 || off+4 > len(d.b) || off%4 != 0 {
		panic(fmt.Sprintf("hostile: ring word at %#x outside the %d-byte area or unaligned", off, len(d.b)))
	}
	// SAFETY: the 4 bytes at off are inside d.b (checked above) and
	// 4-byte aligned, as sync/atomic needs.
	return (*uint32)(unsafe.Pointer(&d.b[off]))
}

// load32 and store32 are the ordered accesses the ring indices need
// (virtio 1.2 §2.7.13: the index is published after the entries).
func (d *dma) load32(off int) uint32     { return atomic.LoadUint32(d.word(off)) }
func (d *dma) store32(off int, v uint32) { atomic.StoreUint32(d.word(off), v) }
