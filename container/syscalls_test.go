package container

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needAMD64(t *testing.T) {
	t.Helper()
	if !canCountSyscalls {
		t.Skipf("counting system calls is implemented for amd64 only, not %s", runtime.GOARCH)
	}
}

func TestSyscallName(t *testing.T) {
	needAMD64(t)
	for nr, want := range map[uint64]string{0: "read", 1: "write", 59: "execve", 202: "futex", 231: "exit_group", 257: "openat", 99999: "syscall_99999"} {
		if got := SyscallName(nr); got != want {
			t.Errorf("SyscallName(%d) = %q, want %q", nr, got, want)
		}
	}
	byName, total := namedCounts(map[uint64]uint64{0: 3, 1: 2, 500: 1})
	if total != 6 || byName["read"] != 3 || byName["write"] != 2 || byName["syscall_500"] != 1 {
		t.Errorf("namedCounts = %v, %d", byName, total)
	}
}

// countedRun runs args with CountSyscalls and checks what every counted run
// must show.
func countedRun(t *testing.T, args ...string) Result {
	t.Helper()
	needAMD64(t)
	res, _ := run(t, Config{Args: args, CountSyscalls: true})
	var sum uint64
	for _, n := range res.SyscallsByName {
		sum += n
	}
	t.Logf("%q: %d system calls; top: %s", args, res.Syscalls, top(res.SyscallsByName, 8))
	if res.Syscalls == 0 || sum != res.Syscalls {
		t.Errorf("%q: %d system calls, %d by name: want a positive total that the names add up to", args, res.Syscalls, sum)
	}
	if res.SyscallsByName["execve"] == 0 {
		t.Errorf("%q: no execve counted: %v", args, res.SyscallsByName)
	}
	return res
}

func top(m map[string]uint64, n int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	for i, k := range names {
		if i == n {
			break
		}
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(k + "=" + strconv.FormatUint(m[k], 10))
	}
	return b.String()
}

func TestCountSyscalls(t *testing.T) {
	var single uint64
	t.Run("ls /", func(t *testing.T) {
		res := countedRun(t, "ls", "/")
		if res.ExitCode != 0 || res.SyscallsByName["exit_group"] == 0 {
			t.Errorf("exit %d, exit_group %d: want 0 and an exit_group", res.ExitCode, res.SyscallsByName["exit_group"])
		}
		single = res.Syscalls
	})
	t.Run("a shell that starts ls twice", func(t *testing.T) {
		res := countedRun(t, "sh", "-c", "ls /; ls /")
		// The shell's execve and one for each ls: the children were
		// traced from their first instruction.
		if res.ExitCode != 0 || res.SyscallsByName["execve"] < 3 {
			t.Errorf("exit %d, %d execve: want 0 and at least 3 (sh, ls, ls)", res.ExitCode, res.SyscallsByName["execve"])
		}
		if single != 0 && res.Syscalls <= single {
			t.Errorf("%d system calls for sh and two ls, %d for one ls: want more", res.Syscalls, single)
		}
		if res.SyscallsByName["exit_group"] < 3 {
			t.Errorf("%d exit_group: want at least 3", res.SyscallsByName["exit_group"])
		}
	})
	t.Run("a Go program that starts others (threads, vfork, signals)", func(t *testing.T) {
		res := countedRun(t, "/probe", "fork", "3")
		if res.ExitCode != 0 || res.SyscallsByName["execve"] < 4 {
			t.Errorf("exit %d, %d execve: want 0 and at least 4 (the probe and its 3 children)", res.ExitCode, res.SyscallsByName["execve"])
		}
	})
	t.Run("exit status passes through", func(t *testing.T) {
		res := countedRun(t, "sh", "-c", "exit 7")
		if res.ExitCode != 7 || res.Signal != 0 {
			t.Errorf("exit %d signal %d, want exit 7 and no signal", res.ExitCode, res.Signal)
		}
	})
	t.Run("a signal the workload sends itself is delivered", func(t *testing.T) {
		res := countedRun(t, "/probe", "kill-self")
		if res.ExitCode != 128+int(syscall.SIGTERM) || res.Signal != syscall.SIGTERM {
			t.Errorf("exit %d signal %d, want %d and SIGTERM", res.ExitCode, res.Signal, 128+int(syscall.SIGTERM))
		}
	})
	t.Run("a command that is not there", func(t *testing.T) {
		before := snapshot(t)
		res, err := Run(t.Context(), Config{Args: []string{"no-such-program"}, Rootfs: fixture(t), Stdin: strings.NewReader(""), CountSyscalls: true})
		if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "not found in the container") {
			t.Errorf("Run: %v; want ErrSetup saying the command was not found", err)
		}
		before.checkLeaks(t, res)
	})
	t.Run("off by default", func(t *testing.T) {
		res, _ := run(t, Config{Args: []string{"/bin/sh", "-c", "true"}})
		if res.Syscalls != 0 || res.SyscallsByName != nil {
			t.Errorf("counted %d system calls (%v) without CountSyscalls", res.Syscalls, res.SyscallsByName)
		}
	})
}

