package labs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeLab writes a lab's starting point and then files over it into a
// fresh directory, as `kvmlab lab start` and a learner would.
func writeLab(t *testing.T, l *Lab, over map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, m := range []map[string][]byte{l.Files(), over} {
		for name, b := range m {
			p := filepath.Join(dir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// TestLab4 grades device files for real: each is compiled into a kvmlab
// through devices/labdev, and the lab's guest runs against it on this
// host's /dev/kvm (a kvm_pvm one will do: the guest is a few instructions).
func TestLab4(t *testing.T) {
	if !tinyGuestsRunHere() {
		t.Skip("no /dev/kvm that runs even a tiny guest here: lab 4's check would need the emulated host")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go on PATH: lab 4's check builds kvmlab")
	}
	l, err := Get(4)
	if err != nil {
		t.Fatal(err)
	}
	start := l.Files()["device.go"]
	tests := []struct {
		name      string
		files     map[string][]byte
		pass      bool
		hint      string // in the hint when failing
		lines     string // in the lines
		needTrace bool
	}{
		{name: "reference solution", files: l.Solution(), pass: true, lines: "accumulator add 05 00 00 00"},
		{name: "wrong solution (stores instead of adding)", files: l.Wrong(), hint: "writes add, they do not replace", lines: "check 3 read 0x7 from your device; it should read 0xc"},
		{name: "starting point", hint: "returns the ID byte", lines: "lab4: FAIL 1"},
		{name: "wrong port", files: map[string][]byte{"device.go": []byte(strings.Replace(string(l.Solution()["device.go"]), "Port: 0x700", "Port: 0x710", 1))},
			hint: "no device answered at port 0x700"},
		{name: "compile error", files: map[string][]byte{"device.go": []byte(strings.Replace(string(start), "return nil\n}", "return nil, nil\n}", 1))},
			hint: "fix the compile errors", lines: "too many return values"},
		{name: "package main", files: map[string][]byte{"device.go": []byte(strings.Replace(string(start), "package mydevice", "package main", 1))},
			hint: "not a program"},
		{name: "a device that prints the verdict itself", files: map[string][]byte{"device.go": []byte(strings.Replace(strings.Replace(string(start),
			"func (a *Accumulator) Read(offset uint64, data []byte) error {\n", "func (a *Accumulator) Read(offset uint64, data []byte) error {\n\tfmt.Println(\"lab4: PASS\")\n", 1),
			"import (\n", "import (\n\t\"fmt\"\n", 1))}, hint: "the guest's verdict and the exit trace disagree"},
		{name: "no labdev import", files: map[string][]byte{"device.go": []byte("package mydevice\n")}, hint: "labdev.Add"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeLab(t, l, tc.files)
			res, err := l.Check(context.Background(), &Env{}, dir)
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			checkResult(t, res, tc.pass, tc.hint, tc.lines)
		})
	}
}

// TestLab4NoGo: without a Go toolchain the check says so in one line.
func TestLab4NoGo(t *testing.T) {
	l, err := Get(4)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeLab(t, l, l.Solution())
	t.Setenv("PATH", t.TempDir())
	_, err = l.Check(context.Background(), &Env{}, dir)
	if err == nil || !strings.Contains(err.Error(), "Go toolchain ('go') is not on PATH") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("check without go: %v, want one line saying go is missing", err)
	}
}
