package acpi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

var le = binary.LittleEndian

// guest is the blob as the guest sees it: copied to Base.
type guest struct {
	t    *testing.T
	blob []byte
}

// at returns the n bytes at guest-physical address a, failing the test if
// they are not inside the blob.
func (g guest) at(a uint64, n int) []byte {
	g.t.Helper()
	if a < Base || a+uint64(n) > Base+uint64(len(g.blob)) {
		g.t.Fatalf("address %#x+%d is outside the blob [%#x, %#x)", a, n, Base, Base+len(g.blob))
	}
	off := int(a - Base)
	return g.blob[off : off+n]
}

// table returns the System Description Table at a, checking its signature,
// header length and checksum.
func (g guest) table(a uint64, sig string) []byte {
	g.t.Helper()
	hdr := g.at(a, 36)
	if got := string(hdr[0:4]); got != sig {
		g.t.Fatalf("table at %#x has signature %q, want %q", a, got, sig)
	}
	tab := g.at(a, int(le.Uint32(hdr[4:])))
	if s := sum(tab); s != 0 {
		g.t.Errorf("%s checksum: bytes sum to %#x, want 0", sig, s)
	}
	if got := string(tab[10:16]); got != "KVMLAB" {
		g.t.Errorf("%s OEM ID = %q, want KVMLAB", sig, got)
	}
	if got := string(tab[28:32]); got != "KLAB" {
		g.t.Errorf("%s creator ID = %q, want KLAB", sig, got)
	}
	return tab
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// tables follows the pointers from the RSDP and returns every table by
// signature (plus "RSDP" and "FACS") with its guest address.
type found struct {
	addr uint64
	data []byte
}

func walk(t *testing.T, blob []byte, rsdp uint64) map[string]found {
	t.Helper()
	g := guest{t, blob}
	out := map[string]found{}

	r := g.at(rsdp, 36)
	if rsdp%16 != 0 {
		t.Errorf("RSDP at %#x is not 16-byte aligned", rsdp)
	}
	if rsdp < 0xE0000 || rsdp+36 > 0x100000 {
		t.Errorf("RSDP at %#x is outside the BIOS area", rsdp)
	}
	if string(r[0:8]) != "RSD PTR " {
		t.Fatalf("RSDP signature %q", r[0:8])
	}
	if s := sum(r[:20]); s != 0 {
		t.Errorf("RSDP checksum (first 20 bytes) sums to %#x", s)
	}
	if s := sum(r[:36]); s != 0 {
		t.Errorf("RSDP extended checksum sums to %#x", s)
	}
	if r[15] != 2 {
		t.Errorf("RSDP revision %d, want 2", r[15])
	}
	if got := le.Uint32(r[20:]); got != 36 {
		t.Errorf("RSDP length %d, want 36", got)
	}
	if got := string(r[9:15]); got != "KVMLAB" {
		t.Errorf("RSDP OEM ID %q", got)
	}
	out["RSDP"] = found{rsdp, r}

	xsdtAddr := le.Uint64(r[24:])
	xsdt := g.table(xsdtAddr, "XSDT")
	out["XSDT"] = found{xsdtAddr, xsdt}
	rsdtAddr := uint64(le.Uint32(r[16:]))
	rsdt := g.table(rsdtAddr, "RSDT")
	out["RSDT"] = found{rsdtAddr, rsdt}

	if (len(xsdt)-36)%8 != 0 || (len(rsdt)-36)%4 != 0 {
		t.Fatalf("XSDT/RSDT lengths %d/%d are not header + whole entries", len(xsdt), len(rsdt))
	}
	n := (len(xsdt) - 36) / 8
	if m := (len(rsdt) - 36) / 4; m != n {
		t.Errorf("XSDT has %d entries, RSDT %d", n, m)
	}
	for i := 0; i < n; i++ {
		a := le.Uint64(xsdt[36+8*i:])
		if b := le.Uint32(rsdt[36+4*i:]); uint64(b) != a {
			t.Errorf("entry %d: XSDT %#x, RSDT %#x", i, a, b)
		}
		sig := string(g.at(a, 4))
		if _, dup := out[sig]; dup {
			t.Errorf("table %s listed twice", sig)
		}
		out[sig] = found{a, g.table(a, sig)}
	}

	fadt, ok := out["FACP"]
	if !ok {
		t.Fatal("XSDT does not list a FADT")
	}
	// DSDT: both the 32-bit field (offset 40) and X_DSDT (offset 140).
	dsdt32 := uint64(le.Uint32(fadt.data[40:]))
	dsdt64 := le.Uint64(fadt.data[140:])
	if dsdt32 != dsdt64 {
		t.Errorf("FADT DSDT %#x != X_DSDT %#x", dsdt32, dsdt64)
	}
	out["DSDT"] = found{dsdt64, g.table(dsdt64, "DSDT")}

	// FACS: the 32-bit FIRMWARE_CTRL (offset 36); X_FIRMWARE_CTRL
	// (offset 132) must then be zero.
	facsAddr := uint64(le.Uint32(fadt.data[36:]))
	if x := le.Uint64(fadt.data[132:]); x != 0 {
		t.Errorf("X_FIRMWARE_CTRL = %#x, want 0 when FIRMWARE_CTRL is used", x)
	}
	facs := g.at(facsAddr, 64)
	if string(facs[0:4]) != "FACS" || le.Uint32(facs[4:]) != 64 {
		t.Errorf("FACS header % x", facs[:8])
	}
	if facsAddr%64 != 0 {
		t.Errorf("FACS at %#x is not 64-byte aligned", facsAddr)
	}
	if facs[32] != 2 {
		t.Errorf("FACS version %d, want 2", facs[32])
	}
	out["FACS"] = found{facsAddr, facs}
	return out
}

func TestBuild(t *testing.T) {
	for _, cpus := range []int{1, 2, 8, 255} {
		cfg := DefaultConfig(cpus)
		t.Run(fmt.Sprintf("cpus=%d", cpus), func(t *testing.T) {
			blob, rsdp, err := Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(blob) > MaxSize {
				t.Fatalf("blob is %d bytes, MaxSize is %d", len(blob), MaxSize)
			}
			if rsdp != Base {
				t.Errorf("rsdp = %#x, want Base (%#x)", rsdp, Base)
			}
			tabs := walk(t, blob, rsdp)

			for sig, want := range map[string]byte{"XSDT": 1, "RSDT": 1, "FACP": 6, "DSDT": 2, "APIC": 5} {
				if got := tabs[sig].data[8]; got != want {
					t.Errorf("%s revision %d, want %d", sig, got, want)
				}
			}
			if got := len(tabs) - 2; got != 5 { // minus RSDP and FACS
				t.Errorf("found %d tables, want XSDT, RSDT, FACP, APIC, DSDT", got)
			}
			checkNoOverlap(t, tabs)
			checkFADT(t, cfg, tabs["FACP"].data)
			checkMADT(t, cfg, tabs["APIC"].data)

			// The DSDT body is the _S5_ object, then the PCI root bridge.
			wantAML := []byte{0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}
			wantAML = append(wantAML, pciRootAML...)
			if got := tabs["DSDT"].data[36:]; !bytes.Equal(got, wantAML) {
				t.Errorf("DSDT AML = % x, want % x", got, wantAML)
			}
		})
	}
}

func checkNoOverlap(t *testing.T, tabs map[string]found) {
	t.Helper()
	for a, ta := range tabs {
		for b, tb := range tabs {
			if a >= b {
				continue
			}
			aEnd := ta.addr + uint64(len(ta.data))
			bEnd := tb.addr + uint64(len(tb.data))
			if ta.addr < bEnd && tb.addr < aEnd {
				t.Errorf("%s [%#x,%#x) overlaps %s [%#x,%#x)", a, ta.addr, aEnd, b, tb.addr, bEnd)
			}
		}
	}
}

// checkFADT reads fields at the offsets given by ACPI 6.4 Table 5.9 (written
// here as literals, independent of the constants the code uses).
func checkFADT(t *testing.T, cfg Config, f []byte) {
	t.Helper()
	if len(f) != 276 {
		t.Fatalf("FADT length %d, want 276", len(f))
	}
	u8 := func(off int) uint64 { return uint64(f[off]) }
	u16 := func(off int) uint64 { return uint64(le.Uint16(f[off:])) }
	u32 := func(off int) uint64 { return uint64(le.Uint32(f[off:])) }
	u64 := func(off int) uint64 { return le.Uint64(f[off:]) }
	fields := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"SCI_INT @46", u16(46), uint64(cfg.SCIIRQ)},
		{"SMI_CMD @48", u32(48), 0},
		{"ACPI_ENABLE @52", u8(52), 0},
		{"PM1a_EVT_BLK @56", u32(56), uint64(cfg.PM1aEvtBlk)},
		{"PM1b_EVT_BLK @60", u32(60), 0},
		{"PM1a_CNT_BLK @64", u32(64), uint64(cfg.PM1aCntBlk)},
		{"PM1b_CNT_BLK @68", u32(68), 0},
		{"PM2_CNT_BLK @72", u32(72), 0},
		{"PM_TMR_BLK @76", u32(76), 0},
		{"GPE0_BLK @80", u32(80), 0},
		{"GPE1_BLK @84", u32(84), 0},
		{"PM1_EVT_LEN @88", u8(88), 4},
		{"PM1_CNT_LEN @89", u8(89), 2},
		{"PM2_CNT_LEN @90", u8(90), 0},
		{"PM_TMR_LEN @91", u8(91), 0},
		{"GPE0_BLK_LEN @92", u8(92), 0},
		{"GPE1_BLK_LEN @93", u8(93), 0},
		{"P_LVL2_LAT @96 (>100: no C2)", boolU(u16(96) > 100), 1},
		{"P_LVL3_LAT @98 (>1000: no C3)", boolU(u16(98) > 1000), 1},
		// LEGACY_DEVICES | VGA_NOT_PRESENT; 8042 (bit 1) clear.
		{"IAPC_BOOT_ARCH @109", u16(109), 0x0005},
		{"IAPC_BOOT_ARCH 8042 bit", u16(109) & bootArch8042, 0},
		// WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON | RESET_REG_SUP.
		{"Flags @112", u32(112), 1<<0 | 1<<2 | 1<<4 | 1<<5 | 1<<10},
		{"Flags HW_REDUCED", u32(112) & fadtFlagHWReduced, 0},
		// RESET_REG: system I/O, 8 bits at offset 0, byte access.
		{"RESET_REG.space @116", u8(116), 1},
		{"RESET_REG.bit_width @117", u8(117), 8},
		{"RESET_REG.bit_offset @118", u8(118), 0},
		{"RESET_REG.access_size @119", u8(119), 1},
		{"RESET_REG.address @120", u64(120), uint64(cfg.ResetPort)},
		{"RESET_VALUE @128", u8(128), uint64(cfg.ResetValue)},
		{"ARM_BOOT_ARCH @129", u16(129), 0},
		{"FADT minor version @131", u8(131), 4},
		{"X_DSDT @140 == DSDT @40", u64(140), u32(40)},
		// X_PM1a_EVT_BLK: system I/O, 32 bits = PM1_EVT_LEN*8.
		{"X_PM1a_EVT_BLK.space @148", u8(148), 1},
		{"X_PM1a_EVT_BLK.bit_width @149", u8(149), 4 * 8},
		{"X_PM1a_EVT_BLK.bit_offset @150", u8(150), 0},
		{"X_PM1a_EVT_BLK.address @152", u64(152), uint64(cfg.PM1aEvtBlk)},
		{"X_PM1b_EVT_BLK.address @164", u64(164), 0},
		// X_PM1a_CNT_BLK: system I/O, 16 bits = PM1_CNT_LEN*8.
		{"X_PM1a_CNT_BLK.space @172", u8(172), 1},
		{"X_PM1a_CNT_BLK.bit_width @173", u8(173), 2 * 8},
		{"X_PM1a_CNT_BLK.bit_offset @174", u8(174), 0},
		{"X_PM1a_CNT_BLK.address @176", u64(176), uint64(cfg.PM1aCntBlk)},
		{"X_PM1b_CNT_BLK.address @188", u64(188), 0},
		{"X_PM2_CNT_BLK.address @200", u64(200), 0},
		{"X_PM_TMR_BLK.address @212", u64(212), 0},
		{"X_GPE0_BLK.address @224", u64(224), 0},
		{"X_GPE1_BLK.address @236", u64(236), 0},
		{"SLEEP_CONTROL_REG.address @248", u64(248), 0},
		{"SLEEP_STATUS_REG.address @260", u64(260), 0},
	}
	for _, fl := range fields {
		if fl.got != fl.want {
			t.Errorf("FADT %s = %#x, want %#x", fl.name, fl.got, fl.want)
		}
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// checkMADT walks the MADT's interrupt controller structures.
func checkMADT(t *testing.T, cfg Config, m []byte) {
	t.Helper()
	if got := le.Uint32(m[36:]); got != cfg.LAPICAddr {
		t.Errorf("MADT local APIC address %#x, want %#x", got, cfg.LAPICAddr)
	}
	if got := le.Uint32(m[40:]); got != 1 {
		t.Errorf("MADT flags %#x, want PCAT_COMPAT (1)", got)
	}
	var lapics, ioapics, isos int
	for off := 44; off < len(m); {
		if off+2 > len(m) {
			t.Fatalf("MADT entry header at %d runs past the table", off)
		}
		typ, n := m[off], int(m[off+1])
		if n < 2 || off+n > len(m) {
			t.Fatalf("MADT entry type %d at %d has bad length %d", typ, off, n)
		}
		e := m[off : off+n]
		switch typ {
		case 0: // Processor Local APIC
			if n != 8 {
				t.Errorf("local APIC entry length %d, want 8", n)
			}
			if int(e[2]) != lapics || int(e[3]) != lapics {
				t.Errorf("local APIC %d: UID %d, APIC ID %d", lapics, e[2], e[3])
			}
			if le.Uint32(e[4:]) != 1 {
				t.Errorf("local APIC %d flags %#x, want enabled (1)", lapics, le.Uint32(e[4:]))
			}
			lapics++
		case 1: // I/O APIC
			if n != 12 {
				t.Errorf("I/O APIC entry length %d, want 12", n)
			}
			if int(e[2]) != cfg.CPUs {
				t.Errorf("I/O APIC ID %d, want %d (first after the LAPICs)", e[2], cfg.CPUs)
			}
			if got := le.Uint32(e[4:]); got != cfg.IOAPICAddr {
				t.Errorf("I/O APIC address %#x, want %#x", got, cfg.IOAPICAddr)
			}
			if got := le.Uint32(e[8:]); got != 0 {
				t.Errorf("I/O APIC GSI base %d, want 0", got)
			}
			ioapics++
		case 2: // Interrupt Source Override
			if n != 10 {
				t.Errorf("ISO entry length %d, want 10", n)
			}
			if e[2] != 0 || e[3] != cfg.SCIIRQ || le.Uint32(e[4:]) != uint32(cfg.SCIIRQ) {
				t.Errorf("ISO bus %d source %d GSI %d, want 0/%d/%d", e[2], e[3], le.Uint32(e[4:]), cfg.SCIIRQ, cfg.SCIIRQ)
			}
			// Active high (bits 1:0 = 01), level triggered (bits 3:2 = 11).
			if got := le.Uint16(e[8:]); got != 0x000d {
				t.Errorf("ISO flags %#04x, want 0x000d", got)
			}
			if e[3] == 0 {
				t.Error("MADT overrides IRQ0; KVM routes the PIT to pin 0")
			}
			isos++
		default:
			t.Errorf("unexpected MADT entry type %d", typ)
		}
		off += n
	}
	if lapics != cfg.CPUs || ioapics != 1 || isos != 1 {
		t.Errorf("MADT has %d local APICs, %d I/O APICs, %d overrides; want %d, 1, 1", lapics, ioapics, isos, cfg.CPUs)
	}
	if want := 44 + 8*cfg.CPUs + 12 + 10; len(m) != want {
		t.Errorf("MADT length %d, want %d", len(m), want)
	}
}

// TestRSDPScan finds the RSDP the way a kernel without
// boot_params.acpi_rsdp_addr does: scanning 0xE0000-0xFFFFF on 16-byte
// boundaries for "RSD PTR " with a valid checksum.
func TestRSDPScan(t *testing.T) {
	blob, rsdp, err := Build(DefaultConfig(2))
	if err != nil {
		t.Fatal(err)
	}
	bios := make([]byte, 0x20000) // 0xE0000-0xFFFFF, as guest memory
	copy(bios[Base-0xE0000:], blob)
	var hit uint64
	for off := 0; off+36 <= len(bios); off += 16 {
		c := bios[off:]
		if string(c[:8]) == "RSD PTR " && sum(c[:20]) == 0 && (c[15] < 2 || sum(c[:le.Uint32(c[20:])]) == 0) {
			hit = 0xE0000 + uint64(off)
			break
		}
	}
	if hit != rsdp {
		t.Errorf("BIOS-area scan found the RSDP at %#x, Build says %#x", hit, rsdp)
	}
}

func TestIOAPICID(t *testing.T) {
	for _, tt := range []struct {
		cpus int
		id   uint8
		want uint8
	}{
		{1, 0, 1},
		{8, 0, 8},
		{255, 0, 255},
		{4, 0x11, 0x11},
	} {
		cfg := DefaultConfig(tt.cpus)
		cfg.IOAPICID = tt.id
		blob, rsdp, err := Build(cfg)
		if err != nil {
			t.Fatal(err)
		}
		madt := walk(t, blob, rsdp)["APIC"].data
		ioapic := madt[44+8*tt.cpus:]
		if ioapic[0] != 1 || ioapic[2] != tt.want {
			t.Errorf("CPUs=%d IOAPICID=%d: entry % x, want ID %d", tt.cpus, tt.id, ioapic[:4], tt.want)
		}
	}
}

func TestConfigValues(t *testing.T) {
	// Non-default values flow through to the tables.
	cfg := Config{
		CPUs:       3,
		LAPICAddr:  0xfee00000,
		IOAPICAddr: 0xfec01000,
		SCIIRQ:     10,
		PM1aEvtBlk: 0xb000,
		PM1aCntBlk: 0xb004,
		SlpTypS5:   0,
		ResetPort:  0xcf9,
		ResetValue: 0x06,
	}
	blob, rsdp, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tabs := walk(t, blob, rsdp)
	checkFADT(t, cfg, tabs["FACP"].data)
	checkMADT(t, cfg, tabs["APIC"].data)
	want := []byte{0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00}
	want = append(want, pciRootAML...)
	if got := tabs["DSDT"].data[36:]; !bytes.Equal(got, want) {
		t.Errorf("DSDT AML = % x, want % x", got, want)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"zero CPUs", func(c *Config) { c.CPUs = 0 }},
		{"negative CPUs", func(c *Config) { c.CPUs = -1 }},
		{"256 CPUs", func(c *Config) { c.CPUs = 256 }},
		{"no LAPIC address", func(c *Config) { c.LAPICAddr = 0 }},
		{"no IOAPIC address", func(c *Config) { c.IOAPICAddr = 0 }},
		{"SCI on IRQ0", func(c *Config) { c.SCIIRQ = 0 }},
		{"SCI on cascade", func(c *Config) { c.SCIIRQ = 2 }},
		{"SCI not ISA", func(c *Config) { c.SCIIRQ = 16 }},
		{"SLP_TYP too wide", func(c *Config) { c.SlpTypS5 = 8 }},
		{"no PM1a event block", func(c *Config) { c.PM1aEvtBlk = 0 }},
		{"no PM1a control block", func(c *Config) { c.PM1aCntBlk = 0 }},
		{"no reset port", func(c *Config) { c.ResetPort = 0 }},
		{"PM1 blocks overlap", func(c *Config) { c.PM1aCntBlk = c.PM1aEvtBlk + 2 }},
		{"reset port inside PM1 control", func(c *Config) { c.ResetPort = c.PM1aCntBlk + 1 }},
		{"PM1 event block past 0xFFFF", func(c *Config) { c.PM1aEvtBlk = 0xFFFE }},
	}
	for _, tt := range tests {
		cfg := DefaultConfig(2)
		tt.edit(&cfg)
		blob, rsdp, err := Build(cfg)
		if err == nil {
			t.Errorf("%s: Build succeeded (%d bytes, RSDP %#x), want error", tt.name, len(blob), rsdp)
		} else if blob != nil || rsdp != 0 {
			t.Errorf("%s: error %v came with a result", tt.name, err)
		}
	}
}

func TestLayoutMaxSize(t *testing.T) {
	var l layout
	l.reserve(MaxSize, 16)
	if b, err := l.bytes(); err != nil || len(b) != MaxSize {
		t.Errorf("exactly MaxSize: %d bytes, %v", len(b), err)
	}
	l.reserve(1, 1)
	if _, err := l.bytes(); err == nil {
		t.Error("MaxSize+1 bytes: want error")
	}

	var a layout
	if off := a.reserve(36, 16); off != 0 {
		t.Errorf("first offset %d", off)
	}
	if off := a.reserve(10, 16); off != 48 {
		t.Errorf("16-aligned offset after 36 bytes = %d, want 48", off)
	}
	if off := a.reserve(64, 64); off != 64 {
		t.Errorf("64-aligned offset after 58 bytes = %d, want 64", off)
	}
}
