package container

// The cgroup code against fake cgroup trees in a temporary directory: the
// files a kernel would show, written by the test. This covers the layout
// this machine does not have (a test host has v1 or v2, rarely both), and
// needs no root.

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeTree writes files (path relative to root -> content) under a new
// temporary root.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestNewCgroup(t *testing.T) {
	const all = "cpuset cpu io memory hugetlb pids rdma misc\n"
	v1 := map[string]string{
		"memory/cgroup.procs":            "",
		"memory/job/cgroup.procs":        "",
		"cpu/cgroup.procs":               "",
		"pids/cgroup.procs":              "",
		"unified/cgroup.controllers":     "", // the hybrid layout's empty v2
		"unified/cgroup.subtree_control": "",
	}
	v1Self := "9:pids:/\n4:memory:/job\n1:cpu,cpuacct:/\n0::/\n"
	tests := []struct {
		name    string
		files   map[string]string // the fake kernel's tree
		self    string            // /proc/self/cgroup
		limits  Limits
		version string
		dirs    []string // relative to the root
		wrote   []string // "relative path=value"
		wantErr error
	}{
		{
			name:    "v2, in the root cgroup: controllers enabled at the root",
			files:   map[string]string{"cgroup.controllers": all, "cgroup.subtree_control": ""},
			self:    "0::/\n",
			limits:  Limits{Memory: 256 << 20, CPUs: 1.5, Pids: 100},
			version: "v2",
			dirs:    []string{"kvmlab-t"},
			wrote: []string{"cgroup.subtree_control=+memory +pids +cpu", "kvmlab-t/memory.max=268435456",
				"kvmlab-t/cpu.max=150000 100000", "kvmlab-t/pids.max=100"},
		},
		{
			name: "v2, in a delegated cgroup with the controllers on: used as is",
			files: map[string]string{"cgroup.controllers": all, "cgroup.subtree_control": "memory pids",
				"user.slice/me/cgroup.controllers": "memory pids", "user.slice/me/cgroup.subtree_control": "memory pids"},
			self:    "0::/user.slice/me\n",
			limits:  Limits{Memory: 32 << 20},
			version: "v2",
			dirs:    []string{"user.slice/me/kvmlab-t"},
			wrote:   []string{"user.slice/me/kvmlab-t/memory.max=33554432"},
		},
		{
			name: "v2, in a cgroup that cannot enable them: falls back to the root",
			files: map[string]string{"cgroup.controllers": all, "cgroup.subtree_control": "memory",
				"job/cgroup.controllers": "memory", "job/cgroup.subtree_control": ""},
			self:    "0::/job\n",
			limits:  Limits{Pids: 10},
			version: "v2",
			dirs:    []string{"kvmlab-t"},
			wrote:   []string{"cgroup.subtree_control=+pids", "kvmlab-t/pids.max=10"},
		},
		{
			name:    "v2 without the cpu controller, asked for a CPU limit",
			files:   map[string]string{"cgroup.controllers": "memory pids\n", "cgroup.subtree_control": ""},
			self:    "0::/\n",
			limits:  Limits{CPUs: 1},
			wantErr: ErrNoController,
		},
		{
			name:    "v2 without the pids controller and no pids limit: no pids accounting",
			files:   map[string]string{"cgroup.controllers": "memory\n", "cgroup.subtree_control": ""},
			self:    "0::/\n",
			version: "v2",
			dirs:    []string{"kvmlab-t"},
			wrote:   []string{"cgroup.subtree_control=+memory"},
		},
		{
			name:    "v1 hybrid: one group per hierarchy, under our own group in each",
			files:   v1,
			self:    v1Self,
			limits:  Limits{Memory: 64 << 20, CPUs: 0.5, Pids: 20},
			version: "v1",
			dirs:    []string{"memory/job/kvmlab-t", "pids/kvmlab-t", "cpu/kvmlab-t"},
			wrote: []string{"memory/job/kvmlab-t/memory.limit_in_bytes=67108864",
				"cpu/kvmlab-t/cpu.cfs_period_us=100000", "cpu/kvmlab-t/cpu.cfs_quota_us=50000", "pids/kvmlab-t/pids.max=20"},
		},
		{
			name:    "v1 without limits: memory and pids for the figures, no cpu group",
			files:   v1,
			self:    v1Self,
			version: "v1",
			dirs:    []string{"memory/job/kvmlab-t", "pids/kvmlab-t"},
		},
		{
			name:    "v1 without a pids hierarchy, asked for a pids limit",
			files:   map[string]string{"memory/cgroup.procs": ""},
			self:    "4:memory:/\n",
			limits:  Limits{Pids: 5},
			wantErr: ErrNoController,
		},
		{
			name:    "no cgroup file system and no limits: run without a group",
			files:   map[string]string{"README": "not a cgroup"},
			version: "none",
		},
		{
			name:    "no cgroup file system, asked for a limit",
			files:   map[string]string{},
			limits:  Limits{Memory: 1 << 20},
			wantErr: ErrNoController,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeTree(t, tc.files)
			cg, err := newCgroup(root, []byte(tc.self), "kvmlab-t", tc.limits)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("newCgroup: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("newCgroup: %v", err)
			}
			rel := func(list []string) []string {
				var out []string
				for _, s := range list {
					out = append(out, strings.TrimPrefix(s, root+"/"))
				}
				return out
			}
			if cg.report.Version != tc.version {
				t.Errorf("version %q, want %q", cg.report.Version, tc.version)
			}
			if got := rel(cg.report.Dirs); !slices.Equal(got, tc.dirs) {
				t.Errorf("dirs %q, want %q", got, tc.dirs)
			}
			if got := rel(cg.report.Wrote); !slices.Equal(got, tc.wrote) {
				t.Errorf("wrote %q, want %q", got, tc.wrote)
			}
			for _, w := range tc.wrote {
				file, value, _ := strings.Cut(w, "=")
				if b, err := os.ReadFile(filepath.Join(root, file)); err != nil || string(b) != value {
					t.Errorf("%s holds %q (%v), want %q", file, b, err, value)
				}
			}
		})
	}
}

