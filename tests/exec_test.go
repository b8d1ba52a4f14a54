package tests

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// execTimeout bounds one `kvmlab run --exec` here: a boot of the default
// guest in the emulated host and a short command, with room to spare.
const execTimeout = 4 * time.Minute

// The exit statuses `kvmlab run --help` documents for --exec (package
// guest/runexec); written out, so that a change to them fails here.
const (
	execStatusPanic   = 123
	execStatusTimeout = 124
)

func execArgs(t *testing.T, cmd string, extra ...string) []string {
	return append([]string{"run", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"), "--exec", cmd}, extra...)
}

// TestExec runs commands in the default guest with kvmlab run --exec: the
// command's status becomes kvmlab's, its standard output is exactly what it
// printed (no kernel or init messages), its standard error comes out
// separately, output streams while the guest runs, and a missing command,
// a timeout and a guest panic end with their documented statuses. Files go
// in and out through a virtio-blk disk with an ext4 file system.
func TestExec(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		out, errOut, code := runKvmlab(t, execTimeout, execArgs(t, "echo hi; exit 3")...)
		t.Logf("stdout %q, stderr %q, exit status %d", out, errOut, code)
		if out != "hi\n" || code != 3 {
			t.Fatalf("stdout %q, exit status %d; want \"hi\\n\", 3\nstderr:\n%s", out, code, errOut)
		}
		if strings.Contains(errOut, "hi") {
			t.Errorf("stderr has the command's standard output:\n%s", errOut)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		out, errOut, code := runKvmlab(t, execTimeout, execArgs(t, "echo to-out; echo to-err >&2")...)
		t.Logf("stdout %q, stderr %q, exit status %d", out, errOut, code)
		if out != "to-out\n" || code != 0 {
			t.Fatalf("stdout %q, exit status %d; want \"to-out\\n\", 0\nstderr:\n%s", out, code, errOut)
		}
		if !strings.Contains(errOut, "to-err\n") {
			t.Fatalf("stderr %q lacks the command's \"to-err\"", errOut)
		}
	})
	t.Run("streaming", func(t *testing.T) {
		// The first line must reach kvmlab's stdout while the guest is
		// still sleeping before the second: not collected and printed
		// at the end.
		g := startGuestCmd(t, execTimeout, []string{kvmlabBin(t)}, execArgs(t, "echo first; sleep 8; echo second; exit 5")...)
		g.expect(regexp.MustCompile(`first\n`), execTimeout)
		select {
		case <-g.done:
			t.Fatalf("the first line arrived only when kvmlab had exited; stdout %q", g.output())
		default:
		}
		if out := g.output(); strings.Contains(out, "second") {
			t.Fatalf("the first line arrived together with the second: stdout %q", out)
		}
		t.Logf("stdout %q while kvmlab ran", g.output())
		if code := g.wait(execTimeout); code != 5 || g.output() != "first\nsecond\n" {
			t.Fatalf("stdout %q, exit status %d; want \"first\\nsecond\\n\", 5\nstderr:\n%s", g.output(), code, g.stderr())
		}
	})
	t.Run("not-in-guest", func(t *testing.T) {
		out, errOut, code := runKvmlab(t, execTimeout, execArgs(t, "no-such-command-kvmlab")...)
		t.Logf("stdout %q, stderr %q, exit status %d", out, errOut, code)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if out != "" || code != 127 || len(lines) != 1 || !strings.Contains(lines[0], "no-such-command-kvmlab") {
			t.Fatalf("stdout %q, exit status %d, stderr %q; want nothing, 127 and one line naming the command", out, code, errOut)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// Whether the limit falls in the boot or in the sleep, the
		// status is the timeout's.
		out, errOut, code := runKvmlab(t, execTimeout, execArgs(t, "sleep 600", "--timeout", "40s")...)
		t.Logf("stdout %q, exit status %d, stderr:\n%s", out, code, errOut)
		if code != execStatusTimeout || out != "" || !strings.Contains(errOut, "--timeout") {
			t.Fatalf("stdout %q, exit status %d; want nothing and %d with a line about --timeout\nstderr:\n%s", out, code, execStatusTimeout, errOut)
		}
	})
	t.Run("panic", func(t *testing.T) {
		out, errOut, code := runKvmlab(t, execTimeout, execArgs(t, "echo before; echo c > /proc/sysrq-trigger; echo after")...)
		t.Logf("stdout %q, exit status %d, stderr:\n%s", out, code, errOut)
		// What CMD printed before the panic is kept; nothing after it
		// runs. The newline may be cut off: the guest's tty sends
		// COM2's bytes from its transmit interrupt, and the panic can
		// stop the kernel before the last one (seen in CI: "before").
		if code != execStatusPanic || !strings.Contains(errOut, "Kernel panic - not syncing") || (out != "before\n" && out != "before") {
			t.Fatalf("stdout %q, exit status %d; want %d and the panic line on stderr\nstderr:\n%s", out, code, execStatusPanic, errOut)
		}
		if strings.Contains(out, "Kernel panic") {
			t.Errorf("the kernel's panic report reached stdout: %q", out)
		}
	})
	t.Run("debian-kernel", func(t *testing.T) {
		// kvmlab's initramfs with a stock distribution kernel.
		k := os.Getenv("KVMLAB_DEBIAN_KERNEL")
		if k == "" {
			t.Fatal("KVMLAB_DEBIAN_KERNEL is not set (the emulated-host runner sets it)")
		}
		want, err := kernelVersion(k)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"run", "--kernel", k, "--initrd", guestFile(t, "initramfs.cpio"), "--exec", "uname -r; exit 7"}
		out, errOut, code := runKvmlab(t, execTimeout, args...)
		t.Logf("stdout %q, stderr %q, exit status %d", out, errOut, code)
		rel := strings.TrimSuffix(out, "\n")
		if code != 7 || rel == "" || strings.Contains(rel, "\n") || !strings.HasPrefix(want, rel) {
			t.Fatalf("stdout %q, exit status %d; want the release of %s (%q) alone, and 7\nstderr:\n%s", out, code, k, want, errOut)
		}
	})
	t.Run("disk", func(t *testing.T) {
		img := ext4Image(t, map[string]string{"in.txt": "from-the-host\n"})
		cmd := "mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && cat /mnt/in.txt && echo from-the-guest > /mnt/out.txt && umount /mnt"
		out, errOut, code := runKvmlab(t, execTimeout, execArgs(t, cmd, "--disk", img)...)
		t.Logf("stdout %q, stderr %q, exit status %d", out, errOut, code)
		if out != "from-the-host\n" || code != 0 {
			t.Fatalf("stdout %q, exit status %d; want \"from-the-host\\n\", 0\nstderr:\n%s", out, code, errOut)
		}
		if got := debugfsCat(t, img, "/out.txt"); got != "from-the-guest\n" {
			t.Fatalf("out.txt on the image = %q, want \"from-the-guest\\n\"", got)
		}
	})
}