func TestCountSyscallsKilled(t *testing.T) {
	needAMD64(t)
	tests := []struct {
		name string
		sig  syscall.Signal
		// send sends sig to the workload.
		send func(c *Container, workload int, sig syscall.Signal) error
	}{
		{"SIGKILL to the workload's host PID", syscall.SIGKILL, func(c *Container, pid int, sig syscall.Signal) error { return unix.Kill(pid, sig) }},
		{"SIGTERM through init, passed on by the tracer", syscall.SIGTERM, func(c *Container, pid int, sig syscall.Signal) error { return c.Signal(sig) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fixture(t)
			before := snapshot(t)
			c, err := Start(Config{Args: []string{"/probe", "sleep", "60"}, Rootfs: root, Stdin: strings.NewReader(""), CountSyscalls: true})
			if err != nil {
				t.Fatal(err)
			}
			// The workload is the process running "/probe sleep"; on a
			// busy machine cgroup.procs may first list a process
			// that is still becoming it, or already gone.
			var pids []int
			workload := 0
			for deadline := time.Now().Add(10 * time.Second); workload == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				pids, _ = c.Pids()
				for _, p := range pids {
					b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
					if p != c.InitPID() && strings.HasPrefix(string(b), "/probe\x00sleep") {
						workload = p
					}
				}
			}
			if workload == 0 {
				_ = c.Kill()
				_, _ = c.Wait()
				t.Fatalf("the workload did not start: processes %v", pids)
			}
			// Let the probe reach its sleep: a Go program's start-up
			// is a few hundred system calls.
			time.Sleep(200 * time.Millisecond)
			if err := tc.send(c, workload, tc.sig); err != nil {
				t.Fatal(err)
			}
			res := waitEnd(t, c, tc.sig.String())
			t.Logf("%d system calls before %v; top: %s", res.Syscalls, tc.sig, top(res.SyscallsByName, 6))
			if res.Signal != tc.sig || res.ExitCode != 128+int(tc.sig) {
				t.Errorf("exit %d signal %d, want %d and %v", res.ExitCode, res.Signal, 128+int(tc.sig), tc.sig)
			}
			if res.Syscalls == 0 {
				t.Errorf("no system calls counted for a Go program that ran")
			}
			before.checkLeaks(t, res, pids...)
		})
	}
}

func TestCountSyscallsRefusedByRunc(t *testing.T) {
	_, err := RunRunc(t.Context(), Config{Args: []string{"true"}, CountSyscalls: true})
	if errors.Is(err, ErrNoRunc) {
		t.Skip(err)
	}
	if !errors.Is(err, ErrSetup) {
		t.Errorf("RunRunc with CountSyscalls: %v, want ErrSetup", err)
	}
}

func TestProcReadOnly(t *testing.T) {
	// Opening for writing has no effect on these files; the probe never
	// writes. /proc/sys/kernel/hostname would only be the container's
	// own hostname anyway (UTS namespace).
	paths := []string{"/proc/sys/kernel/hostname", "/proc/irq/default_smp_affinity", sysrqTrigger}
	res, kv := run(t, Config{Args: append([]string{"/probe", "openw"}, paths...)})
	if res.ExitCode != 0 {
		t.Fatalf("probe exit %d", res.ExitCode)
	}
	for _, p := range paths {
		got := one(kv, p)
		want := "read-only file system"
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			want = "no such file or directory"
		}
		if got != want {
			t.Errorf("opening %s for writing in the container: %q, want %q", p, got, want)
		}
	}
}

