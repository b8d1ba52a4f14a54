package emuhost

import "testing"

func TestParseQEMUVersion(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
		version      string
		ok           bool
	}{
		{"QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025", 10, 0, "10.0.2", true},
		{"QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)\n", 7, 2, "7.2.15", true},
		{"QEMU emulator version 9.1\n", 9, 1, "9.1", true},
		{"qemu-system-x86_64: command not found\n", 0, 0, "", false},
		{"", 0, 0, "", false},
	} {
		major, minor, v, ok := ParseQEMUVersion(tc.in)
		if major != tc.major || minor != tc.minor || v != tc.version || ok != tc.ok {
			t.Errorf("ParseQEMUVersion(%q) = %d, %d, %q, %v; want %d, %d, %q, %v", tc.in, major, minor, v, ok, tc.major, tc.minor, tc.version, tc.ok)
		}
	}
}
