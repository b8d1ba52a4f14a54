package boot

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Offsets of setup header fields, in the kernel file and (identically) in
// struct boot_params, which embeds the header at the same 0x1f1. Names
// follow struct setup_header in arch/x86/include/uapi/asm/bootparam.h; the
// table is in boot.rst, "The Real-Mode Kernel Header".
const (
	offSetupSects      = 0x1f1 // u8: setup sectors after the boot sector; 0 means 4
	offRootFlags       = 0x1f2 // u16
	offSysSize         = 0x1f4 // u32: protected-mode size in 16-byte paragraphs
	offVidMode         = 0x1fa // u16: we write 0xffff, "normal"
	offRootDev         = 0x1fc // u16
	offBootFlag        = 0x1fe // u16: 0xAA55, the old boot-sector signature
	offJump            = 0x200 // u8 0xEB + s8: short jmp over the header; gives its length
	offHeaderMagic     = 0x202 // u32: "HdrS"
	offVersion         = 0x206 // u16: protocol version, major<<8 | minor
	offKernelVersion   = 0x20e // u16: kernel version string offset - 0x200
	offTypeOfLoader    = 0x210 // u8: we write 0xff, "undefined loader"
	offLoadFlags       = 0x211 // u8
	offRamdiskImage    = 0x218 // u32: initrd address, low 32 bits
	offRamdiskSize     = 0x21c // u32: initrd size, low 32 bits
	offHeapEndPtr      = 0x224 // u16: end of setup heap - 0x200
	offCmdLinePtr      = 0x228 // u32: command line address, low 32 bits
	offInitrdAddrMax   = 0x22c // u32: highest byte an initrd may occupy
	offKernelAlignment = 0x230 // u32
	offRelocatable     = 0x234 // u8
	offMinAlignment    = 0x235 // u8: log2 of the minimum alignment
	offXLoadFlags      = 0x236 // u16
	offCmdlineSize     = 0x238 // u32: longest command line, NUL excluded
	offPayloadOffset   = 0x248 // u32
	offPayloadLength   = 0x24c // u32
	offPrefAddress     = 0x258 // u64: preferred (LOAD_PHYSICAL_ADDR) load address
	offInitSize        = 0x260 // u32: memory needed from the runtime start
	offHandoverOffset  = 0x264 // u32
	offKernelInfo      = 0x268 // u32 (2.15+)

	// headerMinEnd is how far a header must reach for us to read every
	// field up to init_size; protocol 2.12 headers reach 0x268.
	headerMinEnd = offInitSize + 4
	// headerMaxEnd bounds what we copy into boot_params: struct
	// boot_params keeps the bytes from 0x1f1 up to edd_mbr_sig_buffer at
	// 0x290 for the header (boot.rst, "The kernel_info", explains why the
	// header can never grow beyond that).
	headerMaxEnd = 0x290
)

// Header magic values and flag bits (bootparam.h).
const (
	bootFlagMagic = 0xAA55
	hdrSMagic     = 0x53726448 // "HdrS" read little-endian
	jumpOpcode    = 0xEB       // short jmp

	// MinProtocol is the oldest boot protocol kvmlab accepts: 2.12 added
	// xloadflags, whose XLF_KERNEL_64 bit promises the 64-bit entry at
	// load address + 0x200.
	MinProtocol = 0x020c

	LoadFlagLoadedHigh = 1 << 0 // LOADED_HIGH: protected-mode part goes at 1 MiB
	LoadFlagKASLR      = 1 << 1 // KASLR_FLAG (set by the kernel)
	LoadFlagQuiet      = 1 << 5 // QUIET_FLAG
	LoadFlagKeepSegs   = 1 << 6 // KEEP_SEGMENTS (obsolete)
	LoadFlagCanUseHeap = 1 << 7 // CAN_USE_HEAP: heap_end_ptr is valid

	XLFKernel64      = 1 << 0 // XLF_KERNEL_64: 64-bit entry at +0x200
	XLFCanBeAbove4G  = 1 << 1 // XLF_CAN_BE_LOADED_ABOVE_4G
	XLFEFIHandover32 = 1 << 2
	XLFEFIHandover64 = 1 << 3
	XLFEFIKexec      = 1 << 4
	XLF5Level        = 1 << 5
	XLF5LevelEnabled = 1 << 6
)

const (
	sectorSize        = 512
	defaultSetupSects = 4 // boot.rst note (1): setup_sects == 0 means 4
	// entry64Offset is where startup_64 sits in the protected-mode part
	// (boot.rst, "64-bit Boot Protocol": the load address plus 0x200).
	entry64Offset = 0x200
	// kernelVersionLimit bounds the version string we read.
	kernelVersionLimit = 256
)

