package container

// The runtime's own confinement: capabilities, no_new_privs, default
// limits, user namespaces, and the sweep of what dead runtimes left. Like
// container_test.go these run real containers, as root, in the guest's
// initramfs; the rootless test runs a copy of this test binary as the user
// nobody, and the sweep test SIGKILLs a copy running a container.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes this test binary a small container runner instead of a
// test run (see TestMain and testHelper): it stands for `kvmlab container`
// where a test needs one in another process.
const helperEnv = "KVMLAB_CONTAINER_TEST_HELPER"

// testHelper runs one container: os.Args[1] is the root directory ("" for
// none), os.Args[2] the initramfs ("" for none), the rest the command. The
// workload's output is ours; each note goes to stderr as "note: ...";
// "started" goes to stderr once Start returned. The exit status is the
// workload's, 125 when the container could not run.
func testHelper() int {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "helper: want ROOTFS INITRD COMMAND...")
		return 125
	}
	c, err := Start(Config{Rootfs: os.Args[1], Initrd: os.Args[2], Args: os.Args[3:], Stdin: strings.NewReader("")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 125
	}
	for _, n := range c.Notes() {
		fmt.Fprintln(os.Stderr, "note:", n)
	}
	fmt.Fprintln(os.Stderr, "started")
	res, err := c.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 125
	}
	return res.ExitCode
}

// copyTestBinary copies this test binary into a new directory that every
// user can enter, for running it as another user (go test keeps it in a
// directory only its owner may enter).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kvmlab-test-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "container.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// checkPrivileges checks the probe's "status" output: the workload's
// capability sets are workloadCaps (bounding, effective, permitted) and
// empty (inheritable, ambient), and no_new_privs is set.
func checkPrivileges(t *testing.T, kv map[string][]string) {
	t.Helper()
	want := map[string]uint64{"CapBnd": workloadCapMask(), "CapEff": workloadCapMask(), "CapPrm": workloadCapMask(), "CapInh": 0, "CapAmb": 0}
	for k, w := range want {
		got, err := strconv.ParseUint(one(kv, k), 16, 64)
		if err != nil || got != w {
			t.Errorf("%s = %s (%s), want %016x (%s)", k, one(kv, k), formatCaps(got), w, formatCaps(w))
		}
	}
	if one(kv, "NoNewPrivs") != "1" {
		t.Errorf("NoNewPrivs = %s, want 1", one(kv, "NoNewPrivs"))
	}
}

func TestWorkloadPrivileges(t *testing.T) {
	rangeMap := &IDRange{HostUID: 200000, HostGID: 200000, Size: 65536}
	tests := []struct {
		name   string
		cfg    Config
		idMaps string // the workload's uid_map, "" for the initial namespace's
	}{
		{"root, no user namespace", Config{}, "0 0 4294967295"},
		{"root, system calls counted (the tracer's thread starts it)", Config{CountSyscalls: true}, "0 0 4294967295"},
		{"a user namespace with a range", Config{UserNS: rangeMap}, "0 200000 65536"},
	}
	for _, tc := range tests {
		if tc.cfg.CountSyscalls && !canCountSyscalls {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Args = []string{"/probe", "status"}
			res, kv := run(t, cfg)
			if res.ExitCode != 0 {
				t.Fatalf("probe exit %d", res.ExitCode)
			}
			checkPrivileges(t, kv)
			if got := one(kv, "uid_map"); got != tc.idMaps {
				t.Errorf("uid_map = %q, want %q", got, tc.idMaps)
			}
			if got := one(kv, "Uid"); got != "0 0 0 0" {
				t.Errorf("Uid = %q, want root inside (0 0 0 0)", got)
			}
		})
	}
}

func TestCapabilitiesRefused(t *testing.T) {
	// Without CAP_SYS_ADMIN, the read-only covers over /proc (maskProc)
	// cannot be unmounted: before capabilities were dropped, this
	// worked. Only what this host's kernel has is covered (a kernel
	// without magic SysRq has no /proc/sysrq-trigger).
	tried := 0
	for _, name := range readOnlyProc {
		p := "/proc/" + name
		if !exists(p) {
			t.Logf("%s: not on this host's kernel", p)
			continue
		}
		tried++
		t.Run(p, func(t *testing.T) {
			_, kv := run(t, Config{Args: []string{"/probe", "umount", p}})
			if got := one(kv, "umount"); got != "operation not permitted" {
				t.Errorf("umount %s: %s, want operation not permitted (EPERM)", p, got)
			}
		})
	}
	if tried == 0 {
		t.Fatalf("none of %v in this host's /proc", readOnlyProc)
	}
}

