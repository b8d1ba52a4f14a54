package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseBzImage(t *testing.T) {
	o := defaultBz()
	k := o.build()
	img, err := Parse(k)
	if err != nil {
		t.Fatal(err)
	}
	h := img.Setup
	checks := []struct {
		name      string
		got, want any
	}{
		{"format", img.Format, FormatBzImage},
		{"setup sects", h.SetupSects, 1},
		{"setup size", h.SetupSize(), 1024},
		{"version", h.VersionString(), "2.15"},
		{"kernel version", h.KernelVersion, "6.1.0-kvmlab (test@kvmlab) #1 SMP"},
		{"loadflags", h.LoadFlags, uint8(LoadFlagLoadedHigh)},
		{"xloadflags", h.XLoadFlags, uint16(XLFKernel64 | XLFCanBeAbove4G | XLFEFIHandover64)},
		{"alignment", h.KernelAlignment, uint32(0x200000)},
		{"relocatable", h.Relocatable, true},
		{"min alignment", h.MinAlignment, uint8(21)},
		{"initrd_addr_max", h.InitrdAddrMax, uint32(0x7fffffff)},
		{"cmdline_size", h.CmdlineSize, uint32(2047)},
		{"pref_address", h.PrefAddress, uint64(0x1000000)},
		{"init_size", h.InitSize, uint32(0x800000)},
		{"syssize", h.SysSize, uint32(0x300)},
		{"handover", h.HandoverOffset, uint32(0x190)},
		{"kernel_info", h.KernelInfo, uint32(0x8a0000)},
		{"raw header length", len(h.Raw), 0x26c - 0x1f1},
		{"payload length", len(img.Payload), 0x3000},
		{"entry", img.EntryPoint, uint64(0x100200)},
		{"kernel start", img.KernelStart, uint64(0x100000)},
		// Relocatable, 2 MiB aligned, but the decompressor never runs
		// below pref_address (LOAD_PHYSICAL_ADDR): 16 MiB + 8 MiB.
		{"kernel end", img.KernelEnd, uint64(0x1800000)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if !bytes.Equal(img.Payload, k[1024:]) {
		t.Error("payload is not the bytes after the setup sectors")
	}
	if !bytes.Equal(h.Raw, k[0x1f1:0x26c]) {
		t.Error("raw header is not file[0x1f1:0x26c]")
	}
}

func TestParseBzImageVariants(t *testing.T) {
	tests := []struct {
		name      string
		mod       func(*bzOpts)
		patch     func([]byte)
		setupSize int
		kernelEnd uint64
	}{
		{
			name:      "setup_sects 0 means 4",
			mod:       func(o *bzOpts) { o.setupSects = 0 },
			setupSize: 5 * 512,
			kernelEnd: 0x1800000,
		},
		{
			name:      "no pref_address: aligned load address",
			mod:       func(o *bzOpts) { o.prefAddress = 0 },
			setupSize: 1024,
			kernelEnd: 0x200000 + 0x800000,
		},
		{
			name:      "not relocatable: runs at pref_address",
			mod:       func(o *bzOpts) { o.relocatable = false; o.prefAddress = 0x2000000 },
			setupSize: 1024,
			kernelEnd: 0x2800000,
		},
		{
			name:      "payload bigger than init_size",
			mod:       func(o *bzOpts) { o.prefAddress = 0; o.initSize = 0x100; o.payload = 0x200000 },
			setupSize: 1024,
			kernelEnd: 0x200000 + 0x200000,
		},
		{
			name:      "protocol 2.12",
			mod:       func(o *bzOpts) { o.version = 0x020c },
			patch:     func(k []byte) { k[0x201] = 0x66 },
			setupSize: 1024,
			kernelEnd: 0x1800000,
		},
		{
			name:      "trailing signature after syssize",
			mod:       func(o *bzOpts) {},
			patch:     func(k []byte) { binary.LittleEndian.PutUint32(k[offSysSize:], 0x200) },
			setupSize: 1024,
			kernelEnd: 0x1800000,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultBz()
			tt.mod(&o)
			k := o.build()
			if tt.patch != nil {
				tt.patch(k)
			}
			img, err := Parse(k)
			if err != nil {
				t.Fatal(err)
			}
			if got := img.Setup.SetupSize(); got != tt.setupSize {
				t.Errorf("setup size %d, want %d", got, tt.setupSize)
			}
			if got := len(img.Payload); got != len(k)-tt.setupSize {
				t.Errorf("payload %d bytes, want %d", got, len(k)-tt.setupSize)
			}
			if img.KernelEnd != tt.kernelEnd {
				t.Errorf("kernel end %#x, want %#x", img.KernelEnd, tt.kernelEnd)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	bz := func(mod func(*bzOpts), patch func([]byte)) []byte {
		o := defaultBz()
		if mod != nil {
			mod(&o)
		}
		k := o.build()
		if patch != nil {
			patch(k)
		}
		return k
	}
	le := binary.LittleEndian
	arm64 := make([]byte, 0x200)
	copy(arm64, "MZ")
	copy(arm64[0x38:], "ARM\x64")
	riscv := make([]byte, 0x200)
	copy(riscv[0x30:], "RISCV\x00\x00\x00RSC\x05")
	elf := func(mod func(*elfOpts)) []byte {
		o := defaultELF()
		mod(&o)
		return o.build()
	}

	tests := []struct {
		name string
		in   []byte
		kind error
		msg  string // substring of the message
	}{
		{"empty", nil, ErrEmpty, "kernel file is empty"},
		{"gzip", []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03rest"), ErrCompressed, "gzip-compressed file (vmlinuz.gz or vmlinux.gz?)"},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04"), ErrCompressed, "xz-compressed"},
		{"zstd", []byte("\x28\xb5\x2f\xfd\x00"), ErrCompressed, "zstd-compressed"},
		{"shell script", []byte("#!/bin/sh\nexec qemu-system-x86_64 -kernel bzImage\n"), ErrText, `text file, not a kernel (it starts "#!/bin/sh")`},
		{"kernel config", []byte("#\n# Automatically generated file; DO NOT EDIT.\nCONFIG_64BIT=y\n"), ErrText, "text file"},
		{"cpio initramfs", []byte("070701000000010000" + strings.Repeat("0", 100)), ErrNotKernel, "cpio archive"},
		{"arm64 Image", arm64, ErrWrongArch, "this is an arm64 kernel image; kvmlab boots x86-64 kernels"},
		{"riscv Image", riscv, ErrWrongArch, "RISC-V kernel image"},
		{"i386 ELF", elf(func(o *elfOpts) { o.class = elfClass32; o.machine = 3 }), ErrWrongArch, "32-bit ELF for i386"},
		{"arm ELF32", elf(func(o *elfOpts) { o.class = elfClass32; o.machine = 40 }), ErrWrongArch, "32-bit ELF for ARM"},
		{"aarch64 vmlinux", elf(func(o *elfOpts) { o.machine = 183 }), ErrWrongArch, "ELF for arm64 (AArch64); kvmlab boots x86-64"},
		{"big-endian ELF", elf(func(o *elfOpts) { o.data = 2; o.machine = 0x1500 }), ErrWrongArch, "big-endian ELF"},
		{"kernel module", elf(func(o *elfOpts) { o.typ = etRel }), ErrBadELF, "relocatable object (a .o or .ko?)"},
		{"ELF core", elf(func(o *elfOpts) { o.typ = etCore }), ErrBadELF, "core dump"},
		{"ELF header cut", elf(func(*elfOpts) {})[:40], ErrBadELF, "shorter than the 64-byte ELF64 header"},
		{"ELF no phdrs", elf(func(o *elfOpts) { o.segs = nil }), ErrBadELF, "no usable program headers"},
		{"ELF phdrs past EOF", elf(func(*elfOpts) {})[:100], ErrBadELF, "program headers"},
		{"ELF only notes", elf(func(o *elfOpts) { o.segs = o.segs[1:2] }), ErrBadELF, "no PT_LOAD"},
		{"ELF filesz > memsz", elf(func(o *elfOpts) { o.segs[0].memsz = 0x100 }), ErrBadELF, "p_filesz 0x2000 larger than p_memsz 0x100"},
		{"ELF data past EOF", elf(func(o *elfOpts) { o.segs[2].badOffset = 1 << 40 }), ErrBadELF, "run past the end"},
		{"ELF filesz overflow", elf(func(o *elfOpts) { o.segs[2].badFilesz = ^uint64(0); o.segs[2].memsz = ^uint64(0) }), ErrBadELF, "run past the end"},
		{"ELF below 1 MiB", elf(func(o *elfOpts) { o.segs[0].paddr = 0x7000; o.entry = 0x7000 }), ErrBadELF, "below 1 MiB"},
		{"ELF beyond 3 GiB", elf(func(o *elfOpts) { o.segs[2].paddr = 0xbfffff00 }), ErrTooBig, "beyond the 3 GiB"},
		{"ELF paddr wraps", elf(func(o *elfOpts) { o.segs[2].paddr = ^uint64(0) - 0x10 }), ErrTooBig, "beyond the 3 GiB"},
		{"ELF overlap", elf(func(o *elfOpts) { o.segs[2].paddr = 0x1001000 }), ErrBadELF, "overlap"},
		{"ELF entry outside", elf(func(o *elfOpts) { o.entry = 0x3000000 }), ErrBadELF, "entry point 0x3000000 is outside"},
		{"ELF entry in bss", elf(func(o *elfOpts) { o.entry = 0x1204000 }), ErrBadELF, "outside the loaded bytes"},
		{"ELF virtual entry unmapped", elf(func(o *elfOpts) { o.entry = 0xffffffff90000000 }), ErrBadELF, "(virtual) is in no loadable segment"},
		{"short binary", make([]byte, 100), ErrTooShort, "file is 100 bytes, shorter than the x86 setup header"},
		{"no boot flag", bz(nil, func(k []byte) { k[0x1fe] = 0 }), ErrBootFlag, "no 0xAA55 boot flag at offset 0x1fe (found 0xaa00)"},
		{"no HdrS", bz(nil, func(k []byte) { copy(k[0x202:], "HdrX") }), ErrNoHdrS, `no "HdrS" magic at offset 0x202`},
		{"protocol 2.10", bz(func(o *bzOpts) { o.version = 0x020a }, nil), ErrProtocol, "protocol 2.10 too old"},
		{"protocol 2.02", bz(func(o *bzOpts) { o.version = 0x0202 }, nil), ErrProtocol, "protocol 2.02 too old: kvmlab needs 2.12+"},
		{"no jump", bz(nil, func(k []byte) { k[0x200] = 0xE9 }), ErrBadHeader, "expected a short forward jmp"},
		{"backward jump", bz(nil, func(k []byte) { k[0x201] = 0x90 }), ErrBadHeader, "short forward jmp"},
		{"header too short", bz(nil, func(k []byte) { k[0x201] = 0x40 }), ErrBadHeader, "it ends at 0x242"},
		{"zImage", bz(func(o *bzOpts) { o.loadflags = 0 }, nil), ErrNotBzImage, "LOADED_HIGH is clear"},
		{"32-bit kernel", bz(func(o *bzOpts) { o.xloadflags = 0 }, nil), ErrNo64BitEntry, "XLF_KERNEL_64 clear"},
		{"setup only", bz(func(o *bzOpts) { o.payload = 0 }, nil), ErrTruncated, "no protected-mode kernel follows"},
		{"payload without entry", bz(func(o *bzOpts) { o.payload = 0x200 }, nil), ErrTruncated, "protected-mode part is 512 bytes, too short to hold the 64-bit entry point at offset 0x200"},
		{"setup_sects past EOF", bz(nil, func(k []byte) { k[offSetupSects] = 200 }), ErrTruncated, "(setup_sects 200 + 1) * 512"},
		{"truncated payload", bz(nil, func(k []byte) { le.PutUint32(k[offSysSize:], 0x301) }), ErrTruncated, "protected-mode part is 12288 bytes, the header (syssize) says 12304"},
		{"alignment 3 MiB", bz(func(o *bzOpts) { o.alignment = 0x300000 }, nil), ErrAlignment, "kernel_alignment 0x300000 is not a power of two"},
		{"alignment 0", bz(func(o *bzOpts) { o.alignment = 0 }, nil), ErrAlignment, "kernel_alignment 0x0"},
		{"init_size 3.75 GiB", bz(func(o *bzOpts) { o.initSize = 0xf0000000 }, nil), ErrTooBig, "beyond the 3 GiB"},
		{"pref_address huge", bz(func(o *bzOpts) { o.relocatable = false; o.prefAddress = 1 << 63 }, nil), ErrTooBig, "pref_address 0x8000000000000000"},
		{"pref_address near top", bz(func(o *bzOpts) { o.prefAddress = 0xbff00000 }, nil), ErrTooBig, "beyond the 3 GiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse succeeded (%v), want %v", img.Format, tt.kind)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %q", err, tt.kind)
			}
			var be *Error
			if !errors.As(err, &be) {
				t.Errorf("error %q is not a *boot.Error", err)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q does not say %q", msg, tt.msg)
			}
			if !strings.HasPrefix(msg, "boot: ") || strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error %q is not one line starting with \"boot: \"", msg)
			}
		})
	}
}

