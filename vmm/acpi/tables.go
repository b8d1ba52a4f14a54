package acpi

import "encoding/binary"

// buildRSDP encodes the Root System Description Pointer (ACPI 6.4 §5.2.5.3).
//
//	off len field
//	  0   8 "RSD PTR "
//	  8   1 checksum of bytes 0-19 (the ACPI 1.0 structure)
//	  9   6 OEM ID
//	 15   1 revision (2)
//	 16   4 RSDT address
//	 20   4 length of this structure (36)
//	 24   8 XSDT address
//	 32   1 extended checksum of all 36 bytes
//	 33   3 reserved
func buildRSDP(rsdt uint32, xsdt uint64) []byte {
	r := make([]byte, rsdpLen)
	le := binary.LittleEndian
	copy(r[0:8], "RSD PTR ")
	copy(r[9:15], oemID)
	r[15] = rsdpRevision
	le.PutUint32(r[16:], rsdt)
	le.PutUint32(r[20:], rsdpLen)
	le.PutUint64(r[24:], xsdt)
	// The first checksum covers the 1.0 part and is part of what the
	// extended checksum covers, so it must be computed first.
	r[8] = checksum(r[:20])
	r[32] = checksum(r)
	return r
}

// buildXSDT encodes the Extended System Description Table: a header followed
// by 64-bit physical addresses of the other tables (§5.2.8).
func buildXSDT(tables ...uint64) []byte {
	t := newTable("XSDT", xsdtRevision, headerLen+8*len(tables))
	for i, a := range tables {
		binary.LittleEndian.PutUint64(t[headerLen+8*i:], a)
	}
	return finishTable(t)
}

// buildRSDT encodes the Root System Description Table, the ACPI 1.0 version
// of the XSDT with 32-bit addresses (§5.2.7). Only an OS that ignores the
// XSDT (Linux with acpi=rsdt, ACPI 1.0 systems) reads it.
func buildRSDT(tables ...uint32) []byte {
	t := newTable("RSDT", rsdtRevision, headerLen+4*len(tables))
	for i, a := range tables {
		binary.LittleEndian.PutUint32(t[headerLen+4*i:], a)
	}
	return finishTable(t)
}

// FADT field offsets (ACPI 6.4 Table 5.9). Only the fields we set are named;
// everything else is zero, meaning "not present" for the optional register
// blocks (PM1b, PM2, PM timer, GPE0/1, sleep control/status).
const (
	fadtFirmwareCtrl   = 36  // u32 FACS address
	fadtDSDT           = 40  // u32 DSDT address
	fadtPMProfile      = 45  // u8 Preferred_PM_Profile
	fadtSCIInt         = 46  // u16
	fadtSMICmd         = 48  // u32
	fadtPM1aEvtBlk     = 56  // u32 I/O port
	fadtPM1aCntBlk     = 64  // u32 I/O port
	fadtPM1EvtLen      = 88  // u8
	fadtPM1CntLen      = 89  // u8
	fadtPMTmrLen       = 91  // u8
	fadtPLvl2Lat       = 96  // u16
	fadtPLvl3Lat       = 98  // u16
	fadtIAPCBootArch   = 109 // u16
	fadtFlags          = 112 // u32
	fadtResetReg       = 116 // GAS
	fadtResetValue     = 128 // u8
	fadtMinorVersion   = 131 // u8
	fadtXFirmwareCtrl  = 132 // u64
	fadtXDSDT          = 140 // u64
	fadtXPM1aEvtBlk    = 148 // GAS
	fadtXPM1aCntBlk    = 172 // GAS
	fadtHypervisorVend = 268 // u64
)

// Register block lengths, in bytes.
const (
	pm1EvtLen = 4 // PM1_STS (16 bits) + PM1_EN (16 bits)
	pm1CntLen = 2 // PM1_CNT (16 bits)
)

// Worst-case C2/C3 latencies above these limits mean "C2/C3 not supported".
const (
	noC2Latency = 101  // > 100 µs
	noC3Latency = 1001 // > 1000 µs
)