func TestDefaultLimits(t *testing.T) {
	memFile := map[string]string{"v1": "memory.limit_in_bytes", "v2": "memory.max"}
	tests := []struct {
		name       string
		limits     Limits
		wantMem    string // value written, "" for none
		wantPids   string
		notWritten []string
	}{
		{"defaults", Limits{}, strconv.FormatUint(DefaultMemory, 10), strconv.Itoa(DefaultPids), nil},
		{"overridden", Limits{Memory: 64 << 20, Pids: 100}, strconv.Itoa(64 << 20), "100", nil},
		{"unlimited", Limits{Memory: MemoryUnlimited, Pids: PidsUnlimited}, "", "", []string{"memory.max", "memory.limit_in_bytes", "pids.max"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := run(t, Config{Args: []string{"true"}, Limits: tc.limits})
			wrote := func(file, value string) bool {
				return slices.ContainsFunc(res.Cgroup.Wrote, func(w string) bool { return strings.HasSuffix(w, "/"+file+"="+value) })
			}
			if tc.wantMem != "" && !wrote(memFile[res.Cgroup.Version], tc.wantMem) {
				t.Errorf("no %s=%s among %v", memFile[res.Cgroup.Version], tc.wantMem, res.Cgroup.Wrote)
			}
			if tc.wantPids != "" && !wrote("pids.max", tc.wantPids) {
				t.Errorf("no pids.max=%s among %v", tc.wantPids, res.Cgroup.Wrote)
			}
			for _, f := range tc.notWritten {
				if slices.ContainsFunc(res.Cgroup.Wrote, func(w string) bool { return strings.Contains(w, "/"+f+"=") }) {
					t.Errorf("%s written: %v", f, res.Cgroup.Wrote)
				}
			}
		})
	}
}

func TestPidsLimitStopsForkLoop(t *testing.T) {
	// 200 sleeping processes asked for under a limit of 64 tasks: the
	// limit, not the loop, decides how many there are.
	res, kv := run(t, Config{Args: []string{"/probe", "fork", "200"}, Limits: Limits{Pids: 64}})
	forked, err1 := strconv.Atoi(one(kv, "forked"))
	failed, err2 := strconv.Atoi(one(kv, "failed"))
	if err1 != nil || err2 != nil || res.ExitCode != 0 {
		t.Fatalf("exit %d, output %v", res.ExitCode, kv)
	}
	t.Logf("forked %d, refused %d, first error: %s", forked, failed, one(kv, "error"))
	if forked+failed != 200 || forked >= 64 || failed == 0 {
		t.Errorf("forked %d, refused %d: want fewer than 64 started and the rest refused", forked, failed)
	}
	if !strings.Contains(one(kv, "error"), "resource temporarily unavailable") {
		t.Errorf("first error %q, want EAGAIN from fork", one(kv, "error"))
	}
}

func TestUserNamespaceRange(t *testing.T) {
	needRoot(t)
	// An unpacked root is given to the range: the container's root owns
	// "/" and can write there, and is host ID 300000 to the host.
	var out bytes.Buffer
	before := snapshot(t)
	res, err := Run(context.Background(), Config{
		Args:   []string{"/bin/sh", "-c", "echo written > /w && cat /w /proc/self/uid_map /proc/self/gid_map"},
		Initrd: testInitrd(t), UserNS: &IDRange{HostUID: 300000, HostGID: 300000, Size: 65536},
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	before.checkLeaks(t, res)
	got := strings.Fields(out.String())
	want := []string{"written", "0", "300000", "65536", "0", "300000", "65536"}
	if res.ExitCode != 0 || !slices.Equal(got, want) {
		t.Errorf("exit %d, output %q; want 0 and %q", res.ExitCode, got, want)
	}
}

func TestUserNamespaceRefusals(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name string
		r    IDRange
		want string
	}{
		{"empty", IDRange{HostUID: 100000, HostGID: 100000}, "empty"},
		{"host root's IDs as a range", IDRange{Size: 65536}, "starting at host ID 0"},
		{"past the largest ID", IDRange{HostUID: 1<<32 - 10, HostGID: 100000, Size: 100}, "past the largest ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t)
			res, err := Run(context.Background(), Config{Args: []string{"true"}, Rootfs: fixture(t), UserNS: &tc.r})
			if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v, want ErrSetup saying %q", err, tc.want)
			}
			before.checkLeaks(t, res)
		})
	}
}

