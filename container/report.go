package container

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Report describes a finished run, one line each, for a person comparing
// it with a VM (`kvmlab container --verbose`): the cgroup version and
// directories, every cgroup file written and read back (the whole of what
// set the limits up), how the workload ended, its memory peak, and the
// timings from Start to the workload's execve and to its end. A figure the
// kernel (or runc) did not give reads "n/a".
func (r Result) Report() []string {
	cg := r.Cgroup
	where := "cgroup " + cg.Version
	if len(cg.Dirs) > 0 {
		where += " at " + strings.Join(cg.Dirs, ", ")
	}
	lines := []string{where}
	for _, s := range cg.Wrote {
		lines = append(lines, "  wrote "+s)
	}
	for _, s := range cg.Read {
		lines = append(lines, "  read  "+s)
	}
	status := fmt.Sprintf("exit status %d", r.ExitCode)
	if r.Signal != 0 {
		status = fmt.Sprintf("killed by %s (status %d)", unix.SignalName(r.Signal), r.ExitCode)
	}
	oom := strconv.FormatBool(r.OOMKilled)
	if cg.Version == "runc" {
		oom = "n/a" // runc removed its cgroup before anyone could look
	}
	startToExec := "n/a"
	if r.StartToExec > 0 {
		startToExec = r.StartToExec.Round(time.Microsecond).String()
	}
	return append(lines,
		fmt.Sprintf("%s, OOM-killed %s, memory peak %s, at the end %s", status, oom, sizeOrNA(r.MemoryPeak), sizeOrNA(r.MemoryCurrent)),
		fmt.Sprintf("start to exec %s (unpacking the root %v), wall %v, teardown %v",
			startToExec, r.Unpack.Round(time.Microsecond), r.Wall.Round(time.Microsecond), r.Teardown.Round(time.Microsecond)))
}

// sizeOrNA shows a cgroup memory figure in MiB, "n/a" for none.
func sizeOrNA(b uint64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
