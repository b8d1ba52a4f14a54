package labs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// noKVMEnv makes a kvmlab (and the check it runs) look for KVM at a path
// where there is none, as on a machine without the module: the situation
// the emulated host is for. The command inside the emulated host does not
// inherit it (hostinit gives it an environment of its own), so there it
// finds the emulated host's real /dev/kvm.
const noKVMEnv = "KVMLAB_KVM_DEVICE=/nonexistent/kvm"

// TestLabsInEmulatedHost grades labs 1 to 4 through `kvmlab lab check` on
// a machine without /dev/kvm: the check runs inside the emulated host
// (QEMU emulating AMD SVM, kvm_amd inside: about 20 seconds a check here
// once the host kernel is cached, more on a busy machine), and the grade
// comes back. Labs 1 to 3 go in the same way (tinyGuest: kvmlab, the
// lab's files, as and ld), each grading from another record made inside
// (the trace, the quiz, the registers at each exit); lab 4 compiles the
// learner's device here and carries that kvmlab in. The reference must
// pass and the wrong answer fail, with lines only that record gives. Set
// KVMLAB_SKIP_EMULATED=1 to skip it, as emuhost's tests.
func TestLabsInEmulatedHost(t *testing.T) {
	if os.Getenv("KVMLAB_SKIP_EMULATED") == "1" {
		t.Skip("KVMLAB_SKIP_EMULATED=1")
	}
	if _, _, err := binutils(0); err != nil {
		t.Fatal(err)
	}
	bin := testKvmlab(t)
	// The progress line the check prints inside, before it runs the
	// guest there, for each lab.
	inside := map[int]string{1: "lab 1: running your guest with --trace", 2: "lab 2: replaying answers.txt through kvmlab step --quiz",
		3: "lab 3: running your guest under kvmlab step", 4: "lab 4: running the lab's guest against your device"}
	tests := []struct {
		lab   int
		name  string
		pass  bool
		lines string // in what the check printed
	}{
		{1, "reference", true, `COM1's transmit register (port 0x3f8) received "hello\n"`},
		{1, "wrong", false, "port 0x2f8 received 6 writes"},
		{2, "reference", true, "quiz score: 5 of 5"},
		{2, "wrong", false, "quiz score: 4 of 5"},
		{3, "reference", true, "mode: long mode (64-bit), CPL 0; EFER LME LMA"},
		{3, "wrong", false, "mode: long mode (compatibility, 32-bit)"},
		{4, "reference", true, "accumulator add 05 00 00 00"},
		{4, "wrong", false, "check 3 read 0x7 from your device; it should read 0xc"},
	}
	for _, tc := range tests {
		l, err := Get(tc.lab)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(l.Slug+"/"+tc.name, func(t *testing.T) {
			files := l.Solution()
			if !tc.pass {
				files = l.Wrong()
			}
			dir := writeWork(t, l, files)
			num := strconv.Itoa(tc.lab)
			cmd := exec.Command(bin, "lab", "check", num, dir)
			cmd.Env = append(os.Environ(), noKVMEnv)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			out := stdout.String()
			t.Logf("kvmlab lab check %d (%s): status %d\nstdout:\n%sstderr:\n%s", tc.lab, tc.name, code, out, stderr.String())
			if !strings.Contains(stderr.String(), "checking inside the emulated host") ||
				!strings.Contains(stderr.String(), "(emulated host) "+inside[tc.lab]) {
				t.Errorf("the check did not say it ran the guest inside the emulated host")
			}
			switch {
			case tc.pass && (code != 0 || !strings.Contains(out, "PASS: lab "+num)):
				t.Errorf("the reference solution did not pass")
			case !tc.pass && (code != 1 || !strings.Contains(out, "NOT YET: lab "+num) || !strings.Contains(out, "\nhint: ")):
				t.Errorf("the wrong solution was not graded as failing with a hint")
			}
			if !strings.Contains(out, tc.lines) {
				t.Errorf("the grade lacks %q", tc.lines)
			}
		})
	}
}

// TestLabsEmulatedHostNeedsQEMU: without KVM and without QEMU, a check of
// labs 1 to 4 says in one line what to install, before it boots or builds
// anything.
func TestLabsEmulatedHostNeedsQEMU(t *testing.T) {
	bin := testKvmlab(t)
	// A PATH with as and ld (labs 1 to 3 name those first) but no QEMU.
	path := t.TempDir()
	for _, p := range []string{"as", "ld"} {
		real, err := exec.LookPath(p)
		if err != nil {
			t.Skipf("%s is not installed: TestLabs123NoAssembler covers its absence", p)
		}
		if err := os.Symlink(real, filepath.Join(path, p)); err != nil {
			t.Fatal(err)
		}
	}
	for n := 1; n <= 3; n++ {
		l, err := Get(n)
		if err != nil {
			t.Fatal(err)
		}
		dir := writeWork(t, l, l.Solution())
		tmp := t.TempDir()
		cmd := exec.Command(bin, "lab", "check", strconv.Itoa(n), dir)
		cmd.Env = append(os.Environ(), noKVMEnv, "PATH="+path, "TMPDIR="+tmp)
		out, _ := cmd.CombinedOutput()
		line := strings.TrimSuffix(string(out), "\n")
		if strings.Contains(line, "\n") || !strings.Contains(line, "needs QEMU") || !strings.Contains(line, "apt-get install qemu-system-x86") ||
			!strings.Contains(line, "/nonexistent/kvm") {
			t.Errorf("lab %d without KVM and QEMU: %q, want one line naming QEMU, its package, and why KVM is not usable", n, out)
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) != 0 {
			t.Errorf("lab %d: work was done before the refusal: %v", n, left)
		}
	}
}

