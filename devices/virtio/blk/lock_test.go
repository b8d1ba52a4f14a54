package blk

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLockTwoOpens: OFD locks conflict between two open file descriptions
// even in one process, so two Opens here stand for two kvmlab processes.
func TestLockTwoOpens(t *testing.T) {
	tests := []struct {
		first, second bool // read-only?
		conflict      bool
	}{
		{false, false, true},
		{false, true, true},
		{true, false, true},
		{true, true, false},
	}
	mode := map[bool]string{false: "rw", true: "ro"}
	for _, tt := range tests {
		t.Run(mode[tt.first]+" then "+mode[tt.second], func(t *testing.T) {
			path, _ := newImage(t, 8*SectorSize)
			a, err := Open(path, tt.first)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Open(path, tt.second)
			if !tt.conflict {
				if err != nil {
					t.Fatalf("second open: %v, want it to share the image", err)
				}
				b.Close()
				a.Close()
				return
			}
			if err == nil {
				b.Close()
				t.Fatal("second open succeeded: two VMMs would share the image")
			}
			if !errors.Is(err, ErrInUse) {
				t.Fatalf("second open: %v, want ErrInUse", err)
			}
			for _, want := range []string{"in use by another process", path + ",ro", "stop it"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err, want)
				}
			}
			if err := Check(path, tt.second); !errors.Is(err, ErrInUse) {
				t.Errorf("Check while held: %v, want ErrInUse", err)
			}
			// The lock goes with the file.
			a.Close()
			if err := Check(path, tt.second); err != nil {
				t.Errorf("after the first closed: %v", err)
			}
		})
	}
}

// qemu is a qemu-system-x86_64 that holds an image through -drive.
type qemu struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

// startQEMU starts QEMU with the image as a guest's disk, and
// returns once it is up (it answers on QMP) or has exited (then with its
// stderr).
func startQEMU(t *testing.T, path string, readOnly bool) (*qemu, string) {
	t.Helper()
	drive := "file=" + path + ",format=raw,if=none,id=d0"
	if readOnly {
		drive += ",readonly=on"
	}
	// A virtio-blk device on the drive, in a machine that never runs (-S):
	// a -drive alone (if=none, or -machine none) only reads, and locks
	// byte 100 alone; the device is what asks for write permission.
	q := &qemu{cmd: exec.Command("qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S", "-display", "none",
		"-nodefaults", "-drive", drive, "-device", "virtio-blk-pci,drive=d0", "-qmp", "stdio")}
	q.cmd.Stderr = &q.stderr
	out, err := q.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := q.cmd.StdinPipe() // kept open: QMP on stdio ends at EOF
	if err != nil {
		t.Fatal(err)
	}
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The greeting comes before the devices are created; the answer to
	// the first command only once the machine is built, its disk included.
	r := bufio.NewReader(out)
	line, _ := r.ReadString('\n')
	if strings.Contains(line, `"QMP"`) {
		if _, err := in.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err == nil {
			line, _ = r.ReadString('\n')
		}
	}
	if !strings.Contains(line, `"return"`) {
		in.Close()
		_ = q.cmd.Wait()
		return nil, strings.TrimSpace(q.stderr.String())
	}
	t.Cleanup(func() {
		in.Close()
		_ = q.cmd.Process.Kill()
		_ = q.cmd.Wait()
	})
	return q, ""
}

// waitLocked waits (for a running QEMU, bounded) until something holds a
// lock on byte 100 of path: QEMU takes it while it opens the drive.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range 300 {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: lockPermBase, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if lk.Type != unix.F_UNLCK {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("QEMU is up but holds no lock on byte 100 of the image")
}

// TestLockQEMU: kvmlab and a real QEMU refuse each other's image in both
// orders, and share it when both are read-only. Skipped only when
// qemu-system-x86_64 is not installed (tests/deps.sh installs it).
func TestLockQEMU(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (tests/deps.sh installs it)")
	}
	mode := map[bool]string{false: "rw", true: "ro"}
	for _, qemuRO := range []bool{false, true} {
		for _, ourRO := range []bool{false, true} {
			share := qemuRO && ourRO
			t.Run("QEMU "+mode[qemuRO]+" then kvmlab "+mode[ourRO], func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "a.img")
				if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
					t.Fatal(err)
				}
				q, why := startQEMU(t, path, qemuRO)
				if q == nil {
					t.Fatalf("QEMU did not start on a free image: %s", why)
				}
				waitLocked(t, path)
				d, err := Open(path, ourRO)
				switch {
				case share && err != nil:
					t.Fatalf("kvmlab read-only beside a read-only QEMU: %v", err)
				case share:
					d.Close()
				case err == nil:
					d.Close()
					t.Fatal("kvmlab opened an image QEMU holds")
				case !errors.Is(err, ErrInUse):
					t.Fatalf("kvmlab: %v, want ErrInUse", err)
				}
			})
			t.Run("kvmlab "+mode[ourRO]+" then QEMU "+mode[qemuRO], func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "a.img")
				if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
					t.Fatal(err)
				}
				d, err := Open(path, ourRO)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				q, why := startQEMU(t, path, qemuRO)
				switch {
				case share && q == nil:
					t.Fatalf("read-only QEMU refused beside read-only kvmlab: %s", why)
				case !share && q != nil:
					t.Fatal("QEMU started on an image kvmlab holds")
				case !share && !strings.Contains(why, "lock"):
					t.Fatalf("QEMU failed, but not on the lock: %s", why)
				}
				if why != "" {
					t.Logf("QEMU: %s", why)
				}
			})
		}
	}
}
