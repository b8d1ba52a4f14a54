package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"kvmlab/guest/tiny"
)

// TestExitLoopGuests runs the two Go sides of the bench's exit-cost loop
// on a real KVM (the C floor needs a compiler, which the emulated host
// lacks; the bench compiles it outside). kvmlab must run the looping guest
// to its poweroff and say how long its machine ran; the Go floor must
// count exactly the exits its guest makes, with each way of entering the
// guest.
func TestExitLoopGuests(t *testing.T) {
	const n = 3000
	path := filepath.Join(t.TempDir(), "loop.elf")
	if err := os.WriteFile(path, tiny.PortLoopELF(n), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KVMLAB_RUNTIME_REPORT", "1")
	_, stderr, rc := runKvmlab(t, 3*time.Minute, "run", "--quiet", "--kernel", path, "--mem", "64M")
	if rc != 0 {
		t.Fatalf("kvmlab run of the loop guest: exit status %d\n%s", rc, stderr)
	}
	m := regexp.MustCompile(`the machine ran for (\d+) ns`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("kvmlab run did not say how long its machine ran:\n%s", stderr)
	}
	if ns, _ := strconv.ParseInt(m[1], 10, 64); ns <= 0 {
		t.Errorf("the machine ran for %d ns", ns)
	}

	floor := regexp.MustCompile(`^exitfloor: (\d+) exits in (\d+) ns\n$`)
	for _, v := range []string{"syscall", "no-yield", "raw", "pinned"} {
		stdout, stderr, rc := runKvmlab(t, 3*time.Minute, "bench", "--go-floor", strconv.Itoa(n), "--go-floor-variant", v)
		if rc != 0 {
			t.Errorf("Go floor (%s): exit status %d\n%s", v, rc, stderr)
			continue
		}
		m := floor.FindStringSubmatch(stdout)
		if m == nil || m[1] != strconv.Itoa(n) {
			t.Errorf("Go floor (%s) printed %q, want %d exits counted", v, stdout, n)
			continue
		}
		t.Logf("Go floor (%s): %s ns for %d exits", v, m[2], n)
	}
}
