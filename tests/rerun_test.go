package tests

import (
	"bufio"
	"fmt"
	"io"
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
		{"stalled guest", "=== RUN   TestA\n    a_test.go:9: the guest shell did not answer within 4m0s\n        " + stallLine + " for 3m50s; kvmlab's threads (pid 9):\n        " + stallInKVM + ": no exit reached kvmlab\n--- FAIL: TestA (240.00s)\nFAIL\n", []string{"TestA"}},
		{"stalled guest that kvmlab kept busy", "=== RUN   TestA\n    a_test.go:9: the guest shell did not answer within 4m0s\n        " + stallLine + " for 3m50s; kvmlab's threads (pid 9):\n        STALL VERDICT: kvmlab at work: vCPU 0 made 812 exits\n--- FAIL: TestA (240.00s)\nFAIL\n", nil},
		{"stall beside another failure", "=== RUN   TestA\n        " + stallLine + " for 3m50s\n        " + stallInKVM + "\n--- FAIL: TestA (240.00s)\n=== RUN   TestB\n    wrong\n--- FAIL: TestB (1.00s)\nFAIL\n", nil},
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

// standInReady is the stand-in's first line: from then on it ignores
// SIGUSR1. (A fixed sleep instead was too short for a test binary starting
// on a loaded emulated host: the SIGUSR1 came first and killed it.)
const standInReady = "stand-in: ready"

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
		stdout, err := g.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.cmd.Process.Kill(); <-g.done })
		ready := make(chan bool, 1)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			ready <- strings.TrimSpace(line) == standInReady
			_, _ = io.Copy(io.Discard, stdout)
			g.err = g.cmd.Wait()
			close(g.done)
		}()
		select {
		case ok := <-ready:
			if !ok {
				t.Fatalf("the stand-in did not say %q first", standInReady)
			}
		case <-time.After(time.Minute):
			t.Fatalf("the stand-in did not say %q within a minute", standInReady)
		}
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
	// The stand-in ignores SIGUSR1, so there is no snapshot to judge by.
	if !strings.Contains(r, "STALL VERDICT: unknown: kvmlab wrote no second snapshot") {
		t.Errorf("stall report = %q, want the verdict that no snapshot came", r)
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

// TestStallVerdict: only a guest that burned CPU without one exit reaching
// kvmlab between the two snapshots counts as looping inside KVM.
func TestStallVerdict(t *testing.T) {
	snaps := func(plus ...string) string {
		s := "kvmlab: snapshot 1, 60.00 s after the vCPUs started\n  vCPU 0: was inside KVM_RUN (the request interrupted it); exits to kvmlab: 500\n    KVM's own counters so far: exits +9\n" +
			"kvmlab: snapshot 2, 62.00 s after the vCPUs started, 2.00 s after snapshot 1\n"
		for i, p := range plus {
			s += fmt.Sprintf("  vCPU %d: was inside KVM_RUN (the request interrupted it); exits to kvmlab: 500, +%s since snapshot 1\n    KVM's own counters since snapshot 1: exits +40\n", i, p)
		}
		return s
	}
	tests := []struct {
		name    string
		stderr  string
		busiest int64
		want    string
	}{
		{"spinning inside KVM", snaps("0"), 199, stallInKVM},
		{"both vCPUs silent, one spinning", snaps("0", "0"), 150, stallInKVM},
		{"exits reached kvmlab", snaps("0", "37"), 199, "STALL VERDICT: kvmlab at work: vCPU 1 made 37 exits"},
		{"halted", snaps("0"), 3, "STALL VERDICT: idle"},
		{"no snapshot", "SIGQUIT: quit\n", 199, "STALL VERDICT: unknown: kvmlab wrote no second snapshot"},
		{"second snapshot without vCPU lines", snaps(), 199, "STALL VERDICT: unknown: the second snapshot has no vCPU lines"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := stallVerdict(tc.stderr, tc.busiest, 100); !strings.HasPrefix(got, tc.want) {
				t.Errorf("stallVerdict = %q, want it to start with %q", got, tc.want)
			}
		})
	}
}

// TestFlatStallVerdict: kvmlab compare's error for a stalled instance, with
// the VMM's snapshots flattened onto one line, counts as a loop inside KVM
// only when no vCPU made an exit to kvmlab while KVM handled thousands.
func TestFlatStallVerdict(t *testing.T) {
	// The shape of the error seen in CI (trimmed).
	msg := func(plus string, inKVM int) string {
		return "2 of 8 instances ready after 5m0s; instance 3: console: Welcome to u-root!; its VMM's snapshots: long mode (64-bit), CPL 0 | RIP=ffffffffc035320c | " +
			"kvmlab: snapshot 2, 282.41 s after the vCPUs started, 0.51 s after snapshot 1 | vCPU 0: was inside KVM_RUN (the request interrupted it); exits to kvmlab: 543, +" + plus + " since snapshot 1 | long mode (64-bit), CPL 0 | " +
			fmt.Sprintf("KVM's own counters since snapshot 1: exits +%d, req_event +11399, insn_emulation +11398, pf_guest +11398", inKVM)
	}
	tests := []struct {
		name, msg string
		stall     bool
	}{
		{"looping inside KVM", msg("0", 11398), true},
		{"exits reached kvmlab", msg("12", 11398), false},
		{"idle guest", msg("0", 14), false},
		{"no snapshots", "instance 5 of 8 ended before its probe reported: kvmlab run: exit status 1", false},
		{"one snapshot only", "its VMM's snapshots: kvmlab: snapshot 1, 3.00 s after the vCPUs started", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := flatStallVerdict(tc.msg)
			if tc.stall != strings.HasPrefix(got, stallInKVM) || (!tc.stall && got != "") {
				t.Errorf("flatStallVerdict = %q, want a stall verdict: %v", got, tc.stall)
			}
		})
	}
}

// TestPrintkStamp: a kernel message's time stamp is found where one cut
// into a shell's answer, and not in answers that merely hold brackets.
func TestPrintkStamp(t *testing.T) {
	tests := []struct {
		line string
		at   int // -1: none
	}{
		{"42[    9.618789] clocksource: timekeeping watchdog on CPU0", 2},
		{"42", -1},
		{"[1] 2 [3.5]", -1},
		{"[12345.123456] at the start", 0},
	}
	for _, tc := range tests {
		loc := printkStamp.FindStringIndex(tc.line)
		if (loc == nil && tc.at != -1) || (loc != nil && loc[0] != tc.at) {
			t.Errorf("printkStamp in %q: %v, want at %d", tc.line, loc, tc.at)
		}
	}
}
