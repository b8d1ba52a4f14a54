package probe

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// The workload is fixed, so that every run, VM or container, does exactly
// the same work and the costs kvmlab measures around it can be compared. It
// is small on purpose: inside the emulated host, a VM runs nested under
// QEMU's emulation, where every instruction is slow.
const (
	WorkloadFiles     = 32       // files written, read back and removed
	WorkloadFileSize  = 16 << 10 // bytes in each
	WorkloadProcesses = 8        // children started one after another
)

// Name is the probe's command name; the guest's multi-call binary
// (guest/uinit) runs the probe when started under this name.
const Name = "kvmlab-probe"

// NoopArg makes the probe exit 0 at once: the workload's children are the
// probe itself started with it, so each costs a fork, an exec and a Go
// runtime's start and exit, and nothing else.
const NoopArg = "--noop"

// runWorkload runs the fixed workload in a new temporary directory under
// tmp (created if missing) and removes it afterwards. Every failure is
// returned; the counts say what was done.
func runWorkload(tmp string) (WorkloadResult, []error) {
	var w WorkloadResult
	var errs []error
	start := time.Now() // carries a monotonic reading: time.Since is immune to clock steps

	// 01777 like a real /tmp (less the umask): created only when the
	// root has none, as a minimal container image may not.
	if err := os.MkdirAll(tmp, 0o1777); err != nil {
		errs = append(errs, err)
	} else if dir, err := os.MkdirTemp(tmp, "kvmlab-probe-"); err != nil {
		errs = append(errs, err)
	} else {
		w.Files, w.Bytes, errs = fileWork(dir)
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}

	n, err := startChildren()
	w.Processes = n
	if err != nil {
		errs = append(errs, err)
	}
	w.DurationNS = int64(time.Since(start))
	return w, errs
}

// fileWork writes WorkloadFiles files into dir, reads each back and
// compares, then removes it. There is no fsync: the files live in the page
// cache (or a tmpfs), so the work is system calls and memory copies, not
// the speed of a disk, which neither side here has.
func fileWork(dir string) (files int, written int64, errs []error) {
	want := make([]byte, WorkloadFileSize)
	for i := range WorkloadFiles {
		// A different, reproducible content per file, so a read that
		// returned another file's data would not compare equal.
		for j := range want {
			want[j] = byte(i*7 + j*13 + j>>8)
		}
		p := filepath.Join(dir, fmt.Sprintf("f%02d", i))
		if err := os.WriteFile(p, want, 0o600); err != nil {
			errs = append(errs, err)
			continue
		}
		got, err := os.ReadFile(p)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !bytes.Equal(got, want):
			errs = append(errs, fmt.Errorf("%s: read back %d bytes that differ from the %d written", p, len(got), len(want)))
		}
		if rmErr := os.Remove(p); rmErr != nil {
			errs = append(errs, rmErr)
			continue
		}
		if err == nil && bytes.Equal(got, want) {
			files++
			written += int64(len(want))
		}
	}
	return files, written, errs
}

// startChildren starts the probe itself WorkloadProcesses times, one after
// another, each with NoopArg, and waits for each. /proc/self/exe is the
// running binary whatever its name or path, even inside a container root
// where the path it was started by means something else; argv[0] is Name
// so a multi-call binary dispatches to the probe. It returns how many ran
// and exited 0, and stops at the first failure.
func startChildren() (int, error) {
	return startN(WorkloadProcesses)
}

// startN starts the probe itself n times, one after another, with NoopArg,
// as startChildren says.
func startN(n int) (int, error) {
	for i := range n {
		cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{Name, NoopArg}}
		if err := cmd.Run(); err != nil {
			return i, fmt.Errorf("child %d: %w", i+1, err)
		}
	}
	return n, nil
}