// TestReadMarkedResult: the grade line is found among the emulated host's
// console lines (carriage returns, text before the marker on its line) by
// its token; lines with another token or none are not grades, whatever
// they say, the first grade counts, and a line that does not decode is no
// grade.
func TestReadMarkedResult(t *testing.T) {
	const tok = "0123abcd"
	grade := func(token, json string) string { return resultMarker + token + " " + json + "\r\n" }
	tests := []struct {
		name    string
		console string
		ok      bool
		want    labResult
	}{
		{"none", "hostinit: loading kvm_amd\r\nKVMLAB-HOST-EXIT 0\r\n", false, labResult{}},
		{"pass", "boot\r\n" + grade(tok, `{"Passed":true,"Lines":["a","b"],"Hint":""}`) + "KVMLAB-HOST-EXIT 0\r\n", true,
			labResult{Result: Result{Passed: true, Lines: []string{"a", "b"}}}},
		{"after other text on the line", "  x " + grade(tok, `{"Hint":"h"}`), true, labResult{Result: Result{Hint: "h"}}},
		{"an error", grade(tok, `{"error":"no as"}`), true, labResult{Error: "no as"}},
		{"the first counts", grade(tok, `{"Hint":"first"}`) + "  guest console: " + grade(tok, `{"Passed":true}`), true, labResult{Result: Result{Hint: "first"}}},
		{"another token is not a grade", grade("guessed", `{"Passed":true}`) + grade(tok, `{"Hint":"real"}`), true, labResult{Result: Result{Hint: "real"}}},
		{"no token is not a grade", resultMarker + `{"Passed":true}` + "\n", false, labResult{}},
		{"cut short", grade(tok, `{"Passed":tr`), false, labResult{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := readMarkedResult(tt.console, tok)
			if ok != tt.ok || got.Passed != tt.want.Passed || got.Hint != tt.want.Hint || got.Error != tt.want.Error ||
				strings.Join(got.Lines, "|") != strings.Join(tt.want.Lines, "|") {
				t.Errorf("readMarkedResult = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestProgressLines: of the emulated host's console, only the check's own
// progress and the harness's retries reach the learner, whatever the
// writes' boundaries.
func TestProgressLines(t *testing.T) {
	var log bytes.Buffer
	p := &progressLines{lab: 2, env: &Env{Log: &log}}
	for _, w := range []string{"[    0.1] Linux version\r\nhostinit: ok\r\nlab 2: repl", "aying answers.txt\r\n  quiz #1\r\nlab 1: not this lab\n",
		"harness: emulated host hung, retrying\nlab 2: no newline yet"} {
		if _, err := p.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	want := "  (emulated host) lab 2: replaying answers.txt\n  (emulated host) harness: emulated host hung, retrying\n"
	if log.String() != want {
		t.Errorf("progress:\n%q\nwant\n%q", log.String(), want)
	}
}

// TestEnvCommand: with Emulated (a /dev/kvm that cannot boot Linux: labs
// 5 and 6 then boot their guests through the emulated host) run and step
// get --emulated-host and nothing else does; and the token of a check
// inside the emulated host never reaches the kvmlab a check starts.
func TestEnvCommand(t *testing.T) {
	t.Setenv(innerEnv, "secret")
	tests := []struct {
		emulated bool
		args     []string
		want     []string
	}{
		{false, []string{"run", "--stats"}, []string{"run", "--stats"}},
		{true, []string{"run", "--stats"}, []string{"run", "--emulated-host", "--stats"}},
		{true, []string{"step", "--quiz"}, []string{"step", "--emulated-host", "--quiz"}},
		{true, []string{"compare", "--json"}, []string{"compare", "--json"}},
		{true, nil, nil},
	}
	for _, tt := range tests {
		cmd := (&Env{Kvmlab: "/k", Emulated: tt.emulated}).Command(context.Background(), tt.args...)
		if got := cmd.Args[1:]; strings.Join(got, " ") != strings.Join(tt.want, " ") || cmd.Path != "/k" {
			t.Errorf("Command(%q), emulated %v: %s %q; want /k %q", tt.args, tt.emulated, cmd.Path, got, tt.want)
		}
		for _, kv := range cmd.Env {
			if strings.HasPrefix(kv, innerEnv+"=") {
				t.Errorf("Command(%q) passes %s on", tt.args, kv)
			}
		}
		if len(cmd.Env) == 0 {
			t.Errorf("Command(%q) has an empty environment: PATH and HOME must go on", tt.args)
		}
	}
}