func TestParseELF(t *testing.T) {
	tests := []struct {
		name  string
		entry uint64
		want  uint64
	}{
		{"physical entry", 0x1000000, 0x1000000},
		{"virtual entry", 0xffffffff81000040, 0x1000040},
		{"virtual entry in data", 0xffffffff81200010, 0x1200010},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultELF()
			o.entry = tt.entry
			k := o.build()
			img, err := Parse(k)
			if err != nil {
				t.Fatal(err)
			}
			if img.Format != FormatELF || img.Setup != nil {
				t.Errorf("format %v setup %v", img.Format, img.Setup)
			}
			if img.EntryPoint != tt.want {
				t.Errorf("entry %#x, want %#x", img.EntryPoint, tt.want)
			}
			if len(img.Segments) != 2 {
				t.Fatalf("%d segments, want the 2 PT_LOADs", len(img.Segments))
			}
			s0, s1 := img.Segments[0], img.Segments[1]
			if s0.Paddr != 0x1000000 || len(s0.Data) != 0x2000 || s0.Memsz != 0x2000 {
				t.Errorf("segment 0: %#x+%#x/%#x", s0.Paddr, len(s0.Data), s0.Memsz)
			}
			if s1.Paddr != 0x1200000 || len(s1.Data) != 0x800 || s1.Memsz != 0x5000 || s1.Data[0] != 0x40 {
				t.Errorf("segment 1: %#x+%#x/%#x", s1.Paddr, len(s1.Data), s1.Memsz)
			}
			if img.KernelStart != 0x1000000 || img.KernelEnd != 0x1205000 {
				t.Errorf("kernel range [%#x, %#x)", img.KernelStart, img.KernelEnd)
			}
		})
	}
}

