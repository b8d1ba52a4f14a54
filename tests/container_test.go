package tests

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestContainer runs the guest's userland as a container with the built
// kvmlab binary (`kvmlab container`), end to end: its own hostname, its own
// PIDs and network, a memory limit the OOM killer enforces, the exit status
// passed through, and nothing left behind. It works on cgroup v1 (or the
// hybrid layout) and on cgroup v2, as inside the emulated host; it needs
// root, which the emulated host gives.
func TestContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kvmlab container needs root (namespaces, mounts, cgroups)")
	}
	initrd := guestFile(t, "initramfs.cpio")
	mountsBefore := readMountinfo(t)
	hostBefore, _ := os.Hostname()

	tests := []struct {
		name   string
		args   []string // after "container --initrd INITRD"
		status int
		check  func(t *testing.T, stdout, stderr string)
	}{
		{"own hostname", []string{"--hostname", "box", "--", "hostname"}, 0,
			func(t *testing.T, stdout, stderr string) {
				if stdout != "box\n" {
					t.Errorf("hostname printed %q, want box", stdout)
				}
			}},
		{"own PIDs: /proc lists init and the workload only", []string{"--", "ls", "/proc"}, 0,
			func(t *testing.T, stdout, stderr string) {
				var pids []string
				for _, name := range strings.Fields(stdout) {
					if regexp.MustCompile(`^[0-9]+$`).MatchString(name) {
						pids = append(pids, name)
					}
				}
				if len(pids) != 2 || !slices.Contains(pids, "1") {
					t.Errorf("PIDs in the container's /proc: %v, want 1 (init) and the workload's", pids)
				}
			}},
		{"own network: only lo", []string{"--", "cat", "/proc/net/dev"}, 0,
			func(t *testing.T, stdout, stderr string) {
				var devs []string
				for _, line := range strings.Split(stdout, "\n") {
					if name, _, ok := strings.Cut(line, ":"); ok {
						devs = append(devs, strings.TrimSpace(name))
					}
				}
				if !slices.Equal(devs, []string{"lo"}) {
					t.Errorf("network devices %v, want lo alone", devs)
				}
			}},
		{"exit status passes through", []string{"--", "sh", "-c", "exit 7"}, 7, nil},
		{"memory limit: the OOM killer ends a 100 MB sort under --mem 32M",
			[]string{"--mem", "32M", "--verbose", "--", "sh", "-c", "head -c 100000000 /dev/zero | sort"}, 137,
			func(t *testing.T, stdout, stderr string) {
				for _, want := range []string{"OOM killer", "OOM-killed true"} {
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr does not say %q:\n%s", want, stderr)
					}
				}
				if !regexp.MustCompile(`memory\.(max|limit_in_bytes)=33554432`).MatchString(stderr) {
					t.Errorf("stderr does not show the memory limit written:\n%s", stderr)
				}
			}},
		{"limits and cgroup version reported, cgroup removed", []string{"--cpus", "0.5", "--pids", "64", "--verbose", "--", "true"}, 0,
			func(t *testing.T, stdout, stderr string) {
				m := regexp.MustCompile(`cgroup (v1|v2) at (.*)`).FindStringSubmatch(stderr)
				if m == nil {
					t.Fatalf("no cgroup version in --verbose output:\n%s", stderr)
				}
				t.Logf("cgroup %s", m[1])
				if os.Getenv(inHostEnv) == "1" && m[1] != "v2" {
					// The emulated host mounts a pure cgroup2
					// hierarchy: the v2 code must be the one used.
					t.Errorf("inside the emulated host the container used cgroup %s, want v2", m[1])
				}
				for _, want := range []string{"pids.max=64", map[string]string{"v1": "cpu.cfs_quota_us=50000", "v2": "cpu.max=50000 100000"}[m[1]]} {
					if !strings.Contains(stderr, want) {
						t.Errorf("--verbose output does not show %s:\n%s", want, stderr)
					}
				}
				for _, dir := range strings.Split(m[2], ", ") {
					if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("cgroup %s still exists after the container ended (%v)", dir, err)
					}
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(kvmlabBin(t), append([]string{"container", "--initrd", initrd}, tc.args...)...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.status {
				t.Errorf("kvmlab container %q: exit status %d, want %d\nstdout: %s\nstderr: %s", tc.args, got, tc.status, stdout.String(), stderr.String())
			}
			if strings.Contains(stderr.String(), "goroutine ") {
				t.Errorf("a Go stack trace on stderr:\n%s", stderr.String())
			}
			if tc.check != nil {
				tc.check(t, stdout.String(), stderr.String())
			}
		})
	}

	if h, _ := os.Hostname(); h != hostBefore {
		t.Errorf("the host's hostname changed from %q to %q", hostBefore, h)
	}
	for _, m := range readMountinfo(t) {
		if !slices.Contains(mountsBefore, m) {
			t.Errorf("a container mount leaked into the host's mount namespace: %s", m)
		}
	}
}

func readMountinfo(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
