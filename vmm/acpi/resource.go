package acpi

import "encoding/binary"

// This file encodes ACPI resource descriptors (ACPI 6.4 §6.4), the byte
// format of a ResourceTemplate such as a device's _CRS. A template is a
// sequence of descriptors ended by an End Tag, wrapped in an AML Buffer.
//
// Only the descriptors a PCI root bridge's _CRS needs are here:
//
//	IO                      small item 0x47, 8 bytes      (§6.4.2.5)
//	End Tag                 small item 0x79, 2 bytes      (§6.4.2.9)
//	DWord Address Space     large item 0x87, 26 bytes     (§6.4.3.5.2)
//	Word Address Space      large item 0x88, 16 bytes     (§6.4.3.5.3)
//
// The optional ResourceSource fields of the address space descriptors are
// omitted.

// Descriptor tags.
const (
	rdIOPort    = 0x47 // small item, type 0x08, length 7
	rdEndTag    = 0x79 // small item, type 0x0F, length 1
	rdDWordAddr = 0x87 // large item
	rdWordAddr  = 0x88 // large item
)

// Address space descriptor resource types (_RT).
const (
	rdSpaceMemory = 0
	rdSpaceIO     = 1
	rdSpaceBus    = 2
)

// Address space descriptor general flags. Producer (bit 0 clear) and
// positive decode (bit 1 clear) are the zero values.
const (
	rdMinFixed = 1 << 2 // _MIF: the minimum address is fixed
	rdMaxFixed = 1 << 3 // _MAF: the maximum address is fixed
)

// Type-specific flags.
const (
	rdIOEntireRange = 3 // I/O: _RNG = both ISA and non-ISA ranges
	rdMemReadWrite  = 1 // memory: _RW = read-write; _MEM = 0, non-cacheable
	rdIODecode16    = 1 // IO descriptor: decodes all 16 address bits
)

// rdWordAddress encodes a Word Address Space Descriptor for a producer
// range [lo, hi] with fixed minimum and maximum, no translation and
// granularity 0 (as iasl writes WordBusNumber and WordIO with
// ResourceProducer, MinFixed, MaxFixed, PosDecode).
//
//	0 0x88  1-2 length (13)  3 _RT  4 general flags  5 type flags
//	6-7 _GRA  8-9 _MIN  10-11 _MAX  12-13 _TRA  14-15 _LEN
func rdWordAddress(space, typeFlags byte, lo, hi uint16) []byte {
	le := binary.LittleEndian
	b := []byte{rdWordAddr, 13, 0, space, rdMinFixed | rdMaxFixed, typeFlags}
	b = le.AppendUint16(b, 0) // granularity
	b = le.AppendUint16(b, lo)
	b = le.AppendUint16(b, hi)
	b = le.AppendUint16(b, 0) // translation offset
	return le.AppendUint16(b, hi-lo+1)
}

// rdWordBusNumber encodes WordBusNumber(ResourceProducer, MinFixed,
// MaxFixed, PosDecode, 0, lo, hi, 0, hi-lo+1).
func rdWordBusNumber(lo, hi uint16) []byte {
	return rdWordAddress(rdSpaceBus, 0, lo, hi)
}

// rdWordIO encodes WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode,
// EntireRange, 0, lo, hi, 0, hi-lo+1).
func rdWordIO(lo, hi uint16) []byte {
	return rdWordAddress(rdSpaceIO, rdIOEntireRange, lo, hi)
}

// rdDWordMemory encodes DWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, NonCacheable, ReadWrite, 0, lo, hi, 0, hi-lo+1).
//
//	0 0x87  1-2 length (23)  3 _RT  4 general flags  5 type flags
//	6-9 _GRA  10-13 _MIN  14-17 _MAX  18-21 _TRA  22-25 _LEN
func rdDWordMemory(lo, hi uint32) []byte {
	le := binary.LittleEndian
	b := []byte{rdDWordAddr, 23, 0, rdSpaceMemory, rdMinFixed | rdMaxFixed, rdMemReadWrite}
	b = le.AppendUint32(b, 0) // granularity
	b = le.AppendUint32(b, lo)
	b = le.AppendUint32(b, hi)
	b = le.AppendUint32(b, 0) // translation offset
	return le.AppendUint32(b, hi-lo+1)
}

// rdIO encodes IO(Decode16, lo, hi, align, length).
//
//	0 0x47  1 information (bit 0: 16-bit decode)  2-3 _MIN  4-5 _MAX
//	6 _ALN  7 _LEN
func rdIO(lo, hi uint16, align, length byte) []byte {
	le := binary.LittleEndian
	b := []byte{rdIOPort, rdIODecode16}
	b = le.AppendUint16(b, lo)
	b = le.AppendUint16(b, hi)
	return append(b, align, length)
}

// amlResourceTemplate encodes ResourceTemplate(){descriptors...}: the
// descriptors followed by an End Tag, as an AML Buffer. The End Tag's
// checksum is 0, which means "treat as valid" (iasl writes 0 too).
func amlResourceTemplate(descriptors ...[]byte) ([]byte, error) {
	var data []byte
	for _, d := range descriptors {
		data = append(data, d...)
	}
	return amlBuffer(append(data, rdEndTag, 0))
}
