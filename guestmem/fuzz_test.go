package guestmem

import (
	"bytes"
	"errors"
	"math/bits"
	"testing"
)

// FuzzAccess checks Slice, ReadAt and WriteAt against a brute-force model on
// two regions with a gap (or none) between them, at fuzzed bases and sizes.
// Both regions are carved out of one backing array, with sentinel bytes
// before, between and after them. The access must succeed exactly when the n
// bytes at gpa lie inside one region (a zero-length access must still start
// in RAM); a returned slice must have len and cap n and start at the
// matching byte of the backing array; a failed access is an *AccessError
// wrapping ErrOutOfRange; and no access ever touches a sentinel.
func FuzzAccess(f *testing.F) {
	f.Add(uint64(0), uint8(64), uint64(32), uint8(64), uint64(60), uint64(8))                                // straddle the end of low
	f.Add(uint64(0), uint8(64), uint64(32), uint8(64), uint64(96), uint64(64))                               // exactly the high region
	f.Add(uint64(0x1000), uint8(64), uint64(0), uint8(64), uint64(0x1030), uint64(32))                       // adjacent regions: still two
	f.Add(^uint64(0)-200, uint8(64), uint64(8), uint8(64), ^uint64(0)-10, uint64(20))                        // near the top, wrapping access
	f.Add(uint64(0), uint8(0), uint64(0), uint8(64), uint64(0), uint64(0))                                   // empty low region
	f.Add(uint64(0xc000_0000-64), uint8(64), uint64(0x4000_0000), uint8(64), uint64(0xc000_0000), uint64(0)) // zero length at the hole
	f.Fuzz(func(t *testing.T, lowBase uint64, lowSize uint8, gap uint64, highSize uint8, gpa uint64, n uint64) {
		const (
			sentinel = 0xa5
			lowAt    = 16  // index of the low region in backing
			highAt   = 112 // index of the high region in backing
		)
		ls, hs := uint64(lowSize%65), uint64(highSize%65)
		lowEnd, c1 := bits.Add64(lowBase, ls, 0)
		highBase, c2 := bits.Add64(lowEnd, gap, 0)
		_, c3 := bits.Add64(highBase, hs, 0)
		backing := bytes.Repeat([]byte{sentinel}, 192)
		for i := uint64(0); i < ls; i++ {
			backing[lowAt+i] = byte(i) & 0x3f
		}
		for i := uint64(0); i < hs; i++ {
			backing[highAt+i] = byte(i)&0x3f | 0x40
		}
		regions := []Region{
			{GPA(lowBase), backing[lowAt : lowAt+ls : lowAt+ls]},
			{GPA(highBase), backing[highAt : highAt+hs : highAt+hs]},
		}
		m, err := FromRegions(regions...)
		if c2 != 0 {
			return // the high base itself is not expressible
		}
		// FromRegions must refuse a region running past 2^64 - 1.
		if wantErr := c1 != 0 || c3 != 0; wantErr != (err != nil) {
			t.Fatalf("FromRegions(%#x+%d, %#x+%d) = %v, want error %v", lowBase, ls, highBase, hs, err, wantErr)
		}
		if err != nil {
			return
		}

		// model says which backing index gpa maps to, if the n bytes
		// there all lie in one region.
		model := func(gpa, n uint64) (int, bool) {
			for i, r := range regions {
				base := uint64(r.Base)
				if base <= gpa && gpa-base < r.Size() && n <= r.Size()-(gpa-base) {
					return []int{lowAt, highAt}[i] + int(gpa-base), true
				}
			}
			return -1, false
		}
		want, ok := model(gpa, n)

		s, err := m.Slice(GPA(gpa), n)
		if ok != (err == nil) {
			t.Fatalf("Slice(%#x, %#x) = %v; model says ok=%v (regions %#x+%d, %#x+%d)", gpa, n, err, ok, lowBase, ls, highBase, hs)
		}
		if err != nil {
			var ae *AccessError
			if !errors.As(err, &ae) || !errors.Is(err, ErrOutOfRange) || ae.Op != "slice" || ae.GPA != GPA(gpa) || ae.Len != n {
				t.Fatalf("Slice error %#v is not the AccessError for %#x+%#x", err, gpa, n)
			}
		} else {
			if uint64(len(s)) != n || uint64(cap(s)) != n {
				t.Fatalf("Slice(%#x, %#x) has len %d cap %d", gpa, n, len(s), cap(s))
			}
			if n > 0 && &s[0] != &backing[want] {
				t.Fatalf("Slice(%#x, %#x) does not start at backing[%d]", gpa, n, want)
			}
			for _, b := range s {
				if b == sentinel {
					t.Fatalf("Slice(%#x, %#x) covers a sentinel byte", gpa, n)
				}
			}
		}

		// ReadAt and WriteAt agree with Slice, and WriteAt writes only
		// inside RAM.
		p := make([]byte, n%129)
		_, ok = model(gpa, uint64(len(p)))
		for i := range p {
			p[i] = 0x80 | byte(i)
		}
		werr := m.WriteAt(p, GPA(gpa))
		if ok != (werr == nil) {
			t.Fatalf("WriteAt(%d bytes at %#x) = %v, want ok=%v", len(p), gpa, werr, ok)
		}
		if werr != nil && !errors.Is(werr, ErrOutOfRange) {
			t.Fatalf("WriteAt error %v does not wrap ErrOutOfRange", werr)
		}
		q := make([]byte, len(p))
		if rerr := m.ReadAt(q, GPA(gpa)); (rerr == nil) != ok || (ok && !bytes.Equal(p, q)) {
			t.Fatalf("ReadAt after WriteAt = %x, %v; wrote %x", q, rerr, p)
		}
		for i, b := range backing {
			inLow := i >= lowAt && i < lowAt+int(ls)
			inHigh := i >= highAt && i < highAt+int(hs)
			if !inLow && !inHigh && b != sentinel {
				t.Fatalf("backing[%d] outside RAM changed to %#x", i, b)
			}
		}
	})
}
