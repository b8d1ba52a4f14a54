package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kvmlab/guest/tiny"
	"kvmlab/vmm/kvm"
)

// runCLI runs kvmlab in this process and returns its exit status and what
// it wrote on stderr.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		got <- string(b)
	}()
	code := realMain(args)
	os.Stderr = saved
	w.Close()
	return code, strings.TrimSpace(<-got)
}

// TestUserFiles: files that are not what they should be are refused in one
// line with status 2, quickly and before KVM is looked at (this test runs
// on any host, with or without /dev/kvm); an old --trace file survives
// every refusal.
func TestUserFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel := filepath.Join(dir, "tiny.elf")
	if err := os.WriteFile(kernel, tiny.PortLoopELF(10), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	huge := write("huge", "")
	if err := os.Truncate(huge, 100<<30); err != nil {
		t.Fatal(err)
	}
	text := write("notes.json", "line one\nline two\nline three\n")
	empty := write("empty.json", "")
	cut := write("cut.json", `{"seq":1,"t_ns":5,"vcpu":0,"reason":"KVM_EX`)
	chrome := write("chrome.json", "{\"traceEvents\":[\n")
	old := filepath.Join(dir, "old.json")
	const oldTrace = "{\"seq\":1,\"reason\":\"KVM_EXIT_HLT\"}\n"
	notTrace := "not a trace written by 'kvmlab run --trace"

	tests := []struct {
		name  string
		args  []string
		noKVM bool     // point kvmlab at a /dev/kvm that does not exist
		want  []string // in the one line
	}{
		{"kernel /dev/zero", []string{"run", "--kernel", "/dev/zero"}, false, []string{"--kernel /dev/zero", "character device"}},
		{"initrd /dev/zero", []string{"run", "--kernel", kernel, "--initrd", "/dev/zero"}, false, []string{"--initrd /dev/zero", "character device"}},
		{"kernel FIFO", []string{"run", "--kernel", fifo}, false, []string{"named pipe"}},
		{"kernel 100 GiB", []string{"run", "--kernel", huge}, false, []string{"100.0 GiB", "kernel"}},
		{"initrd 100 GiB", []string{"run", "--kernel", kernel, "--initrd", huge}, false, []string{"too large", "raise --mem"}},
		{"disk FIFO", []string{"run", "--kernel", kernel, "--disk", fifo}, false, []string{"--disk", "named pipe"}},
		{"bad file before no KVM", []string{"run", "--kernel", "/dev/zero"}, true, []string{"character device"}},
		{"stat /dev/zero", []string{"stat", "/dev/zero"}, false, []string{"character device"}},
		{"stat FIFO", []string{"stat", fifo}, false, []string{"named pipe"}},
		{"stat text", []string{"stat", text}, false, []string{"no exit events in 3 lines", "line 1: not a JSON object", notTrace}},
		{"stat empty", []string{"stat", empty}, false, []string{"is empty", notTrace}},
		{"stat truncated", []string{"stat", cut}, false, []string{"no exit events in 1 line", notTrace}},
		{"stat chrome", []string{"stat", chrome}, false, []string{"Chrome trace", "--trace-format json"}},
		{"stat 100 GiB", []string{"stat", huge}, false, []string{"100.0 GiB", "trace"}},
		{"trace format", []string{"run", "--kernel", kernel, "--trace", old, "--trace-format", "xml"}, false, []string{"--trace-format xml"}},
		{"trace in a missing directory", []string{"run", "--kernel", kernel, "--trace", filepath.Join(dir, "no", "t.json")}, false, []string{"does not exist"}},
		{"trace with no KVM", []string{"run", "--kernel", kernel, "--mem", "64M", "--trace", old}, true, []string{"does not exist", "kvm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(old, []byte(oldTrace), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.noKVM {
				saved := kvm.DevicePath
				kvm.DevicePath = filepath.Join(dir, "no-kvm")
				defer func() { kvm.DevicePath = saved }()
			}
			code, msg := runCLI(t, tt.args...)
			if code != 2 || msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("status %d, stderr %q: want 2 and one line", code, msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			if b, err := os.ReadFile(old); err != nil || string(b) != oldTrace {
				t.Errorf("old trace holds %q, %v: a refused run changed it", b, err)
			}
		})
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*kvmlab-*")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}
