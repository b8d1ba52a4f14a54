package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kvmlab/vmm/vmstate"
)

// TestRestoreRefusals: kvmlab run --restore checks the file and the machine
// it describes before any KVM work, one line and exit 2 each. The snapshots
// here are made by hand with vmstate.Write: the description is what the
// check reads; the RAM is a page.
func TestRestoreRefusals(t *testing.T) {
	dir := t.TempDir()
	bin, _ := buildCLI(t, dir)
	snap := func(name, desc string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ram := []vmstate.Region{{GPA: 0, Data: append([]byte("x"), make([]byte, vmstate.PageSize-1)...)}}
		if _, err := vmstate.Write(f, []byte(desc), ram); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const machine = `"vcpus":[{}],"vm":{},"vendor":"svm"`
	huge := snap("huge.snap", `{"config":{"mem_bytes":1125899906842624,"cpus":1},`+machine+`}`)
	noDisk := snap("nodisk.snap", `{"config":{"mem_bytes":268435456,"cpus":1,"disks":[{"path":"`+filepath.Join(dir, "gone.img")+`","size":1048576}]},"devices":{"virtio":[{"slot":1,"state":{}}]},`+machine+`}`)
	badDesc := snap("desc.snap", `{"config":{"cpus":2},`+machine+`}`)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"more RAM than the host", []string{"run", "--restore", huge}, "more than this host's"},
		{"disk image gone", []string{"run", "--restore", noDisk}, "its disk " + filepath.Join(dir, "gone.img")},
		{"vCPUs do not match their states", []string{"run", "--restore", badDesc}, "2 vCPUs configured, 1 saved"},
		{"a FIFO", []string{"run", "--restore", fifo}, "FIFO"},
		{"machine flags too", []string{"run", "--restore", huge, "--mem", "1G", "--cpus", "2"}, "drop --cpus, --mem"},
		{"an empty name", []string{"run", "--restore", ""}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, bin, nil, tc.args...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if tc.want == "" {
				// --restore "" is no restore: a cold boot's checks
				// apply (here: the default guest may be missing, or
				// KVM unusable), but never a crash.
				if r.code == 0 || strings.Contains(r.stderr, "panic") {
					t.Errorf("exit %d, stderr %q", r.code, r.stderr)
				}
				return
			}
			if r.code != 2 || len(lines) != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q: want exit 2 and one line containing %q", r.code, r.stderr, tc.want)
			}
		})
	}
}
