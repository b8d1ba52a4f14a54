package guestmem

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

func TestLayout(t *testing.T) {
	type region = struct{ Base, Size uint64 }
	tests := []struct {
		name string
		size uint64
		want []region
	}{
		{"one byte is one low region", 1, []region{{0, 1}}},
		{"512 MiB fits below the hole", 512 * mib, []region{{0, 512 * mib}}},
		{"one byte below 3 GiB", 3*gib - 1, []region{{0, 3*gib - 1}}},
		{"exactly 3 GiB fills the low region, nothing above", 3 * gib, []region{{0, 3 * gib}}},
		{"3 GiB + 1 puts one byte at 4 GiB", 3*gib + 1, []region{{0, 3 * gib}, {4 * gib, 1}}},
		{"4 GiB is 3 GiB low + 1 GiB at 4 GiB", 4 * gib, []region{{0, 3 * gib}, {4 * gib, 1 * gib}}},
		{"16 GiB is 3 GiB low + 13 GiB high", 16 * gib, []region{{0, 3 * gib}, {4 * gib, 13 * gib}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Layout(tc.size)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("Layout(%#x) = %#x, want %#x", tc.size, got, tc.want)
			}
			var total uint64
			for _, r := range got {
				total += r.Size
				// Nothing may land in the MMIO hole.
				if r.Base < uint64(HighStart) && r.Base+r.Size > uint64(MMIOHoleStart) {
					t.Errorf("region %#x+%#x reaches into the MMIO hole", r.Base, r.Size)
				}
			}
			if total != tc.size {
				t.Errorf("regions add up to %#x bytes, want %#x", total, tc.size)
			}
		})
	}
}

func TestFromRegions(t *testing.T) {
	buf := func(n int) []byte { return make([]byte, n) }
	tests := []struct {
		name    string
		regions []Region
		wantErr bool
	}{
		{"no regions", nil, false},
		{"one region", []Region{{0, buf(16)}}, false},
		{"sorted with a gap", []Region{{0, buf(16)}, {0x100, buf(16)}}, false},
		{"adjacent regions", []Region{{0, buf(16)}, {16, buf(16)}}, false},
		{"an empty region", []Region{{0x10, nil}}, false},
		{"region ending just below 2^64", []Region{{^GPA(0) - 16, buf(16)}}, false},
		{"overlapping by one byte", []Region{{0, buf(16)}, {15, buf(16)}}, true},
		{"same base twice", []Region{{0x100, buf(1)}, {0x100, buf(1)}}, true},
		{"out of order", []Region{{0x100, buf(16)}, {0, buf(16)}}, true},
		{"region ending exactly at 2^64 wraps", []Region{{^GPA(0) - 15, buf(16)}}, true},
		{"region wrapping past 2^64", []Region{{^GPA(0), buf(2)}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := FromRegions(tc.regions...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("FromRegions = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && len(m.Regions()) != len(tc.regions) {
				t.Errorf("Regions() has %d entries, want %d", len(m.Regions()), len(tc.regions))
			}
		})
	}
}

func TestFromRegionsCopiesTheList(t *testing.T) {
	rs := []Region{{0, make([]byte, 8)}}
	m, err := FromRegions(rs...)
	if err != nil {
		t.Fatal(err)
	}
	rs[0].Base = 0x1000
	if m.Regions()[0].Base != 0 {
		t.Error("changing the caller's list moved a region")
	}
	if m.Close() != nil {
		t.Error("Close of a Memory over caller slices failed")
	}
}

// gapped is guest RAM of two 4 KiB regions, [0, 0x1000) and [0x3000,
// 0x4000), with an 8 KiB hole between them. Each byte holds its own
// guest-physical address's low byte plus one bit telling the regions apart,
// so a test can tell where a slice points.
func gapped(t *testing.T) (*Memory, []byte, []byte) {
	t.Helper()
	low, high := make([]byte, 0x1000), make([]byte, 0x1000)
	for i := range low {
		low[i] = byte(i) & 0x7f
		high[i] = byte(i) | 0x80
	}
	m, err := FromRegions(Region{0, low}, Region{0x3000, high})
	if err != nil {
		t.Fatal(err)
	}
	return m, low, high
}

func TestSlice(t *testing.T) {
	tests := []struct {
		name  string
		gpa   GPA
		n     uint64
		ok    bool
		first byte // the first byte of the slice, when n > 0
	}{
		{"start of RAM", 0, 16, true, 0x00},
		{"whole low region", 0, 0x1000, true, 0x00},
		{"ends exactly at the end of a region", 0xff0, 0x10, true, 0x70},
		{"one byte past the end of a region", 0xff0, 0x11, false, 0},
		{"starts in the hole", 0x2000, 1, false, 0},
		{"starts one byte before the hole", 0xfff, 2, false, 0},
		{"straddles the hole into the next region", 0x2fff, 2, false, 0},
		{"spans the hole from one region to the other", 0x800, 0x3000, false, 0},
		{"start of the high region", 0x3000, 4, true, 0x80},
		{"last byte of RAM", 0x3fff, 1, true, 0xff},
		{"past the end of RAM", 0x4000, 1, false, 0},
		{"far past the end of RAM", 1 << 40, 1, false, 0},
		{"gpa+n wraps past 2^64", ^GPA(0), 2, false, 0},
		{"huge length wraps", 0x10, ^uint64(0), false, 0},
		{"gpa+n is exactly 2^64", 1, ^uint64(0), false, 0},
		{"huge length that does not wrap", 0, 1 << 62, false, 0},
		{"zero length inside RAM", 0x123, 0, true, 0},
		{"zero length at the last byte of a region", 0xfff, 0, true, 0},
		{"zero length at the end of a region is not RAM", 0x1000, 0, false, 0},
		{"zero length at the end of RAM is not RAM", 0x4000, 0, false, 0},
		{"zero length in the hole", 0x2000, 0, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := gapped(t)
			s, err := m.Slice(tc.gpa, tc.n)
			if !tc.ok {
				checkAccessError(t, err, "slice", tc.gpa, tc.n)
				if s != nil {
					t.Errorf("failed Slice returned %d bytes", len(s))
				}
				return
			}
			if err != nil {
				t.Fatalf("Slice(%#x, %#x) = %v", tc.gpa, tc.n, err)
			}
			if uint64(len(s)) != tc.n || uint64(cap(s)) != tc.n {
				t.Fatalf("Slice(%#x, %#x) has len %d cap %d; want both %d (no access beyond the range through append or reslicing)", tc.gpa, tc.n, len(s), cap(s), tc.n)
			}
			if tc.n > 0 && s[0] != tc.first {
				t.Errorf("first byte %#x, want %#x", s[0], tc.first)
			}
		})
	}
}

