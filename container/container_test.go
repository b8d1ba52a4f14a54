package container

// These tests run real containers: they need root, the guest's initramfs
// (`make guest`) and the Go toolchain (to build testdata/probe, a static
// program that reports what it sees from inside). Each run checks that it
// left nothing behind on the host: no new mount in our mount table, no
// cgroup directory, no process, no temporary root, and the host's hostname
// unchanged.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// The runtime re-runs this test binary as the container's init.
	if len(os.Args) > 1 && os.Args[1] == InitCommand {
		os.Exit(Init())
	}
	// Or as a runtime in a process of its own (hardening_test.go).
	if os.Getenv(helperEnv) != "" {
		os.Exit(testHelper())
	}
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// testInitrd is the guest's initramfs, which these tests run: a missing
// one skips them, saying how to build it (go test ./... before make guest
// must not fail; make test builds the guest first).
func testInitrd(t *testing.T) string {
	t.Helper()
	p := DefaultInitrd()
	if !exists(p) {
		t.Skipf("no guest initramfs at %s: run 'make guest' to build it", p)
	}
	return p
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, cgroups): run 'go test' as root")
	}
}

var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureErr  error
)

// fixture returns a root directory unpacked once from the initramfs, with
// the probe in it as /probe. Runs that only read it share it.
func fixture(t *testing.T) string {
	t.Helper()
	needRoot(t)
	initrd := testInitrd(t)
	fixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvmlab-test-root-")
		if err != nil {
			fixtureErr = err
			return
		}
		fixtureDir = dir
		if err := os.Chmod(dir, 0o755); err != nil {
			fixtureErr = err
			return
		}
		if err := Unpack(initrd, dir); err != nil {
			fixtureErr = err
			return
		}
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), "./testdata/probe")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fixtureErr = fmt.Errorf("build the probe (is the Go toolchain in PATH?): %v\n%s", err, out)
		}
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureDir
}

// hostState is what a container must leave as it found it.
type hostState struct {
	mounts   []string // lines of /proc/self/mountinfo
	cgroups  []string // kvmlab-* cgroup directories
	roots    []string // kvmlab-rootfs-* temporary directories
	hostname string
}

func snapshot(t *testing.T) hostState {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var s hostState
	s.mounts = strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, pattern := range []string{"/kvmlab-*", "/*/kvmlab-*", "/*/*/kvmlab-*", "/*/*/*/kvmlab-*"} {
		m, _ := filepath.Glob(DefaultCgroupRoot + pattern)
		s.cgroups = append(s.cgroups, m...)
	}
	s.roots, _ = filepath.Glob(filepath.Join(os.TempDir(), "kvmlab-rootfs-*"))
	s.hostname, _ = os.Hostname()
	return s
}

// checkLeaks compares the host with before, and checks that pids are gone.
// Cgroups and temporary roots are matched by name, so a container that
// another test process (another package's tests, run in parallel by go
// test) has running at the time would look like a leak: what is new is
// looked at again for a few seconds, and only what stays is reported.
func (before hostState) checkLeaks(t *testing.T, res Result, pids ...int) {
	t.Helper()
	var leaks []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		leaks = before.newLeftovers(t)
		if len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range leaks {
		t.Error(l)
	}
	for _, d := range res.Cgroup.Dirs {
		if exists(d) {
			t.Errorf("cgroup left behind: %s", d)
		}
	}
	if h, _ := os.Hostname(); h != before.hostname {
		t.Errorf("host's hostname changed from %q to %q", before.hostname, h)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("process %d still exists after the container ended (kill 0: %v)", pid, err)
		}
	}
}

func (before hostState) newLeftovers(t *testing.T) []string {
	after := snapshot(t)
	var leaks []string
	for _, m := range after.mounts {
		if !slices.Contains(before.mounts, m) {
			leaks = append(leaks, "a mount leaked into the host's mount namespace: "+m)
		}
	}
	for _, c := range after.cgroups {
		if !slices.Contains(before.cgroups, c) {
			leaks = append(leaks, "cgroup left behind: "+c)
		}
	}
	for _, r := range after.roots {
		if !slices.Contains(before.roots, r) {
			leaks = append(leaks, "temporary root left behind: "+r)
		}
	}
	return leaks
}

