package emuhost

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseExitMarker(t *testing.T) {
	cases := []struct {
		line string
		code int
		ok   bool
	}{
		{"KVMLAB-HOST-EXIT 0", 0, true},
		{"KVMLAB-HOST-EXIT 3", 3, true},
		{"KVMLAB-HOST-EXIT 121\r", 121, true},
		{"KVMLAB-HOST-EXIT 7 ", 7, true},
		{"partial outputKVMLAB-HOST-EXIT 42", 42, true},
		{"KVMLAB-HOST-EXIT 1 then KVMLAB-HOST-EXIT 2", 2, true},
		{"KVMLAB-HOST-EXIT", 0, false},
		{"KVMLAB-HOST-EXIT ", 0, false},
		{"KVMLAB-HOST-EXIT x", 0, false},
		{"KVMLAB-HOST-EXIT -1", 0, false},
		{"KVMLAB-HOST-EXIT 12abc", 0, false},
		{"KVMLAB-HOST-EXIT 99999999999", 0, false},
		{"kvmlab-host-exit 0", 0, false},
		{"[    1.234] random kernel line", 0, false},
		{"", 0, false},
	}
	for _, c := range cases {
		code, ok := parseExitMarker(c.line)
		if code != c.code || ok != c.ok {
			t.Errorf("parseExitMarker(%q) = %d, %v; want %d, %v", c.line, code, ok, c.code, c.ok)
		}
	}
}

func TestExitCodeFromOutput(t *testing.T) {
	out := "hostinit: kernel up after 1.0s\nKVMLAB-HOST-EXIT 5\nhello\nKVMLAB-HOST-EXIT 0\n[ 9.1] reboot: Power down\n"
	if code, ok := exitCodeFromOutput(out); !ok || code != 0 {
		t.Errorf("got %d, %v; want the last marker, 0", code, ok)
	}
	if _, ok := exitCodeFromOutput("no marker\nat all\n"); ok {
		t.Error("found a marker in output without one")
	}
}

func TestParseAptDepends(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
	if got := parseAptDepends(out); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("got %q", got)
	}
	out = "linux-image-amd64\n |Depends: <linux-image-6.12.9-amd64>\n  Depends: firmware\n"
	if got := parseAptDepends(out); got != "linux-image-6.12.9-amd64" {
		t.Errorf("got %q", got)
	}
	if got := parseAptDepends(""); got != "" {
		t.Errorf("got %q from nothing", got)
	}
	if v := parseAptVersion("Package: x\nVersion: 6.1.192-2\nArch: amd64\n"); v != "6.1.192-2" {
		t.Errorf("parseAptVersion: %q", v)
	}
}

func TestReadConsole(t *testing.T) {
	first := make(chan struct{})
	var got strings.Builder
	all := readConsole(strings.NewReader("a\r\nb\n\r\nno newline"), &got, first, make(chan struct{}, 1))
	want := "a\nb\n\nno newline\n"
	if all != want || got.String() != want {
		t.Errorf("readConsole = %q (streamed %q), want %q", all, got.String(), want)
	}
	select {
	case <-first:
	default:
		t.Error("firstOutput not closed")
	}
}

// The attempt logic is tested with /bin/sh standing in for QEMU.
func shAttempt(t *testing.T, script string, timeout time.Duration) attempt {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	return runAttempt(context.Background(), sh, []string{"-c", script}, limits{total: timeout}, &syncWriter{})
}

