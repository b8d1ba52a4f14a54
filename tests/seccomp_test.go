package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSeccompOnRealBoot: a real Linux boot runs under the VMM's seccomp
// filter (vmm/seccomp), and everything a running kvmlab does after set-up
// still works: the console, virtio-rng, a SIGUSR1 snapshot with kernel
// symbols (System.map opened before the filter), --stats with the memory
// and thread figures from /proc/self (opened before), and poweroff. Every
// thread of the VMM must carry the filter and no_new_privs; with
// --seccomp=false none may.
func TestSeccompOnRealBoot(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("seccomp=%v", on), func(t *testing.T) {
			g := bootToShell(t, "run", "--quiet", "--stats", "--rng", "--seccomp="+fmt.Sprint(on),
				"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
				"--mem", "512M", "--cpus", "2", "--append", quietCmdline+" nokaslr") // System.map's addresses
			pid := g.cmd.Process.Pid
			tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
			if err != nil || len(tasks) < 3 {
				t.Fatalf("threads of kvmlab %d: %v %v", pid, tasks, err)
			}
			want := map[bool]string{true: "2", false: "0"}[on]
			wantNNP := map[bool]string{true: "1", false: "0"}[on]
			for _, p := range tasks {
				b, err := os.ReadFile(p)
				if err != nil {
					continue // a thread that ended meanwhile
				}
				if got := statusField(string(b), "Seccomp"); got != want {
					t.Errorf("%s: Seccomp %q, want %q (2: filter mode)", p, got, want)
				}
				if got := statusField(string(b), "NoNewPrivs"); got != wantNNP {
					t.Errorf("%s: NoNewPrivs %q, want %q", p, got, wantNNP)
				}
			}
			if v := g.value("HWRNG", "dd if=/dev/hwrng bs=64 count=1 2>/dev/null | md5sum", cmdTimeout); len(v) < 32 || strings.HasPrefix(v, "d41d8cd98f00b204") {
				t.Errorf("md5 of 64 bytes of /dev/hwrng = %q: no bytes came", v)
			}
			if err := g.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			// The snapshot names kernel code from System.map: "<name+0x...>".
			snapRe := regexp.MustCompile(`kvmlab: snapshot 1(?s:.*?)=> [0-9a-f]+ <\w+\+0x[0-9a-f]+>`)
			for end := time.Now().Add(cmdTimeout); !snapRe.MatchString(g.stderr()) && time.Now().Before(end); {
				time.Sleep(100 * time.Millisecond)
			}
			if !snapRe.MatchString(g.stderr()) {
				t.Errorf("no snapshot with kernel symbols on SIGUSR1:\n%s", g.stderr())
			}
			g.send("poweroff\n")
			if code := g.wait(cmdTimeout); code != 0 {
				t.Fatalf("kvmlab exited %d after guest poweroff, want 0\n%s", code, g.stderr())
			}
			st := g.stderr()
			for _, re := range []string{`RSS \d+\.\d MiB = guest RAM touched`, `goroutines on \d+ threads`, `virtio-rng at 00:01\.0: \d+ notifications`} {
				if !regexp.MustCompile(re).MatchString(st) {
					t.Errorf("--stats lacks %s:\n%s", re, st)
				}
			}
			if strings.Contains(st, "seccomp") {
				t.Errorf("stderr mentions seccomp:\n%s", st)
			}
		})
	}
}

// statusField returns a field of /proc/PID/status, "" when absent.
func statusField(status, name string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
