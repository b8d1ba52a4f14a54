package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stallLine starts the message stallReport adds when a guest went silent;
// emulatorFault looks for it.
const stallLine = "STALL: the guest console was silent"

// stallSilence is how long the console must have been quiet, when a wait
// times out, for the guest to count as stalled rather than slow.
const stallSilence = time.Minute

// stallReport explains a wait that timed out. Inside the emulated host,
// where a nested guest has been seen to stop dead mid-line during early
// boot (twice in one CI run, never on the same code locally), it records
// what each of kvmlab's threads was doing - its state, kernel wait channel,
// kernel stack and whether it used CPU over two seconds: a vCPU thread
// burning CPU inside KVM_RUN is a guest spinning, one asleep in the kernel
// is a blocked VMM - and then asks the Go runtime for its goroutine dump
// (SIGQUIT), which lands in kvmlab's stderr. It returns "" when the console
// was not silent for stallSilence or the test is not in the emulated host.
func (g *guestConsole) stallReport() string {
	g.mu.Lock()
	last := g.last
	if last.IsZero() {
		last = g.start
	}
	g.mu.Unlock()
	silent := time.Since(last)
	if os.Getenv(inHostEnv) != "1" || silent < stallSilence || g.cmd.Process == nil {
		return ""
	}
	pid := g.cmd.Process.Pid
	before := threadCPU(pid)
	time.Sleep(2 * time.Second)
	after := threadCPU(pid)
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s for %v; kvmlab's threads (pid %d):", stallLine, silent.Round(time.Second), pid)
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		tid := filepath.Base(task)
		comm := readTrim(filepath.Join(task, "comm"))
		wchan := readTrim(filepath.Join(task, "wchan"))
		fmt.Fprintf(&b, "\n  tid %s %s state %s wchan %s cpu +%d ticks in 2s", tid, comm, taskState(task), wchan, after[tid]-before[tid])
		if stack := readTrim(filepath.Join(task, "stack")); stack != "" {
			for _, l := range strings.Split(stack, "\n") {
				b.WriteString("\n      " + l)
			}
		}
	}
	// The goroutine dump goes to kvmlab's stderr, which the test logs
	// when it fails; give the runtime a moment to write it.
	_ = g.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
	}
	return b.String()
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// taskState is the one-letter state from /proc/PID/task/TID/stat.
func taskState(task string) string {
	f := statFields(task)
	if len(f) < 1 {
		return "?"
	}
	return f[0]
}

// statFields returns the fields of a task's stat file after the command
// name (which may contain spaces): field 0 is the state, 11 and 12 are
// utime and stime.
func statFields(task string) []string {
	s := readTrim(filepath.Join(task, "stat"))
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// threadCPU maps each thread of pid to its utime+stime in clock ticks.
func threadCPU(pid int) map[string]int64 {
	m := map[string]int64{}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		f := statFields(task)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		m[filepath.Base(task)] = u + s
	}
	return m
}