// run runs cfg (in the fixture root unless it names another) with a
// timeout, checks for leaks, and returns the result and the workload's
// stdout parsed as key=value lines.
func run(t *testing.T, cfg Config) (Result, map[string][]string) {
	t.Helper()
	if cfg.Rootfs == "" && cfg.Initrd == "" {
		cfg.Rootfs = fixture(t)
	}
	var stdout, stderr bytes.Buffer
	cfg.Stdin, cfg.Stdout, cfg.Stderr = strings.NewReader(""), &stdout, &stderr
	before := snapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run(%q): %v\nstderr: %s", cfg.Args, err, stderr.String())
	}
	t.Logf("%q: exit %d, signal %d, oom %v, peak %d KiB, start-to-exec %v (unpack %v), wall %v, teardown %v; cgroup %s %v",
		cfg.Args, res.ExitCode, res.Signal, res.OOMKilled, res.MemoryPeak>>10, res.StartToExec, res.Unpack, res.Wall, res.Teardown,
		res.Cgroup.Version, res.Cgroup.Wrote)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	before.checkLeaks(t, res)
	return res, parseKV(stdout.String())
}

func parseKV(s string) map[string][]string {
	kv := map[string][]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = append(kv[k], v)
		}
	}
	return kv
}

func one(kv map[string][]string, k string) string {
	if len(kv[k]) != 1 {
		return fmt.Sprintf("<%d values for %s>", len(kv[k]), k)
	}
	return kv[k][0]
}

func TestIsolation(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		hostname string
		noPivot  bool
		check    func(t *testing.T, res Result, kv map[string][]string)
	}{
		{"PID namespace: only the container's processes", []string{"/probe", "pids"}, "", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				// Init is PID 1 and the workload's parent, and /proc
				// (mounted in the container) lists nobody else. The
				// workload is not PID 2: threads take numbers from the
				// same space, and init's Go runtime threads came first.
				checkPIDView(t, kv)
			}},
		{"UTS namespace: the default hostname", []string{"/probe", "hostname"}, "", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				if got := one(kv, "hostname"); got != DefaultHostname {
					t.Errorf("hostname = %q, want %q", got, DefaultHostname)
				}
			}},
		{"UTS namespace: a chosen hostname", []string{"/probe", "hostname"}, "box-1", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				if got := one(kv, "hostname"); got != "box-1" {
					t.Errorf("hostname = %q, want box-1", got)
				}
			}},
		{"network namespace: only lo, and up", []string{"/probe", "netdevs"}, "", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				if got := one(kv, "devs"); got != "lo" {
					t.Errorf("network devices = %q, want lo alone", got)
				}
				flags, err := strconv.ParseUint(strings.TrimPrefix(one(kv, "loflags"), "0x"), 16, 32)
				if err != nil || flags&unix.IFF_UP == 0 {
					t.Errorf("lo flags = %s (%v), want IFF_UP set", one(kv, "loflags"), err)
				}
			}},
		{"mount namespace: our mounts, not the host's", []string{"/probe", "mounts"}, "", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				mounts := kv["mount"]
				for _, want := range []string{"/", "/proc", "/dev", "/dev/null", "/dev/pts", "/sys", "/tmp"} {
					if !slices.Contains(mounts, want) {
						t.Errorf("no %s among the container's mounts %v", want, mounts)
					}
				}
				for _, m := range mounts {
					if strings.HasPrefix(m, DefaultCgroupRoot) || strings.Contains(m, "kvmlab-test-root") {
						t.Errorf("host mount %s visible in the container (mounts: %v)", m, mounts)
					}
				}
			}},
		{"chroot fallback (hosts running from an initramfs)", []string{"/probe", "pids"}, "", true,
			func(t *testing.T, res Result, kv map[string][]string) {
				checkPIDView(t, kv)
			}},
		{"exit status passes through", []string{"/bin/sh", "-c", "exit 7"}, "", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				if res.ExitCode != 7 || res.Signal != 0 {
					t.Errorf("exit %d signal %d, want exit 7 and no signal", res.ExitCode, res.Signal)
				}
			}},
		{"a signal's death is 128+N (the workload is not PID 1, so SIGTERM works)", []string{"/probe", "kill-self"}, "", false,
			func(t *testing.T, res Result, kv map[string][]string) {
				if res.ExitCode != 128+int(syscall.SIGTERM) || res.Signal != syscall.SIGTERM {
					t.Errorf("exit %d signal %d, want exit %d and SIGTERM", res.ExitCode, res.Signal, 128+int(syscall.SIGTERM))
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, kv := run(t, Config{Args: tc.args, Hostname: tc.hostname, noPivot: tc.noPivot})
			if res.StartToExec <= 0 || res.Wall < res.StartToExec {
				t.Errorf("StartToExec %v, Wall %v: want 0 < StartToExec <= Wall", res.StartToExec, res.Wall)
			}
			if res.Cgroup.Version == "" || res.Cgroup.Version == "none" {
				t.Errorf("cgroup version %q: want v1 or v2 as root", res.Cgroup.Version)
			}
			tc.check(t, res, kv)
		})
	}
}