// SetupHeader is the decoded setup header of a bzImage (struct
// setup_header), validated by Parse.
type SetupHeader struct {
	SetupSects      int    // effective setup sectors (0 in the file reads as 4)
	RootFlags       uint16 // mount root read-only if nonzero
	SysSize         uint32 // protected-mode size in 16-byte units
	VidMode         uint16
	RootDev         uint16
	BootFlag        uint16 // 0xAA55
	Version         uint16 // protocol version, e.g. 0x020f for 2.15
	KernelVersion   string // human-readable version string, "" if absent
	LoadFlags       uint8
	InitrdAddrMax   uint32 // highest byte an initrd may occupy
	KernelAlignment uint32 // power of two
	Relocatable     bool
	MinAlignment    uint8 // log2
	XLoadFlags      uint16
	CmdlineSize     uint32 // longest command line, NUL excluded
	PayloadOffset   uint32 // offset of the compressed vmlinux in the payload
	PayloadLength   uint32
	PrefAddress     uint64 // LOAD_PHYSICAL_ADDR: where the kernel runs
	InitSize        uint32 // memory the kernel needs from its runtime start
	HandoverOffset  uint32
	KernelInfo      uint32 // kernel_info offset (2.15+), 0 otherwise

	// Raw is the header as it appears in the file from 0x1f1 to its end
	// (0x202 + the jump offset), ready to be copied into boot_params.
	Raw []byte
}

// VersionString formats the protocol version as "2.15".
func (h *SetupHeader) VersionString() string { return protoString(h.Version) }

// SetupSize is the size of the real-mode part of the file: the boot sector
// plus the setup sectors.
func (h *SetupHeader) SetupSize() int { return (h.SetupSects + 1) * sectorSize }

func protoString(v uint16) string { return fmt.Sprintf("%d.%02d", v>>8, v&0xff) }

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func le64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

// parseBzImage validates a bzImage and splits it into header and payload.
// The checks follow boot.rst in the order a loader meets them.
func parseBzImage(k []byte) (*Image, error) {
	if len(k) < headerMinEnd {
		return nil, errorf(ErrTooShort, "file is %d bytes, shorter than the x86 setup header (%d bytes): not a bzImage, or truncated", len(k), headerMinEnd)
	}
	if f := le16(k, offBootFlag); f != bootFlagMagic {
		return nil, errorf(ErrBootFlag, "not a Linux x86 kernel: no 0xAA55 boot flag at offset 0x1fe (found %#04x)", f)
	}
	if le32(k, offHeaderMagic) != hdrSMagic {
		return nil, errorf(ErrNoHdrS, "no \"HdrS\" magic at offset 0x202: a pre-2.00 zImage or not a Linux kernel; kvmlab needs protocol %s+", protoString(MinProtocol))
	}
	h := &SetupHeader{Version: le16(k, offVersion)}
	if h.Version < MinProtocol {
		return nil, errorf(ErrProtocol, "protocol %s too old: kvmlab needs %s+ (Linux 3.8+) for the 64-bit entry point", protoString(h.Version), protoString(MinProtocol))
	}

	// The 2-byte jump at 0x200 skips the header; its 8-bit displacement,
	// counted from 0x202, is therefore the header's length.
	if k[offJump] != jumpOpcode || k[offJump+1] >= 0x80 {
		return nil, errorf(ErrBadHeader, "malformed setup header: expected a short forward jmp at 0x200, found % x", k[offJump:offJump+2])
	}
	end := offHeaderMagic + int(k[offJump+1])
	if end < headerMinEnd {
		return nil, errorf(ErrBadHeader, "malformed setup header: it ends at %#x, protocol %s needs at least %#x", end, protoString(h.Version), headerMinEnd)
	}
	if end > len(k) {
		return nil, errorf(ErrTooShort, "file is %d bytes, shorter than its setup header (%d bytes)", len(k), end)
	}

	h.LoadFlags = k[offLoadFlags]
	if h.LoadFlags&LoadFlagLoadedHigh == 0 {
		return nil, errorf(ErrNotBzImage, "not a bzImage: loadflags LOADED_HIGH is clear (a zImage loaded at 0x10000); kvmlab loads bzImages at 1 MiB")
	}
	h.XLoadFlags = le16(k, offXLoadFlags)
	if h.XLoadFlags&XLFKernel64 == 0 {
		return nil, errorf(ErrNo64BitEntry, "kernel has no 64-bit entry point (xloadflags XLF_KERNEL_64 clear): a 32-bit kernel? kvmlab boots x86-64 kernels")
	}

	h.SetupSects = int(k[offSetupSects])
	if h.SetupSects == 0 {
		h.SetupSects = defaultSetupSects
	}
	setup := h.SetupSize() // at most 256*512: no overflow
	if len(k) <= setup {
		return nil, errorf(ErrTruncated, "file is %d bytes but its real-mode setup alone takes %d ((setup_sects %d + 1) * 512): no protected-mode kernel follows", len(k), setup, h.SetupSects)
	}
	payload := k[setup:]
	if len(payload) <= entry64Offset {
		return nil, errorf(ErrTruncated, "kernel file truncated: protected-mode part is %d bytes, too short to hold the 64-bit entry point at offset %#x", len(payload), entry64Offset)
	}
	h.SysSize = le32(k, offSysSize)
	if want := uint64(h.SysSize) * 16; uint64(len(payload)) < want {
		return nil, errorf(ErrTruncated, "kernel file truncated: protected-mode part is %d bytes, the header (syssize) says %d", len(payload), want)
	}

	h.RootFlags = le16(k, offRootFlags)
	h.VidMode = le16(k, offVidMode)
	h.RootDev = le16(k, offRootDev)
	h.BootFlag = le16(k, offBootFlag)
	h.InitrdAddrMax = le32(k, offInitrdAddrMax)
	h.KernelAlignment = le32(k, offKernelAlignment)
	h.Relocatable = k[offRelocatable] != 0
	h.MinAlignment = k[offMinAlignment]
	h.CmdlineSize = le32(k, offCmdlineSize)
	h.PayloadOffset = le32(k, offPayloadOffset)
	h.PayloadLength = le32(k, offPayloadLength)
	h.PrefAddress = le64(k, offPrefAddress)
	h.InitSize = le32(k, offInitSize)
	if end >= offHandoverOffset+4 {
		h.HandoverOffset = le32(k, offHandoverOffset)
	}
	if h.Version >= 0x020f && end >= offKernelInfo+4 {
		h.KernelInfo = le32(k, offKernelInfo)
	}
	h.KernelVersion = kernelVersion(k, le16(k, offKernelVersion), setup)
	h.Raw = append([]byte(nil), k[offSetupSects:min(end, headerMaxEnd)]...)

	if h.KernelAlignment == 0 || bits.OnesCount32(h.KernelAlignment) != 1 {
		return nil, errorf(ErrAlignment, "malformed setup header: kernel_alignment %#x is not a power of two", h.KernelAlignment)
	}

	img := &Image{Format: FormatBzImage, Setup: h, Payload: payload, EntryPoint: KernelAddr + entry64Offset}
	start, endAddr, err := bzFootprint(h, uint64(len(payload)))
	if err != nil {
		return nil, err
	}
	img.KernelStart, img.KernelEnd = start, endAddr
	return img, nil
}