// IA-PC boot architecture flags (IAPC_BOOT_ARCH, §5.2.9.3).
const (
	bootArchLegacyDevices = 1 << 0 // ISA devices exist that the DSDT does not describe
	bootArch8042          = 1 << 1 // deliberately not set: see the package comment
	bootArchVGANotPresent = 1 << 2
)

// Fixed feature flags (FADT Flags, Table 5.10).
const (
	fadtFlagWBINVD      = 1 << 0  // WBINVD flushes and invalidates caches correctly
	fadtFlagProcC1      = 1 << 2  // C1 (HLT) works on all processors
	fadtFlagPwrButton   = 1 << 4  // no fixed-feature power button
	fadtFlagSlpButton   = 1 << 5  // no fixed-feature sleep button
	fadtFlagResetRegSup = 1 << 10 // RESET_REG/RESET_VALUE are valid
	fadtFlagHWReduced   = 1 << 20 // deliberately not set
)

// buildFADT encodes the Fixed ACPI Description Table, revision 6.4 (276
// bytes).
func buildFADT(cfg Config, dsdt, facs uint32) []byte {
	t := newTable("FACP", fadtRevision, fadtLen)
	le := binary.LittleEndian

	// The FACS is below 4 GiB, so it is named by the 32-bit FIRMWARE_CTRL.
	// The spec says that when one of FIRMWARE_CTRL and X_FIRMWARE_CTRL is
	// nonzero the other must be zero, so X_FIRMWARE_CTRL stays zero. (The
	// DSDT pair has no such rule, and both are filled in.)
	le.PutUint32(t[fadtFirmwareCtrl:], facs)
	le.PutUint64(t[fadtXFirmwareCtrl:], 0)
	le.PutUint32(t[fadtDSDT:], dsdt)
	le.PutUint64(t[fadtXDSDT:], uint64(dsdt))

	t[fadtPMProfile] = 0 // unspecified
	le.PutUint16(t[fadtSCIInt:], uint16(cfg.SCIIRQ))
	// SMI_CMD = 0 means the platform has no SMI mode-transition port: it
	// is in ACPI mode from power-on, so the OS never tries to "enable
	// ACPI" (ACPI_ENABLE/ACPI_DISABLE are then meaningless and zero).
	le.PutUint32(t[fadtSMICmd:], 0)

	// PM1a event and control blocks, the "fixed hardware" that carries
	// SLP_TYP/SLP_EN. The legacy 32-bit port + length form and the
	// X_ Generic Address Structure form describe the same registers;
	// ACPICA warns if they disagree in address or width.
	le.PutUint32(t[fadtPM1aEvtBlk:], uint32(cfg.PM1aEvtBlk))
	le.PutUint32(t[fadtPM1aCntBlk:], uint32(cfg.PM1aCntBlk))
	t[fadtPM1EvtLen] = pm1EvtLen
	t[fadtPM1CntLen] = pm1CntLen
	t[fadtPMTmrLen] = 0 // no ACPI PM timer; the guest uses kvm-clock/TSC
	putGAS(t[fadtXPM1aEvtBlk:], gasSystemIO, pm1EvtLen*8, 0, gasAccessWord, uint64(cfg.PM1aEvtBlk))
	putGAS(t[fadtXPM1aCntBlk:], gasSystemIO, pm1CntLen*8, 0, gasAccessWord, uint64(cfg.PM1aCntBlk))
	// GPE0/GPE1 blocks: none (all zero).

	le.PutUint16(t[fadtPLvl2Lat:], noC2Latency)
	le.PutUint16(t[fadtPLvl3Lat:], noC3Latency)

	le.PutUint16(t[fadtIAPCBootArch:], bootArchLegacyDevices|bootArchVGANotPresent)
	le.PutUint32(t[fadtFlags:], fadtFlagWBINVD|fadtFlagProcC1|fadtFlagPwrButton|
		fadtFlagSlpButton|fadtFlagResetRegSup)

	// Reset register: the spec requires an 8-bit register at bit offset 0.
	putGAS(t[fadtResetReg:], gasSystemIO, 8, 0, gasAccessByte, uint64(cfg.ResetPort))
	t[fadtResetValue] = cfg.ResetValue

	t[fadtMinorVersion] = fadtMinor
	copy(t[fadtHypervisorVend:fadtHypervisorVend+8], oemID)
	return finishTable(t)
}

