package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// This file is a tiny encoder for AML, the byte code of the DSDT (ACPI 6.4,
// chapter 20, "ACPI Machine Language Specification"). It knows just enough
// grammar to declare named data objects, scopes and devices:
//
//	DefName     := NameOp NameString DataRefObject
//	DefPackage  := PackageOp PkgLength NumElements PackageElementList
//	DefBuffer   := BufferOp PkgLength BufferSize ByteList
//	DefScope    := ScopeOp PkgLength NameString TermList
//	DefDevice   := DeviceOp PkgLength NameString TermList
//	NameString  := RootChar NamePath | PrefixPath NamePath
//	NamePath    := NameSeg | DualNamePath | MultiNamePath | NullName
//	Integer     := ZeroOp | OneOp | BytePrefix ByteData | WordPrefix ... | QWordPrefix ...
//
// Each encoder returns the complete byte encoding of one term, so terms can be
// nested by passing one's output to another.

// AML opcodes and prefixes used here.
const (
	amlZeroOp          = 0x00
	amlOneOp           = 0x01
	amlNameOp          = 0x08
	amlBytePrefix      = 0x0A
	amlWordPrefix      = 0x0B
	amlDWordPrefix     = 0x0C
	amlQWordPrefix     = 0x0E
	amlScopeOp         = 0x10
	amlBufferOp        = 0x11
	amlPackageOp       = 0x12
	amlExtOpPrefix     = 0x5B
	amlDeviceOp        = 0x82 // after amlExtOpPrefix
	amlDualNamePrefix  = 0x2E
	amlMultiNamePrefix = 0x2F
	amlNullName        = 0x00
	amlRootChar        = '\\'
	amlParentPrefix    = '^'
)

// amlMaxPkgLength is the largest value a PkgLength can encode: 4 bits in the
// lead byte plus 8 bits in each of up to three following bytes.
const amlMaxPkgLength = 1<<28 - 1

// amlPkgLength encodes the PkgLength of a package whose body (everything that
// follows the PkgLength itself) is bodyLen bytes long.
//
// The encoded value counts its own bytes too, which is why the encoding size
// must be chosen before the value is known. The forms are:
//
//	1 byte:  bits 7-6 = 00, bits 5-0 = length            (length <= 0x3F)
//	2 bytes: bits 7-6 = 01, bits 3-0 = length bits 3-0,  (length <= 0xFFF)
//	         next byte = length bits 11-4
//	3 bytes: bits 7-6 = 10, ... next two bytes = bits 19-4 (length <= 0xFFFFF)
//	4 bytes: bits 7-6 = 11, ... next three bytes = bits 27-4
//
// In the multi-byte forms bits 5-4 of the lead byte are reserved and zero.
func amlPkgLength(bodyLen int) ([]byte, error) {
	if bodyLen < 0 {
		return nil, fmt.Errorf("aml: negative package body length %d", bodyLen)
	}
	if total := bodyLen + 1; total <= 0x3F {
		return []byte{byte(total)}, nil
	}
	for n := 2; n <= 4; n++ {
		total := bodyLen + n
		if total >= 1<<(4+8*(n-1)) {
			continue // does not fit in n bytes; try a longer form
		}
		b := make([]byte, n)
		b[0] = byte(n-1)<<6 | byte(total&0x0F)
		for i := 1; i < n; i++ {
			b[i] = byte(total >> (4 + 8*(i-1)))
		}
		return b, nil
	}
	return nil, fmt.Errorf("aml: package body of %d bytes exceeds the PkgLength limit of %d", bodyLen, amlMaxPkgLength)
}