func checkPIDView(t *testing.T, kv map[string][]string) {
	t.Helper()
	self, err := strconv.Atoi(one(kv, "self"))
	if err != nil || self < 2 || self > 64 || one(kv, "ppid") != "1" || one(kv, "procs") != "1 "+one(kv, "self") {
		t.Errorf("got self=%s ppid=%s procs=%s, want a small PID, parent 1, and /proc listing only 1 and itself",
			one(kv, "self"), one(kv, "ppid"), one(kv, "procs"))
	}
}

func TestCgroupNamespace(t *testing.T) {
	var stdout bytes.Buffer
	before := snapshot(t)
	res, err := Run(context.Background(), Config{Args: []string{"/probe", "cgroup"}, Rootfs: fixture(t), Stdout: &stdout, Stdin: strings.NewReader("")})
	if err != nil {
		t.Fatal(err)
	}
	before.checkLeaks(t, res)
	// Every line of /proc/self/cgroup is "ID:CONTROLLERS:PATH"; in its own
	// cgroup namespace the workload's path is "/" in every hierarchy.
	lines := strings.Fields(stdout.String())
	if len(lines) == 0 {
		t.Fatal("the probe printed no /proc/self/cgroup")
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, ":/") {
			t.Errorf("/proc/self/cgroup line %q: want the path / (its own cgroup namespace)", l)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	tests := []struct {
		name     string
		limit    uint64
		allocMiB int
		wantOOM  bool
	}{
		{"100 MiB under a 32 MiB limit is OOM-killed", 32 << 20, 100, true},
		{"8 MiB under a 64 MiB limit runs", 64 << 20, 8, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, kv := run(t, Config{Args: []string{"/probe", "alloc", strconv.Itoa(tc.allocMiB)}, Limits: Limits{Memory: tc.limit}})
			limitFile := map[string]string{"v1": "memory.limit_in_bytes", "v2": "memory.max"}[res.Cgroup.Version]
			if !slices.ContainsFunc(res.Cgroup.Wrote, func(w string) bool {
				return strings.HasSuffix(w, "/"+limitFile+"="+strconv.FormatUint(tc.limit, 10))
			}) {
				t.Errorf("no %s=%d among the files written: %v", limitFile, tc.limit, res.Cgroup.Wrote)
			}
			if res.OOMKilled != tc.wantOOM {
				t.Errorf("OOMKilled = %v, want %v", res.OOMKilled, tc.wantOOM)
			}
			if tc.wantOOM {
				if res.Signal != syscall.SIGKILL || res.ExitCode != 137 || len(kv["allocated"]) > 0 {
					t.Errorf("exit %d signal %d output %v: want the OOM killer's SIGKILL (137) before the allocation completes", res.ExitCode, res.Signal, kv)
				}
			} else if res.ExitCode != 0 || one(kv, "allocated") != strconv.Itoa(tc.allocMiB) {
				t.Errorf("exit %d output %v: want exit 0 and allocated=%d", res.ExitCode, kv, tc.allocMiB)
			}
			// The peak is what the cgroup charged: at least the
			// allocation (or, when killed, most of the limit), at most
			// the limit, give or take a few pages: the kernel charges
			// allocations that must not fail (and some made while
			// reclaiming) past the limit, for a moment
			// (try_charge_memcg in mm/memcontrol.c, its "force" path),
			// and an OOM kill is exactly such a moment.
			low := min(uint64(tc.allocMiB)<<20, tc.limit/2)
			const slack = 256 << 10
			if res.MemoryPeak != 0 && (res.MemoryPeak < low || res.MemoryPeak > tc.limit+slack) {
				t.Errorf("memory peak %d KiB, want between %d and %d KiB (the limit + %d KiB)", res.MemoryPeak>>10, low>>10, (tc.limit+slack)>>10, slack>>10)
			}
			if res.MemoryPeak == 0 && slices.ContainsFunc(res.Cgroup.Read, func(r string) bool {
				return strings.HasSuffix(r, "memory.peak") || strings.HasSuffix(r, "memory.max_usage_in_bytes")
			}) {
				t.Errorf("the peak file was read but the peak is 0")
			}
		})
	}
}