// TestParseRealBzImage parses a real kernel when KVMLAB_TEST_BZIMAGE names
// one (e.g. /boot/vmlinuz-$(uname -r) or arch/x86/boot/bzImage).
func TestParseRealBzImage(t *testing.T) {
	path := os.Getenv("KVMLAB_TEST_BZIMAGE")
	if path == "" {
		t.Skip("set KVMLAB_TEST_BZIMAGE to a bzImage to parse a real kernel")
	}
	k, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Parse(k)
	if err != nil {
		t.Fatal(err)
	}
	h := img.Setup
	t.Logf("%s: protocol %s, %q, setup_sects %d, payload %d bytes, init_size %#x, pref_address %#x, align %#x, xloadflags %#x, cmdline_size %d, kernel [%#x, %#x)",
		path, h.VersionString(), h.KernelVersion, h.SetupSects, len(img.Payload), h.InitSize, h.PrefAddress, h.KernelAlignment, h.XLoadFlags, h.CmdlineSize, img.KernelStart, img.KernelEnd)
	mem := newRAM(t, 512<<20, 0, 0)
	e, err := Load(mem, img, make([]byte, 1<<20), "console=ttyS0", 0xf0000)
	if err != nil {
		t.Fatal(err)
	}
	if e.RIP != 0x100200 {
		t.Errorf("RIP %#x", e.RIP)
	}
}
