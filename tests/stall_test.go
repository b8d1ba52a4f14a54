package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// stallInKVM marks a stall that happened inside the kernel: the verdict
// emulatorFault needs before it reruns a stalled test.
const stallInKVM = "STALL VERDICT: in-kernel loop"

// stallReport explains a wait that timed out. Inside the emulated host,
// where a nested guest has been seen to stop dead mid-line during early
// boot (in CI, a u-root and a Debian guest; never on the same code
// locally), it records what each of kvmlab's threads was doing - its
// state, kernel wait channel, kernel stack and whether it used CPU over
// two seconds - and asks kvmlab for two snapshots of its vCPUs (SIGUSR1,
// vmm/snapshot.go), one at each end of those two seconds: where the guest
// is, and whether any exit reached kvmlab in between. Then it asks the Go
// runtime for its goroutine dump (SIGQUIT). Snapshots and dump land in
// kvmlab's stderr, which the test logs when it fails. It returns "" when
// the console was not silent for stallSilence or the test is not in the
// emulated host.
func (g *guestConsole) stallReport() string {
	silent := g.silentFor()
	if os.Getenv(inHostEnv) != "1" || silent < stallSilence || g.cmd.Process == nil {
		return ""
	}
	pid := g.cmd.Process.Pid
	_ = g.cmd.Process.Signal(syscall.SIGUSR1)
	before := threadCPU(pid)
	time.Sleep(2 * time.Second)
	after := threadCPU(pid)
	_ = g.cmd.Process.Signal(syscall.SIGUSR1)
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s for %v; kvmlab's threads (pid %d):", stallLine, silent.Round(time.Second), pid)
	var busiest int64
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		tid := filepath.Base(task)
		comm := readTrim(filepath.Join(task, "comm"))
		wchan := readTrim(filepath.Join(task, "wchan"))
		used := after[tid] - before[tid]
		busiest = max(busiest, used)
		fmt.Fprintf(&b, "\n  tid %s %s state %s wchan %s cpu +%d ticks in 2s", tid, comm, taskState(task), wchan, used)
		if stack := readTrim(filepath.Join(task, "stack")); stack != "" {
			for _, l := range strings.Split(stack, "\n") {
				b.WriteString("\n      " + l)
			}
		}
	}
	// Wait for the second snapshot before judging.
	snap2 := regexp.MustCompile(`(?s)kvmlab: snapshot 2\b.*KVM's own counters[^\n]*\n`)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !snap2.MatchString(g.stderr()); {
		time.Sleep(100 * time.Millisecond)
	}
	b.WriteString("\n" + stallVerdict(g.stderr(), busiest, clockTicks()))
	// The goroutine dump goes to kvmlab's stderr too; give the runtime a
	// moment to write it.
	_ = g.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
	}
	return b.String()
}

// stallVerdict judges a stall from kvmlab's stderr (its two snapshots) and
// the most CPU one of its threads used in the two seconds between them.
// A guest that kept a thread busy without a single exit reaching kvmlab
// was looping inside KVM_RUN: on nothing kvmlab's devices could answer,
// since it asked them nothing. That is the shape of the stalls seen in
// the emulated host (QEMU's software SVM), and the only one the runner
// reruns. A halted guest (no CPU used), or one whose exits kvmlab kept
// handling, may be waiting on kvmlab: that is a failure to look into.
func stallVerdict(stderr string, busiest, hz int64) string {
	i := strings.LastIndex(stderr, "kvmlab: snapshot 2")
	if i < 0 {
		return "STALL VERDICT: unknown: kvmlab wrote no second snapshot"
	}
	snap := stderr[i:]
	vcpus := regexp.MustCompile(`(?m)^  vCPU (\d+): .*exits to kvmlab: \d+, \+(\d+) since snapshot 1`).FindAllStringSubmatch(snap, -1)
	if len(vcpus) == 0 {
		return "STALL VERDICT: unknown: the second snapshot has no vCPU lines"
	}
	for _, v := range vcpus {
		if v[2] != "0" {
			return fmt.Sprintf("STALL VERDICT: kvmlab at work: vCPU %s made %s exits to kvmlab in 2 s, so the guest is waiting on something kvmlab handles", v[1], v[2])
		}
	}
	if busiest < hz/2 {
		return fmt.Sprintf("STALL VERDICT: idle: no exit reached kvmlab and no thread ran more than %d of %d ticks: a halted guest waiting for an interrupt", busiest, 2*hz)
	}
	return fmt.Sprintf("%s: no exit reached kvmlab in 2 s while a thread ran %d of %d ticks: the guest looped inside KVM_RUN", stallInKVM, busiest, 2*hz)
}

// snapshotsIn cuts kvmlab's snapshots out of its stderr: from the first
// one to the Go runtime's goroutine dump that the stall report asks for
// last.
func snapshotsIn(stderr string) string {
	i := strings.Index(stderr, "kvmlab: snapshot 1")
	if i < 0 {
		return "(none)"
	}
	s := stderr[i:]
	if j := strings.Index(s, "SIGQUIT"); j >= 0 {
		s = s[:j]
	}
	return strings.TrimRight(s, "\n")
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on Linux
// x86-64 (sysconf(_SC_CLK_TCK)).
func clockTicks() int64 { return 100 }

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

// inKVMExits is how many exits KVM must have handled by itself between a
// stalled instance's two snapshots (a second apart) for flatStallVerdict
// to call it a loop inside KVM_RUN. The stall seen in CI made 11,398 in
// half a second (each an emulated instruction and an injected page
// fault); an idle guest on a tickless kernel makes a handful.
const inKVMExits = 2000

var (
	flatVCPU    = regexp.MustCompile(`vCPU (\d+): [^|]*?exits to kvmlab: \d+, \+(\d+) since snapshot 1`)
	flatInKVM   = regexp.MustCompile(`KVM's own counters since snapshot 1: exits \+(\d+)`)
	flatSnapTwo = "kvmlab: snapshot 2"
)

// flatStallVerdict judges an instance that kvmlab compare gave up on (its
// density section, compare/density.go) from the two snapshots compare
// asked its VMM for and flattened onto its error line. It has no view of
// the VMM's threads, as stallVerdict has; KVM's own exit counter stands in:
// a vCPU that made no exit to kvmlab between the snapshots while KVM handled
// thousands for it was looping inside KVM_RUN, as in stallVerdict. It
// returns stallInKVM's verdict then, and "" otherwise (a halted guest, one
// whose exits kvmlab kept handling, no snapshots): failures to look into.
func flatStallVerdict(msg string) string {
	i := strings.LastIndex(msg, flatSnapTwo)
	if i < 0 {
		return ""
	}
	snap := msg[i:]
	vcpus := flatVCPU.FindAllStringSubmatch(snap, -1)
	inKVM := flatInKVM.FindAllStringSubmatch(snap, -1)
	if len(vcpus) == 0 || len(inKVM) == 0 {
		return ""
	}
	for _, v := range vcpus {
		if v[2] != "0" {
			return ""
		}
	}
	most := 0
	for _, m := range inKVM {
		n, _ := strconv.Atoi(m[1])
		most = max(most, n)
	}
	if most < inKVMExits {
		return ""
	}
	return fmt.Sprintf("%s: no exit reached kvmlab between compare's two snapshots while KVM handled %d of its own: the guest looped inside KVM_RUN", stallInKVM, most)
}

// prefixed returns s after p, or "" when s is empty.
func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}