func checkAccessError(t *testing.T, err error, op string, gpa GPA, n uint64) {
	t.Helper()
	if !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("%s at %#x of %#x bytes: err = %v, want ErrOutOfRange", op, uint64(gpa), n, err)
	}
	var ae *AccessError
	if !errors.As(err, &ae) {
		t.Fatalf("err %T is not an *AccessError", err)
	}
	if ae.Op != op || ae.GPA != gpa || ae.Len != n {
		t.Errorf("AccessError = %+v, want op %q gpa %#x len %#x", *ae, op, uint64(gpa), n)
	}
}

func TestReadWriteAt(t *testing.T) {
	tests := []struct {
		name string
		gpa  GPA
		n    int
		ok   bool
	}{
		{"inside the low region", 0x100, 8, true},
		{"up to the end of the low region", 0xff8, 8, true},
		{"inside the high region", 0x3800, 64, true},
		{"up to the end of RAM", 0x3ffc, 4, true},
		{"zero bytes inside RAM", 0x10, 0, true},
		{"straddling the end of the low region", 0xffc, 8, false},
		{"straddling into the high region", 0x2ffc, 8, false},
		{"in the hole", 0x1800, 4, false},
		{"past the end of RAM", 0x3ffc, 5, false},
		{"wrapping", ^GPA(0) - 1, 4, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, low, high := gapped(t)
			before := append(append([]byte(nil), low...), high...)
			p := make([]byte, tc.n)
			for i := range p {
				p[i] = 0x5a ^ byte(i)
			}
			err := m.WriteAt(p, tc.gpa)
			if !tc.ok {
				checkAccessError(t, err, "write", tc.gpa, uint64(tc.n))
				if after := append(append([]byte(nil), low...), high...); !bytes.Equal(before, after) {
					t.Error("a failed WriteAt changed guest RAM (partial write)")
				}
				q := bytes.Repeat([]byte{0xcc}, tc.n)
				checkAccessError(t, m.ReadAt(q, tc.gpa), "read", tc.gpa, uint64(tc.n))
				if !bytes.Equal(q, bytes.Repeat([]byte{0xcc}, tc.n)) {
					t.Error("a failed ReadAt filled the buffer")
				}
				return
			}
			if err != nil {
				t.Fatalf("WriteAt(%d bytes at %#x) = %v", tc.n, tc.gpa, err)
			}
			q := make([]byte, tc.n)
			if err := m.ReadAt(q, tc.gpa); err != nil {
				t.Fatalf("ReadAt = %v", err)
			}
			if !bytes.Equal(p, q) {
				t.Errorf("read back %x, wrote %x", q, p)
			}
			// The bytes landed in the backing array at gpa - base.
			var backing []byte
			off := int(tc.gpa)
			if tc.gpa >= 0x3000 {
				backing, off = high, int(tc.gpa-0x3000)
			} else {
				backing = low
			}
			if !bytes.Equal(backing[off:off+tc.n], p) {
				t.Errorf("backing array holds %x at %#x, want %x", backing[off:off+tc.n], off, p)
			}
		})
	}
}

