package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"kvmlab/guestmem"
)

const (
	testRAM  = 32 << 20
	testRSDP = 0xf0000
)

func mustParse(t *testing.T, k []byte) *Image {
	t.Helper()
	img, err := Parse(k)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func initrdBytes(n int) []byte {
	b := make([]byte, n)
	copy(b, "070701")
	for i := 6; i < n; i++ {
		b[i] = byte(i % 251)
	}
	return b
}

func TestLoadBzImage(t *testing.T) {
	k := defaultBz().build()
	img := mustParse(t, k)
	mem := newRAM(t, testRAM, 1<<20, 0xcc)
	initrd := initrdBytes(10000)
	const cmdline = "console=ttyS0 root=/dev/vda rw"

	e, err := Load(mem, img, initrd, cmdline, testRSDP)
	if err != nil {
		t.Fatal(err)
	}

	// Registers.
	wantEntry := Entry{
		RIP: 0x100200, RSP: 0x8ff0, RSI: 0x7000, CR3: 0x9000,
		GDTBase: 0x500, GDTLimit: 31, CodeSelector: 0x10, DataSelector: 0x18,
		CodeDescriptor: 0x00af9b000000ffff, DataDescriptor: 0x00cf93000000ffff,
		// Highest page-aligned address with 10000 bytes below 32 MiB.
		InitrdAddr: testRAM - 0x3000, InitrdSize: 10000,
	}
	if *e != wantEntry {
		t.Errorf("entry\n got %+v\nwant %+v", *e, wantEntry)
	}

	// Kernel, initrd and command line bytes.
	if got := read(t, mem, 0x100000, len(img.Payload)); !bytes.Equal(got, img.Payload) {
		t.Error("payload not at 0x100000")
	}
	if got := read(t, mem, testRAM-0x3000, len(initrd)); !bytes.Equal(got, initrd) {
		t.Error("initrd not at the top of RAM")
	}
	if got := read(t, mem, 0x20000, len(cmdline)+1); string(got) != cmdline+"\x00" {
		t.Errorf("command line %q", got)
	}

	// boot_params: every field we write, at its zero-page offset.
	bp := uint64(0x7000)
	fields := []struct {
		name string
		off  uint64
		size int
		want uint64
	}{
		{"setup_sects (copied)", 0x1f1, 1, 1},
		{"syssize (copied)", 0x1f4, 4, 0x300},
		{"vid_mode", 0x1fa, 2, 0xffff},
		{"boot_flag (copied)", 0x1fe, 2, 0xaa55},
		{"jump (copied)", 0x200, 2, 0x6aeb},
		{"HdrS (copied)", 0x202, 4, 0x53726448},
		{"version (copied)", 0x206, 2, 0x020f},
		{"type_of_loader", 0x210, 1, 0xff},
		{"loadflags", 0x211, 1, LoadFlagLoadedHigh | LoadFlagCanUseHeap},
		{"code32_start (copied)", 0x214, 4, 0x100000},
		{"ramdisk_image", 0x218, 4, testRAM - 0x3000},
		{"ramdisk_size", 0x21c, 4, 10000},
		{"heap_end_ptr", 0x224, 2, 0xfe00},
		{"cmd_line_ptr", 0x228, 4, 0x20000},
		{"initrd_addr_max (copied)", 0x22c, 4, 0x7fffffff},
		{"kernel_alignment (copied)", 0x230, 4, 0x200000},
		{"xloadflags (copied)", 0x236, 2, XLFKernel64 | XLFCanBeAbove4G | XLFEFIHandover64},
		{"cmdline_size (copied)", 0x238, 4, 2047},
		{"pref_address (copied)", 0x258, 8, 0x1000000},
		{"init_size (copied)", 0x260, 4, 0x800000},
		{"kernel_info_offset (copied)", 0x268, 4, 0x8a0000},
		{"after the header", 0x26c, 4, 0},
		{"acpi_rsdp_addr", 0x070, 8, testRSDP},
		{"ext_ramdisk_image", 0x0c0, 4, 0},
		{"ext_ramdisk_size", 0x0c4, 4, 0},
		{"ext_cmd_line_ptr", 0x0c8, 4, 0},
		{"e820_entries", 0x1e8, 1, 4},
		{"sentinel", 0x1ef, 1, 0},
		{"screen_info", 0x000, 8, 0},
	}
	for _, f := range fields {
		var got uint64
		switch f.size {
		case 1:
			got = uint64(read(t, mem, bp+f.off, 1)[0])
		case 2:
			got = uint64(read16(t, mem, bp+f.off))
		case 4:
			got = uint64(read32(t, mem, bp+f.off))
		case 8:
			got = read64(t, mem, bp+f.off)
		}
		if got != f.want {
			t.Errorf("boot_params %s at %#x = %#x, want %#x", f.name, f.off, got, f.want)
		}
	}

	// e820 table in the zero page: 20-byte entries from 0x2d0.
	wantE820 := []E820Entry{
		{0, 0x9fc00, E820RAM},
		{0x9fc00, 0x100000 - 0x9fc00, E820Reserved},
		{0x100000, testRAM - 0x100000, E820RAM},
		{0x1_0000_0000, 1 << 20, E820RAM},
	}
	for i, w := range wantE820 {
		b := read(t, mem, bp+0x2d0+uint64(i)*20, 20)
		got := E820Entry{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint32(b[16:])}
		if got != w {
			t.Errorf("e820[%d] = %+v, want %+v", i, got, w)
		}
	}
	if b := read(t, mem, bp+0x2d0+4*20, 20); !bytes.Equal(b, make([]byte, 20)) {
		t.Error("e820 entry after the last one is not zero")
	}

	checkGDT(t, mem)
	checkPageTables(t, mem)
}

// checkGDT decodes the two descriptors field by field (Intel SDM vol. 3,
// 3.4.5), which is what the VMM does to fill KVM segment registers.
func checkGDT(t *testing.T, mem *guestmem.Memory) {
	t.Helper()
	want := []uint64{0, 0, 0x00af9b000000ffff, 0x00cf93000000ffff}
	for i, w := range want {
		if got := read64(t, mem, 0x500+uint64(i)*8); got != w {
			t.Errorf("GDT[%d] = %#016x, want %#016x", i, got, w)
		}
	}
	type seg struct {
		base, limit           uint64
		typ, s, dpl, p, l, db uint64
		g                     uint64
	}
	decode := func(d uint64) seg {
		return seg{
			base:  (d>>16)&0xffffff | (d>>56)<<24,
			limit: d&0xffff | (d>>48&0xf)<<16,
			typ:   d >> 40 & 0xf, s: d >> 44 & 1, dpl: d >> 45 & 3, p: d >> 47 & 1,
			l: d >> 53 & 1, db: d >> 54 & 1, g: d >> 55 & 1,
		}
	}
	code, data := decode(CodeDescriptor), decode(DataDescriptor)
	if code != (seg{base: 0, limit: 0xfffff, typ: 0xb, s: 1, dpl: 0, p: 1, l: 1, db: 0, g: 1}) {
		t.Errorf("code descriptor decodes to %+v: want flat, execute/read, 64-bit (L=1, D=0)", code)
	}
	if data != (seg{base: 0, limit: 0xfffff, typ: 0x3, s: 1, dpl: 0, p: 1, l: 0, db: 1, g: 1}) {
		t.Errorf("data descriptor decodes to %+v: want flat, read/write", data)
	}
}

// checkPageTables walks the tables like the MMU would for a few addresses.
func checkPageTables(t *testing.T, mem *guestmem.Memory) {
	t.Helper()
	entries := []struct {
		name string
		addr uint64
		want uint64
	}{
		{"PML4[0]", 0x9000, 0xa000 | 3},
		{"PML4[1]", 0x9008, 0},
		{"PML4[511]", 0x9ff8, 0},
		{"PDPT[0]", 0xa000, 0xb000 | 3},
		{"PDPT[1]", 0xa008, 0xc000 | 3},
		{"PDPT[2]", 0xa010, 0xd000 | 3},
		{"PDPT[3]", 0xa018, 0xe000 | 3},
		{"PDPT[4]", 0xa020, 0},
		{"PD0[0]", 0xb000, 0x83},
		{"PD0[1]", 0xb008, 0x200000 | 0x83},
		{"PD0[511]", 0xbff8, 0x3fe00000 | 0x83},
		{"PD1[0]", 0xc000, 0x40000000 | 0x83},
		{"PD3[502] (I/O APIC)", 0xe000 + 502*8, 0xfec00000 | 0x83},
		{"PD3[511]", 0xeff8, 0xffe00000 | 0x83},
	}
	for _, e := range entries {
		if got := read64(t, mem, e.addr); got != e.want {
			t.Errorf("%s at %#x = %#x, want %#x", e.name, e.addr, got, e.want)
		}
	}
	walk := func(va uint64) uint64 {
		pml4e := read64(t, mem, 0x9000+(va>>39&511)*8)
		pdpte := read64(t, mem, pml4e&^0xfff+(va>>30&511)*8)
		pde := read64(t, mem, pdpte&^0xfff+(va>>21&511)*8)
		if pml4e&pdpte&pde&1 == 0 || pde&0x80 == 0 {
			t.Fatalf("va %#x not mapped by a present 2 MiB page", va)
		}
		return pde&^0x1fffff&^(1<<63) | va&0x1fffff
	}
	for _, va := range []uint64{0x7000, 0x20000, 0x100200, 0x1234567, 0xbfffffff, 0xfee00000} {
		if pa := walk(va); pa != va {
			t.Errorf("va %#x maps to %#x, want identity", va, pa)
		}
	}
}

func TestLoadInitrdPlacement(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*bzOpts)
		ram     int
		size    int
		want    uint64
		wantErr error
		advice  string
	}{
		{"top of RAM", nil, testRAM, 0x100000, testRAM - 0x100000, nil, ""},
		{"rounded down to a page", nil, testRAM, 0x100001, testRAM - 0x101000, nil, ""},
		{"below initrd_addr_max", func(o *bzOpts) { o.initrdAddrMax = 0x1dfffff }, testRAM, 0x1000, 0x1dff000, nil, ""},
		{"initrd_addr_max not page-aligned", func(o *bzOpts) { o.initrdAddrMax = 0x1dffeff }, testRAM, 0x1000, 0x1dfe000, nil, ""},
		{"just fits above the kernel", nil, testRAM, testRAM - 0x1800000, 0x1800000, nil, ""},
		{"one byte too big", nil, testRAM, testRAM - 0x1800000 + 1, 0, ErrInitrdTooBig, "8388608 bytes (8.0 MiB) are free between the kernel's end 0x1800000 and the end of low RAM 0x2000000; use a bigger --mem"},
		{"initrd_addr_max below the kernel", func(o *bzOpts) { o.initrdAddrMax = 0xffffff }, testRAM, 0x1000, 0, ErrInitrdTooBig, "initrd_addr_max 0xffffff; use a smaller initrd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultBz()
			if tt.mod != nil {
				tt.mod(&o)
			}
			img := mustParse(t, o.build())
			mem := newRAM(t, tt.ram, 0, 0)
			initrd := initrdBytes(tt.size)
			e, err := Load(mem, img, initrd, "", 0)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.advice) {
					t.Errorf("error %q does not say %q", err, tt.advice)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.InitrdAddr != tt.want {
				t.Errorf("initrd at %#x, want %#x", e.InitrdAddr, tt.want)
			}
			if got := read32(t, mem, 0x7000+0x218); uint64(got) != tt.want {
				t.Errorf("ramdisk_image %#x", got)
			}
			if !bytes.Equal(read(t, mem, tt.want, tt.size), initrd) {
				t.Error("initrd bytes differ")
			}
			if e.InitrdAddr < img.KernelEnd || e.InitrdAddr%0x1000 != 0 {
				t.Errorf("initrd at %#x overlaps the kernel (ends %#x) or is unaligned", e.InitrdAddr, img.KernelEnd)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	bz := func(mod func(*bzOpts)) *Image {
		o := defaultBz()
		if mod != nil {
			mod(&o)
		}
		return mustParse(t, o.build())
	}
	lowAt := func(base guestmem.GPA, n int) *guestmem.Memory {
		m, err := guestmem.FromRegions(guestmem.Region{Base: base, Data: make([]byte, n)})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name    string
		mem     *guestmem.Memory
		img     *Image
		cmdline string
		kind    error
		msg     string
	}{
		{"kernel needs more RAM", lowAt(0, 16<<20), bz(nil), "", ErrTooBig, "kernel needs RAM up to 0x1800000 (24 MiB) but the guest has 16 MiB below 4 GiB; use a bigger --mem"},
		{"RAM not at 0", lowAt(0x100000, 64<<20), bz(nil), "", ErrLayout, "does not start at address 0"},
		{"RAM below 1 MiB only", lowAt(0, 640<<10), bz(nil), "", ErrLayout, "640 KiB"},
		{"cmdline over cmdline_size", lowAt(0, testRAM), bz(nil), strings.Repeat("a", 2048), ErrCmdline, "2048 bytes; this kernel accepts at most 2047"},
		{"cmdline at cmdline_size", lowAt(0, testRAM), bz(nil), strings.Repeat("a", 2047), nil, ""},
		{"cmdline beyond our room", lowAt(0, testRAM), bz(func(o *bzOpts) { o.cmdlineSize = 1 << 20 }), strings.Repeat("a", 0x7fc00), ErrCmdline, "room for 523263"},
		{"cmdline with NUL", lowAt(0, testRAM), bz(nil), "quiet\x00init=/bin/sh", ErrCmdline, "NUL byte at 5"},
		{"nil image", lowAt(0, testRAM), nil, "", ErrInvalidImage, "nil Image"},
		{"hand-made image", lowAt(0, testRAM), &Image{Format: FormatBzImage, KernelStart: 0x100000, KernelEnd: 0x200000}, "", ErrInvalidImage, "without setup header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.mem, tt.img, nil, tt.cmdline, 0)
			if tt.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err %v, want %v", err, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			t.Log(err)
		})
	}
}

// TestLoadOldProtocolNoRSDP: acpi_rsdp_addr is only written for 2.14+.
func TestLoadOldProtocolNoRSDP(t *testing.T) {
	o := defaultBz()
	o.version = 0x020c
	img := mustParse(t, o.build())
	mem := newRAM(t, testRAM, 0, 0)
	if _, err := Load(mem, img, nil, "", testRSDP); err != nil {
		t.Fatal(err)
	}
	if got := read64(t, mem, 0x7000+0x70); got != 0 {
		t.Errorf("acpi_rsdp_addr %#x written for protocol 2.12", got)
	}
	if got := read32(t, mem, 0x7000+0x218); got != 0 {
		t.Errorf("ramdisk_image %#x without an initrd", got)
	}
}

func TestLoadELF(t *testing.T) {
	o := defaultELF()
	o.entry = 0xffffffff81000000 // virtual: converted to 0x1000000
	img := mustParse(t, o.build())
	mem := newRAM(t, testRAM, 0, 0xcc)
	initrd := initrdBytes(5000)
	e, err := Load(mem, img, initrd, "console=ttyS0", testRSDP)
	if err != nil {
		t.Fatal(err)
	}
	if e.RIP != 0x1000000 || e.RSI != 0x7000 || e.CR3 != 0x9000 || e.RSP != 0x8ff0 {
		t.Errorf("entry %+v", e)
	}
	// ELF default ceiling is 0x7fffffff, so RAM's end decides.
	if e.InitrdAddr != testRAM-0x2000 {
		t.Errorf("initrd at %#x", e.InitrdAddr)
	}
	text, data := o.segs[0].data, o.segs[2].data
	if !bytes.Equal(read(t, mem, 0x1000000, len(text)), text) {
		t.Error("text segment not at 0x1000000")
	}
	if !bytes.Equal(read(t, mem, 0x1200000, len(data)), data) {
		t.Error("data segment not at 0x1200000")
	}
	if bss := read(t, mem, 0x1200800, 0x5000-0x800); !bytes.Equal(bss, make([]byte, len(bss))) {
		t.Error(".bss not zeroed")
	}
	if b := read(t, mem, 0x1205000, 1); b[0] != 0xcc {
		t.Error("wrote past the end of .bss")
	}

	bp := uint64(0x7000)
	fields := []struct {
		name string
		off  uint64
		size int
		want uint64
	}{
		{"boot_flag", 0x1fe, 2, 0xaa55},
		{"jump", 0x200, 2, 0x6aeb},
		{"HdrS", 0x202, 4, 0x53726448},
		{"version", 0x206, 2, 0x020f},
		{"type_of_loader", 0x210, 1, 0xff},
		{"loadflags", 0x211, 1, LoadFlagLoadedHigh | LoadFlagCanUseHeap},
		{"ramdisk_image", 0x218, 4, testRAM - 0x2000},
		{"ramdisk_size", 0x21c, 4, 5000},
		{"heap_end_ptr", 0x224, 2, 0xfe00},
		{"cmd_line_ptr", 0x228, 4, 0x20000},
		{"initrd_addr_max", 0x22c, 4, 0x7fffffff},
		{"xloadflags", 0x236, 2, XLFKernel64},
		{"cmdline_size", 0x238, 4, 2048},
		{"pref_address", 0x258, 8, 0x1000000},
		{"init_size", 0x260, 4, 0x205000},
		{"acpi_rsdp_addr", 0x070, 8, testRSDP},
		{"e820_entries", 0x1e8, 1, 3},
		{"vid_mode", 0x1fa, 2, 0xffff},
	}
	for _, f := range fields {
		var got uint64
		switch f.size {
		case 1:
			got = uint64(read(t, mem, bp+f.off, 1)[0])
		case 2:
			got = uint64(read16(t, mem, bp+f.off))
		case 4:
			got = uint64(read32(t, mem, bp+f.off))
		case 8:
			got = read64(t, mem, bp+f.off)
		}
		if got != f.want {
			t.Errorf("boot_params %s at %#x = %#x, want %#x", f.name, f.off, got, f.want)
		}
	}
	checkGDT(t, mem)
	checkPageTables(t, mem)
}

func TestE820(t *testing.T) {
	tests := []struct {
		name    string
		regions []struct{ base, size uint64 }
		want    []E820Entry
	}{
		{
			name:    "32 MiB",
			regions: []struct{ base, size uint64 }{{0, 32 << 20}},
			want: []E820Entry{
				{0, 0x9fc00, E820RAM},
				{0x9fc00, 0x60400, E820Reserved},
				{0x100000, 31 << 20, E820RAM},
			},
		},
		{
			name:    "3 GiB low plus 1 GiB high",
			regions: []struct{ base, size uint64 }{{0, 3 << 30}, {4 << 30, 1 << 30}},
			want: []E820Entry{
				{0, 0x9fc00, E820RAM},
				{0x9fc00, 0x60400, E820Reserved},
				{0x100000, 3<<30 - 0x100000, E820RAM},
				{4 << 30, 1 << 30, E820RAM},
			},
		},
		{
			name:    "exactly 1 MiB",
			regions: []struct{ base, size uint64 }{{0, 1 << 20}},
			want: []E820Entry{
				{0, 0x9fc00, E820RAM},
				{0x9fc00, 0x60400, E820Reserved},
			},
		},
		{
			name:    "ends inside the reserved window",
			regions: []struct{ base, size uint64 }{{0, 0xc0000}},
			want: []E820Entry{
				{0, 0x9fc00, E820RAM},
				{0x9fc00, 0xc0000 - 0x9fc00, E820Reserved},
			},
		},
		{
			name:    "tiny",
			regions: []struct{ base, size uint64 }{{0, 0x80000}},
			want:    []E820Entry{{0, 0x80000, E820RAM}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the regions' bounds matter: back them with a lazily
			// mapped Memory where they are large, slices where small.
			var mem *guestmem.Memory
			if len(tt.regions) == 2 {
				m, err := guestmem.New(tt.regions[0].size + tt.regions[1].size)
				if err != nil {
					t.Skip("cannot map guest RAM:", err)
				}
				t.Cleanup(func() { m.Close() })
				mem = m
			} else {
				mem = newRAM(t, int(tt.regions[0].size), 0, 0)
			}
			got := E820(mem)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("[%d] = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestLoadBigGuest loads into a lazily mapped 4 GiB guest (3 GiB low, 1 GiB
// high), as the VMM does: the initrd goes just under initrd_addr_max,
// never above 4 GiB.
func TestLoadBigGuest(t *testing.T) {
	mem, err := guestmem.New(4 << 30)
	if err != nil {
		t.Skip("cannot map guest RAM:", err)
	}
	defer mem.Close()
	img := mustParse(t, defaultBz().build())
	e, err := Load(mem, img, initrdBytes(3<<20), "console=ttyS0", testRSDP)
	if err != nil {
		t.Fatal(err)
	}
	if e.InitrdAddr != 0x80000000-(3<<20) {
		t.Errorf("initrd at %#x, want just below 2 GiB", e.InitrdAddr)
	}
	if n := read(t, mem, 0x7000+0x1e8, 1)[0]; n != 4 {
		t.Errorf("e820_entries %d", n)
	}
}