// buildFACS encodes the Firmware ACPI Control Structure (§5.2.10). It has no
// checksum and no standard header, just signature and length. All other
// fields (hardware signature, waking vectors, global lock, flags) are zero:
// we support no sleep state from which to wake.
func buildFACS() []byte {
	f := make([]byte, facsLen)
	copy(f[0:4], "FACS")
	binary.LittleEndian.PutUint32(f[4:], facsLen)
	f[32] = facsVersion
	return f
}

// buildDSDT encodes the Differentiated System Description Table: a header
// followed by an AML definition block. Ours declares
//
//	Name (_S5, Package (4) { SlpTypS5, SlpTypS5, 0, 0 })
//	Scope (\_SB) { Device (PCI0) { ... } }
//
// \_S5_ is what the OS evaluates to learn the SLP_TYP values for the PM1a
// and PM1b control registers (elements 0 and 1; the other two are
// reserved). Without it Linux does not register ACPI poweroff at all.
//
// \_SB.PCI0 is the PCI root bridge; see pciRootObject.
func buildDSDT(cfg Config) ([]byte, error) {
	s5, err := s5Object(cfg.SlpTypS5)
	if err != nil {
		return nil, err
	}
	pci, err := pciRootObject()
	if err != nil {
		return nil, err
	}
	t := newTable("DSDT", dsdtRevision, headerLen)
	t = append(t, s5...)
	return finishTable(append(t, pci...)), nil
}

// The PCI root bridge's windows: the 32-bit MMIO hole from the end of low
// RAM (memory.MMIOHoleStart) up to just below the I/O APIC, and all of I/O
// space except the configuration mechanism #1 ports 0xCF8-0xCFF.
const (
	pciMMIOBase   = 0xC000_0000
	pciMMIOLimit  = 0xFEBF_FFFF
	pciConfigPort = 0xCF8
	pciConfigLen  = 8
)

// pciRootObject encodes the PCI root bridge, bus 0 of segment 0:
//
//	Scope (\_SB) {
//	    Device (PCI0) {
//	        Name (_HID, EisaId ("PNP0A03"))
//	        Name (_UID, 0)
//	        Name (_SEG, 0)
//	        Name (_BBN, 0)
//	        Name (_CRS, ResourceTemplate () {
//	            WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
//	                0, 0x00, 0xFF, 0, 0x100)
//	            IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
//	            WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
//	                0, 0x0000, 0x0CF7, 0, 0x0CF8)
//	            WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
//	                0, 0x0D00, 0xFFFF, 0, 0xF300)
//	            DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed,
//	                NonCacheable, ReadWrite, 0, 0xC0000000, 0xFEBFFFFF, 0, 0x3EC00000)
//	        })
//	    }
//	}
//
// With ACPI, x86 Linux finds PCI buses only through such PNP0A03 devices
// (drivers/acpi/pci_root.c): it creates bus _BBN of segment _SEG and scans
// it through configuration mechanism #1. The _CRS says which bus numbers
// and which I/O and memory ranges the bridge forwards to PCI; Linux
// allocates BARs from those windows. The IO descriptor for the
// configuration ports is the consumer resource QEMU also lists; Linux
// drops it from the windows (resource_is_pcicfg_ioport). There is no _ADR:
// a device should have a _HID or an _ADR, not both (ACPI 6.4 §6.1), and a
// root bridge is identified by its _HID. There is no _PRT (no INTx routing)
// and no _OSC: Linux then keeps PCIe native services off, which is right
// for a conventional PCI bus.
func pciRootObject() ([]byte, error) {
	hid, err := amlEisaID("PNP0A03")
	if err != nil {
		return nil, err
	}
	crs, err := amlResourceTemplate(
		rdWordBusNumber(0x00, 0xFF),
		rdIO(pciConfigPort, pciConfigPort, 1, pciConfigLen),
		rdWordIO(0x0000, pciConfigPort-1),
		rdWordIO(pciConfigPort+pciConfigLen, 0xFFFF),
		rdDWordMemory(pciMMIOBase, pciMMIOLimit),
	)
	if err != nil {
		return nil, err
	}
	var terms [][]byte
	for _, n := range []struct {
		name string
		obj  []byte
	}{
		{"_HID", hid},
		{"_UID", amlInteger(0)},
		{"_SEG", amlInteger(0)},
		{"_BBN", amlInteger(0)},
		{"_CRS", crs},
	} {
		b, err := amlName(n.name, n.obj)
		if err != nil {
			return nil, err
		}
		terms = append(terms, b)
	}
	dev, err := amlDevice("PCI0", terms...)
	if err != nil {
		return nil, err
	}
	return amlScope(`\_SB`, dev)
}