func TestContainsAndSize(t *testing.T) {
	m, _, _ := gapped(t)
	if m.Size() != 0x2000 {
		t.Errorf("Size() = %#x, want 0x2000", m.Size())
	}
	for _, tc := range []struct {
		gpa  GPA
		want bool
	}{{0, true}, {0xfff, true}, {0x1000, false}, {0x2fff, false}, {0x3000, true}, {0x3fff, true}, {0x4000, false}, {^GPA(0), false}} {
		if got := m.Contains(tc.gpa); got != tc.want {
			t.Errorf("Contains(%#x) = %v, want %v", uint64(tc.gpa), got, tc.want)
		}
	}
}

func TestAccessErrorMessage(t *testing.T) {
	err := &AccessError{Op: "read", GPA: 0xc000_0000, Len: 4}
	want := "guest memory read of 4 bytes at 0xc0000000: guest address not backed by RAM"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestNewMapsRAM(t *testing.T) {
	page := uint64(unix.Getpagesize())
	m, err := New(4 * kib)
	if err != nil {
		t.Fatalf("New(4096): %v", err)
	}
	defer m.Close()
	rs := m.Regions()
	if len(rs) != 1 || rs[0].Base != 0 || rs[0].Size() != 4*kib || cap(rs[0].Data) != 4*kib {
		t.Fatalf("Regions() = %d regions, first %#x+%#x; want one at 0 of 4 KiB", len(rs), rs[0].Base, rs[0].Size())
	}
	if m.Size() != 4*kib {
		t.Errorf("Size() = %d, want 4096", m.Size())
	}
	// Fresh anonymous memory is zero and, until touched, not resident.
	if n, err := m.Resident(); err != nil || n != 0 {
		t.Errorf("Resident() before any access = %d, %v; want 0", n, err)
	}
	b := make([]byte, 16)
	if err := m.ReadAt(b, 0xff0); err != nil || !bytes.Equal(b, make([]byte, 16)) {
		t.Errorf("ReadAt of fresh RAM = %x, %v; want zeros", b, err)
	}
	if err := m.WriteAt([]byte("kvmlab"), 0x10); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Resident(); err != nil || n != page {
		t.Errorf("Resident() after a write = %d, %v; want one page (%d)", n, err, page)
	}
	if err := m.WriteAt([]byte{1}, 4*kib); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteAt past the end = %v, want ErrOutOfRange", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if m.Regions() != nil || m.Size() != 0 {
		t.Error("Close left regions behind")
	}
	if n, err := m.Resident(); n != 0 || err != nil {
		t.Errorf("Resident() after Close = %d, %v; want 0, nil", n, err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := m.WriteAt([]byte{1}, 0); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteAt after Close = %v, want ErrOutOfRange", err)
	}
}

func TestNewRejectsBadSizes(t *testing.T) {
	for _, size := range []uint64{0, 1<<46 + 1, ^uint64(0)} {
		if m, err := New(size); err == nil {
			m.Close()
			t.Errorf("New(%#x) succeeded", size)
		}
	}
}

// TestNewAlignsForHugePages: guest RAM starts at a 2 MiB boundary of the
// host's address space whatever its size, so that KVM may map it with 2 MiB
// pages (mapRAM), and sizes that are not whole pages map and unmap too.
func TestNewAlignsForHugePages(t *testing.T) {
	for _, size := range []uint64{4 * kib, 5000, 3 * mib, 64*mib + 4*kib} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			m, err := New(size)
			if err != nil {
				t.Fatalf("New(%d): %v", size, err)
			}
			rs := m.Regions()
			// reflect's Pointer reads the slice's data address
			// without package unsafe.
			addr := reflect.ValueOf(rs[0].Data).Pointer()
			if addr%hugePageSize != 0 {
				t.Errorf("RAM of %d bytes mapped at %#x: not on a 2 MiB boundary (%#x past one)", size, addr, addr%hugePageSize)
			}
			if m.Size() != size {
				t.Errorf("Size() = %d, want %d", m.Size(), size)
			}
			if err := m.WriteAt([]byte{0xaa}, GPA(size-1)); err != nil {
				t.Errorf("writing the last byte: %v", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}
