package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"kvmlab/docs"
)

// TestDocsKVM runs the examples of docs/*.md that need /dev/kvm or root
// (the "console kvm" blocks; package docs explains the form) with the kvmlab
// under test and the default guest, and checks that each command prints what
// its page says and ends with the status it says. The pages travel in the
// test binary (docs.Pages), so this runs inside the emulated host like the
// other tests here. The examples that need neither run on the host, in
// docs.TestDocs, and those that boot the emulated host themselves
// ("console emulated-host") on the host too, in docs.TestDocsEmulatedHost.
func TestDocsKVM(t *testing.T) {
	blocks, err := docs.All()
	if err != nil {
		t.Fatal(err)
	}
	if emulatedCPU() != "" {
		// The emulated host's loopback interface starts down: gdb.md's
		// session connects to kvmlab run --gdb on 127.0.0.1.
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
	}
	bin, guest := kvmlabBin(t), filepath.Dir(guestFile(t, "bzImage"))
	shared := filepath.Join(t.TempDir(), "vmlinux")
	n := 0
	for _, b := range blocks {
		if !b.KVM {
			continue
		}
		n++
		t.Run(b.Name(), func(t *testing.T) {
			d := t.TempDir()
			if b.Unprivileged {
				d = enterableDir(t)
			}
			e := docs.Env{Bin: bin, GuestDir: guest, Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work")}
			// 10 minutes bounds a hung guest; a boot takes well under one.
			if err := b.Check(e, shared, 10*time.Minute, t.Logf); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n == 0 {
		t.Fatal("no console kvm block in docs/*.md: the examples that need KVM are no longer checked")
	}
}

// enterableDir is a fresh directory for an unprivileged block, whose
// commands run as docs.Nobody: others may enter it (t.TempDir's, and the
// directory above them, are root's alone).
func enterableDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kvmlab-docs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