func TestRunAttemptSilentHang(t *testing.T) {
	old := silentHangTimeout
	silentHangTimeout = 300 * time.Millisecond
	defer func() { silentHangTimeout = old }()
	start := time.Now()
	// The child sleep keeps the pipe open: killing the process group
	// must end it too.
	a := shAttempt(t, "sleep 30 & sleep 30", time.Minute)
	if a.err != nil || !strings.Contains(a.hung, "no output") {
		t.Fatalf("want a silent hang, got hung=%q err=%v", a.hung, a.err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %s to detect and kill", d)
	}
}

func TestRunAttemptTimeout(t *testing.T) {
	a := shAttempt(t, "echo booting; sleep 30", 500*time.Millisecond)
	if !strings.Contains(a.hung, "timeout") {
		t.Fatalf("want a timeout hang, got hung=%q err=%v", a.hung, a.err)
	}
	if a.output != "booting\n" {
		t.Errorf("output %q", a.output)
	}
}

// A host that printed, then fell silent, is hung after Quiet; one that
// keeps printing is not, however long it runs.
func TestRunAttemptQuiet(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	start := time.Now()
	a := runAttempt(context.Background(), sh, []string{"-c", "echo booting; sleep 30"}, limits{total: time.Minute, quiet: 400 * time.Millisecond}, &syncWriter{})
	if !strings.Contains(a.hung, "printed nothing for 400ms") {
		t.Fatalf("want a quiet hang, got hung=%q err=%v", a.hung, a.err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %s to notice the silence", d)
	}
	a = runAttempt(context.Background(), sh, []string{"-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done; printf 'KVMLAB-HOST-EXIT 0\\r\\n'"},
		limits{total: time.Minute, quiet: 600 * time.Millisecond}, &syncWriter{})
	if a.hung != "" || a.err != nil {
		t.Fatalf("a host printing every 0.2 s counted as hung: hung=%q err=%v", a.hung, a.err)
	}
}

func TestRunAttemptExit(t *testing.T) {
	a := shAttempt(t, "echo hello; printf 'KVMLAB-HOST-EXIT 3\\r\\n'", time.Minute)
	if a.err != nil || a.hung != "" {
		t.Fatalf("hung=%q err=%v", a.hung, a.err)
	}
	if code, ok := exitCodeFromOutput(a.output); !ok || code != 3 {
		t.Errorf("exit code %d, %v from %q", code, ok, a.output)
	}
}

func TestRunAttemptContextCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	a := runAttempt(ctx, "/bin/sh", []string{"-c", "echo x; sleep 30"}, limits{total: time.Minute}, &syncWriter{})
	if !errors.Is(a.err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", a.err)
	}
}

func TestRunNoQEMU(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Run(context.Background(), Spec{Argv: []string{"true"}})
	if !errors.Is(err, ErrNoQEMU) || !strings.Contains(err.Error(), "apt-get install qemu-system-x86") {
		t.Errorf("err = %v", err)
	}
}

func TestKVMUsable(t *testing.T) {
	ok, why := KVMUsable()
	t.Logf("KVMUsable: %v, %s", ok, why)
	if why == "" {
		t.Error("empty reason")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && ok {
		t.Error("usable without /dev/kvm")
	}
}

// shAttempts runs runAttempts with sh standing in for QEMU; the script sees
// the attempt number in $1 (counted with a file).
func shAttempts(t *testing.T, script string, timeout time.Duration) (*Result, string, error) {
	t.Helper()
	counter := filepath.Join(t.TempDir(), "n")
	full := `n=$(cat ` + counter + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + counter + `; set -- $n; ` + script
	var out strings.Builder
	res, err := runAttempts(context.Background(), "/bin/sh", []string{"-c", full}, limits{total: timeout}, &syncWriter{w: &out})
	return res, out.String(), err
}

func TestRunAttemptsRetriesSilentHang(t *testing.T) {
	old := silentHangTimeout
	silentHangTimeout = 300 * time.Millisecond
	defer func() { silentHangTimeout = old }()
	res, out, err := shAttempts(t, `if [ $1 = 1 ]; then sleep 30; fi; echo "hostinit: up"; echo "KVMLAB-HOST-EXIT 4"`, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || res.ExitCode != 4 {
		t.Errorf("attempts %d, code %d; want 2, 4", res.Attempts, res.ExitCode)
	}
	if !strings.Contains(out, "harness: emulated host hung after 0s (no output at all within 300ms of starting), retrying (attempt 2/3)") {
		t.Errorf("retry not announced:\n%s", out)
	}
	if res.Output != "hostinit: up\nKVMLAB-HOST-EXIT 4\n" {
		t.Errorf("Output %q: want only the last attempt's", res.Output)
	}
}

func TestRunAttemptsRetriesBootPanic(t *testing.T) {
	res, out, err := shAttempts(t, `if [ $1 = 1 ]; then echo "Kernel panic - not syncing: IO-APIC + timer doesn't work!"; exit 0; fi; echo "hostinit: up"; echo "KVMLAB-HOST-EXIT 0"`, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || res.ExitCode != 0 {
		t.Errorf("attempts %d, code %d; want 2, 0", res.Attempts, res.ExitCode)
	}
	if !strings.Contains(out, "crashed while booting") || !strings.Contains(out, "kernel panic before /init ran") {
		t.Errorf("retry not announced:\n%s", out)
	}
}

func TestRunAttemptsHangsEveryTime(t *testing.T) {
	res, _, err := shAttempts(t, `echo booting; sleep 30`, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "hung 3 times") {
		t.Fatalf("err = %v", err)
	}
	if res.Attempts != MaxAttempts {
		t.Errorf("attempts %d, want %d", res.Attempts, MaxAttempts)
	}
}

// A crash of the emulated host's own kernel while the command runs (its
// printk lines start with a timestamp) is the test bed failing: retried.
func TestRunAttemptsRetriesHostKernelCrash(t *testing.T) {
	res, out, err := shAttempts(t, `echo "hostinit: running"; if [ $1 -lt 3 ]; then echo "[  100.93] BUG: TASK stack guard page was hit"; exit 0; fi; echo "KVMLAB-HOST-EXIT 0"`, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 3 || res.ExitCode != 0 {
		t.Errorf("attempts %d, code %d; want 3, 0", res.Attempts, res.ExitCode)
	}
	if !strings.Contains(out, "kernel crashed after") || !strings.Contains(out, "BUG: TASK stack guard page") {
		t.Errorf("retry not announced with the crash line:\n%s", out)
	}
}

func TestRunAttemptsNoMarkerAfterInit(t *testing.T) {
	// /init ran but the host stopped without a marker: an error, no retry.
	res, _, err := shAttempts(t, `echo "hostinit: up"; echo "Kernel panic - not syncing: Attempted to kill init!"`, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "without printing") {
		t.Fatalf("err = %v", err)
	}
	if res.Attempts != 1 {
		t.Errorf("attempts %d, want 1", res.Attempts)
	}
}

func TestQemuArgsHostAppend(t *testing.T) {
	for _, c := range []struct{ env, want string }{
		{"", "console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init"},
		{"  transparent_hugepage=never ", "console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init transparent_hugepage=never"},
	} {
		t.Setenv(HostAppendEnv, c.env)
		args := qemuArgs("k", "i", Spec{CPUs: 2, MemMB: 2048})
		got := ""
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-append" {
				got = args[i+1]
			}
		}
		if got != c.want {
			t.Errorf("%s=%q: -append %q, want %q", HostAppendEnv, c.env, got, c.want)
		}
	}
}

// TestRunRefusesBadSpec: a spec Run cannot honour is refused before any
// kernel is fetched or QEMU started.
func TestRunRefusesBadSpec(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"unknown emulator", Spec{Emulator: "vbox-vmx", Argv: []string{"true"}}, `unknown emulator "vbox-vmx"`},
		{"no argv", Spec{}, "empty Argv"},
		{"relative path", Spec{Argv: []string{"true"}, Files: []File{{Path: "bin/x", Data: []byte{}}}}, "must be absolute"},
		{"two sources", Spec{Argv: []string{"true"}, Files: []File{{Path: "/x", HostPath: "/etc/hostname", Data: []byte{}}}}, "both HostPath and Data"},
		{"stdout alone", Spec{Argv: []string{"true"}, Stdout: io.Discard}, "both Stdout and Stderr, or neither"},
		{"streams and interactive", Spec{Emulator: BochsVMX, Interactive: true, Argv: []string{"true"}, Stdout: io.Discard, Stderr: io.Discard}, "not interactive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir()) // no QEMU: a spec that got past the checks fails differently
			_, err := Run(context.Background(), tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
