package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Base is the guest-physical address the blob returned by Build must be
// copied to. [Base, Base+MaxSize) is the legacy BIOS ROM area 0xE0000-0xFFFFF,
// which a kernel scans for the RSDP; the VMM must mark it reserved in e820.
const Base = 0xE0000

// MaxSize is the size of the window the tables must fit in.
const MaxSize = 0x20000

// Config describes the virtual machine the tables advertise.
type Config struct {
	// CPUs is the number of vCPUs, 1 to 255. They get ACPI processor UIDs
	// and local APIC IDs 0..CPUs-1, all enabled. (255 is the xAPIC
	// broadcast ID, so 254 is the highest usable local APIC ID.)
	CPUs int
	// LAPICAddr is the local APIC MMIO base, normally 0xfee00000.
	LAPICAddr uint32
	// IOAPICAddr is the I/O APIC MMIO base, normally 0xfec00000.
	IOAPICAddr uint32
	// IOAPICID is the I/O APIC's ID in the MADT. Zero means "CPUs", the
	// first ID after the local APICs. A 64-bit Linux only requires the
	// ID to be unique among I/O APICs (it never compares it with KVM's
	// IOAPIC ID register, which resets to 0), but an ID distinct from
	// every local APIC ID also satisfies the MP-era rule that all APIC
	// IDs are unique, which 32-bit kernels enforce. Consequently an
	// explicit ID of 0 cannot be requested.
	IOAPICID uint8
	// SCIIRQ is the ISA IRQ (and, through the identity routing, the GSI)
	// of the SCI, normally 9. It must be 1-15 and not 2 (the cascade).
	SCIIRQ uint8
	// PM1aEvtBlk is the I/O port of the 4-byte PM1a event block
	// (PM1_STS, PM1_EN), e.g. 0x600.
	PM1aEvtBlk uint16
	// PM1aCntBlk is the I/O port of the 2-byte PM1a control register,
	// e.g. 0x604.
	PM1aCntBlk uint16
	// SlpTypS5 is the SLP_TYP value (0-7) the guest writes to PM1_CNT to
	// enter S5; it is what \_S5_ reports. Normally 5.
	SlpTypS5 uint8
	// ResetPort is the 8-bit I/O port of the FADT reset register, normally
	// 0x64 (the i8042 command port).
	ResetPort uint16
	// ResetValue is written to ResetPort to reset, normally 0xFE (i8042
	// "pulse reset line").
	ResetValue uint8
}

// DefaultConfig returns the configuration the Config field comments call
// normal, for the given number of vCPUs.
func DefaultConfig(cpus int) Config {
	return Config{
		CPUs:       cpus,
		LAPICAddr:  0xfee00000,
		IOAPICAddr: 0xfec00000,
		SCIIRQ:     9,
		PM1aEvtBlk: 0x600,
		PM1aCntBlk: 0x604,
		SlpTypS5:   5,
		ResetPort:  0x64,
		ResetValue: 0xFE,
	}
}

// Identification written into every table header. The spec wants the FADT's
// OEM Table ID to match the one in the RSDT header; we simply use one ID for
// all tables.
const (
	oemID           = "KVMLAB"   // 6 bytes
	oemTableID      = "KVMLAB  " // 8 bytes, space padded as is customary
	oemRevision     = 1
	creatorID       = "KLAB" // 4 bytes: the "compiler" that made the tables
	creatorRevision = 1
)

// Table revisions from ACPI 6.4.
const (
	rsdpRevision = 2 // ACPI 2.0+ RSDP: has Length, XsdtAddress, extended checksum
	rsdtRevision = 1
	xsdtRevision = 1
	fadtRevision = 6 // major version; fadtMinor holds the minor
	fadtMinor    = 4 // "FADT Minor Version" for ACPI 6.4 (errata 0)
	facsVersion  = 2
	dsdtRevision = 2 // 2 = AML integers are 64 bits wide
	madtRevision = 5
)

// Sizes of the fixed-size structures.
const (
	headerLen = 36 // common System Description Table header
	rsdpLen   = 36
	fadtLen   = 276 // FADT revision 6
	facsLen   = 64
	gasLen    = 12 // Generic Address Structure
)

// Build returns the table blob to be copied to guest-physical Base, and the
// address of the RSDP within it (to put in boot_params.acpi_rsdp_addr).
func Build(cfg Config) (blob []byte, rsdp uint64, err error) {
	if err := validate(cfg); err != nil {
		return nil, 0, err
	}
	ioapicID := cfg.IOAPICID
	if ioapicID == 0 {
		ioapicID = uint8(cfg.CPUs)
	}

	// Tables without pointers come first, so their sizes are known when
	// the layout is chosen.
	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return nil, 0, err
	}
	madt := buildMADT(cfg, ioapicID)
	facs := buildFACS()

	// Layout. The RSDP goes first, at Base, which is 16-byte aligned as a
	// BIOS-area scan requires. Tables are 16-byte aligned for tidiness;
	// the FACS must be 64-byte aligned.
	var l layout
	rsdpOff := l.reserve(rsdpLen, 16)
	xsdtOff := l.reserve(headerLen+8*2, 16)
	rsdtOff := l.reserve(headerLen+4*2, 16)
	fadtOff := l.reserve(fadtLen, 16)
	facsOff := l.reserve(len(facs), 64)
	dsdtOff := l.reserve(len(dsdt), 16)
	madtOff := l.reserve(len(madt), 16)

	fadt := buildFADT(cfg, addr(dsdtOff), addr(facsOff))
	xsdt := buildXSDT(uint64(addr(fadtOff)), uint64(addr(madtOff)))
	rsdt := buildRSDT(addr(fadtOff), addr(madtOff))
	rsdpTab := buildRSDP(addr(rsdtOff), uint64(addr(xsdtOff)))

	l.fill(rsdpOff, rsdpTab)
	l.fill(xsdtOff, xsdt)
	l.fill(rsdtOff, rsdt)
	l.fill(fadtOff, fadt)
	l.fill(facsOff, facs)
	l.fill(dsdtOff, dsdt)
	l.fill(madtOff, madt)
	blob, err = l.bytes()
	if err != nil {
		return nil, 0, err
	}
	return blob, uint64(addr(rsdpOff)), nil
}

