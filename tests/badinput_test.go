package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/guest/tiny"
)

// TestBadInput: every mistake a user can make on the command line gets one
// line naming the problem and the fix, a non-zero exit status, and never a
// Go stack trace.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bz, err := os.ReadFile(guestFile(t, "bzImage"))
	if err != nil {
		t.Fatal(err)
	}
	initrd := guestFile(t, "initramfs.cpio")
	text := write("notes.txt", []byte("this is not a kernel\n"), 0o644)
	truncated := write("truncated", bz[:4096], 0o644)
	arm := make([]byte, 4096)
	copy(arm[0x38:], "ARM\x64")
	arm64 := write("Image", arm, 0o644)
	unreadable := write("secret", bz, 0o000)
	// A sparse 3 GiB initrd: too big for 512 MiB, and checked before it is read.
	big := filepath.Join(dir, "big.cpio")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	kernel := guestFile(t, "bzImage")
	// Files that are not files: a FIFO (a read would wait for a writer
	// forever), a symlink to /dev/zero (a read never ends), a kernel of
	// 100 GiB that takes no disk space (a read exhausts memory).
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zeroLink := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zeroLink); err != nil {
		t.Fatal(err)
	}
	hugeKernel := filepath.Join(dir, "huge-bzImage")
	if err := os.WriteFile(hugeKernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(hugeKernel, 100<<30); err != nil {
		t.Fatal(err)
	}
	// Files given to stat that are not traces.
	empty := write("empty.json", nil, 0o644)
	cut := write("cut.json", []byte(`{"seq":1,"t_ns":1250000,"vcpu":0,"reason":"KVM_EX`), 0o644)
	notTrace := "not a trace written by 'kvmlab run --trace"

	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	tests := []struct {
		name string
		args []string
		env  []string
		cred *syscall.Credential
		want []string // all must appear in the one line
		code int
	}{
		{"kernel does not exist", []string{"run", "--kernel", "/nonexistent/bzImage"}, nil, nil, []string{"/nonexistent/bzImage", "no such file"}, 2},
		{"kernel unreadable", []string{"run", "--kernel", unreadable, "--initrd", initrd}, nil, nobody, []string{"permission denied", "chmod"}, 2},
		{"kernel is text", []string{"run", "--kernel", text}, nil, nil, []string{"notes.txt", "not"}, 2},
		{"kernel truncated", []string{"run", "--kernel", truncated}, nil, nil, []string{"truncated"}, 2},
		{"kernel is arm64", []string{"run", "--kernel", arm64}, nil, nil, []string{"arm64"}, 2},
		{"initrd too large", []string{"run", "--kernel", kernel, "--initrd", big, "--mem", "512M"}, nil, nil, []string{"too large", "--mem"}, 2},
		{"mem too small", []string{"run", "--kernel", kernel, "--initrd", initrd, "--mem", "16M"}, nil, nil, []string{"--mem", "raise"}, 2},
		{"mem above host", []string{"run", "--kernel", kernel, "--mem", "64T"}, nil, nil, []string{"more than this host", "smaller --mem"}, 2},
		{"mem not a size", []string{"run", "--kernel", kernel, "--mem", "lots"}, nil, nil, []string{"--mem lots", "512M"}, 2},
		{"zero cpus", []string{"run", "--kernel", kernel, "--cpus", "0"}, nil, nil, []string{"--cpus 0", "at least one"}, 2},
		{"too many cpus", []string{"run", "--kernel", kernel, "--initrd", initrd, "--cpus", "100000"}, nil, nil, []string{"--cpus 100000", "fewer"}, 2},
		{"no /dev/kvm", []string{"run", "--kernel", kernel, "--initrd", initrd}, []string{"KVMLAB_KVM_DEVICE=/nonexistent/kvm"}, nil, []string{"does not exist", "kvm_amd", "emulated host"}, 2},
		{"/dev/kvm permission denied", []string{"run", "--kernel", kernel, "--initrd", initrd}, nil, nobody, []string{"permission denied", "kvm group"}, 2},
		{"kernel is /dev/zero", []string{"run", "--kernel", "/dev/zero"}, nil, nil, []string{"--kernel /dev/zero", "character device", "regular file"}, 2},
		{"initrd is /dev/zero", []string{"run", "--kernel", kernel, "--initrd", "/dev/zero"}, nil, nil, []string{"--initrd /dev/zero", "character device"}, 2},
		{"kernel is a symlink to /dev/zero", []string{"run", "--kernel", zeroLink}, nil, nil, []string{"leads to /dev/zero", "character device"}, 2},
		{"kernel is a FIFO", []string{"run", "--kernel", fifo}, nil, nil, []string{"named pipe", "regular file"}, 2},
		{"initrd is a FIFO", []string{"run", "--kernel", kernel, "--initrd", fifo}, nil, nil, []string{"--initrd", "named pipe"}, 2},
		{"kernel is 100 GiB sparse", []string{"run", "--kernel", hugeKernel}, nil, nil, []string{"100.0 GiB", "kernel", "right file"}, 2},
		{"disk is /dev/zero", []string{"run", "--kernel", kernel, "--initrd", initrd, "--disk", "/dev/zero"}, nil, nil, []string{"--disk /dev/zero", "character device", "block device"}, 2},
		{"disk is a FIFO", []string{"run", "--kernel", kernel, "--initrd", initrd, "--disk", fifo + ",ro"}, nil, nil, []string{"--disk", "named pipe"}, 2},
		// File checks come before the KVM check: a user on a host
		// without KVM learns about the bad file first.
		{"bad kernel before no /dev/kvm", []string{"run", "--kernel", "/dev/zero"}, []string{"KVMLAB_KVM_DEVICE=/nonexistent/kvm"}, nil, []string{"character device"}, 2},
		{"stat /dev/zero", []string{"stat", "/dev/zero"}, nil, nil, []string{"stat /dev/zero", "character device"}, 2},
		{"stat a FIFO", []string{"stat", fifo}, nil, nil, []string{"named pipe"}, 2},
		{"stat a text file", []string{"stat", text}, nil, nil, []string{"no exit events in 1 line", "not a JSON object", notTrace}, 2},
		{"stat an empty file", []string{"stat", empty}, nil, nil, []string{"is empty", notTrace}, 2},
		{"stat truncated JSON", []string{"stat", cut}, nil, nil, []string{"no exit events in 1 line", "unexpected end of JSON input", notTrace}, 2},
		{"stat 100 GiB", []string{"stat", hugeKernel}, nil, nil, []string{"100.0 GiB", "trace"}, 2},
		{"unknown command", []string{"boot"}, nil, nil, []string{"unknown command", "kvmlab help"}, 2},
		{"stray argument", []string{"run", "bzImage"}, nil, nil, []string{"unexpected argument", "--kernel"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(kvmlabBin(t), tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			if tc.cred != nil {
				if os.Getuid() != 0 {
					t.Skip("needs root to run as nobody") // inside the emulated host we are root
				}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tc.cred}
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Stdin = nil
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("kvmlab did not exit within 60 s")
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Errorf("exit status %d, want %d; stderr %q", code, tc.code, msg)
			}
			if strings.Count(msg, "\n") != 0 || msg == "" {
				t.Errorf("want exactly one line on stderr, got %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr %q does not mention %q", msg, w)
				}
			}
			for _, bad := range []string{"goroutine ", "panic:", ".go:"} {
				if strings.Contains(msg, bad) {
					t.Errorf("stderr looks like a stack trace: %q", msg)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("unexpected stdout %q", stdout.String())
			}
		})
	}
}