func TestRootless(t *testing.T) {
	// The runtime run by the user nobody: a user namespace maps the
	// container's root to nobody, and there is no cgroup (one line says
	// so) instead of a failure.
	root := fixture(t)
	exe := copyTestBinary(t)
	const nobody = 65534
	cmd := exec.Command(exe, root, "", "/probe", "status")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	before := snapshot(t)
	err := cmd.Run()
	t.Logf("stderr: %s", stderr.String())
	if err != nil {
		t.Fatalf("the container as nobody: %v", err)
	}
	before.checkLeaks(t, Result{})
	kv := parseKV(stdout.String())
	checkPrivileges(t, kv)
	if got := one(kv, "uid_map"); got != "0 65534 1" {
		t.Errorf("uid_map = %q, want the container's root mapped to nobody (0 65534 1)", got)
	}
	if got := one(kv, "setgroups"); got != "deny" {
		t.Errorf("setgroups = %q, want deny", got)
	}
	if got := one(kv, "Uid"); got != "0 0 0 0" {
		t.Errorf("Uid = %q, want root inside", got)
	}
	notes := strings.Count(stderr.String(), "note: no cgroup (creating one needs root)")
	if notes != 1 {
		t.Errorf("%d notes about the missing cgroup on stderr, want 1", notes)
	}
}

// leftoversOf lists the temporary roots and cgroups named after process
// pid of our PID namespace.
func leftoversOf(t *testing.T, pid int) (roots, cgroups []string) {
	t.Helper()
	self, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("-%d-%d-", self.pidns, pid)
	s := snapshot(t)
	for _, r := range s.roots {
		if strings.Contains(filepath.Base(r), tag) {
			roots = append(roots, r)
		}
	}
	for _, c := range s.cgroups {
		if strings.Contains(filepath.Base(c), tag) {
			cgroups = append(cgroups, c)
		}
	}
	return roots, cgroups
}

