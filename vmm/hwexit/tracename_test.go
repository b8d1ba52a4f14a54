package hwexit

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestFromTracepoint(t *testing.T) {
	tests := []struct {
		v    Vendor
		text string
		ok   bool
		code uint64
		name string
	}{
		{VMX, "IO_INSTRUCTION", true, 30, "IO_INSTRUCTION"},
		{VMX, "EPT_MISCONFIG", true, 49, "EPT_MISCONFIG"},
		{VMX, "EPT_VIOLATION", true, 48, "EPT_VIOLATION"},
		{VMX, "MONITOR_TRAP_FLAG", true, 37, "MTF"}, // Linux's spelling, the SDM's short name
		{VMX, "VMOFF", true, 26, "VMXOFF"},
		{VMX, "INVALID_STATE FAILED_VMENTRY", true, 33, "INVALID_STATE"}, // the flag follows the name
		{VMX, "0x47", true, 71, "EXIT_REASON_71"},                        // a code the kernel's table lacks
		{VMX, "0x10000", false, 0, ""},                                   // not a basic reason
		{VMX, "io", false, 0, ""},                                        // SVM's word
		{SVM, "io", true, 0x7b, "VMEXIT_IOIO"},
		{SVM, "npf", true, 0x400, "VMEXIT_NPF"},
		{SVM, "hypercall", true, 0x81, "VMEXIT_VMMCALL"},
		{SVM, "DB excp", true, 0x41, "VMEXIT_EXCP_DB"},
		{SVM, "XF excp", true, 0x53, "VMEXIT_EXCP_XF"},
		{SVM, "read_cr0", true, 0x00, "VMEXIT_CR0_READ"},
		{SVM, "write_cr8", true, 0x18, "VMEXIT_CR8_WRITE"},
		{SVM, "write_dr7", true, 0x37, "VMEXIT_DR7_WRITE"},
		{SVM, "write_cr4_trap", true, 0x94, "VMEXIT_CR4_WRITE_TRAP"},
		{SVM, "read_rt", true, 0x69, "VMEXIT_TR_READ"},
		{SVM, "invalid_guest_state", true, ^uint64(0), "VMEXIT_INVALID"},
		{SVM, "0xffffffff", true, ^uint64(0), "VMEXIT_INVALID"}, // a 32-bit -1
		{SVM, "0xa6", true, 0xa6, "VMEXIT_IDLE_HLT"},
		{SVM, "read_cr16", false, 0, ""},
		{SVM, "read_cr01", false, 0, ""},
		{SVM, "write_cr_0", false, 0, ""},
		{SVM, "ZZ excp", false, 0, ""},
		{SVM, "IO_INSTRUCTION", false, 0, ""},
		{SVM, "", false, 0, ""},
		{SVM, "0x", false, 0, ""},
		{SVM, "0x11112222333344445", false, 0, ""},
		{"", "io", false, 0, ""},
		{SVM, strings.Repeat("a", 100), false, 0, ""},
	}
	for _, tc := range tests {
		t.Run(string(tc.v)+"/"+tc.text, func(t *testing.T) {
			hw, ok := FromTracepoint(tc.v, tc.text)
			if ok != tc.ok {
				t.Fatalf("FromTracepoint(%s, %q) ok = %v, want %v (%+v)", tc.v, tc.text, ok, tc.ok, hw)
			}
			if !ok {
				return
			}
			if hw.Code != tc.code || hw.Name != tc.name || hw.Vendor != string(tc.v) || hw.Derived {
				t.Errorf("FromTracepoint(%s, %q) = %+v, want code %#x name %s, not derived", tc.v, tc.text, hw, tc.code, tc.name)
			}
		})
	}
}

// TestFromTracepointKernelNames reads every name Linux 6.1's kvm_exit
// tracepoint can print, with its code, from the event's format (a copy in
// testdata), and checks that FromTracepoint gives that code back: the first
// __print_symbolic table is VT-x's, the second SVM's.
func TestFromTracepointKernelNames(t *testing.T) {
	b, err := os.ReadFile("testdata/kvm_exit_format_linux_6.1.txt")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(b), "__print_symbolic(")
	if len(parts) != 3 {
		t.Fatalf("want two symbol tables in the format, found %d", len(parts)-1)
	}
	entry := regexp.MustCompile(`\{ (-?0x[0-9a-f]+|-?\d+)(?: \+ (\d+))?, "([^"]+)" \}`)
	for i, v := range []Vendor{VMX, SVM} {
		table, _, _ := strings.Cut(parts[i+1], ")")
		n := 0
		for _, m := range entry.FindAllStringSubmatch(table, -1) {
			code, err := strconv.ParseInt(m[1], 0, 64)
			if err != nil {
				t.Fatalf("%s: %v", m[0], err)
			}
			if m[2] != "" {
				off, _ := strconv.ParseInt(m[2], 10, 64)
				code += off
			}
			want := uint64(code)
			if v == SVM && code >= 0x80000000 {
				// vmgexit_*: SEV-ES software exit codes, which arrive
				// through VMGEXIT; kvmlab names no hardware exit for them.
				if _, ok := FromTracepoint(v, m[3]); ok {
					t.Errorf("%s %q: a VMGEXIT sub-code named as a hardware exit", v, m[3])
				}
				continue
			}
			n++
			hw, ok := FromTracepoint(v, m[3])
			if !ok || hw.Code != want {
				t.Errorf("%s %q: FromTracepoint = %+v, %v; the kernel says code %#x", v, m[3], hw, ok, want)
			}
			if strings.HasPrefix(hw.Name, "EXIT_REASON_") || strings.HasPrefix(hw.Name, "VMEXIT_0x") {
				t.Errorf("%s %q (%#x): kvmlab's table has no name for it", v, m[3], want)
			}
		}
		if n < 50 {
			t.Errorf("%s: only %d names read from the format", v, n)
		}
	}
}

func FuzzFromTracepoint(f *testing.F) {
	for _, s := range []string{"io", "npf", "DB excp", "read_cr3", "write_cr4_trap", "0x7b", "EPT_VIOLATION FAILED_VMENTRY"} {
		f.Add("svm", s)
		f.Add("vmx", s)
	}
	f.Fuzz(func(t *testing.T, vendor, text string) {
		hw, ok := FromTracepoint(Vendor(vendor), text)
		if !ok {
			return
		}
		if hw.Vendor != vendor || hw.Name == "" || hw.Derived {
			t.Fatalf("FromTracepoint(%q, %q) = %+v", vendor, text, hw)
		}
		if Vendor(vendor) == VMX && hw.Code > vmxBasicReasonMask {
			t.Fatalf("a VT-x basic reason over 16 bits: %+v", hw)
		}
	})
}
