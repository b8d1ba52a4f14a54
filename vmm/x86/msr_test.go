package x86

import "testing"

func TestBootMSRs(t *testing.T) {
	all := map[uint32]bool{}
	for _, i := range []uint32{0x10, 0x1a0, 0x2ff, 0x174, 0x175, 0x176, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102} {
		all[i] = true
	}
	tests := []struct {
		name      string
		supported map[uint32]bool
		want      map[uint32]uint64 // index -> value
	}{
		{"every MSR the host supports", all, map[uint32]uint64{
			0x10: 0, 0x174: 0, 0x175: 0, 0x176: 0, 0xc0000081: 0, 0xc0000082: 0, 0xc0000083: 0, 0xc0000084: 0, 0xc0000102: 0,
			0x1a0: 1,           // IA32_MISC_ENABLE: fast strings
			0x2ff: 1<<11 | 0x6, // IA32_MTRR_DEF_TYPE: enabled, write-back
		}},
		{"only what KVM_GET_MSR_INDEX_LIST names", map[uint32]bool{0x2ff: true, 0xc0000082: true, 0x12345: true}, map[uint32]uint64{
			0x2ff: 0x806, 0xc0000082: 0,
		}},
		{"none supported", nil, map[uint32]uint64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := BootMSRs(tc.supported)
			if len(got) != len(tc.want) {
				t.Errorf("BootMSRs returned %d MSRs, want %d: %+v", len(got), len(tc.want), got)
			}
			seen := map[uint32]bool{}
			for _, m := range got {
				want, ok := tc.want[m.Index]
				switch {
				case !ok:
					t.Errorf("MSR %#x set, but not wanted", m.Index)
				case seen[m.Index]:
					t.Errorf("MSR %#x set twice", m.Index)
				case m.Data != want:
					t.Errorf("MSR %#x = %#x, want %#x", m.Index, m.Data, want)
				}
				seen[m.Index] = true
			}
		})
	}
}
