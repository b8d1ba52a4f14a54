package emuhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"kvmlab/guest/runexec"
)

// shOutputs runs runMachineAttempts with sh standing in for QEMU and the
// command's two output streams on its file descriptors 3 and 4, as QEMU's
// COM2 and COM3 get them (qemuArgs); the script sees the attempt number
// in $1.
func shOutputs(t *testing.T, script string) (res *Result, stdout, stderr, console string, err error) {
	t.Helper()
	counter := t.TempDir() + "/n"
	full := `n=$(cat ` + counter + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + counter + `; set -- $n; ` + script
	var o, e, c lockedBuffer
	m := machine{path: "/bin/sh", args: []string{"-c", full}, outputs: []*streamOut{{w: &o}, {w: &e}}}
	res, err = runMachineAttempts(context.Background(), m, limits{total: time.Minute}, &syncWriter{w: &c})
	return res, o.String(), e.String(), c.String(), err
}

// TestRunOutputStreams: the command's output streams arrive apart from the
// console and from each other, byte for byte (no line ending added or
// changed); a host that is to be retried after passing some of them on is
// not run again, and the error says it was the emulator.
func TestRunOutputStreams(t *testing.T) {
	t.Run("apart from the console", func(t *testing.T) {
		res, out, errOut, console, err := shOutputs(t, `echo "hostinit: running"; printf 'out 1\nno newline' >&3; printf 'err\r\n' >&4; echo "KVMLAB-HOST-EXIT 7"`)
		if err != nil {
			t.Fatal(err)
		}
		if out != "out 1\nno newline" || errOut != "err\r\n" || res.ExitCode != 7 {
			t.Errorf("stdout %q, stderr %q, code %d; want %q, %q, 7", out, errOut, res.ExitCode, "out 1\nno newline", "err\r\n")
		}
		if strings.Contains(console, "out 1") || strings.Contains(console, "err") {
			t.Errorf("the command's output reached the console:\n%s", console)
		}
	})
	t.Run("crash after output", func(t *testing.T) {
		res, out, _, console, err := shOutputs(t, `echo "hostinit: running"; echo partial >&3; echo "[  100.93] BUG: TASK stack guard page was hit"`)
		if !errors.Is(err, ErrHostFlake) || !strings.Contains(err.Error(), "not run again") {
			t.Fatalf("err = %v; want ErrHostFlake, not run again", err)
		}
		if res.Attempts != 1 || out != "partial\n" || strings.Contains(console, "retrying") {
			t.Errorf("attempts %d, stdout %q; want 1 attempt, %q once\nconsole:\n%s", res.Attempts, out, "partial\n", console)
		}
	})
	t.Run("crash before output", func(t *testing.T) {
		// Nothing passed on yet: retried as any host crash is.
		res, out, _, _, err := shOutputs(t, `echo "hostinit: running"; if [ $1 = 1 ]; then echo "[  100.93] BUG: x"; exit 0; fi; echo done >&3; echo "KVMLAB-HOST-EXIT 0"`)
		if err != nil || res.Attempts != 2 || out != "done\n" {
			t.Errorf("err %v, attempts %d, stdout %q; want nil, 2, %q", err, res.Attempts, out, "done\n")
		}
	})
}

// TestQemuArgsOutputs: COM2 and COM3 are added, on fds 3 and 4, only when
// the command's streams are asked for; the console stays COM1.
func TestQemuArgsOutputs(t *testing.T) {
	serials := func(args []string) []string {
		var s []string
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-serial" {
				s = append(s, args[i+1])
			}
		}
		return s
	}
	if got := serials(qemuArgs("k", "i", Spec{CPUs: 2, MemMB: 2048})); !slices.Equal(got, []string{"stdio"}) {
		t.Errorf("without Stdout: serial ports %q, want the console alone", got)
	}
	spec := Spec{CPUs: 2, MemMB: 2048, Stdout: os.Stdout, Stderr: os.Stderr}
	if got, want := serials(qemuArgs("k", "i", spec)), []string{"stdio", "file:/dev/fd/3", "file:/dev/fd/4"}; !slices.Equal(got, want) {
		t.Errorf("with Stdout: serial ports %q, want %q", got, want)
	}
}