func TestSweepAfterSIGKILL(t *testing.T) {
	needRoot(t)
	initrd := testInitrd(t)
	// A runtime in another process, with an unpacked root and a cgroup,
	// running `sleep 600`: SIGKILLed, it cannot tear down.
	cmd := exec.Command(copyTestBinary(t), "", initrd, "sleep", "600")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && sc.Text() != "started" {
		t.Logf("runtime: %s", sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	roots, cgroups := leftoversOf(t, pid)
	if len(roots) != 1 || len(cgroups) == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("runtime %d running: roots %v, cgroups %v; want one root and its cgroups", pid, roots, cgroups)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The kernel kills the container with its runtime (PR_SET_PDEATHSIG
	// on init, then the PID namespace), but a moment later: wait until
	// its cgroups are empty.
	for deadline := time.Now().Add(30 * time.Second); busyCgroup(cgroups) != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("processes still in %s 30 s after their runtime was killed", busyCgroup(cgroups))
		}
	}
	if r, c := leftoversOf(t, pid); !slices.Equal(r, roots) || !slices.Equal(c, cgroups) {
		t.Fatalf("after SIGKILL: roots %v, cgroups %v; want %v and %v left behind", r, c, roots, cgroups)
	}
	t.Logf("left behind by the SIGKILLed runtime: %v %v", roots, cgroups)

	// The next start sweeps them, and says so.
	res, _ := run(t, Config{Args: []string{"true"}})
	if r, c := leftoversOf(t, pid); len(r) > 0 || len(c) > 0 {
		t.Errorf("after the next start: roots %v, cgroups %v still there", r, c)
	}
	for _, p := range append(roots, cgroups...) {
		if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, p) }) {
			t.Errorf("no note of removing %s: %q", p, res.Notes)
		}
	}
}

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	c := exec.Command("/bin/true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

func TestSweep(t *testing.T) {
	self, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	dead := owner{self.pidns, uint64(deadPID(t)), 12345}
	reused := owner{self.pidns, self.pid, self.start + 1} // our PID, another start time
	elsewhere := owner{self.pidns + 1, uint64(deadPID(t)), 1}
	name := func(o owner, prefix, suffix string) string {
		return fmt.Sprintf("%s%d-%d-%d-%s", prefix, o.pidns, o.pid, o.start, suffix)
	}
	tmp, cg, outside := t.TempDir(), t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	mkdir := func(p string) {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A dead owner's root, with a symbolic link out of it: removed, the
	// link's target kept.
	deadRoot := filepath.Join(tmp, name(dead, rootPrefix, "aaaaaaaaaaaa"))
	mkdir(filepath.Join(deadRoot, "etc"))
	if err := os.Symlink(outside, filepath.Join(deadRoot, "etc", "link")); err != nil {
		t.Fatal(err)
	}
	deadBundle := filepath.Join(tmp, name(dead, bundlePrefix, "aaaaaaaaaaaa"))
	mkdir(deadBundle)
	write(filepath.Join(deadBundle, "config.json"), "{}")
	deadCgroups := []string{filepath.Join(cg, "memory", name(dead, cgroupPrefix, "aaaaaaaaaaaa")), filepath.Join(cg, "pids", "user", name(dead, cgroupPrefix, "aaaaaaaaaaaa"))}
	for _, d := range deadCgroups {
		mkdir(d)
	}
	// A dead owner's container whose cgroup still has a process: kept.
	busyRoot := filepath.Join(tmp, name(dead, rootPrefix, "bbbbbbbbbbbb"))
	mkdir(busyRoot)
	busyCg := filepath.Join(cg, "pids", name(dead, cgroupPrefix, "bbbbbbbbbbbb"))
	mkdir(busyCg)
	write(filepath.Join(busyCg, "cgroup.procs"), "4242\n")
	// A reused PID's leftover: removed.
	reusedRoot := filepath.Join(tmp, name(reused, rootPrefix, "cccccccccccc"))
	mkdir(reusedRoot)
	// A symbolic link with a dead owner's name: left alone.
	trap := filepath.Join(tmp, name(dead, rootPrefix, "dddddddddddd"))
	if err := os.Symlink(outside, trap); err != nil {
		t.Fatal(err)
	}
	// Ours (alive), another PID namespace's, and an old-style name:
	// not touched.
	untouched := []string{
		filepath.Join(tmp, name(self, rootPrefix, "eeeeeeeeeeee")),
		filepath.Join(cg, "memory", name(self, cgroupPrefix, "eeeeeeeeeeee")),
		filepath.Join(tmp, name(elsewhere, rootPrefix, "ffffffffffff")),
		filepath.Join(tmp, "kvmlab-rootfs-123456789"),
		filepath.Join(cg, "memory", "kvmlab-0123456789ab"),
	}
	for _, d := range untouched {
		mkdir(d)
	}

	rep, err := Sweep(tmp, cg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed %q", rep.Removed)
	t.Logf("kept %q", rep.Kept)
	wantRemoved := append([]string{deadRoot, deadBundle, reusedRoot}, deadCgroups...)
	for _, p := range wantRemoved {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: still there (%v)", p, err)
		}
		if !slices.Contains(rep.Removed, p) {
			t.Errorf("%s: not reported removed", p)
		}
	}
	for _, p := range append(untouched, busyRoot, busyCg, trap, secret) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
	if len(rep.Removed) != len(wantRemoved) {
		t.Errorf("removed %d, want %d: %q", len(rep.Removed), len(wantRemoved), rep.Removed)
	}
	for _, k := range []string{"processes still in " + busyCg, trap + ": not a directory"} {
		if !slices.ContainsFunc(rep.Kept, func(s string) bool { return strings.Contains(s, k) }) {
			t.Errorf("no %q among the kept: %q", k, rep.Kept)
		}
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		base string
		name string
		o    owner
		ok   bool
	}{
		{"kvmlab-4026531836-42-1000-0123456789ab", "kvmlab-4026531836-42-1000-0123456789ab", owner{4026531836, 42, 1000}, true},
		{"kvmlab-rootfs-4026531836-42-1000-0123456789ab", "kvmlab-4026531836-42-1000-0123456789ab", owner{4026531836, 42, 1000}, true},
		{"kvmlab-bundle-1-2-3-0123456789ab", "kvmlab-1-2-3-0123456789ab", owner{1, 2, 3}, true},
		{"kvmlab-0123456789ab", "", owner{}, false},                          // the old, ownerless name
		{"kvmlab-rootfs-123456789", "", owner{}, false},                      // MkdirTemp's
		{"kvmlab-1-2-3-0123456789AB", "", owner{}, false},                    // not our hex
		{"kvmlab-1-2-+3-0123456789ab", "", owner{}, false},                   // not a plain number
		{"kvmlab-1-2-3-4-0123456789ab", "", owner{}, false},                  // a field too many
		{"kvmlab-test-root-123", "", owner{}, false},                         // the tests' fixture
		{"kvmlab-99999999999999999999-2-3-0123456789ab", "", owner{}, false}, // overflow
	}
	for _, tc := range tests {
		t.Run(tc.base, func(t *testing.T) {
			name, o, ok := parseName(tc.base)
			if name != tc.name || o != tc.o || ok != tc.ok {
				t.Errorf("parseName = %q, %+v, %v; want %q, %+v, %v", name, o, ok, tc.name, tc.o, tc.ok)
			}
		})
	}
}

func TestStatStartTime(t *testing.T) {
	// A command name may hold spaces and parentheses: fields are counted
	// from the last ')'.
	tests := []struct {
		stat string
		want uint64
		ok   bool
	}{
		{"42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 18446744073709551615", 987654, true},
		{"42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 555 1000 10", 555, true},
		{"42 (x) S 1 2", 0, false},
		{"garbage", 0, false},
	}
	for _, tc := range tests {
		got, err := parseStartTime([]byte(tc.stat))
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseStartTime(%q) = %d, %v; want %d, ok %v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
	// And the real thing: ours does not change.
	a, err1 := procStartTime("self")
	b, err2 := procStartTime(strconv.Itoa(os.Getpid()))
	if err1 != nil || err2 != nil || a != b || a == 0 {
		t.Errorf("procStartTime: %d %v, %d %v; want the same non-zero time", a, err1, b, err2)
	}
}

func TestSubordinateRange(t *testing.T) {
	// subordinate is read from a file of our own; SubordinateRange only
	// names /etc/subuid and /etc/subgid.
	f := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(f, []byte("alice:100000:65536\n1001:165536:65536\nbad:x:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user     string
		uid      int
		first, n uint32
		wantErr  error
	}{
		{"alice", 1000, 100000, 65536, nil},
		{"bob", 1001, 165536, 65536, nil},
		{"carol", 1002, 0, 0, ErrNoSubordinateRange},
	}
	for _, tc := range tests {
		first, n, err := subordinate(f, tc.user, tc.uid)
		if first != tc.first || n != tc.n || !errors.Is(err, tc.wantErr) {
			t.Errorf("subordinate(%s) = %d, %d, %v; want %d, %d, %v", tc.user, first, n, err, tc.first, tc.n, tc.wantErr)
		}
	}
	if _, _, err := subordinate(f, "bad", 5); err == nil || !strings.Contains(err.Error(), "bad line") {
		t.Errorf("a bad line: %v, want an error naming it", err)
	}
}

func TestLimitsDefaults(t *testing.T) {
	tests := []struct {
		in, effective, explicit Limits
	}{
		{Limits{}, Limits{Memory: DefaultMemory, Pids: DefaultPids}, Limits{}},
		{Limits{Memory: 1 << 30, CPUs: 1}, Limits{Memory: 1 << 30, CPUs: 1, Pids: DefaultPids}, Limits{Memory: 1 << 30, CPUs: 1}},
		{Limits{Memory: MemoryUnlimited, Pids: PidsUnlimited}, Limits{}, Limits{}},
		{Limits{Pids: 7}, Limits{Memory: DefaultMemory, Pids: 7}, Limits{Pids: 7}},
	}
	for _, tc := range tests {
		if got := tc.in.Effective(); got != tc.effective {
			t.Errorf("%+v.Effective() = %+v, want %+v", tc.in, got, tc.effective)
		}
		if got := tc.in.Explicit(); got != tc.explicit {
			t.Errorf("%+v.Explicit() = %+v, want %+v", tc.in, got, tc.explicit)
		}
	}
}
