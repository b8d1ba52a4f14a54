package emuhost

import (
	"os"
	"slices"
	"testing"
)

// TestKVMLabRunSpec checks the inner `kvmlab run` command line and the files
// carried in for it, and that the host is sized for the guest.
func TestKVMLabRunSpec(t *testing.T) {
	for _, tc := range []struct {
		name      string
		run       KVMLabRun
		wantArgv  []string
		wantPaths []string // File.Path of each file carried in, in order
		memMB     int
		cpus      int
	}{
		{
			name:      "kernel only, small guest",
			run:       KVMLabRun{Self: "/bin/kvmlab", Kernel: "/k", Mem: "512M", Append: "console=ttyS0", MemBytes: 512 << 20, CPUs: 1},
			wantArgv:  []string{"/kvmlab/kvmlab", "run", "--kernel", "/kvmlab/kernel", "--mem", "512M", "--cpus", "1", "--append", "console=ttyS0"},
			wantPaths: []string{"/kvmlab/kvmlab", "/kvmlab/kernel"},
			memMB:     2048, cpus: 2,
		},
		{
			name: "every flag",
			run: KVMLabRun{Self: "/bin/kvmlab", Kernel: "/k", Initrd: "/i", Mem: "4G", Append: "quiet", MemBytes: 4 << 30, CPUs: 4,
				Quiet: true, Stats: true, RNG: true, NoEventFDs: true, GuestDecompress: true,
				Disks: []Disk{{Path: "/a.img"}, {Path: "/b.img", ReadOnly: true}}},
			wantArgv: []string{"/kvmlab/kvmlab", "run", "--kernel", "/kvmlab/kernel", "--mem", "4G", "--cpus", "4", "--append", "quiet",
				"--initrd", "/kvmlab/initrd", "--quiet", "--stats", "--disk", "/kvmlab/disk0", "--disk", "/kvmlab/disk1,ro", "--rng", "--no-eventfds", "--guest-decompress"},
			wantPaths: []string{"/kvmlab/kvmlab", "/kvmlab/kernel", "/kvmlab/initrd", "/kvmlab/disk0", "/kvmlab/disk1"},
			memMB:     4096 + 1536, cpus: 4,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.run.Spec(QEMUSVM, os.Stdout)
			if !slices.Equal(s.Argv, tc.wantArgv) {
				t.Errorf("Argv = %q\nwant %q", s.Argv, tc.wantArgv)
			}
			var paths []string
			for _, f := range s.Files {
				paths = append(paths, f.Path)
			}
			if !slices.Equal(paths, tc.wantPaths) {
				t.Errorf("files carried in at %q, want %q", paths, tc.wantPaths)
			}
			if s.MemMB != tc.memMB || s.CPUs != tc.cpus || !s.Interactive || s.Emulator != QEMUSVM {
				t.Errorf("host: %d MiB, %d CPUs, interactive %v, %v; want %d MiB, %d CPUs, interactive, QEMU", s.MemMB, s.CPUs, s.Interactive, s.Emulator, tc.memMB, tc.cpus)
			}
		})
	}
}
