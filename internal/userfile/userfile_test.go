package userfile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// readAs runs ReadFile on a thread whose file-system uid is 65534 when the
// test runs as root: setfsuid(2) is per thread, and a non-zero fsuid drops
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from that thread, so root meets
// the permission bits as any user would. The thread is left locked, so the
// runtime discards it when the goroutine ends.
func readAs(t *testing.T, unprivileged bool, path string, spec Spec) ([]byte, error) {
	t.Helper()
	if !unprivileged || os.Geteuid() != 0 {
		return ReadFile(path, spec)
	}
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread()
		unix.Setfsuid(65534)
		b, err := ReadFile(path, spec)
		ch <- result{b, err}
	}()
	r := <-ch
	return r.b, r.err
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	// The directory must be searchable by the unprivileged thread below.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	regular := write("kernel", "MZ a kernel", 0o644)
	empty := write("empty", "", 0o644)
	unreadable := write("secret", "MZ a kernel", 0o000)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "zero-link")
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	// 100 GiB that take no disk space: refused on its size, never read.
	sparse := write("sparse", "", 0o644)
	if err := os.Truncate(sparse, 100<<30); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	sfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	if err := unix.Bind(sfd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}

	spec := Spec{What: "kernel", Max: 1 << 20}
	tests := []struct {
		name   string
		path   string
		nobody bool // read as an unprivileged user
		want   error
		msg    []string // in the message
	}{
		{"regular", regular, false, nil, nil},
		{"empty", empty, false, ErrEmpty, []string{"is empty", "kernel"}},
		{"missing", filepath.Join(dir, "nope"), false, ErrNotExist, []string{"no such file", "check the path"}},
		{"under a file", filepath.Join(regular, "x"), false, ErrNotExist, []string{"no such file"}},
		{"directory", dir, false, ErrKind, []string{"is a directory", "name a file in it"}},
		{"FIFO", fifo, false, ErrKind, []string{"named pipe", "regular file"}},
		{"socket", sock, false, ErrKind, []string{"socket"}},
		{"/dev/zero", "/dev/zero", false, ErrKind, []string{"character device", "give a regular file"}},
		{"symlink to /dev/zero", link, false, ErrKind, []string{"leads to /dev/zero", "character device"}},
		{"symlink loop", loop, false, nil, []string{"symbolic links"}},
		{"sparse 100 GiB", sparse, false, ErrTooLarge, []string{"100.0 GiB", "1.0 MiB", "right file"}},
		{"unreadable", unreadable, true, ErrPermission, []string{"permission denied", "chmod"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := readAs(t, tt.nobody, tt.path, spec)
			if tt.want == nil && tt.msg == nil {
				if err != nil || string(b) != "MZ a kernel" {
					t.Fatalf("ReadFile = %q, %v", b, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadFile(%s) succeeded with %d bytes, want an error", tt.path, len(b))
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q is not %v", err, tt.want)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message %q has more than one line", err)
			}
		})
	}
}

// TestOpenBlockDevice: a disk image may be a block device; a kernel may not.
func TestOpenBlockDevice(t *testing.T) {
	dev := ""
	for _, p := range []string{"/dev/loop0", "/dev/ram0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"} {
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
			dev = p
			break
		}
	}
	if dev == "" {
		t.Skip("no block device node on this machine to open")
	}
	if _, err := ReadFile(dev, Spec{What: "kernel", Max: 1 << 20}); !errors.Is(err, ErrKind) || !strings.Contains(err.Error(), "block device") {
		t.Errorf("ReadFile(%s) = %v, want a refusal naming a block device", dev, err)
	}
	// Read-only: the test has no business writing to a real device.
	f, _, err := Open(dev, Spec{What: "disk image", BlockDevice: true})
	if err != nil {
		if errors.Is(err, ErrPermission) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
			t.Skipf("%s: %v", dev, err)
		}
		t.Fatalf("Open(%s) as a disk: %v", dev, err)
	}
	f.Close()
}

// TestReadFileLimit: at most Max bytes are accepted, and ReadFile needs a
// limit.
func TestReadFileLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(p, Spec{Max: 10}); err != nil || len(b) != 10 {
		t.Fatalf("exactly at the limit: %d bytes, %v", len(b), err)
	}
	if _, err := ReadFile(p, Spec{Max: 9}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("one byte over: %v, want ErrTooLarge", err)
	}
	if _, err := ReadFile(p, Spec{}); err == nil {
		t.Fatal("ReadFile without a limit succeeded")
	}
}

// TestOpenWrite: Write opens read-write, and a read-only file refuses it
// with a fix that names read-only.
func TestOpenWrite(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, make([]byte, 4096), 0o444); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		_, _, err := Open(p, Spec{Write: true})
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("Open read-only file for writing: %v", err)
		}
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	f, size, err := Open(p, Spec{Write: true})
	if err != nil || size != 4096 {
		t.Fatalf("Open = %v, %d", err, size)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Errorf("write through the reopened file: %v", err)
	}
}

func TestHuman(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB", 100 << 30: "100.0 GiB"} {
		if got := Human(n); got != want {
			t.Errorf("Human(%d) = %q, want %q", n, got, want)
		}
	}
}
