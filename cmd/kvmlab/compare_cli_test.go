package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompareFlags: `kvmlab compare` refuses bad input in one line with
// status 2, before it boots or starts anything (package compare is never
// reached), and an existing --html report survives every refusal.
func TestCompareFlags(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	initrd := filepath.Join(dir, "initramfs.cpio")
	for _, p := range []string{kernel, initrd} {
		if err := os.WriteFile(p, []byte("not used: every case stops before reading it"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(dir, "old.html")
	const oldReport = "<p>an earlier report</p>\n"
	guest := []string{"--kernel", kernel, "--initrd", initrd}
	tests := []struct {
		name string
		args []string
		want []string // in the one line
	}{
		{"mem too small", append([]string{"compare", "--mem", "64M", "--html", old}, guest...), []string{`--mem "64M"`, "give 128M to 3G"}},
		{"mem too large", append([]string{"compare", "--mem", "4G"}, guest...), []string{`--mem "4G"`, "give 128M to 3G"}},
		{"mem not a size", append([]string{"compare", "--mem", "lots"}, guest...), []string{`--mem "lots"`}},
		{"kernel without initrd", []string{"compare", "--kernel", kernel}, []string{"compare: --initrd is missing", "or neither"}},
		{"initrd missing", []string{"compare", "--kernel", kernel, "--initrd", filepath.Join(dir, "nope")}, []string{"compare: --initrd", "make guest"}},
		{"html in a missing directory", append([]string{"compare", "--html", filepath.Join(dir, "no", "r.html")}, guest...), []string{"compare: --html", "does not exist"}},
		{"stray argument", []string{"compare", "report.html"}, []string{`unexpected argument "report.html"`}},
		{"density zero", append([]string{"compare", "--density", "0", "--html", old}, guest...), []string{"--density 0", "1 to 64"}},
		{"density negative", append([]string{"compare", "--density", "-4"}, guest...), []string{"--density -4", "1 to 64"}},
		{"density absurd", append([]string{"compare", "--density", "1000000"}, guest...), []string{"--density 1000000", "at most 64"}},
		{"density beyond memory", append([]string{"compare", "--mem", "3G", "--density", "64", "--html", old}, guest...), []string{"--density 64", "fit", "or a smaller --mem"}},
		{"density not a number", append([]string{"compare", "--density", "many"}, guest...), []string{`"many"`, "-density"}},
		{"workload runs zero", append([]string{"compare", "--workload", "--workload-runs", "0"}, guest...), []string{"--workload-runs 0", "1 to 50"}},
		{"nothing to run", append([]string{"compare", "--basic=false"}, guest...), []string{"--basic=false leaves nothing", "--density N or --workload"}},
		{"nested without the basic comparison", append([]string{"compare", "--nested", "--basic=false", "--workload", "--html", old}, guest...), []string{"--nested adds a column", "drop --basic=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(old, []byte(oldReport), 0o644); err != nil {
				t.Fatal(err)
			}
			code, msg := runCLI(t, tt.args...)
			if code != 2 || msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("status %d, stderr %q: want 2 and one line", code, msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			if b, err := os.ReadFile(old); err != nil || string(b) != oldReport {
				t.Errorf("old report holds %q, %v: a refused run changed it", b, err)
			}
		})
	}
}