// TestCheck runs `kvmlab check` on a host that has KVM.
func TestCheck(t *testing.T) {
	out, err := exec.Command(kvmlabBin(t), "check").CombinedOutput()
	if err != nil {
		t.Fatalf("kvmlab check: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"[ok  ] /dev/kvm", "[ok  ] KVM API version", "KVM_CAP_IRQCHIP", "This host can run kvmlab guests"} {
		if !strings.Contains(s, want) {
			t.Errorf("check output lacks %q:\n%s", want, s)
		}
	}
	if !strings.Contains(s, "SVM") && !strings.Contains(s, "VT-x") {
		t.Errorf("check output names no virtualisation extension:\n%s", s)
	}
	// In an emulated host, the extension is the one emulated.
	if want := map[string]string{"amd": "AMD SVM (svm)", "intel": "VT-x (vmx)"}[emulatedCPU()]; want != "" && !strings.Contains(s, want) {
		t.Errorf("check output lacks %q in the emulated %s host:\n%s", want, emulatedCPU(), s)
	}
}

// TestTraceKeptOnRefusal: a run refused for any reason leaves an existing
// --trace file as it was, and creates none where there was none.
func TestTraceKeptOnRefusal(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := guestFile(t, "bzImage"), guestFile(t, "initramfs.cpio")
	old := filepath.Join(dir, "old.json")
	const content = "{\"seq\":1,\"reason\":\"KVM_EXIT_HLT\"}\n"
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"bad --trace-format", []string{"--trace-format", "xml"}, nil, "--trace-format xml"},
		{"bad --kernel", []string{"--kernel", "/dev/zero"}, nil, "character device"},
		{"bad --mem", []string{"--mem", "lots"}, nil, "--mem lots"},
		{"no usable KVM", nil, []string{"KVMLAB_KVM_DEVICE=/nonexistent/kvm"}, "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(old, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			fresh := filepath.Join(dir, "fresh.json")
			for _, out := range []string{old, fresh} {
				args := append([]string{"run", "--kernel", kernel, "--initrd", initrd, "--trace", out}, tc.args...)
				cmd := exec.Command(kvmlabBin(t), args...)
				cmd.Env = append(os.Environ(), tc.env...)
				b, err := cmd.CombinedOutput()
				if err == nil || !strings.Contains(string(b), tc.want) {
					t.Fatalf("kvmlab %v: %v, %q; want a refusal naming %q", args, err, b, tc.want)
				}
			}
			if got, err := os.ReadFile(old); err != nil || string(got) != content {
				t.Errorf("old trace now holds %q (%v), want it untouched", got, err)
			}
			if _, err := os.Stat(fresh); err == nil {
				t.Errorf("a refused run created %s", fresh)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, ".*kvmlab-*")); len(m) > 0 {
				t.Errorf("temporary files left behind: %v", m)
			}
		})
	}
}