func TestPidsLimit(t *testing.T) {
	// A fork bomb, lite: 60 processes asked for, each a Go program with a
	// few threads, in a group allowed 24 tasks (init's threads included).
	res, kv := run(t, Config{Args: []string{"/probe", "fork", "60"}, Limits: Limits{Pids: 24}})
	if !slices.ContainsFunc(res.Cgroup.Wrote, func(w string) bool { return strings.HasSuffix(w, "/pids.max=24") }) {
		t.Errorf("no pids.max=24 among the files written: %v", res.Cgroup.Wrote)
	}
	forked, _ := strconv.Atoi(one(kv, "forked"))
	failed, _ := strconv.Atoi(one(kv, "failed"))
	if res.ExitCode != 0 || failed == 0 || forked+failed != 60 || forked >= 24 {
		t.Errorf("exit %d, forked %d, failed %d (%s): want some forks refused", res.ExitCode, forked, failed, one(kv, "error"))
	}
	if !strings.Contains(one(kv, "error"), "resource temporarily unavailable") {
		t.Errorf("first fork error %q, want EAGAIN (resource temporarily unavailable)", one(kv, "error"))
	}
}

func TestCPULimit(t *testing.T) {
	// A fifth of a CPU: in 1 s of wall time the probe gets about 200 ms
	// of CPU time (one 100 ms period of slack allowed).
	res, kv := run(t, Config{Args: []string{"/probe", "spin", "1000"}, Limits: Limits{CPUs: 0.2}})
	want := map[string]string{"v1": "cpu.cfs_quota_us=20000", "v2": "cpu.max=20000 100000"}[res.Cgroup.Version]
	if !slices.ContainsFunc(res.Cgroup.Wrote, func(w string) bool { return strings.HasSuffix(w, "/"+want) }) {
		t.Errorf("no %s among the files written: %v", want, res.Cgroup.Wrote)
	}
	cpu, err1 := strconv.Atoi(one(kv, "cpu_ms"))
	wall, err2 := strconv.Atoi(one(kv, "wall_ms"))
	if err1 != nil || err2 != nil || wall < 1000 || cpu > wall/5+150 {
		t.Errorf("cpu %s ms in %s ms of wall time: want at most a fifth (+150 ms)", one(kv, "cpu_ms"), one(kv, "wall_ms"))
	}
}

