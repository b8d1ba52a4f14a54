package x86_test

import (
	"testing"

	"kvmlab/vmm/boot"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/x86"
)

func TestSegmentFromDescriptor(t *testing.T) {
	tests := []struct {
		name string
		sel  uint16
		desc uint64
		want kvm.Segment
	}{
		{"flat 64-bit code: L=1, D/B=0, G=1, execute/read accessed", boot.CodeSelector, 0x00af9b000000ffff, kvm.Segment{
			Base: 0, Limit: 0xffffffff, Selector: boot.CodeSelector, Type: 0xb, S: 1, DPL: 0, Present: 1, L: 1, DB: 0, G: 1}},
		{"flat 4 GiB data: D/B=1, G=1, read/write accessed", boot.DataSelector, 0x00cf93000000ffff, kvm.Segment{
			Base: 0, Limit: 0xffffffff, Selector: boot.DataSelector, Type: 0x3, S: 1, Present: 1, DB: 1, G: 1}},
		{"flat 32-bit code: L=0, D/B=1", 0x08, 0x00cf9a000000ffff, kvm.Segment{
			Base: 0, Limit: 0xffffffff, Selector: 0x08, Type: 0xa, S: 1, Present: 1, DB: 1, G: 1}},
		{"byte-granular, based, DPL 3, AVL set", 0x2b, 0x1255f2345678abcd, kvm.Segment{
			Base: 0x12345678, Limit: 0x5abcd, Selector: 0x2b, Type: 0x2, S: 1, DPL: 3, Present: 1, AVL: 1, DB: 1}},
		{"4 KiB-granular limit 0 covers one page", 0x10, 0x0080920000000000, kvm.Segment{
			Limit: 0xfff, Selector: 0x10, Type: 0x2, S: 1, Present: 1, G: 1}},
		{"null descriptor", 0, 0, kvm.Segment{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := x86.SegmentFromDescriptor(tc.sel, tc.desc); got != tc.want {
				t.Errorf("SegmentFromDescriptor(%#x, %#016x) =\n  %+v, want\n  %+v", tc.sel, tc.desc, got, tc.want)
			}
		})
	}
}
