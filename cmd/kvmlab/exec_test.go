package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmlab/guest/runexec"
)

// TestExecBadInput runs the kvmlab binary with bad --exec and --timeout
// input and no guest built (an empty cache): each is refused with one line
// and exit status 2, before anything is read. That the line is about
// --exec or --timeout and not about the missing kernel shows the order.
func TestExecBadInput(t *testing.T) {
	dir := t.TempDir()
	bin, _ := buildCLI(t, dir)
	emptyCache := []string{"XDG_CACHE_HOME=" + filepath.Join(dir, "no-cache"), "HOME=" + filepath.Join(dir, "no-home")}
	long := strings.Repeat("x", runexec.MaxCommand+1)
	tests := []struct {
		name string
		args []string
		want string // the stderr line, or its start
	}{
		{"empty exec", []string{"run", "--exec", ""}, `kvmlab: --exec "": empty command: give the shell command to run in the guest, e.g. --exec 'uname -a'`},
		{"blank exec", []string{"run", "--exec", "  \t"}, `kvmlab: --exec "  \t": empty command:`},
		{"exec too long", []string{"run", "--exec", long}, "kvmlab: --exec: command too long: 1025 bytes, at most 1024 fit on the kernel command line"},
		{"zero timeout", []string{"run", "--exec", "true", "--timeout", "0"}, "kvmlab: --timeout 0: must be more than zero: use e.g. --timeout 90s, or leave it out for no limit"},
		{"zero seconds", []string{"run", "--exec", "true", "--timeout", "0s"}, "kvmlab: --timeout 0s: must be more than zero"},
		{"negative timeout", []string{"run", "--exec", "true", "--timeout", "-5s"}, "kvmlab: --timeout -5s: must be more than zero"},
		{"bad timeout", []string{"run", "--exec", "true", "--timeout", "soon"}, `kvmlab: --timeout "soon": not a duration: use e.g. --timeout 90s or --timeout 5m`},
		{"huge timeout", []string{"run", "--exec", "true", "--timeout", "1e30"}, `kvmlab: --timeout "1e30": too long`},
		{"timeout without exec", []string{"run", "--timeout", "5s"}, "kvmlab: --timeout 5s bounds an --exec run: add --exec CMD, or leave --timeout out"},
		{"exec with restore", []string{"run", "--exec", "true", "--restore", filepath.Join(dir, "nope")}, "kvmlab: --exec with --restore:"},
		{"exec with control", []string{"run", "--exec", "true", "--control", filepath.Join(dir, "sock")}, "kvmlab: --exec with --control:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, bin, emptyCache, tc.args...)
			got := strings.TrimSuffix(r.stderr, "\n")
			if r.code != 2 || r.stdout != "" || !strings.HasPrefix(got, tc.want) || strings.Contains(got, "\n") {
				t.Errorf("status %d, stdout %q, stderr %q; want 2, nothing and one line starting %q", r.code, r.stdout, r.stderr, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "sock")); err == nil {
		t.Error("a refused --exec --control run left its socket behind")
	}

	// The command line with CMD must fit the kernel's limit: a real
	// bzImage says how long it may be (2047 bytes for current kernels).
	t.Run("command line too long for the kernel", func(t *testing.T) {
		k := os.Getenv("KVMLAB_TEST_BZIMAGE")
		if k == "" {
			t.Skip("KVMLAB_TEST_BZIMAGE is not set (make unit sets it to the built guest kernel)")
		}
		r := runBin(t, bin, emptyCache, "run", "--kernel", k, "--append", strings.Repeat("a", 1000), "--exec", strings.Repeat("y", runexec.MaxCommand))
		got := strings.TrimSuffix(r.stderr, "\n")
		if want := "kvmlab: --exec: the kernel command line would be 2379 bytes (CMD takes 1378 of them, encoded), and this kernel takes at most 2047"; r.code != 2 || !strings.HasPrefix(got, want) || strings.Contains(got, "\n") {
			t.Errorf("status %d, stderr %q; want 2 and one line starting %q", r.code, r.stderr, want)
		}
	})
}

func TestParseTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"30", 30 * time.Second, true},
		{"2.5", 2500 * time.Millisecond, true},
		{"0", 0, false},
		{"0s", 0, false},
		{"-1m", 0, false},
		{"NaN", 0, false},
		{"1e300", 0, false},
		{"", 0, false},
		{"tomorrow", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			d, err := parseTimeout(tc.in)
			if (err == nil) != tc.ok || d != tc.want {
				t.Fatalf("parseTimeout(%q) = %v, %v; want %v, ok %v", tc.in, d, err, tc.want, tc.ok)
			}
		})
	}
}