// validate rejects configurations that would produce tables a guest cannot
// use.
func validate(cfg Config) error {
	switch {
	case cfg.CPUs < 1 || cfg.CPUs > 255:
		return fmt.Errorf("acpi: CPUs = %d, want 1 to 255", cfg.CPUs)
	case cfg.LAPICAddr == 0:
		return errors.New("acpi: LAPICAddr is zero")
	case cfg.IOAPICAddr == 0:
		return errors.New("acpi: IOAPICAddr is zero")
	case cfg.SCIIRQ == 0 || cfg.SCIIRQ == 2 || cfg.SCIIRQ > 15:
		// The SCI is an ISA IRQ (it is named in the MADT's Interrupt
		// Source Override, whose source is an ISA IRQ); 0 is the timer
		// and 2 the 8259 cascade.
		return fmt.Errorf("acpi: SCIIRQ = %d, want an ISA IRQ 1-15 other than 2", cfg.SCIIRQ)
	case cfg.SlpTypS5 > 7:
		// SLP_TYP is the 3-bit field 12:10 of PM1_CNT.
		return fmt.Errorf("acpi: SlpTypS5 = %d does not fit the 3-bit SLP_TYP field", cfg.SlpTypS5)
	case cfg.PM1aEvtBlk == 0 || cfg.PM1aCntBlk == 0:
		// Both blocks are mandatory unless the platform is hardware
		// reduced, which ours is not.
		return errors.New("acpi: PM1aEvtBlk and PM1aCntBlk must be nonzero")
	case cfg.ResetPort == 0:
		return errors.New("acpi: ResetPort is zero")
	}
	type portRange struct {
		name        string
		first, size int
	}
	ranges := []portRange{
		{"PM1a event block", int(cfg.PM1aEvtBlk), pm1EvtLen},
		{"PM1a control block", int(cfg.PM1aCntBlk), pm1CntLen},
		{"reset register", int(cfg.ResetPort), 1},
	}
	for i, a := range ranges {
		if a.first+a.size > 0x10000 {
			return fmt.Errorf("acpi: %s at %#x runs past the end of I/O space", a.name, a.first)
		}
		for _, b := range ranges[i+1:] {
			if a.first < b.first+b.size && b.first < a.first+a.size {
				return fmt.Errorf("acpi: %s at %#x overlaps %s at %#x", a.name, a.first, b.name, b.first)
			}
		}
	}
	return nil
}

// addr converts an offset in the blob to a guest-physical address.
func addr(off int) uint32 { return uint32(Base + off) }

// layout places byte slices at aligned offsets of a blob that must not grow
// beyond MaxSize.
type layout struct {
	size  int
	parts []part
}

type part struct {
	off  int
	data []byte
}

// reserve allocates size bytes at the next offset aligned to align (a power
// of two; offsets are relative to Base, which is itself 64 KiB aligned).
func (l *layout) reserve(size, align int) int {
	off := (l.size + align - 1) &^ (align - 1)
	l.size = off + size
	return off
}

// fill records data to be written at off.
func (l *layout) fill(off int, data []byte) {
	l.parts = append(l.parts, part{off, data})
}

// bytes assembles the blob. Gaps between tables are zero.
func (l *layout) bytes() ([]byte, error) {
	if l.size > MaxSize {
		return nil, fmt.Errorf("acpi: tables need %d bytes, more than MaxSize (%d)", l.size, MaxSize)
	}
	blob := make([]byte, l.size)
	for _, p := range l.parts {
		copy(blob[p.off:], p.data)
	}
	return blob, nil
}

// checksum returns the byte that, stored in a zeroed checksum field, makes
// the bytes of b sum to zero modulo 256.
func checksum(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}

// newTable returns a table of the given total length with its header filled
// in, except for the checksum, which finishTable sets once the body is
// written.
func newTable(sig string, revision byte, length int) []byte {
	t := make([]byte, length)
	le := binary.LittleEndian
	copy(t[0:4], sig)
	le.PutUint32(t[4:], uint32(length))
	t[8] = revision
	// t[9] is the checksum.
	copy(t[10:16], oemID)
	copy(t[16:24], oemTableID)
	le.PutUint32(t[24:], oemRevision)
	copy(t[28:32], creatorID)
	le.PutUint32(t[32:], creatorRevision)
	return t
}

// finishTable sets the length (which may have grown since newTable) and the
// checksum of a table.
func finishTable(t []byte) []byte {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = checksum(t)
	return t
}

// Generic Address Structure (GAS) address spaces and access sizes.
const (
	gasSystemIO   = 1
	gasAccessByte = 1
	gasAccessWord = 2
)

// putGAS writes a Generic Address Structure: the ACPI 2.0+ way of naming a
// register, able to say which address space it is in and how wide it is.
func putGAS(b []byte, space, bitWidth, bitOffset, accessSize byte, address uint64) {
	b[0] = space
	b[1] = bitWidth
	b[2] = bitOffset
	b[3] = accessSize
	binary.LittleEndian.PutUint64(b[4:], address)
}