// bzFootprint returns the physical range a bzImage loaded at KernelAddr may
// touch before it has read the e820 map: the initrd must stay clear of it.
//
// boot.rst ("init_size") says the kernel needs init_size bytes from its
// runtime start, align_up(load address, kernel_alignment) for a relocatable
// kernel and pref_address otherwise. The decompressor
// (arch/x86/boot/compressed/head_64.S) also never runs below
// LOAD_PHYSICAL_ADDR, which is what pref_address holds, so a kernel loaded at
// 1 MiB really works in [max(align_up(1 MiB), pref_address), +init_size).
// The loaded payload itself, at [1 MiB, +len), must also stay intact until
// the decompressor has copied it away.
func bzFootprint(h *SetupHeader, payload uint64) (start, end uint64, err error) {
	const limit = uint64(lowRAMLimit)
	align := uint64(h.KernelAlignment)
	run := (KernelAddr + align - 1) &^ (align - 1) // align <= 2^31: no overflow
	if !h.Relocatable || h.PrefAddress > run {
		if h.PrefAddress > limit {
			return 0, 0, errorf(ErrTooBig, "kernel wants to run at pref_address %#x, above the %d GiB of RAM below the MMIO hole", h.PrefAddress, limit>>30)
		}
		if h.PrefAddress != 0 {
			run = h.PrefAddress
		}
	}
	need := max(uint64(h.InitSize), payload)
	end = max(KernelAddr+payload, run+need) // all terms < 2^33: no overflow
	if end > limit {
		return 0, 0, errorf(ErrTooBig, "kernel needs RAM up to %#x (runtime start %#x + init_size %#x), beyond the %d GiB of RAM below the MMIO hole", end, run, need, limit>>30)
	}
	return KernelAddr, end, nil
}

// kernelVersion reads the NUL-terminated version string the header points
// at (kernel_version + 0x200), if it lies inside the setup sectors and is
// printable. It is only informational, so a bad pointer yields "".
func kernelVersion(k []byte, ptr uint16, setup int) string {
	if ptr == 0 {
		return ""
	}
	off := int(ptr) + 0x200
	if off >= setup || off >= len(k) {
		return ""
	}
	s := k[off:min(len(k), setup, off+kernelVersionLimit)]
	for i, c := range s {
		if c == 0 {
			return string(s[:i])
		}
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return ""
}