// TestExecRunSpec: the inner kvmlab gets --exec, --append only when it was
// given, and the host is not interactive, has CMD's streams, and has no
// attempt limit of its own beyond --timeout.
func TestExecRunSpec(t *testing.T) {
	r := KVMLabRun{Self: "/bin/kvmlab", Kernel: "/k", Initrd: "/i", Mem: "512M", Append: "console=ttyS0", MemBytes: 512 << 20, CPUs: 1}
	tests := []struct {
		name          string
		defaultAppend bool
		limit         time.Duration
		want          []string
	}{
		{"default line", true, 0, []string{"/kvmlab/kvmlab", "run", "--kernel", "/kvmlab/kernel", "--mem", "512M", "--cpus", "1", "--initrd", "/kvmlab/initrd", "--exec", "echo hi; exit 3"}},
		{"--append given", false, time.Minute, []string{"/kvmlab/kvmlab", "run", "--kernel", "/kvmlab/kernel", "--mem", "512M", "--cpus", "1", "--append", "console=ttyS0", "--initrd", "/kvmlab/initrd", "--exec", "echo hi; exit 3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := r
			run.DefaultAppend = tc.defaultAppend
			s := ExecRun{Run: run, Cmd: "echo hi; exit 3", Limit: tc.limit, Start: time.Now(), Stdout: os.Stdout, Stderr: os.Stderr}.Spec(nil)
			if !slices.Equal(s.Argv, tc.want) {
				t.Errorf("Argv = %q\nwant %q", s.Argv, tc.want)
			}
			if s.Interactive || s.Stdout == nil || s.Stderr == nil || s.Emulator != QEMUSVM {
				t.Errorf("interactive %v, stdout %v, stderr %v, emulator %q; want not interactive, both streams, QEMU", s.Interactive, s.Stdout, s.Stderr, s.Emulator)
			}
			if tc.limit == 0 && s.Timeout < 24*time.Hour || tc.limit > 0 && (s.Timeout > tc.limit || s.Timeout < tc.limit-10*time.Second) {
				t.Errorf("attempt timeout %s with --timeout %s", s.Timeout, tc.limit)
			}
		})
	}
}

// TestExecStatus maps every way the emulated host's run can end to
// kvmlab's exit status: the inner kvmlab's own only when hostinit ran it
// to its end.
func TestExecStatus(t *testing.T) {
	ran := "hostinit: running /kvmlab/kvmlab run (in /)\nKVMLAB-HOST-EXIT %d\n"
	tests := []struct {
		name    string
		res     *Result
		err     error
		ctxErr  error
		want    int
		explain string // in the line on stderr ("" for none)
	}{
		{"CMD's 0", &Result{ExitCode: 0, Output: fmt.Sprintf(ran, 0)}, nil, nil, 0, ""},
		{"CMD's 3", &Result{ExitCode: 3, Output: fmt.Sprintf(ran, 3)}, nil, nil, 3, ""},
		{"guest panic, reported inside", &Result{ExitCode: runexec.StatusPanic, Output: fmt.Sprintf(ran, 123)}, nil, nil, runexec.StatusPanic, ""},
		{"timeout while the host boots", &Result{Output: "hostinit: kernel up\n"}, errors.New("emulated host stopped: context deadline exceeded"), context.DeadlineExceeded, runexec.StatusTimeout, "the emulated host was still starting"},
		{"timeout in the guest", &Result{Output: fmt.Sprintf(ran, 0)}, errors.New("emulated host stopped: context deadline exceeded"), context.DeadlineExceeded, runexec.StatusTimeout, "--timeout: 30s passed before CMD finished: the guest was booting"},
		{"emulator flake", &Result{Output: "[ 1.0] BUG: x\n"}, fmt.Errorf("%w: it kernel crashed 3 times", ErrHostFlake), nil, runexec.StatusFailed, "THE EMULATED HOST FAILED"},
		{"no QEMU", nil, ErrNoQEMU, nil, runexec.StatusFailed, "the emulated host failed: qemu-system-x86_64 not found"},
		{"hostinit failed", &Result{ExitCode: 122, Output: "hostinit: FAILED: /dev/kvm did not appear\nKVMLAB-HOST-EXIT 122\n"}, nil, nil, runexec.StatusFailed, "the emulated host failed: /dev/kvm did not appear"},
		{"inner kvmlab killed", &Result{ExitCode: 137, Output: "hostinit: running x\nhostinit: command killed by signal killed\nKVMLAB-HOST-EXIT 137\n"}, nil, nil, runexec.StatusFailed, "killed by signal killed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, why := execStatus(tc.res, tc.err, tc.ctxErr, 30*time.Second)
			if code != tc.want || (tc.explain == "") != (why == "") || !strings.Contains(why, tc.explain) {
				t.Errorf("execStatus = %d, %q; want %d and a line containing %q", code, why, tc.want, tc.explain)
			}
		})
	}
}

// TestExecConsole: the host's console stays off kvmlab's output, except
// the harness's retry lines.
func TestExecConsole(t *testing.T) {
	var errOut lockedBuffer
	c := &execConsole{stderr: &errOut}
	fmt.Fprint(c, "hostinit: kernel up after 4s\n")
	fmt.Fprint(c, "harness: emulated host hung after 90s (no output), retrying (attempt 2/3)\n")
	fmt.Fprint(c, "[  5.0] kvm: something\n")
	if got, want := errOut.String(), "kvmlab: emulated host hung after 90s (no output), retrying (attempt 2/3)\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}
