package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
		{[]string{"--userns-range", "1000", "ls"}, "--userns-range 1000: want FIRST:COUNT, two numbers"},
		{[]string{"--userns-range", "1000:0", "ls"}, "want FIRST:COUNT"},
		{[]string{"--userns-range", "0:65536", "ls"}, "host ID 0 is root"},
		{[]string{"--userns-range", "4294967000:65536", "ls"}, "goes past the largest ID"},
		{[]string{"--runc", "--userns", "ls"}, "--userns works with kvmlab's runtime, not --runc"},
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
		// The defaults, given by name, count as asked for.
		{[]string{"--initrd", cpio, "--mem", "512M", "--pids", "512", "--", "top"},
			container.Config{Args: []string{"top"}, Initrd: cpio, Hostname: container.DefaultHostname,
				Limits: container.Limits{Memory: 512 << 20, Pids: 512}}},
		{[]string{"--initrd", cpio, "--mem", "0", "--pids", "0", "--", "top"},
			container.Config{Args: []string{"top"}, Initrd: cpio, Hostname: container.DefaultHostname,
				Limits: container.Limits{Memory: container.MemoryUnlimited, Pids: container.PidsUnlimited}}},
		{[]string{"--initrd", cpio, "--mem", "max", "--", "top"},
			container.Config{Args: []string{"top"}, Initrd: cpio, Hostname: container.DefaultHostname,
				Limits: container.Limits{Memory: container.MemoryUnlimited}}},
		{[]string{"--initrd", cpio, "--userns-range", "1000000:65536", "--", "id"},
			container.Config{Args: []string{"id"}, Initrd: cpio, Hostname: container.DefaultHostname,
				UserNS: &container.IDRange{HostUID: 1000000, HostGID: 1000000, Size: 65536}}},
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
			if (got.UserNS == nil) != (tc.want.UserNS == nil) || got.UserNS != nil && *got.UserNS != *tc.want.UserNS {
				t.Errorf("UserNS = %+v, want %+v", got.UserNS, tc.want.UserNS)
			}
		})
	}
}

func TestContainerHelpShowsDefaults(t *testing.T) {
	fset := flag.NewFlagSet("container", flag.ContinueOnError)
	var f containerFlags
	f.register(fset)
	var b bytes.Buffer
	fset.SetOutput(&b)
	fset.PrintDefaults()
	for _, want := range []string{`(default "512M")`, "(default 512)", "0 for none", "-userns", "-userns-range"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("--help does not say %q:\n%s", want, b.String())
		}
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
		t.Skipf("no guest initramfs at %s: run 'make guest' to build it", container.DefaultInitrd())
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
		{"default limits, shown with --verbose", []string{"--verbose", "--", "true"}, "", 0, "", "pids.max=512"},
		// Bits 0, 1, 3-7 and 10: CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER,
		// CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_NET_BIND_SERVICE.
		{"the workload's capabilities and no_new_privs", []string{"--", "cat", "/proc/self/status"}, "", 0,
			"CapEff:\t00000000000004fb\nCapBnd:\t00000000000004fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n", ""},
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
	t.Run("a SIGKILLed kvmlab's leftovers are swept by the next", func(t *testing.T) { checkSweepAfterKill(t, bin) })
}

// checkSweepAfterKill SIGKILLs a running `kvmlab container`, checks that
// its temporary root and cgroups stay behind, and that the next start
// removes them and says so.
func checkSweepAfterKill(t *testing.T, bin string) {
	cmd := exec.Command(bin, "container", "--", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Its leftovers carry its PID: -PID- in the middle of the name.
	leftovers := func() (roots, cgroups []string) {
		roots, _ = filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("kvmlab-rootfs-*-%d-*", pid)))
		for _, pattern := range []string{"/", "/*/", "/*/*/", "/*/*/*/"} {
			m, _ := filepath.Glob(fmt.Sprintf("%s%skvmlab-*-%d-*", container.DefaultCgroupRoot, pattern, pid))
			cgroups = append(cgroups, m...)
		}
		return roots, cgroups
	}
	procs := func(cgroups []string) string {
		var all string
		for _, c := range cgroups {
			b, _ := os.ReadFile(filepath.Join(c, "cgroup.procs"))
			all += strings.TrimSpace(string(b))
		}
		return all
	}
	// Running: the root and the cgroup exist, with the workload in it.
	var roots, cgroups []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if roots, cgroups = leftovers(); len(roots) == 1 && len(cgroups) > 0 && procs(cgroups) != "" {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("kvmlab %d did not start its container within 30 s: roots %v, cgroups %v", pid, roots, cgroups)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The kernel ends the container too (PR_SET_PDEATHSIG), a moment later.
	for deadline := time.Now().Add(30 * time.Second); procs(cgroups) != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the container of the SIGKILLed kvmlab still runs after 30 s: %v", cgroups)
		}
	}
	if r, c := leftovers(); len(r) != 1 || len(c) != len(cgroups) {
		t.Fatalf("after SIGKILL: roots %v, cgroups %v; want %v and %v left behind", r, c, roots, cgroups)
	}
	var stderr bytes.Buffer
	next := exec.Command(bin, "container", "--", "true")
	next.Stderr = &stderr
	if err := next.Run(); err != nil {
		t.Fatalf("the next kvmlab container: %v\n%s", err, stderr.String())
	}
	if r, c := leftovers(); len(r) > 0 || len(c) > 0 {
		t.Errorf("after the next start: roots %v, cgroups %v still there", r, c)
	}
	for _, p := range append(roots, cgroups...) {
		if !strings.Contains(stderr.String(), p) {
			t.Errorf("the next start does not say it removed %s:\n%s", p, stderr.String())
		}
	}
}
