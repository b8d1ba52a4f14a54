package tests

// Vendor-aware expectations: the same test runs on AMD SVM (the emulated
// AMD host, QEMU) and on Intel VT-x (the emulated Intel host, Bochs), and
// where it checks a hardware exit reason it asks for the one of the CPU it
// runs on. On a real /dev/kvm the vendor is not known to the test, and
// either is accepted.

import (
	"bytes"
	"regexp"
	"testing"
)

// vendorRe returns the regular expression for the CPU this run is on: amd's
// in the emulated AMD host, intel's in the emulated Intel host, either
// elsewhere.
func vendorRe(amd, intel string) string {
	switch emulatedCPU() {
	case "amd":
		return amd
	case "intel":
		return intel
	}
	return "(?:" + amd + ")|(?:" + intel + ")"
}

// hwRow is the regular expression of the --stats hardware-table row (see
// trace.HWName) for a kind of exit, "io" (a port access) or "mmio" (an access
// to guest-physical memory with no slot behind it), on the given emulated
// CPU vendor ("" for either). VT-x numbers its basic exit reasons in decimal
// (Intel SDM Vol. 3D, Appendix C), SVM its exit codes in hex (AMD APM Vol.
// 2, Appendix C). An MMIO exit on VT-x is an EPT violation the first time a
// page is touched and an EPT misconfiguration after KVM marked the page.
func hwRow(vendor, kind string) string {
	rows := map[string][2]string{
		"io":   {`svm VMEXIT_IOIO \(0x7b\)`, `vmx IO_INSTRUCTION \(30\)`},
		"mmio": {`svm VMEXIT_NPF \(0x400\)`, `vmx EPT_(?:MISCONFIG \(49\)|VIOLATION \(48\))`},
	}[kind]
	switch vendor {
	case "amd":
		return rows[0]
	case "intel":
		return rows[1]
	}
	return "(?:" + rows[0] + ")|(?:" + rows[1] + ")"
}

func TestHwRow(t *testing.T) {
	tests := []struct {
		vendor, kind, line string
		match              bool
	}{
		{"intel", "io", "  vmx IO_INSTRUCTION (30)       812", true},
		{"intel", "io", "  svm VMEXIT_IOIO (0x7b)       812", false},
		{"amd", "io", "  svm VMEXIT_IOIO (0x7b)       812", true},
		{"amd", "io", "  vmx IO_INSTRUCTION (30)       812", false},
		{"", "io", "  vmx IO_INSTRUCTION (30)       812", true},
		{"", "io", "  svm VMEXIT_IOIO (0x7b)       812", true},
		{"intel", "mmio", "  vmx EPT_MISCONFIG (49)  3", true},
		{"intel", "mmio", "  vmx EPT_VIOLATION (48)  3", true},
		{"intel", "mmio", "  svm VMEXIT_NPF (0x400)  3", false},
		{"amd", "mmio", "  svm VMEXIT_NPF (0x400)  3", true},
		{"", "mmio", "  svm VMEXIT_NPF (0x400)  3", true},
	}
	for _, tt := range tests {
		if got := regexp.MustCompile(hwRow(tt.vendor, tt.kind)).MatchString(tt.line); got != tt.match {
			t.Errorf("hwRow(%q, %q) on %q: %v, want %v", tt.vendor, tt.kind, tt.line, got, tt.match)
		}
	}
}

// TestPrefixWriter: lines come out whole and prefixed, however the writes
// cut them; a partial last line waits for its end.
func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	p := &prefixWriter{prefix: "intel| ", w: &out}
	for _, chunk := range []string{"a", "bc\nde", "f\n\ng", "h"} {
		if n, err := p.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	if want := "intel| abc\nintel| def\nintel| \n"; out.String() != want {
		t.Errorf("wrote %q, want %q", out.String(), want)
	}
}
