package vmm

import (
	"errors"
	"testing"
)

// TestDebugRegisters: DR7's fields for each breakpoint (Intel SDM Vol. 3B
// §18.2.4: Ln at bit 2n, R/Wn at 16+4n, LENn at 18+4n).
func TestDebugRegisters(t *testing.T) {
	for _, tc := range []struct {
		name string
		bps  []HWBreakpoint
		dr7  uint64
		err  bool
	}{
		{"none", nil, 0, false},
		{"execution in DR0", []HWBreakpoint{{Addr: 0xffffffff81000000}}, 0x1, false},
		{"write of 8 bytes in DR1", []HWBreakpoint{{Addr: 0x1000}, {Addr: 0x2000, Kind: HWWrite, Len: 8}}, 0x1 | 0x4 | (0b01|0b10<<2)<<20, false},
		{"access of 4 bytes in DR2", []HWBreakpoint{{}, {}, {Addr: 0x3004, Kind: HWReadWrite, Len: 4}}, 0x1 | 0x4 | 0x10 | (0b11|0b11<<2)<<24, false},
		{"write of 2 bytes in DR3", []HWBreakpoint{{}, {}, {}, {Addr: 0x2, Kind: HWWrite, Len: 2}}, 0x55 | (0b01|0b01<<2)<<28, false},
		{"five", make([]HWBreakpoint, 5), 0, true},
		{"unaligned", []HWBreakpoint{{Addr: 0x1001, Kind: HWWrite, Len: 8}}, 0, true},
		{"three bytes", []HWBreakpoint{{Addr: 0x1000, Kind: HWWrite, Len: 3}}, 0, true},
		{"I/O kind", []HWBreakpoint{{Addr: 0x1000, Kind: 2, Len: 1}}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dr, err := DebugRegisters(tc.bps)
			if tc.err {
				if !errors.Is(err, ErrDebugRegs) {
					t.Fatalf("error %v, want ErrDebugRegs", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dr[7] != tc.dr7 {
				t.Errorf("DR7 = %#x, want %#x", dr[7], tc.dr7)
			}
			for i, b := range tc.bps {
				if dr[i] != b.Addr {
					t.Errorf("DR%d = %#x, want %#x", i, dr[i], b.Addr)
				}
			}
		})
	}
}