func TestTrySysrqCrash(t *testing.T) {
	root := fixture(t)
	t.Run("/proc/sysrq-trigger", func(t *testing.T) {
		before := snapshot(t)
		refused, detail, err := TrySysrqCrash(Config{Rootfs: root})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("refused=%v detail=%q", refused, detail)
		want := "read-only file system"
		if !exists(sysrqTrigger) {
			want = "no such file or directory"
			t.Logf("this kernel has no %s: the EROFS path is exercised below, on another masked file", sysrqTrigger)
		}
		if !refused || !strings.HasPrefix(detail, want) {
			t.Errorf("refused=%v detail=%q, want refused with %q", refused, detail, want)
		}
		before.checkLeaks(t, Result{})
	})
	// The same path to the attempt, on files every kernel has. Opening
	// them for writing does nothing; nothing is written.
	t.Run("a file under a read-only /proc mount is refused with EROFS", func(t *testing.T) {
		before := snapshot(t)
		refused, detail, err := TrySysrqCrash(Config{Rootfs: root, sysrqProbe: "/proc/sys/kernel/hostname"})
		if err != nil {
			t.Fatal(err)
		}
		if !refused || detail != "read-only file system" {
			t.Errorf("refused=%v detail=%q, want refused with %q", refused, detail, "read-only file system")
		}
		before.checkLeaks(t, Result{})
	})
	t.Run("a file on a read-write mount is not tried", func(t *testing.T) {
		before := snapshot(t)
		refused, detail, err := TrySysrqCrash(Config{Rootfs: root, sysrqProbe: "/dev/null"})
		t.Logf("refused=%v detail=%q err=%v", refused, detail, err)
		if err == nil || !strings.Contains(err.Error(), "not tried") || !strings.Contains(err.Error(), "read-write mount") {
			t.Errorf("refused=%v detail=%q err=%v: want an error saying it was not tried, on a read-write mount", refused, detail, err)
		}
		before.checkLeaks(t, Result{})
	})
}

func TestMountFor(t *testing.T) {
	mi := []byte(`20 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
21 20 0:20 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
40 21 0:20 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
41 21 0:20 /sysrq-trigger /proc/sysrq-trigger ro,nosuid - proc proc rw
42 21 0:20 /irq /proc/irq ro,nosuid - proc proc rw
43 42 0:20 /irq /proc/irq rw,nosuid - proc proc rw
44 21 0:20 /a\040b /proc/a\040b ro - proc proc rw
`)
	tests := []struct {
		path, point string
		ro          bool
	}{
		{"/proc", "/proc", false},
		{"/proc/sys", "/proc/sys", true},
		{"/proc/sys/kernel/hostname", "/proc/sys", true},
		{"/proc/sysrq-trigger", "/proc/sysrq-trigger", true},
		{"/proc/sysrq-trigger2", "/proc", false},
		{"/proc/irq/default_smp_affinity", "/proc/irq", false}, // a read-write mount on top of the read-only one
		{"/proc/a b", "/proc/a b", true},
		{"/proc/bus", "/proc", false},
		{"/etc/passwd", "/", false},
	}
	for _, tc := range tests {
		point, ro := mountFor(mi, tc.path)
		if point != tc.point || ro != tc.ro {
			t.Errorf("mountFor(%s) = %q, %v; want %q, %v", tc.path, point, ro, tc.point, tc.ro)
		}
	}
	if point, _ := mountFor(nil, "/proc/sysrq-trigger"); point != "" {
		t.Errorf("mountFor in an empty table = %q, want none", point)
	}
}

func TestSysrqAttemptGuard(t *testing.T) {
	// The check init makes before its open, run here on a file in a
	// read-write temporary directory: it must refuse to open it. (Never
	// /proc/sysrq-trigger: this runs on the host.)
	f := filepath.Join(t.TempDir(), "trigger")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	outcome, detail := sysrqAttempt(f)
	if outcome != sysrqNotRO || !strings.Contains(detail, "not read-only") {
		t.Errorf("sysrqAttempt on a writable file: %s %q, want %s", outcome, detail, sysrqNotRO)
	}
}
