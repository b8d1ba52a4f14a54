package emuhost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBochs writes a stand-in "bochs" into dir that prints help, as
// `bochs --help cpu` would (with the shell's printf builtin: PATH holds
// only dir).
func fakeBochs(t *testing.T, dir, help string) {
	t.Helper()
	script := "#!/bin/sh\nprintf '%s' '" + strings.ReplaceAll(help, "'", `'\''`) + "'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "bochs"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestCheckBochsBadHosts: each way the emulated Intel host cannot run here
// (issue 13, item 5) is refused by CheckBochs with one line naming the fix,
// before anything is built or booted. Bochs and xorriso are stand-in
// scripts in a PATH of their own, and the BIOS and ISOLINUX files are
// temporary files, so that every row runs on any machine.
func TestCheckBochsBadHosts(t *testing.T) {
	files := []*pkgFile{&bochsBIOS, &bochsVGABIOS, &isolinuxBin, &isolinuxLdlnx}
	saved := make([]pkgFile, len(files))
	for i, f := range files {
		saved[i] = *f
	}
	t.Cleanup(func() {
		for i, f := range files {
			*f = saved[i]
		}
	})
	bochs27 := bochsHelpOK
	tests := []struct {
		name    string
		help    string // the fake bochs's output; "" for no bochs at all
		xorriso bool
		missing *pkgFile // a file that is not there
		want    string   // in the one-line error; "" for none
	}{
		{"all there", bochs27, true, nil, ""},
		{"bochs missing", "", true, nil, "bochs not found: the emulated Intel host needs Bochs 2.7 or newer: apt-get install bochs"},
		{"bochs 2.6", strings.Replace(bochs27, "Emulator 2.7", "Emulator 2.6", 1), true, nil, "version 2.6 is too old for the emulated Intel host"},
		{"bochs 1.4", strings.Replace(bochs27, "Emulator 2.7", "Emulator 1.4", 1), true, nil, "version 1.4 is too old"},
		{"bochs says nothing", "bochs: error while loading shared libraries: libltdl.so.7\n", true, nil, "printed no \"Bochs x86 Emulator\" banner: reinstall it"},
		{"bochs without the VT-x model", strings.Replace(bochs27, "corei7_haswell_4770\n", "", 1), true, nil, "lacks the CPU model corei7_haswell_4770 (VT-x with EPT)"},
		{"xorriso missing", bochs27, false, nil, "xorriso not found: the emulated Intel host boots from a CD image it writes: apt-get install xorriso"},
		{"isolinux.bin missing", bochs27, true, &isolinuxBin, "isolinux.bin is missing (the emulated Intel host boots from it): apt-get install isolinux"},
		{"ldlinux.c32 missing", bochs27, true, &isolinuxLdlnx, "ldlinux.c32 is missing (the emulated Intel host boots from it): apt-get install syslinux-common"},
		{"BIOS missing", bochs27, true, &bochsBIOS, "BIOS-bochs-latest is missing (the emulated Intel host boots from it): apt-get install bochsbios"},
		{"VGA BIOS missing", bochs27, true, &bochsVGABIOS, "vgabios.bin is missing (the emulated Intel host boots from it): apt-get install vgabios"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin, data := t.TempDir(), t.TempDir()
			t.Setenv("PATH", bin)
			if tt.help != "" {
				fakeBochs(t, bin, tt.help)
			}
			if tt.xorriso {
				if err := os.WriteFile(filepath.Join(bin, "xorriso"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for i, f := range files {
				f.path = filepath.Join(data, filepath.Base(saved[i].path))
				if f == tt.missing {
					continue
				}
				if err := os.WriteFile(f.path, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckBochs(context.Background())
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckBochs: %v; want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// TestBochsHostVerdict: a Bochs host whose kvm_intel would not load (its
// CPU has no VMX, or its BIOS left VMX off) ends the run with one line
// naming the fix; a host that ran its command, whatever that command's
// status, does not.
func TestBochsHostVerdict(t *testing.T) {
	const boot = "ISOLINUX 6.04 20200816\nhostinit: kernel up after 17.45s\n"
	failed := "hostinit: FAILED: loading module /harness/ko/kvm-intel.ko: operation not supported\nKVMLAB-HOST-EXIT 121\n"
	tests := []struct {
		name, console, want string
	}{
		{"ran", boot + "hostinit: /dev/kvm ready after 23.96s\nhostinit: running /kvmlab/kvmlab run\nKVMLAB-HOST-EXIT 0\n", ""},
		{"command failed", boot + "hostinit: /dev/kvm ready after 23.96s\nKVMLAB-HOST-EXIT 1\n", ""},
		{"kvm_amd failed", boot + "hostinit: FAILED: loading module /harness/ko/kvm-amd.ko: operation not supported\nKVMLAB-HOST-EXIT 121\n", ""},
		{"a guest's words", boot + "hostinit: /dev/kvm ready after 23.96s\n    hostinit: FAILED: loading module /harness/ko/kvm-intel.ko: x\nKVMLAB-HOST-EXIT 0\n", ""},
		{"no vmx", boot + "[   20.1] kvm: no hardware support for 'kvm_intel'\n" + failed,
			"kvm_intel did not load in the emulated Intel host (operation not supported): the emulated CPU has no VMX (no vmx flag in the host's /proc/cpuinfo): this Bochs was built without VT-x: install Debian 12's bochs 2.7"},
		{"no vmx, with the old hint", boot + "hostinit: FAILED: loading module /harness/ko/kvm-intel.ko: no such device (the emulated CPU has no VMX: run Bochs with a CPU model that has it, such as corei7_haswell_4770)\nKVMLAB-HOST-EXIT 121\n",
			"(no such device (the emulated CPU has no VMX"},
		{"disabled by bios", boot + "[   20.1] kvm: support for 'kvm_intel' disabled by bios\n" + failed,
			"its BIOS left VMX disabled (IA32_FEATURE_CONTROL): Bochs must boot /usr/share/bochs/BIOS-bochs-latest, which enables it: apt-get install --reinstall bochsbios"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := bochsHostVerdict(tt.console)
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("bochsHostVerdict: %v; want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}
