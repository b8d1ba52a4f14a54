package boot

import (
	"encoding/binary"
	"testing"

	"kvmlab/guestmem"
)

// bzOpts describes a synthetic bzImage. The defaults (see defaultBz) are
// the values a real x86-64 6.x defconfig kernel carries, except for sizes.
type bzOpts struct {
	setupSects    byte // as written in the file (0 means 4)
	payload       int  // protected-mode bytes
	version       uint16
	loadflags     byte
	xloadflags    uint16
	initrdAddrMax uint32
	alignment     uint32
	relocatable   bool
	cmdlineSize   uint32
	prefAddress   uint64
	initSize      uint32
	kernelVersion string
}

func defaultBz() bzOpts {
	return bzOpts{
		setupSects:    1,
		payload:       0x3000,
		version:       0x020f,
		loadflags:     LoadFlagLoadedHigh,
		xloadflags:    XLFKernel64 | XLFCanBeAbove4G | XLFEFIHandover64,
		initrdAddrMax: 0x7fffffff,
		alignment:     0x200000,
		relocatable:   true,
		cmdlineSize:   2047,
		prefAddress:   0x1000000,
		initSize:      0x800000,
		kernelVersion: "6.1.0-kvmlab (test@kvmlab) #1 SMP",
	}
}

// build lays out the file the way arch/x86/boot/tools/build.c does: boot
// sector and setup sectors, then the protected-mode payload.
func (o bzOpts) build() []byte {
	sects := int(o.setupSects)
	if sects == 0 {
		sects = 4
	}
	k := make([]byte, (sects+1)*512+o.payload)
	le := binary.LittleEndian
	k[0], k[1] = 'M', 'Z' // the EFI stub's DOS header, as in real kernels
	k[offSetupSects] = o.setupSects
	le.PutUint32(k[offSysSize:], uint32(o.payload/16))
	le.PutUint16(k[offVidMode:], 0xffff)
	le.PutUint16(k[offBootFlag:], 0xAA55)
	k[offJump], k[offJump+1] = 0xEB, 0x6a // header ends at 0x26c
	copy(k[offHeaderMagic:], "HdrS")
	le.PutUint16(k[offVersion:], o.version)
	if o.kernelVersion != "" && (sects+1)*512 > 0x300+len(o.kernelVersion) {
		le.PutUint16(k[offKernelVersion:], 0x300-0x200)
		copy(k[0x300:], o.kernelVersion+"\x00")
	}
	k[offLoadFlags] = o.loadflags
	le.PutUint32(k[0x214:], 0x100000) // code32_start
	le.PutUint32(k[offInitrdAddrMax:], o.initrdAddrMax)
	le.PutUint32(k[offKernelAlignment:], o.alignment)
	if o.relocatable {
		k[offRelocatable] = 1
	}
	k[offMinAlignment] = 21
	le.PutUint16(k[offXLoadFlags:], o.xloadflags)
	le.PutUint32(k[offCmdlineSize:], o.cmdlineSize)
	le.PutUint32(k[offPayloadOffset:], 0x3b1)
	le.PutUint32(k[offPayloadLength:], uint32(max(o.payload-0x400, 0)))
	le.PutUint64(k[offPrefAddress:], o.prefAddress)
	le.PutUint32(k[offInitSize:], o.initSize)
	le.PutUint32(k[offHandoverOffset:], 0x190)
	le.PutUint32(k[offKernelInfo:], 0x8a0000)
	setup := (sects + 1) * 512
	for i := setup; i < len(k); i++ {
		k[i] = byte(i*7 + 3) // recognisable payload pattern
	}
	return k
}

// elfSeg is one program header of a synthetic ELF.
type elfSeg struct {
	typ                 uint32
	vaddr, paddr, memsz uint64
	data                []byte
	badOffset           uint64 // nonzero: written as p_offset instead
	badFilesz           uint64 // nonzero: written as p_filesz instead
}

type elfOpts struct {
	class, data byte
	typ         uint16
	machine     uint16
	entry       uint64
	segs        []elfSeg
}

