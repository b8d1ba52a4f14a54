package inspect

import "testing"

func TestRegisterBits(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"CR0 of a 64-bit Linux", CR0(0x80050033), "PE MP ET NE WP AM PG"},
		{"CR0 at reset", CR0(0x60000010), "ET NW CD"},
		{"CR0 nothing set", CR0(0), "none"},
		{"CR4 with a reserved bit", CR4(1<<5 | 1<<15), "PAE bit15"},
		{"EFER in long mode", EFER(0xd01), "SCE LME LMA NXE"},
		{"RFLAGS after reset: bit 1 alone", RFLAGS(0x2), "none IOPL=0"},
		{"RFLAGS with IOPL 3", RFLAGS(0x3246), "PF ZF IF IOPL=3"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}