func TestCgroupProcessAndFigures(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		self    string
		figures map[string]string // files the fake kernel fills in the group
		want    memStats
		read    []string
	}{
		{
			name:    "v2",
			files:   map[string]string{"cgroup.controllers": "memory pids", "cgroup.subtree_control": "memory pids"},
			self:    "0::/\n",
			figures: map[string]string{"memory.current": "4096\n", "memory.peak": "33554432\n", "memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"},
			want:    memStats{current: 4096, peak: 32 << 20, oomKills: 1},
			read:    []string{"memory.current", "memory.peak", "memory.events"},
		},
		{
			name:    "v2 before Linux 5.19: no memory.peak",
			files:   map[string]string{"cgroup.controllers": "memory pids", "cgroup.subtree_control": "memory pids"},
			self:    "0::/\n",
			figures: map[string]string{"memory.current": "8192\n", "memory.events": "oom_kill 0\n"},
			want:    memStats{current: 8192},
			read:    []string{"memory.current", "memory.events"},
		},
		{
			name:    "v1",
			files:   map[string]string{"memory/cgroup.procs": "", "pids/cgroup.procs": ""},
			self:    "4:memory:/\n",
			figures: map[string]string{"memory.usage_in_bytes": "12288\n", "memory.max_usage_in_bytes": "1048576\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"},
			want:    memStats{current: 12288, peak: 1 << 20, oomKills: 2},
			read:    []string{"memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.oom_control"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeTree(t, tc.files)
			cg, err := newCgroup(root, []byte(tc.self), "kvmlab-t", Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if err := cg.addProcess(4242); err != nil {
				t.Fatal(err)
			}
			for _, d := range cg.report.Dirs {
				if b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs")); string(b) != "4242" {
					t.Errorf("%s/cgroup.procs holds %q, want 4242", d, b)
				}
				// The fake process is gone again: kill must find nothing.
				if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			memDir := cg.dirs["memory"]
			for name, content := range tc.figures {
				if err := os.WriteFile(filepath.Join(memDir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := cg.memory(); got != tc.want {
				t.Errorf("memory() = %+v, want %+v", got, tc.want)
			}
			var read []string
			for _, r := range cg.report.Read {
				read = append(read, filepath.Base(r))
			}
			if !slices.Equal(read, tc.read) {
				t.Errorf("read %q, want %q", read, tc.read)
			}
			if err := cg.kill(); err != nil {
				t.Errorf("kill: %v", err)
			}
		})
	}
}

func TestCgroupKillFileV2(t *testing.T) {
	root := fakeTree(t, map[string]string{"cgroup.controllers": "memory pids", "cgroup.subtree_control": "memory pids"})
	cg, err := newCgroup(root, []byte("0::/\n"), "kvmlab-t", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	kill := filepath.Join(cg.report.Dirs[0], "cgroup.kill")
	for _, f := range []string{kill, filepath.Join(cg.report.Dirs[0], "cgroup.procs")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := cg.kill(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(kill); string(b) != "1" {
		t.Errorf("cgroup.kill holds %q, want 1", b)
	}
}

func TestSelfCgroup(t *testing.T) {
	const hybrid = "12:pids:/user.slice/user-1000.slice\n4:cpu,cpuacct:/user.slice\n3:memory:/job/42\n1:name=systemd:/user.slice/session-2.scope\n0::/user.slice/session-2.scope\n"
	tests := []struct {
		self, controller, want string
	}{
		{"0::/\n", "", "/"},
		{"0::/system.slice/kvmlab.service\n", "", "/system.slice/kvmlab.service"},
		{hybrid, "", "/user.slice/session-2.scope"},
		{hybrid, "memory", "/job/42"},
		{hybrid, "cpu", "/user.slice"},
		{hybrid, "cpuacct", "/user.slice"},
		{hybrid, "pids", "/user.slice/user-1000.slice"},
		{hybrid, "blkio", "/"},       // no such line
		{"garbage\n", "memory", "/"}, // unreadable
		{"", "", "/"},
	}
	for _, tc := range tests {
		if got := selfCgroup([]byte(tc.self), tc.controller); got != tc.want {
			t.Errorf("selfCgroup(%q, %q) = %q, want %q", tc.self, tc.controller, got, tc.want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		l       Limits
		wantErr bool
	}{
		{Limits{}, false},
		{Limits{CPUs: 0.01}, false},
		{Limits{CPUs: 64}, false},
		{Limits{CPUs: 0.009}, true},
		{Limits{CPUs: -1}, true},
		{Limits{Pids: -1}, false}, // PidsUnlimited
		{Limits{Pids: -2}, true},
		{Limits{Pids: 1, Memory: 1}, false},
	}
	for _, tc := range tests {
		if err := tc.l.validate(); (err != nil) != tc.wantErr {
			t.Errorf("%+v.validate() = %v, want error %v", tc.l, err, tc.wantErr)
		}
	}
}

func TestKeyedValue(t *testing.T) {
	const events = "low 0\nhigh 3\nmax 12\noom 1\noom_kill 2\n"
	tests := []struct {
		text, key string
		want      uint64
		ok        bool
	}{
		{events, "oom_kill", 2, true},
		{events, "oom", 1, true},
		{events, "high", 3, true},
		{events, "oom_group_kill", 0, false},
		{"oom_kill x\n", "oom_kill", 0, false},
		{"", "oom_kill", 0, false},
	}
	for _, tc := range tests {
		got, ok := keyedValue(tc.text, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("keyedValue(%q, %q) = %d, %v; want %d, %v", tc.text, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}
