package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kvmlab/guest/tiny"
)

// TestEmulatedIntelBadHost: when this machine cannot run the emulated Intel
// host (issue 13, item 5), `kvmlab run --emulated-host --emulated-cpu intel`
// says why and how to fix it in one line and exits 2, before it builds or
// boots anything; and `kvmlab check` names the same fix on its Bochs line.
// Bochs is a stand-in script in a PATH of its own (printf is the shell's
// builtin). The rest of the cases (xorriso, ISOLINUX, the BIOS files) are
// emuhost's TestCheckBochsBadHosts.
func TestEmulatedIntelBadHost(t *testing.T) {
	dir := t.TempDir()
	bin, _ := buildCLI(t, dir)
	kernel := filepath.Join(dir, "tiny.elf")
	if err := os.WriteFile(kernel, tiny.ELF([]byte{0xf4}), 0o644); err != nil { // hlt
		t.Fatal(err)
	}
	banner := func(version, models string) string {
		return "Supported CPU models:\n\nbx_generic\n" + models + "\n========\n  Bochs x86 Emulator " + version + "\n========\n"
	}
	tests := []struct {
		name, help string // help: what the stand-in bochs prints; "" for no bochs
		want       string
	}{
		{"bochs missing", "", "--emulated-cpu intel: bochs not found: the emulated Intel host needs Bochs 2.7 or newer: apt-get install bochs bochsbios vgabios isolinux syslinux-common xorriso"},
		{"bochs too old", banner("2.6", "corei7_haswell_4770"), "version 2.6 is too old for the emulated Intel host (2.7 or newer emulates VT-x with EPT well enough): install a newer bochs"},
		{"bochs without the VT-x model", banner("2.7", "p4_willamette"), "this Bochs lacks the CPU model corei7_haswell_4770 (VT-x with EPT)"},
		{"bochs prints no banner", "Segmentation fault\n", "printed no \"Bochs x86 Emulator\" banner: reinstall it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := t.TempDir()
			if tt.help != "" {
				script := "#!/bin/sh\nprintf '%s' '" + tt.help + "'\n"
				if err := os.WriteFile(filepath.Join(path, "bochs"), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			env := []string{"PATH=" + path, "TMPDIR=" + t.TempDir()}
			r := runBin(t, bin, env, "run", "--emulated-host", "--emulated-cpu", "intel", "--kernel", kernel, "--mem", "64M")
			line := strings.TrimSuffix(r.stderr, "\n")
			if r.code != 2 || r.stdout != "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, "kvmlab: --emulated-cpu intel: ") || !strings.Contains(line, tt.want) {
				t.Errorf("status %d, stdout %q, stderr %q; want 2, nothing, and one line containing %q", r.code, r.stdout, r.stderr, tt.want)
			}
			// Refused before any other work: no emulated host's
			// temporary directory was made.
			if left, _ := filepath.Glob(filepath.Join(env[1][len("TMPDIR="):], "kvmlab-host-*")); len(left) != 0 {
				t.Errorf("work was done before the refusal: %v", left)
			}
			c := runBin(t, bin, env, "check")
			if !strings.Contains(c.stdout, "] Bochs ") || !strings.Contains(c.stdout, tt.want[strings.Index(tt.want, ": ")+2:]) {
				t.Errorf("kvmlab check does not name the fix %q:\n%s", tt.want, c.stdout)
			}
			if !regexp.MustCompile(`(?m)^ +--emulated-cpu intel +no `).MatchString(c.stdout) {
				t.Errorf("kvmlab check does not say --emulated-cpu intel does not work here:\n%s", c.stdout)
			}
		})
	}
}
