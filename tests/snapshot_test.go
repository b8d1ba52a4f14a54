package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvmlab/guest/tiny"
)

// TestSnapshot: kill -USR1 makes kvmlab describe where its guest is. The
// guest spins on PAUSE and never exits to user space, the shape of a
// stalled guest: the snapshot must bring the vCPU out of KVM_RUN, show the
// loop's instruction at RIP, count no exits to kvmlab between two
// snapshots, and leave the guest running (the console quit ends it).
func TestSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spin.elf")
	spin := []byte{0xf3, 0x90, 0xeb, 0xfc} // 1: pause; jmp 1b
	if err := os.WriteFile(path, tiny.ELF(spin), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGuestCmd(t, 3*time.Minute, []string{kvmlabBin(t)}, "run", "--quiet", "--kernel", path, "--mem", "64M")
	waitStderr := func(re *regexp.Regexp, d time.Duration) string {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if m := re.FindString(g.stderr()); m != "" {
				return m
			}
		}
		t.Fatalf("kvmlab's stderr did not show %q within %v:\n%s", re, d, g.stderr())
		return ""
	}
	// The guest is running once the vCPU thread exists; give it a moment.
	time.Sleep(2 * time.Second)
	snap := func(n string) string {
		t.Helper()
		// A snapshot ends with the vCPU's KVM counters line. kvmlab
		// ignores SIGUSR1 until its machine can answer (on a loaded host
		// that can take longer than the sleep above), so ask again every
		// ten seconds until it does.
		re := regexp.MustCompile(`(?s)kvmlab: snapshot ` + n + `\b.*?KVM's own counters[^\n]*\n`)
		for end := time.Now().Add(time.Minute); time.Now().Before(end); {
			if err := g.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			for next := time.Now().Add(10 * time.Second); time.Now().Before(next); time.Sleep(50 * time.Millisecond) {
				if m := re.FindString(g.stderr()); m != "" {
					return m
				}
			}
		}
		return waitStderr(re, time.Second)
	}
	first := snap("1")
	time.Sleep(time.Second)
	second := snap("2")
	t.Logf("first snapshot:\n%s\nsecond:\n%s", first, second)

	for _, want := range []string{
		"vCPU 0: was inside KVM_RUN (the request interrupted it); exits to kvmlab: 0",
		"64-bit", // the mode line
		"RIP=00000000001000",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("first snapshot lacks %q", want)
		}
	}
	// RIP is on one of the loop's two instructions, disassembled.
	if !regexp.MustCompile(`=> 0000000000100000  f3 90 +pause|=> 0000000000100002  eb fc +jmp 0x100000`).MatchString(first) {
		t.Errorf("first snapshot does not mark RIP on the loop at %#x", tiny.Base)
	}
	if !strings.Contains(second, "exits to kvmlab: 0, +0 since snapshot 1") {
		t.Errorf("second snapshot: want no exits to kvmlab since the first")
	}
	if !regexp.MustCompile(`snapshot 2, [0-9.]+ s after the vCPUs started, [0-9.]+ s after snapshot 1`).MatchString(second) {
		t.Errorf("second snapshot's heading does not say how long after the first it came")
	}
	// The guest still runs after two snapshots: kvmlab has not exited,
	// and Ctrl-A x ends it cleanly.
	select {
	case <-g.done:
		t.Fatalf("kvmlab exited after the snapshots: %v\n%s", g.err, g.stderr())
	default:
	}
	g.send("\x01x")
	if code := g.wait(time.Minute); code != 0 {
		t.Errorf("kvmlab exited %d after Ctrl-A x, want 0", code)
	}
}
