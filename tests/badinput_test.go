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
}
