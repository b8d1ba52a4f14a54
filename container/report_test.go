package container

import (
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestResultReport(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  Result
		want []string
	}{
		{
			name: "cgroup v2, exited",
			res: Result{
				ExitCode: 3, MemoryPeak: 3 << 20, MemoryCurrent: 1 << 19,
				Unpack: 1500 * time.Microsecond, StartToExec: 2*time.Millisecond + 400*time.Nanosecond,
				Wall: time.Second, Teardown: 20 * time.Millisecond,
				Cgroup: CgroupReport{Version: "v2", Dirs: []string{"/sys/fs/cgroup/kvmlab-1"},
					Wrote: []string{"memory.max=67108864"}, Read: []string{"memory.peak"}},
			},
			want: []string{
				"cgroup v2 at /sys/fs/cgroup/kvmlab-1",
				"  wrote memory.max=67108864",
				"  read  memory.peak",
				"exit status 3, OOM-killed false, memory peak 3.0 MiB, at the end 0.5 MiB",
				"start to exec 2ms (unpacking the root 1.5ms), wall 1s, teardown 20ms",
			},
		},
		{
			name: "runc, killed, no figures",
			res:  Result{ExitCode: 137, Signal: syscall.SIGKILL, OOMKilled: true, Cgroup: CgroupReport{Version: "runc"}},
			want: []string{
				"cgroup runc",
				"killed by SIGKILL (status 137), OOM-killed n/a, memory peak n/a, at the end n/a",
				"start to exec n/a (unpacking the root 0s), wall 0s, teardown 0s",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.res.Report(); !slices.Equal(got, tc.want) {
				t.Errorf("Report() =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
