package labs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	kvmlabOnce sync.Once
	kvmlabBin  string
	kvmlabErr  error
)

// testKvmlab is the kvmlab binary the checks run guests with: KVMLAB_BIN,
// or one built from this tree once per test run.
func testKvmlab(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("KVMLAB_BIN"); b != "" {
		return b
	}
	kvmlabOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvmlab-labs-test-")
		if err != nil {
			kvmlabErr = err
			return
		}
		kvmlabBin = filepath.Join(dir, "kvmlab")
		// Static, as make build builds it: the emulated host, where
		// TestLabsInEmulatedHost carries it, has no C library.
		build := exec.Command("go", "build", "-o", kvmlabBin, "kvmlab/cmd/kvmlab")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			kvmlabErr = errors.New(string(out))
		}
	})
	if kvmlabErr != nil {
		t.Fatalf("building kvmlab: %v", kvmlabErr)
	}
	return kvmlabBin
}

// writeWork writes a lab's starting point with Start, as `kvmlab lab
// start` does, then over, as the learner would.
func writeWork(t *testing.T, l *Lab, over map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "work")
	if _, err := l.Start(dir); err != nil {
		t.Fatal(err)
	}
	for name, b := range over {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(name)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestLabs123 grades labs 1 to 3 for real: the learner's guest.S is
// assembled with GNU as and ld and run by kvmlab on this machine's
// /dev/kvm (kvm_pvm runs these real-mode guests), and the grade comes from
// the exits it made: the trace (lab 1), the quiz (lab 2), the registers
// at each exit (lab 3). The reference solution must pass, the wrong one
// and the untouched starting point must not.
func TestLabs123(t *testing.T) {
	if !tinyGuestsRunHere() {
		t.Skip("no /dev/kvm that runs even a tiny guest here: tests/TestLabs runs these checks in the emulated host")
	}
	if _, _, err := binutils(0); err != nil {
		t.Skip(err)
	}
	bin := testKvmlab(t)
	// The "no poweroff" guest sleeps in KVM until the check gives up on
	// it: no need to wait the learner's 30 seconds for that.
	defer func(d time.Duration) { guestTimeout = d }(guestTimeout)
	guestTimeout = 10 * time.Second
	edit := func(n int, from, to string) map[string][]byte {
		l, _ := Get(n)
		src := string(l.Solution()["guest.S"])
		if !strings.Contains(src, from) {
			t.Fatalf("lab %d solution lacks %q", n, from)
		}
		return map[string][]byte{"guest.S": []byte(strings.Replace(src, from, to, 1))}
	}
	sol := func(l *Lab) map[string][]byte { return l.Solution() }
	wrong := func(l *Lab) map[string][]byte { return l.Wrong() }
	tests := []struct {
		lab   int
		name  string
		files func(l *Lab) map[string][]byte
		pass  bool
		hint  string // in the hint when failing
		lines string // in the lines
	}{
		{1, "reference solution", sol, true, "", `received "hello\n"`},
		{1, "wrong solution (COM2)", wrong, false, "wrote to port 0x2f8", "port 0x2f8 received 6 writes"},
		{1, "starting point", func(*Lab) map[string][]byte { return nil }, false, "nothing reached COM1", ""},
		{1, "no poweroff", func(*Lab) map[string][]byte { return edit(1, "out %ax, %dx", "nop") }, false, "never stopped", `received "hello\n"`},
		{1, "word misspelt", func(*Lab) map[string][]byte { return edit(1, `.asciz "hello\n"`, `.asciz "helo\n"`) }, false, "not \"hello\\n\"", ""},
		{1, "endless loop", func(*Lab) map[string][]byte { return edit(1, "jz done", "jz _start") }, false, "exits without end", ""},
		{1, "assembler error", func(*Lab) map[string][]byte { return edit(1, "lodsb", "lodsbx") }, false, "fix the errors above", "guest.S:"},
		{1, "no boot signature", func(*Lab) map[string][]byte { return edit(1, ".byte 0x55, 0xaa", ".byte 0, 0") }, false, "'.org 510'", ""},
		{2, "reference answers", sol, true, "", "quiz score: 5 of 5"},
		{2, "wrong answers (CPUID exits, IN does not)", wrong, false, "look again at #2: wrong", "quiz score: 4 of 5"},
		{2, "starting point", func(*Lab) map[string][]byte { return nil }, false, "some exits got no answer", "quiz score: 1 of 5"},
		{3, "reference solution", sol, true, "", "mode: long mode (64-bit), CPL 0; EFER LME LMA; CR0 PE ET NW CD PG"},
		{3, "wrong solution (32-bit code descriptor)", wrong, false, "compatibility mode", "mode: long mode (compatibility, 32-bit)"},
		{3, "no EFER.LME", func(*Lab) map[string][]byte { return edit(3, "or $(1 << 8), %eax", "or $0, %eax") }, false, "", ""},
		{3, "page tables not linked", func(*Lab) map[string][]byte { return edit(3, "movl $0x2003, 0x1000", "movl $0, 0x1000") }, false, "triple-faulted", ""},
	}
	for _, tc := range tests {
		l, err := Get(tc.lab)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(l.Slug+"/"+tc.name, func(t *testing.T) {
			dir := writeWork(t, l, tc.files(l))
			res, err := l.Check(context.Background(), &Env{Kvmlab: bin}, dir)
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			all := strings.Join(res.Lines, "\n")
			t.Logf("passed %v, hint %q\n%s", res.Passed, res.Hint, all)
			if res.Passed != tc.pass {
				t.Errorf("passed = %v, want %v", res.Passed, tc.pass)
			}
			if !tc.pass && res.Hint == "" {
				t.Errorf("a failing grade without a hint")
			}
			if !strings.Contains(res.Hint, tc.hint) {
				t.Errorf("hint %q does not contain %q", res.Hint, tc.hint)
			}
			if !strings.Contains(all, tc.lines) {
				t.Errorf("lines do not contain %q", tc.lines)
			}
		})
	}
}

// TestLabs123NoAssembler: without GNU as and ld a check says so in one
// line naming the package.
func TestLabs123NoAssembler(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for n := 1; n <= 3; n++ {
		l, err := Get(n)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Check(context.Background(), &Env{}, writeWork(t, l, l.Solution()))
		if !errors.Is(err, ErrNoAssembler) || !strings.Contains(err.Error(), "binutils") || strings.Contains(err.Error(), "\n") {
			t.Errorf("lab %d without as: %v, want one line naming binutils", n, err)
		}
	}
}

// TestStartAndCheckDir: start creates a missing directory, refuses one
// holding the lab's files without touching them, and CheckDir names what
// is missing.
func TestStartAndCheckDir(t *testing.T) {
	l, err := Get(1)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "a", "b")
	wrote, err := l.Start(dir)
	if err != nil || strings.Join(wrote, " ") != "README.md guest.S" {
		t.Fatalf("Start into a new directory: %v, %v", wrote, err)
	}
	if err := l.CheckDir(dir); err != nil {
		t.Fatalf("CheckDir after Start: %v", err)
	}
	mine := []byte("my evening's work\n")
	if err := os.WriteFile(filepath.Join(dir, "guest.S"), mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start(dir); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "guest.S") {
		t.Errorf("second Start: %v, want ErrExists naming guest.S", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "guest.S")); string(b) != string(mine) {
		t.Errorf("second Start changed guest.S to %q", b)
	}
	empty := t.TempDir()
	for _, tc := range []struct {
		dir, want string
	}{
		{empty, "guest.S is missing"},
		{filepath.Join(empty, "nope"), "does not exist"},
		{filepath.Join(dir, "guest.S"), "not a directory"},
	} {
		err := l.CheckDir(tc.dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckDir(%s) = %v, want one line saying %q", tc.dir, err, tc.want)
		}
	}
	if _, err := l.Start(filepath.Join(dir, "guest.S")); err == nil {
		t.Errorf("Start into a file succeeded")
	}
}
