package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kvmlab/container"
)

func TestContainerFlags(t *testing.T) {
	dir := t.TempDir()
	cpio := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(cpio, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The default initramfs is looked for in a cache that does not exist.
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "no-cache"))
	t.Setenv("HOME", filepath.Join(dir, "no-home"))
	tests := []struct {
		args    []string
		wantErr string // substring of the one-line usage error
	}{
		{[]string{}, "no command: name one after the flags"},
		{[]string{"--"}, "no command"},
		{[]string{"--mem", "lots", "--", "ls"}, "--mem lots: not a size: use a number with K, M or G"},
		{[]string{"--mem", "1M", "ls"}, "--mem 1M: too little for the container's init to run: use at least 8M"},
		{[]string{"--cpus", "x", "ls"}, "--cpus x: not a number"},
		{[]string{"--cpus", "NaN", "ls"}, "--cpus NaN: not a number"},
		{[]string{"--cpus", "0.001", "ls"}, "use at least 0.01"},
		{[]string{"--cpus", "99999", "ls"}, "use at most"},
		{[]string{"--pids", "-1", "ls"}, "--pids -1: must be positive"},
		{[]string{"--pids", "4", "ls"}, "--pids 4: too few for the container's init and one program, whose threads count too: use at least 16"},
		{[]string{"--hostname", "a b", "ls"}, "letters, digits, dots and dashes"},
		{[]string{"--hostname", strings.Repeat("h", 65), "ls"}, "1 to 64"},
		{[]string{"--initrd", cpio, "--rootfs", dir, "ls"}, "--initrd and --rootfs both given: use one"},
		{[]string{"--initrd", filepath.Join(dir, "nope.cpio"), "ls"}, "nope.cpio: no such file: check the path"},
		{[]string{"--initrd", dir, "ls"}, "is a directory: use --rootfs"},
		{[]string{"--rootfs", cpio, "ls"}, "not a directory"},
		{[]string{"ls"}, "no guest initramfs at " + filepath.Join(dir, "no-cache") + "/kvmlab/default/initramfs.cpio: run 'make guest'"},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(strings.Join(tc.args, " "), dir, "DIR"), func(t *testing.T) {
			err := cmdContainer(tc.args)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(ue.msg, tc.wantErr) {
				t.Fatalf("cmdContainer(%q) = %v; want a usage error saying %q", tc.args, err, tc.wantErr)
			}
			if strings.Contains(ue.msg, "\n") {
				t.Errorf("usage error spans lines: %q", ue.msg)
			}
		})
	}
}

func TestContainerFlagsValid(t *testing.T) {
	dir := t.TempDir()
	cpio := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(cpio, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want container.Config
	}{
		{[]string{"--initrd", cpio, "--", "/bin/sh", "-c", "exit 3"},
			container.Config{Args: []string{"/bin/sh", "-c", "exit 3"}, Initrd: cpio, Hostname: container.DefaultHostname}},
		{[]string{"--rootfs", dir, "--hostname", "box-1.lab", "ls", "-l"},
			container.Config{Args: []string{"ls", "-l"}, Rootfs: dir, Hostname: "box-1.lab"}},
		{[]string{"--initrd", cpio, "--mem", "256M", "--cpus", "0.5", "--pids", "64", "--", "top"},
			container.Config{Args: []string{"top"}, Initrd: cpio, Hostname: container.DefaultHostname,
				Limits: container.Limits{Memory: 256 << 20, CPUs: 0.5, Pids: 64}}},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(strings.Join(tc.args, " "), dir, "DIR"), func(t *testing.T) {
			fset := flag.NewFlagSet("container", flag.ContinueOnError)
			var f containerFlags
			f.register(fset)
			if err := fset.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got, err := f.config(fset.Args())
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got.Args, "|") != strings.Join(tc.want.Args, "|") || got.Initrd != tc.want.Initrd ||
				got.Rootfs != tc.want.Rootfs || got.Hostname != tc.want.Hostname || got.Limits != tc.want.Limits {
				t.Errorf("config = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestContainerCommand runs the kvmlab binary's container subcommand end
// to end (built here; the integration test in ./tests does the same with
// the binary 'make' built, also inside the emulated host). It needs root
// and the guest's initramfs.
func TestContainerCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, cgroups): run 'go test' as root")
	}
	if _, err := os.Stat(container.DefaultInitrd()); err != nil {
		t.Fatalf("no guest initramfs at %s: run 'make guest' to build it", container.DefaultInitrd())
	}
	bin := filepath.Join(t.TempDir(), "kvmlab")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantStatus int
		wantOut    string // substring of stdout
		wantErr    string // substring of stderr
	}{
		{"hostname", []string{"--hostname", "box", "--", "hostname"}, "", 0, "box\n", ""},
		{"exit status passes through", []string{"--", "sh", "-c", "exit 7"}, "", 7, "", ""},
		{"stdin passes through", []string{"--", "sh"}, "echo from-stdin; exit 4\n", 4, "from-stdin\n", ""},
		{"OOM under --mem, reported with --verbose", []string{"--mem", "32M", "--verbose", "--", "sh", "-c", "head -c 100000000 /dev/zero | sort"},
			"", 137, "", "OOM-killed true"},
		{"limits are reported with --verbose", []string{"--cpus", "0.5", "--pids", "64", "--verbose", "--", "true"},
			"", 0, "", "pids.max=64"},
		{"a command not in the root", []string{"--", "no-such-program"}, "", 1, "", `container setup failed: command "no-such-program" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, append([]string{"container"}, tc.args...)...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(tc.stdin), &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.wantStatus ||
				!strings.Contains(stdout.String(), tc.wantOut) || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("kvmlab container %q: status %d, stdout %q, stderr %q; want status %d, stdout with %q, stderr with %q",
					tc.args, got, stdout.String(), stderr.String(), tc.wantStatus, tc.wantOut, tc.wantErr)
			}
		})
	}
}