// s5Object encodes Name(_S5_, Package(4){slpTyp, slpTyp, 0, 0}).
func s5Object(slpTyp uint8) ([]byte, error) {
	pkg, err := amlPackage(
		amlInteger(uint64(slpTyp)), // SLP_TYPa, for PM1a_CNT
		amlInteger(uint64(slpTyp)), // SLP_TYPb, for PM1b_CNT (absent, but must be there)
		amlInteger(0),              // reserved
		amlInteger(0),              // reserved
	)
	if err != nil {
		return nil, err
	}
	return amlName("_S5_", pkg)
}

// MADT structure types (Table 5.21) and flags.
const (
	madtPCATCompat = 1 << 0 // dual 8259s present (the OS must mask them)

	madtTypeLocalAPIC = 0
	madtTypeIOAPIC    = 1
	madtTypeISO       = 2

	madtLocalAPICLen = 8
	madtIOAPICLen    = 12
	madtISOLen       = 10

	madtLAPICEnabled = 1 << 0

	// MPS INTI flags: polarity in bits 1:0, trigger mode in bits 3:2.
	mpsPolarityActiveHigh = 0b01
	mpsTriggerLevel       = 0b11 << 2
)

// buildMADT encodes the Multiple APIC Description Table (§5.2.12).
//
//	36 u32 local APIC address     40 u32 flags     44... entries
//
// Entries: one Processor Local APIC per vCPU (UID = APIC ID = index,
// enabled), one I/O APIC with its pins starting at GSI 0, and one Interrupt
// Source Override that makes the SCI level-triggered, active-high. There is
// deliberately no IRQ0 override; see the package comment.
func buildMADT(cfg Config, ioapicID uint8) []byte {
	le := binary.LittleEndian
	t := newTable("APIC", madtRevision, headerLen+8)
	le.PutUint32(t[36:], cfg.LAPICAddr)
	le.PutUint32(t[40:], madtPCATCompat)

	for i := 0; i < cfg.CPUs; i++ {
		t = append(t, madtTypeLocalAPIC, madtLocalAPICLen,
			byte(i), // ACPI processor UID
			byte(i)) // local APIC ID
		t = le.AppendUint32(t, madtLAPICEnabled)
	}

	t = append(t, madtTypeIOAPIC, madtIOAPICLen, ioapicID, 0 /* reserved */)
	t = le.AppendUint32(t, cfg.IOAPICAddr)
	t = le.AppendUint32(t, 0) // global system interrupt base

	t = append(t, madtTypeISO, madtISOLen,
		0,          // bus: ISA
		cfg.SCIIRQ) // source: the ISA IRQ
	t = le.AppendUint32(t, uint32(cfg.SCIIRQ)) // GSI: same number
	t = le.AppendUint16(t, mpsPolarityActiveHigh|mpsTriggerLevel)

	return finishTable(t)
}