func TestFreshRoot(t *testing.T) {
	needRoot(t)
	initrd := testInitrd(t)
	// The first run writes into its root; the second, unpacked afresh,
	// does not see it. Both temporary roots are removed (checkLeaks).
	res, _ := run(t, Config{Args: []string{"/bin/sh", "-c", "echo hi > /written; cat /written"}, Initrd: initrd})
	if res.ExitCode != 0 || res.Unpack <= 0 {
		t.Errorf("first run: exit %d, unpack %v: want 0 and a positive unpack time", res.ExitCode, res.Unpack)
	}
	res, _ = run(t, Config{Args: []string{"/bbin/cat", "/written"}, Initrd: initrd})
	if res.ExitCode == 0 {
		t.Errorf("second run read /written: the root was not fresh")
	}
}

func TestKillFromOutside(t *testing.T) {
	tests := []struct {
		name string
		// target picks the host PID to SIGKILL.
		target func(c *Container, pids []int) int
	}{
		{"the workload", func(c *Container, pids []int) int {
			for _, p := range pids {
				if p != c.InitPID() {
					return p
				}
			}
			return 0
		}},
		{"init (the kernel kills the rest of its PID namespace)", func(c *Container, pids []int) int { return c.InitPID() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fixture(t)
			before := snapshot(t)
			c, err := Start(Config{Args: []string{"/probe", "sleep", "60"}, Rootfs: root, Stdin: strings.NewReader("")})
			if err != nil {
				t.Fatal(err)
			}
			var pids []int
			for deadline := time.Now().Add(10 * time.Second); len(pids) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				pids, _ = c.Pids()
			}
			if len(pids) < 2 {
				_ = c.Kill()
				_, _ = c.Wait()
				t.Fatalf("the workload did not start: processes %v", pids)
			}
			if err := unix.Kill(tc.target(c, pids), unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			res := waitEnd(t, c, "SIGKILL")
			if res.Signal != syscall.SIGKILL || res.ExitCode != 137 {
				t.Errorf("exit %d signal %d, want 137 and SIGKILL", res.ExitCode, res.Signal)
			}
			before.checkLeaks(t, res, pids...)
		})
	}
}

func TestRunCancelled(t *testing.T) {
	root := fixture(t)
	before := snapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{Args: []string{"/probe", "sleep", "60"}, Rootfs: root, Stdin: strings.NewReader("")})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 20*time.Second || res.Signal != syscall.SIGKILL {
		t.Errorf("took %v, signal %d: want a prompt SIGKILL", took, res.Signal)
	}
	before.checkLeaks(t, res)
}

func TestStartErrors(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no command", Config{}, "no command"},
		{"both roots", Config{Args: []string{"/bin/sh"}, Initrd: "x.cpio", Rootfs: "/"}, "use one"},
		{"CPU limit below the kernel's minimum", Config{Args: []string{"/bin/sh"}, Limits: Limits{CPUs: 0.001}}, "smallest quota"},
		{"missing initramfs", Config{Args: []string{"/bin/sh"}, Initrd: "/nonexistent/initramfs.cpio"}, "no such file"},
		{"rootfs is a file", Config{Args: []string{"/bin/sh"}, Rootfs: "/proc/self/cgroup"}, "not a directory"},
		{"command not in the root", Config{Args: []string{"no-such-program"}}, `"no-such-program" not found in the container`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Rootfs == "" && tc.cfg.Initrd == "" {
				tc.cfg.Rootfs = fixture(t)
			}
			tc.cfg.Stdin = strings.NewReader("")
			before := snapshot(t)
			res, err := Run(context.Background(), tc.cfg)
			if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Run: %v; want ErrSetup saying %q", err, tc.wantErr)
			}
			before.checkLeaks(t, res)
		})
	}
}

// waitEnd waits up to 30 s for a container to end after what (a signal,
// say) and returns its result; on the deadline it kills the container and
// fails the test.
func waitEnd(t *testing.T, c *Container, what string) Result {
	t.Helper()
	done := make(chan struct{})
	var res Result
	var err error
	go func() { res, err = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.Kill()
		t.Fatalf("the container did not end within 30 s of %s", what)
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}