// amlNameSeg encodes one four-character NameSeg. Shorter names are padded
// with '_' as ASL does ("_S5" is "_S5_").
func amlNameSeg(seg string) ([]byte, error) {
	if len(seg) == 0 || len(seg) > 4 {
		return nil, fmt.Errorf("aml: name segment %q must be 1 to 4 characters", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		lead := c == '_' || (c >= 'A' && c <= 'Z')
		if !lead && (i == 0 || c < '0' || c > '9') {
			return nil, fmt.Errorf("aml: invalid character %q in name segment %q", c, seg)
		}
	}
	return []byte(seg + strings.Repeat("_", 4-len(seg))), nil
}

// amlNameString encodes a name path such as "_S5_", "\_SB.PCI0" or "^FOO".
// A leading '\' anchors the path at the namespace root; each leading '^'
// goes up one scope. Segments are separated by '.'. A path of only prefix
// characters (e.g. "\") encodes the NullName.
func amlNameString(path string) ([]byte, error) {
	var out []byte
	rest := path
	switch {
	case strings.HasPrefix(rest, `\`):
		out = append(out, amlRootChar)
		rest = rest[1:]
	default:
		for strings.HasPrefix(rest, "^") {
			out = append(out, amlParentPrefix)
			rest = rest[1:]
		}
	}
	if rest == "" {
		return append(out, amlNullName), nil
	}
	segs := strings.Split(rest, ".")
	switch {
	case len(segs) == 2:
		out = append(out, amlDualNamePrefix)
	case len(segs) > 2:
		if len(segs) > 255 {
			return nil, fmt.Errorf("aml: name path %q has more than 255 segments", path)
		}
		out = append(out, amlMultiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		b, err := amlNameSeg(s)
		if err != nil {
			return nil, fmt.Errorf("aml: name path %q: %w", path, err)
		}
		out = append(out, b...)
	}
	return out, nil
}

// amlInteger encodes v in the shortest form, as an ASL compiler would: the
// one-byte ZeroOp and OneOp for 0 and 1, otherwise a Byte/Word/DWord/QWord
// prefix followed by the little-endian value. (OnesOp is not used: its value
// depends on the DSDT revision.)
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xFF:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xFFFF:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xFFFFFFFF:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, uint32(v))
	default:
		return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
	}
}

// amlPackage encodes Package(n){elements...}. Each element must already be
// an encoded data object (for example from amlInteger). NumElements is a
// single byte, so at most 255 elements fit (VarPackageOp, not needed here,
// lifts that limit).
func amlPackage(elements ...[]byte) ([]byte, error) {
	if len(elements) > 255 {
		return nil, fmt.Errorf("aml: package of %d elements exceeds 255", len(elements))
	}
	body := []byte{byte(len(elements))}
	for _, e := range elements {
		if len(e) == 0 {
			return nil, errors.New("aml: empty package element")
		}
		body = append(body, e...)
	}
	pl, err := amlPkgLength(len(body))
	if err != nil {
		return nil, err
	}
	out := append([]byte{amlPackageOp}, pl...)
	return append(out, body...), nil
}

// amlName encodes Name(path, object): it binds an encoded data object to a
// name in the current scope (the root scope, at the top level of a DSDT).
func amlName(path string, object []byte) ([]byte, error) {
	if len(object) == 0 {
		return nil, errors.New("aml: Name with empty object")
	}
	ns, err := amlNameString(path)
	if err != nil {
		return nil, err
	}
	out := append([]byte{amlNameOp}, ns...)
	return append(out, object...), nil
}

// amlPkg encodes op, then a PkgLength, then body: the shape shared by every
// term whose length is given by a PkgLength (Scope, Device, Buffer, ...).
func amlPkg(op []byte, body []byte) ([]byte, error) {
	pl, err := amlPkgLength(len(body))
	if err != nil {
		return nil, err
	}
	out := append(append([]byte{}, op...), pl...)
	return append(out, body...), nil
}

// amlNamedPkg encodes op PkgLength NameString TermList, the form of Scope
// and Device. Each term must already be encoded (for example by amlName).
func amlNamedPkg(op []byte, path string, terms ...[]byte) ([]byte, error) {
	body, err := amlNameString(path)
	if err != nil {
		return nil, err
	}
	for _, t := range terms {
		if len(t) == 0 {
			return nil, errors.New("aml: empty term")
		}
		body = append(body, t...)
	}
	return amlPkg(op, body)
}

// amlScope encodes Scope(path){terms...}: it opens an existing namespace
// node (such as the predefined \_SB) and defines terms inside it.
func amlScope(path string, terms ...[]byte) ([]byte, error) {
	return amlNamedPkg([]byte{amlScopeOp}, path, terms...)
}

// amlDevice encodes Device(path){terms...}: it creates a device node.
func amlDevice(path string, terms ...[]byte) ([]byte, error) {
	return amlNamedPkg([]byte{amlExtOpPrefix, amlDeviceOp}, path, terms...)
}

// amlBuffer encodes Buffer(){data...}: a buffer whose size is the length
// of data, given, as iasl does, as the shortest integer.
func amlBuffer(data []byte) ([]byte, error) {
	body := append(amlInteger(uint64(len(data))), data...)
	return amlPkg([]byte{amlBufferOp}, body)
}

// amlEisaID encodes EisaId("PNP0A03"): a seven-character EISA ID (three
// upper-case letters and four hex digits) compressed into a 32-bit integer.
// The letters take five bits each ('A' = 1) in bits 14-0 of the first two
// bytes, big-endian; the hex digits follow, one nibble each, in the next two
// bytes. It is always a DWord, as iasl emits it.
func amlEisaID(id string) ([]byte, error) {
	if len(id) != 7 {
		return nil, fmt.Errorf("aml: EISA ID %q must be 7 characters", id)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return nil, fmt.Errorf("aml: EISA ID %q: %q is not an upper-case letter", id, c)
		}
		v = v<<5 | uint32(c-'A'+1)
	}
	for i := 3; i < 7; i++ {
		c := id[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return nil, fmt.Errorf("aml: EISA ID %q: %q is not an upper-case hex digit", id, c)
		}
		v = v<<4 | uint32(d)
	}
	// v now holds the ID as a big-endian number; the integer is its
	// bytes in that order, read little-endian.
	be := binary.BigEndian.AppendUint32(nil, v)
	return append([]byte{amlDWordPrefix}, be...), nil
}
