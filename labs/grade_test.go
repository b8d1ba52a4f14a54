package labs

import (
	"context"
	"strings"
	"testing"
)

// gradeReferenceAndWrong runs lab l's check on its reference solution and
// on its wrong one, with the kvmlab binary bin: the first must pass, the
// second must not.
func gradeReferenceAndWrong(t *testing.T, l *Lab, bin string) {
	t.Helper()
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		pass  bool
	}{{"reference", l.Solution(), true}, {"wrong", l.Wrong(), false}} {
		res, err := l.Check(context.Background(), &Env{Kvmlab: bin}, writeLab(t, l, tc.files))
		if err != nil {
			t.Fatal(err)
		}
		if res.Passed != tc.pass {
			t.Errorf("%s: passed = %v, want %v\n%s", tc.name, res.Passed, tc.pass, strings.Join(res.Lines, "\n"))
		}
	}
}

// checkResult logs a grade and checks it passed as pass, with a hint
// containing hint and lines containing line.
func checkResult(t *testing.T, res Result, pass bool, hint, line string) {
	t.Helper()
	all := strings.Join(res.Lines, "\n")
	t.Logf("passed %v, hint %q\n%s", res.Passed, res.Hint, all)
	if res.Passed != pass {
		t.Errorf("passed = %v, want %v", res.Passed, pass)
	}
	if !strings.Contains(res.Hint, hint) {
		t.Errorf("hint %q does not contain %q", res.Hint, hint)
	}
	if !strings.Contains(all, line) {
		t.Errorf("lines do not contain %q", line)
	}
}

// TestFailure checks that a failed run's summary keeps kvmlab's own reason
// for the stop even when a register dump follows it: the test harness
// recognises an emulator's triple fault by that line.
func TestFailure(t *testing.T) {
	dump := "kvmlab: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN): the guest hit a fault while handling a double fault\nRIP=fff0\nCS=f000\nCR0=00000010\n"
	tests := []struct {
		name, out, want string
	}{
		{"reason before a dump", "console\n" + dump, "kvmlab: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN): the guest hit a fault while handling a double fault ... ... / RIP=fff0 / CS=f000 / CR0=00000010"},
		{"reason within the tail", "a\nb\nkvmlab: guest powered off\n", "a / b / kvmlab: guest powered off"},
		{"no reason", "x\ny\n", "x / y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failure(tc.out, 3); got != tc.want {
				t.Errorf("failure() = %q, want %q", got, tc.want)
			}
		})
	}
}
