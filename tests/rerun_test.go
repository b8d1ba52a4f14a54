package tests

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEmulatorFault checks the rule that decides which failed tests the
// emulated-host runner reruns (see emulatorFault): all of them after an oops
// of the emulated host's kernel; otherwise only tests whose own output shows
// a guest triple fault, and nothing when any failure has another cause or the
// failing test expects a triple fault.
func TestEmulatorFault(t *testing.T) {
	const tf = "        kvmlab: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN): the guest hit a fault while handling a double fault\n"
	tests := []struct {
		name string
		out  string
		want []string
	}{
		{"all passed", "=== RUN   TestA\n--- PASS: TestA (1.00s)\nPASS\n", nil},
		{"one triple fault", "=== RUN   TestA\n" + tf + "--- FAIL: TestA (3.00s)\n=== RUN   TestB\n--- PASS: TestB (1.00s)\nFAIL\n", []string{"TestA"}},
		{"subtest triple fault", "=== RUN   TestA\n=== RUN   TestA/x\n" + tf + "--- FAIL: TestA (3.00s)\n    --- FAIL: TestA/x (1.00s)\nFAIL\n", []string{"TestA"}},
		{"two triple faults", "=== RUN   TestA\n" + tf + "--- FAIL: TestA (3.00s)\n=== RUN   TestB\n" + tf + "--- FAIL: TestB (1.00s)\nFAIL\n", []string{"TestA", "TestB"}},
		{"other failure beside", "=== RUN   TestA\n" + tf + "--- FAIL: TestA (3.00s)\n=== RUN   TestB\n    b_test.go:9: wrong value\n--- FAIL: TestB (1.00s)\nFAIL\n", nil},
		{"triple fault in a passing test only", "=== RUN   TestA\n" + tf + "--- PASS: TestA (3.00s)\n=== RUN   TestB\n    wrong\n--- FAIL: TestB (1.00s)\nFAIL\n", nil},
		{"expected triple fault", "=== RUN   TestTinyGuestTripleFault\n" + tf + "--- FAIL: TestTinyGuestTripleFault (3.00s)\nFAIL\n", nil},
		{"no RUN line", tf + "--- FAIL: TestA (3.00s)\nFAIL\n", nil},
		{"stalled guest", "=== RUN   TestA\n    a_test.go:9: the guest shell did not answer within 4m0s\n        " + stallLine + " for 3m50s; kvmlab's threads (pid 9):\n--- FAIL: TestA (240.00s)\nFAIL\n", []string{"TestA"}},
		{"stall beside another failure", "=== RUN   TestA\n        " + stallLine + " for 3m50s\n--- FAIL: TestA (240.00s)\n=== RUN   TestB\n    wrong\n--- FAIL: TestB (1.00s)\nFAIL\n", nil},
		{"host kernel oops: every failure is rerun", "=== RUN   TestA\n[  488.778656] BUG: TASK stack guard page was hit at 000000006b861acb\n    a_test.go:9: the guest shell did not answer\n--- FAIL: TestA (240.00s)\n=== RUN   TestB\n    b_test.go:3: timeout\n--- FAIL: TestB (1.00s)\nFAIL\n", []string{"TestA", "TestB"}},
		{"oops text inside a guest console line is not the host's", "=== RUN   TestA\n        [    1.0] BUG: guest\n--- FAIL: TestA (1.00s)\nFAIL\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := emulatorFault(tc.out); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("emulatorFault = %q, want %q", got, tc.want)
			}
		})
	}
}

// standInEnv makes the test binary a process that only sleeps (TestMain).
const standInEnv = "KVMLAB_TEST_STAND_IN"

// TestStallReport checks the stall diagnosis on a stand-in process: a
// console quiet for two minutes gets the STALL line and a line per thread,
// and the process is sent SIGQUIT; a recently active one gets nothing.
func TestStallReport(t *testing.T) {
	t.Setenv(inHostEnv, "1")
	start := func() *guestConsole {
		g := &guestConsole{t: t, done: make(chan struct{}), start: time.Now()}
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		g.cmd = exec.Command(self)
		g.cmd.Env = append(os.Environ(), standInEnv+"=1")
		g.cmd.Stderr = &g.errb
		if err := g.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { g.err = g.cmd.Wait(); close(g.done) }()
		t.Cleanup(func() { _ = g.cmd.Process.Kill(); <-g.done })
		return g
	}
	g := start()
	g.last = time.Now()
	if r := g.stallReport(); r != "" {
		t.Errorf("a console active just now was reported stalled: %q", r)
	}
	g = start()
	g.last = time.Now().Add(-2 * time.Minute)
	r := g.stallReport()
	if !strings.Contains(r, stallLine+" for 2m") || !regexp.MustCompile(`tid \d+ \S+ state [A-Z]`).MatchString(r) {
		t.Errorf("stall report = %q, want the STALL line and a thread's state", r)
	}
	select {
	case <-g.done:
		// A Go program answers SIGQUIT with its goroutine dump.
		if !strings.Contains(g.errb.String(), "SIGQUIT: quit") || !strings.Contains(g.errb.String(), "goroutine ") {
			t.Errorf("stalled process ended with %v and stderr %q, want a goroutine dump", g.cmd.ProcessState, tailStr(g.errb.String(), 300))
		}
	case <-time.After(5 * time.Second):
		t.Error("the stalled process was not sent SIGQUIT")
	}
}
