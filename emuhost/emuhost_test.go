package emuhost

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineLogger sends each console line to t.Log (visible with go test -v)
// and times the first appearance of interesting lines.
type lineLogger struct {
	t     *testing.T
	start time.Time
	mu    sync.Mutex
	buf   []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.t.Logf("[%6.2fs] %s", time.Since(l.start).Seconds(), l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// TestEmulatedHost boots the emulated host for real (about a minute on a
// 2-core machine) and runs a probe that uses /dev/kvm inside it. Set
// KVMLAB_SKIP_EMULATED=1 to skip it.
func TestEmulatedHost(t *testing.T) {
	if os.Getenv("KVMLAB_SKIP_EMULATED") == "1" {
		t.Skip("KVMLAB_SKIP_EMULATED=1")
	}
	if ok, why := KVMUsable(); ok {
		t.Logf("note: this machine has a working /dev/kvm (%s); testing the emulated host anyway", why)
	} else {
		t.Logf("no usable KVM here (%s): that is what the emulated host is for", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()

	start := time.Now()
	k, err := HostKernel(ctx)
	if err != nil {
		t.Fatalf("HostKernel: %v", err)
	}
	t.Logf("host kernel %s %s (modules compressed in the package: %v), ready in %s: %s",
		k.Package, k.Version, k.CompressedModules, time.Since(start).Round(time.Millisecond), k.Dir)
	if k.Vmlinux != "" {
		t.Logf("booting the uncompressed PVH kernel %s", k.Vmlinux)
	} else {
		t.Logf("booting the bzImage %s (no uncompressed PVH kernel could be extracted)", k.Vmlinuz)
	}

	probe := filepath.Join(t.TempDir(), "kvmprobe")
	if err := GoBuild(ctx, "kvmlab/emuhost/testdata/kvmprobe", probe); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		argv     []string
		wantCode int
		wantOut  string
	}{
		{"kvm-probe", []string{"/bin/kvmprobe"}, 0, "kvm ok api=12"},
		{"exit-3", []string{"kvmprobe", "-exit", "3"}, 3, "exiting with status 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := Run(ctx, Spec{
				Files:   []File{{HostPath: probe, Path: "/bin/kvmprobe"}},
				Argv:    c.argv,
				Timeout: 4 * time.Minute,
				Output:  &lineLogger{t: t, start: time.Now()},
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			t.Logf("exit code %d after %d attempt(s), %s in QEMU", res.ExitCode, res.Attempts, res.Duration.Round(time.Millisecond))
			if !strings.Contains(res.Output, c.wantOut) {
				t.Errorf("output lacks %q:\n%s", c.wantOut, res.Output)
			}
			if res.ExitCode != c.wantCode {
				t.Errorf("ExitCode = %d, want %d; output:\n%s", res.ExitCode, c.wantCode, res.Output)
			}
		})
	}
}

// TestPrograms checks that a dynamic program brings its loader and
// libraries, under the names ldd prints, and that a missing one is an error.
func TestPrograms(t *testing.T) {
	files, err := Programs("ip")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, f := range files {
		paths[f.Path] = true
	}
	ip, _ := exec.LookPath("ip")
	if !paths[ip] {
		t.Errorf("Programs(ip) lacks %s: %v", ip, paths)
	}
	var libc bool
	for p := range paths {
		if strings.Contains(p, "libc.so") {
			libc = true
		}
	}
	if !libc {
		t.Errorf("Programs(ip) lacks libc: %v", paths)
	}
	if _, err := Programs("no-such-program-kvmlab"); err == nil {
		t.Error("Programs(no-such-program) succeeded")
	}
}
