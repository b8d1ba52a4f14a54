package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmlab/labs"
)

// logWriter sends a check's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLabFewerExits grades lab 5 of the guided labs for real: its
// reference answer and its wrong one are written into a directory as a
// learner would, and the lab's check makes its three boots of the default
// guest with --stats for each and grades them. The reference must pass
// and the wrong one fail. (About 7 minutes in the emulated AMD host: six
// boots, one with the kernel's boot messages on the serial console.)
func TestLabFewerExits(t *testing.T) { gradeLabForReal(t, 5) }

// TestLabVMOrContainer grades lab 6 the same way: each check runs
// `kvmlab compare --json --no-runc` (a VM, a container, a guest kernel
// panic) and grades the facts against it. (About 3 minutes.)
func TestLabVMOrContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("lab 6 runs kvmlab compare, whose container side needs root: run the tests as root")
	}
	gradeLabForReal(t, 6)
}

// gradeLabForReal checks lab n's reference answer (it must pass) and its
// wrong one (it must fail, with a hint) with the kvmlab under test. (Lab
// 4 needs the Go toolchain at check time, which the emulated host has
// not: its test is labs/lab4_test.go, on any /dev/kvm that runs a tiny
// guest.)
func gradeLabForReal(t *testing.T, n int) {
	// The checks run the default guest, which kvmlab finds in its
	// cache directory: point that at the guest under test.
	cache := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cache, "kvmlab"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(guestFile(t, "bzImage")), filepath.Join(cache, "kvmlab", "default")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", cache)
	l, err := labs.Get(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		pass  bool
	}{
		{"reference", l.Solution(), true},
		{"wrong", l.Wrong(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, m := range []map[string][]byte{l.Files(), tc.files} {
				for name, b := range m {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			res, err := l.Check(ctx, &labs.Env{Kvmlab: kvmlabBin(t), Log: logWriter{t}}, dir)
			if err != nil {
				t.Fatalf("lab %d check: %v", n, err)
			}
			t.Logf("lab %d %s: passed %v, hint %q\n%s", n, tc.name, res.Passed, res.Hint, strings.Join(res.Lines, "\n"))
			if res.Passed != tc.pass {
				t.Errorf("lab %d, %s answer: passed = %v, want %v", n, tc.name, res.Passed, tc.pass)
			}
			if !tc.pass && res.Hint == "" {
				t.Errorf("lab %d, %s answer failed without a hint", n, tc.name)
			}
		})
	}
}
