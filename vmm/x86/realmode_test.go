package x86

import (
	"testing"

	"kvmlab/vmm/kvm"
)

// TestRealModeSregs: from a long-mode state, every segment is 0 with a
// 64 KiB limit, protection and paging are off and EFER is clear: the
// state a BIOS leaves for a boot sector (SDM Vol. 3A §9.1.1, §20.1.1).
func TestRealModeSregs(t *testing.T) {
	in := LongModeSregs(kvm.Sregs{}, LongModeEntry{CodeSelector: 0x10, CodeDescriptor: FlatCode64, DataSelector: 0x18, DataDescriptor: FlatData, CR3: 0x9000})
	s := RealModeSregs(in)
	for name, seg := range map[string]kvm.Segment{"CS": s.CS, "DS": s.DS, "ES": s.ES, "FS": s.FS, "GS": s.GS, "SS": s.SS} {
		if seg.Base != 0 || seg.Selector != 0 || seg.Limit != 0xffff || seg.Present != 1 || seg.S != 1 || seg.L != 0 || seg.DB != 0 {
			t.Errorf("%s = %+v, want selector 0, base 0, limit 0xffff, present, 16-bit", name, seg)
		}
	}
	if s.CS.Type != 0xb || s.DS.Type != 0x3 {
		t.Errorf("CS type %#x, DS type %#x; want 0xb (code, execute/read) and 0x3 (data, read/write)", s.CS.Type, s.DS.Type)
	}
	if s.CR0&(CR0PE|CR0PG) != 0 || s.EFER != 0 {
		t.Errorf("CR0 %#x, EFER %#x: want PE, PG and EFER clear", s.CR0, s.EFER)
	}
	if got := RealModeSegment(0x1234, false).Base; got != 0x12340 {
		t.Errorf("segment 0x1234 has base %#x, want 0x12340 (selector * 16)", got)
	}
}