// TestDiskInUse: a second kvmlab on a disk image a first one holds is
// refused in one line that says how to share it; read-only with read-only
// shares. The first runs a tiny guest that spins (jmp $) until killed.
func TestDiskInUse(t *testing.T) {
	dir := t.TempDir()
	spin := filepath.Join(dir, "spin.elf")
	if err := os.WriteFile(spin, tiny.ELF([]byte{0xeb, 0xfe}), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "a.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		first, second string // --disk values
		conflict      bool
	}{
		{img, img, true},
		{img, img + ",ro", true},
		{img + ",ro", img, true},
		{img + ",ro", img + ",ro", false},
	} {
		mode := func(d string) string {
			if strings.HasSuffix(d, ",ro") {
				return "ro"
			}
			return "rw"
		}
		t.Run(mode(tc.first)+" then "+mode(tc.second), func(t *testing.T) {
			first := exec.Command(kvmlabBin(t), "run", "--quiet", "--kernel", spin, "--mem", "64M", "--disk", tc.first)
			var firstErr bytes.Buffer
			first.Stderr = &firstErr
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = first.Process.Kill()
				_ = first.Wait()
			}()
			// The first takes the lock when it builds the machine.
			for i := 0; !holdsLock(img); i++ {
				if i == 300 {
					t.Fatalf("the first kvmlab never locked the image: %q", firstErr.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			// --trace-format xml is refused after the disk check: the
			// second never boots.
			cmd := exec.Command(kvmlabBin(t), "run", "--kernel", spin, "--mem", "64M", "--disk", tc.second, "--trace-format", "xml")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err == nil {
				t.Fatalf("second kvmlab ran: %q", stderr.String())
			}
			msg, code := strings.TrimSpace(stderr.String()), cmd.ProcessState.ExitCode()
			if !tc.conflict {
				if strings.Contains(msg, "in use") || !strings.Contains(msg, "--trace-format xml") {
					t.Fatalf("read-only beside read-only: %q, want only the --trace-format refusal", msg)
				}
				return
			}
			path := strings.TrimSuffix(tc.second, ",ro")
			for _, want := range []string{"--disk " + tc.second, "in use by another process", "stop it", path + ",ro in both"} {
				if !strings.Contains(msg, want) {
					t.Errorf("refusal %q lacks %q (first kvmlab: %q)", msg, want, firstErr.String())
				}
			}
			if code != 2 || strings.Count(msg, "\n") != 0 {
				t.Errorf("exit status %d, %q: want 2 and one line", code, msg)
			}
		})
	}
}

// holdsLock says whether some process holds an OFD or POSIX lock on byte
// 100 of path (where kvmlab and QEMU lock disk images).
func holdsLock(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 100, Len: 1}
	return unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk) == nil && lk.Type != unix.F_UNLCK
}
