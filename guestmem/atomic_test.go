package guestmem

import (
	"errors"
	"sync"
	"testing"
)

// atomicMem returns RAM at 0x1000 (64 bytes) and 0x2000 (6 bytes, so its
// last 2 bytes sit in a 4-byte word that runs past the region), filled with
// a known pattern, and the backing slices.
func atomicMem(t *testing.T) (*Memory, []byte, []byte) {
	t.Helper()
	// Go's allocator puts these fresh slices on 8-byte boundaries, so host
	// and guest alignment agree (TestAtomicHostMisaligned covers the case
	// where they do not).
	low := make([]byte, 64)
	high := make([]byte, 8)[:6]
	for i := range low {
		low[i] = byte(i)
	}
	for i := range high {
		high[i] = 0xa0 | byte(i)
	}
	m, err := FromRegions(Region{Base: 0x1000, Data: low}, Region{Base: 0x2000, Data: high})
	if err != nil {
		t.Fatal(err)
	}
	return m, low, high
}

func TestAtomicLoad(t *testing.T) {
	m, _, _ := atomicMem(t)
	tests := []struct {
		name    string
		size    int // 2 or 4
		gpa     GPA
		want    uint32
		wantErr error
	}{
		{"u16 at the start of a word is little-endian", 2, 0x1000, 0x0100, nil},
		{"u16 in the upper half of a word", 2, 0x1002, 0x0302, nil},
		{"u16 last of the region", 2, 0x103e, 0x3f3e, nil},
		{"u32 little-endian", 4, 0x1004, 0x07060504, nil},
		{"u32 last of the region", 4, 0x103c, 0x3f3e3d3c, nil},
		{"u16 odd address", 2, 0x1001, 0, ErrUnaligned},
		{"u32 address 2 mod 4", 4, 0x1002, 0, ErrUnaligned},
		{"u16 beyond the end of RAM", 2, 0x1040, 0, ErrOutOfRange},
		{"u32 in the hole", 4, 0x1800, 0, ErrOutOfRange},
		{"u32 straddling the end of a short region", 4, 0x2004, 0, ErrOutOfRange},
		{"u16 whose containing word leaves RAM", 2, 0x2006, 0, ErrOutOfRange},
		{"u16 in RAM but its word leaves the region", 2, 0x2004, 0, ErrOutOfRange},
		{"u16 in the short region, word inside", 2, 0x2002, 0xa3a2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got uint32
			var err error
			if tc.size == 2 {
				var v uint16
				v, err = m.LoadUint16(tc.gpa)
				got = uint32(v)
			} else {
				got, err = m.LoadUint32(tc.gpa)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("load%d(%#x) error = %v, want %v", tc.size*8, tc.gpa, err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("load%d(%#x) = %#x, want %#x", tc.size*8, tc.gpa, got, tc.want)
			}
			var ae *AccessError
			var al *AlignmentError
			if err != nil && !errors.As(err, &ae) && !errors.As(err, &al) {
				t.Fatalf("error %T is neither *AccessError nor *AlignmentError", err)
			}
		})
	}
}

func TestAtomicStore(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		gpa     GPA
		v       uint32
		want    []byte // low[0:8] after the store
		wantErr error
	}{
		{"u16 low half keeps the high half", 2, 0x1000, 0xbeef, []byte{0xef, 0xbe, 2, 3, 4, 5, 6, 7}, nil},
		{"u16 high half keeps the low half", 2, 0x1002, 0xbeef, []byte{0, 1, 0xef, 0xbe, 4, 5, 6, 7}, nil},
		{"u32", 4, 0x1004, 0xdeadbeef, []byte{0, 1, 2, 3, 0xef, 0xbe, 0xad, 0xde}, nil},
		{"u16 odd", 2, 0x1003, 1, []byte{0, 1, 2, 3, 4, 5, 6, 7}, ErrUnaligned},
		{"u32 unaligned", 4, 0x1006, 1, []byte{0, 1, 2, 3, 4, 5, 6, 7}, ErrUnaligned},
		{"u16 out of RAM", 2, 0x0ffe, 1, []byte{0, 1, 2, 3, 4, 5, 6, 7}, ErrOutOfRange},
		{"u32 out of RAM", 4, 0x1040, 1, []byte{0, 1, 2, 3, 4, 5, 6, 7}, ErrOutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, low, _ := atomicMem(t)
			var err error
			if tc.size == 2 {
				err = m.StoreUint16(tc.gpa, uint16(tc.v))
			} else {
				err = m.StoreUint32(tc.gpa, tc.v)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("store%d(%#x) error = %v, want %v", tc.size*8, tc.gpa, err, tc.wantErr)
			}
			if string(low[:8]) != string(tc.want) {
				t.Fatalf("after store%d(%#x, %#x) RAM = % x, want % x", tc.size*8, tc.gpa, tc.v, low[:8], tc.want)
			}
		})
	}
}

// TestAtomicStoreKeepsSlices: a store on a short region must not write the
// bytes of the containing word that lie past the region, even though they
// exist in the backing array.
func TestAtomicStoreKeepsSlices(t *testing.T) {
	m, _, high := atomicMem(t)
	if err := m.StoreUint16(0x2004, 0x1234); err == nil {
		t.Fatal("StoreUint16 on a word that leaves the region succeeded")
	}
	full := high[:8]
	if full[4] != 0xa4 || full[5] != 0xa5 || full[6] != 0 || full[7] != 0 {
		t.Fatalf("bytes around the refused store changed: % x", full)
	}
}

// TestAtomicHostMisaligned: a guest-aligned address whose host byte is not
// aligned (FromRegions over an odd subslice) is refused, not accessed
// through a misaligned pointer.
func TestAtomicHostMisaligned(t *testing.T) {
	buf := make([]byte, 33)
	m, err := FromRegions(Region{Base: 0, Data: buf[1:]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.LoadUint32(0); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("LoadUint32 on a misaligned host byte = %v, want ErrUnaligned", err)
	}
	if err := m.StoreUint16(0, 1); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("StoreUint16 on a misaligned host word = %v, want ErrUnaligned", err)
	}
}

// TestAtomicHalvesConcurrently: two goroutines own one half each of a 32-bit
// word and store to it in turn; neither may ever lose the other's value,
// which a read-modify-write without compare-and-swap would do.
func TestAtomicHalvesConcurrently(t *testing.T) {
	m, _, _ := atomicMem(t)
	const n = 20000
	var wg sync.WaitGroup
	for _, gpa := range []GPA{0x1010, 0x1012} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := m.StoreUint16(gpa, uint16(i)); err != nil {
					t.Error(err)
					return
				}
				if v, err := m.LoadUint16(gpa); err != nil || v != uint16(i) {
					t.Errorf("LoadUint16(%#x) = %d, %v right after storing %d", gpa, v, err, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	if v, err := m.LoadUint32(0x1010); err != nil || v != uint32(n-1)<<16|uint32(n-1) {
		t.Fatalf("word = %#x, %v; want both halves %d", v, err, n-1)
	}
}