// defaultELF mirrors an x86-64 vmlinux: text and data linked at
// __START_KERNEL_map + 16 MiB, loaded at physical 16 MiB, entry
// phys_startup_64, a PT_NOTE, and .bss in the last segment's memsz.
func defaultELF() elfOpts {
	text := make([]byte, 0x2000)
	for i := range text {
		text[i] = byte(0x90 + i%7)
	}
	data := make([]byte, 0x800)
	for i := range data {
		data[i] = byte(0x40 + i%13)
	}
	return elfOpts{
		class: elfClass64, data: elfDataLSB, typ: etExec, machine: emX86_64,
		entry: 0x1000000,
		segs: []elfSeg{
			{typ: ptLoad, vaddr: 0xffffffff81000000, paddr: 0x1000000, memsz: 0x2000, data: text},
			{typ: 4 /* PT_NOTE */, vaddr: 0xffffffff81001000, paddr: 0x1001000, memsz: 0x10, data: make([]byte, 0x10)},
			{typ: ptLoad, vaddr: 0xffffffff81200000, paddr: 0x1200000, memsz: 0x5000, data: data},
		},
	}
}

func (o elfOpts) build() []byte {
	le := binary.LittleEndian
	phoff := uint64(elfHeaderSize)
	off := phoff + uint64(len(o.segs))*elfPhdrSize
	var body []byte
	hdr := make([]byte, off)
	copy(hdr, elfMagic)
	hdr[4], hdr[5], hdr[6] = o.class, o.data, 1
	le.PutUint16(hdr[16:], o.typ)
	le.PutUint16(hdr[18:], o.machine)
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[24:], o.entry)
	le.PutUint64(hdr[32:], phoff)
	le.PutUint16(hdr[52:], elfHeaderSize)
	le.PutUint16(hdr[54:], elfPhdrSize)
	le.PutUint16(hdr[56:], uint16(len(o.segs)))
	for i, s := range o.segs {
		ph := hdr[phoff+uint64(i)*elfPhdrSize:]
		segOff := off + uint64(len(body))
		body = append(body, s.data...)
		filesz := uint64(len(s.data))
		if s.badOffset != 0 {
			segOff = s.badOffset
		}
		if s.badFilesz != 0 {
			filesz = s.badFilesz
		}
		le.PutUint32(ph[0:], s.typ)
		le.PutUint32(ph[4:], 5)
		le.PutUint64(ph[8:], segOff)
		le.PutUint64(ph[16:], s.vaddr)
		le.PutUint64(ph[24:], s.paddr)
		le.PutUint64(ph[32:], filesz)
		le.PutUint64(ph[40:], s.memsz)
		le.PutUint64(ph[48:], 0x200000)
	}
	return append(hdr, body...)
}

// newRAM returns guest RAM of low bytes at 0 and high bytes at 4 GiB
// (none if 0), filled with fill so tests see what Load did not write.
func newRAM(t testing.TB, low, high int, fill byte) *guestmem.Memory {
	t.Helper()
	lo := make([]byte, low)
	if fill != 0 && low > 0 {
		lo[0] = fill
		for n := 1; n < low; n *= 2 {
			copy(lo[n:], lo[:n])
		}
	}
	rs := []guestmem.Region{{Base: 0, Data: lo}}
	if high > 0 {
		rs = append(rs, guestmem.Region{Base: guestmem.HighStart, Data: make([]byte, high)})
	}
	m, err := guestmem.FromRegions(rs...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func read(t testing.TB, m *guestmem.Memory, addr uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := m.ReadAt(b, guestmem.GPA(addr)); err != nil {
		t.Fatal(err)
	}
	return b
}

func read64(t testing.TB, m *guestmem.Memory, addr uint64) uint64 {
	return binary.LittleEndian.Uint64(read(t, m, addr, 8))
}

func read32(t testing.TB, m *guestmem.Memory, addr uint64) uint32 {
	return binary.LittleEndian.Uint32(read(t, m, addr, 4))
}

func read16(t testing.TB, m *guestmem.Memory, addr uint64) uint16 {
	return binary.LittleEndian.Uint16(read(t, m, addr, 2))
}
