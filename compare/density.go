package compare

// Density: "this lower overhead makes it possible to run more components per
// server". N VMs and then N containers of the same userland are started at
// once, each running the probe and then waiting (kvmlab-probe --wait), and
// the host is measured while all N are up.
//
// Each VM is a `kvmlab run` process of its own, as VMs are on a real host
// (Firecracker and QEMU alike run one VMM process per VM). That is also what
// makes the memory figure honest: the N processes map the same kvmlab binary
// and the kernel shares its pages among them, so the resident set of each
// (RSS) counts the shared pages N times. The proportional set size (PSS,
// proc(5), /proc/PID/smaps_rollup) divides every page by the number of
// processes mapping it, so PSS summed over the N VMs is what they use
// together, and PSS/N is a fair share per instance. The same holds for the
// containers: their processes map the same probe binary from the same root
// directory, one copy in the host's page cache. A guest's RAM, by contrast,
// is private anonymous memory of its VMM: nothing is shared there, which is
// why a VM's share hardly falls as N grows, while a container's does.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kvmlab/container"
	"kvmlab/internal/human"
)

// MaxDensity is the most instances per side `--density` accepts whatever
// the memory: past it the figures say more about the scheduler of a small
// machine than about VMs and containers.
const MaxDensity = 64

// VMMOverhead is what a VM costs beyond its guest RAM when estimating how
// many fit: the VMM's Go runtime, heap, binary and page tables (measured
// around 20-30 MiB; kept generous, since the estimate refuses work).
const VMMOverhead = 64 << 20

// DensityPoints are the values of N measured for --density max: the
// powers of two below max, and max itself (8: 1, 2, 4, 8).
func DensityPoints(max int) []int {
	var ns []int
	for n := 1; n < max; n *= 2 {
		ns = append(ns, n)
	}
	if max >= 1 {
		ns = append(ns, max)
	}
	return ns
}

// DensityFit says how many instances of memBytes each fit in avail bytes
// of available memory: a VM may touch all of its RAM, plus its VMM; a
// container may use up to its memory limit. The sides run one after the
// other, so the VM's need, the larger, decides.
func DensityFit(avail, memBytes uint64) int {
	per := memBytes + VMMOverhead
	return int(avail / per)
}

// CheckDensity says, in one line, why n instances cannot be run with
// avail bytes of memory available on where, or nil.
func CheckDensity(n int, memBytes, avail uint64, where string) error {
	switch {
	case n < 1:
		return fmt.Errorf("--density %d: give the number of instances per side, 1 to %d (8 measures 1, 2, 4 and 8)", n, MaxDensity)
	case n > MaxDensity:
		return fmt.Errorf("--density %d: at most %d instances per side", n, MaxDensity)
	}
	if fit := DensityFit(avail, memBytes); n > fit {
		return fmt.Errorf("--density %d: %d VMs of %d MiB RAM (+%d MiB for each VMM) need %d MiB, but %s has %d MiB available: at most %d fit; give --density %d or less, or a smaller --mem",
			n, n, memBytes>>20, VMMOverhead>>20, uint64(n)*(memBytes+VMMOverhead)>>20, where, avail>>20, fit, max(fit, 1))
	}
	return nil
}

// DensityPoint is one N: the N VMs' figures and the N containers'.
type DensityPoint struct {
	N         int         `json:"n"`
	VM        DensitySide `json:"vm"`
	Container DensitySide `json:"container"`
}

// DensitySide is N instances of one side, started at once.
type DensitySide struct {
	// Ready is the number of instances whose probe reported; ReadyMS the
	// time from starting the first to the last report.
	Ready   int     `json:"ready"`
	ReadyMS float64 `json:"ready_ms"`
	// PSS is each ready instance's proportional set size, in bytes, read
	// while all were up; PSSTotal their sum.
	PSS      []uint64 `json:"pss_bytes"`
	PSSTotal uint64   `json:"pss_total_bytes"`
	// AvailBefore and AvailDuring are the host's MemAvailable
	// (/proc/meminfo) before the start and while all N were up.
	AvailBefore uint64 `json:"host_available_before_bytes"`
	AvailDuring uint64 `json:"host_available_during_bytes"`
	Error       string `json:"error,omitempty"`
}

// PerInstance is the mean PSS of the ready instances.
func (d *DensitySide) PerInstance() uint64 {
	if len(d.PSS) == 0 {
		return 0
	}
	return d.PSSTotal / uint64(len(d.PSS))
}

// densityCmdline makes the guest run the probe without its workload and
// then wait, so the VM stays up, measured, until it is stopped.
const densityCmdline = "console=ttyS0 panic=-1 quiet kvmlab.run=kvmlab-probe,--no-workload,--wait"

// densityRun measures every N of DensityPoints(o.Density), VMs then
// containers, in the unpacked root. It stops early when ctx is done.
func densityRun(ctx context.Context, o *Options, root string) []DensityPoint {
	var pts []DensityPoint
	pw := o.progress()
	for _, n := range DensityPoints(o.Density) {
		if ctx.Err() != nil {
			break
		}
		p := DensityPoint{N: n}
		fmt.Fprintf(pw, "kvmlab compare: density: starting %d VM(s) at once\n", n)
		p.VM = densityVMs(ctx, o, n)
		if ctx.Err() != nil {
			pts = append(pts, p)
			break
		}
		fmt.Fprintf(pw, "kvmlab compare: density: starting %d container(s) at once\n", n)
		p.Container = densityContainers(ctx, o, root, n)
		pts = append(pts, p)
	}
	return pts
}

// instance is one started VM or container, as densitySide drives it.
type instance struct {
	pids  func() []int // the processes whose PSS counts
	stop  func()       // ends it and waits until it is gone
	ready <-chan time.Time
	// failed is closed if the instance ended before it was ready; why
	// says what happened.
	failed <-chan struct{}
	why    func() string
	// diagnose, when not nil, says what a late instance is doing.
	diagnose func() string
}

// densitySide starts n instances with start, waits until every one is
// ready (or ctx or the timeout ends the wait), measures, and stops all.
func densitySide(ctx context.Context, o *Options, n int, start func(i int) (*instance, error)) DensitySide {
	var d DensitySide
	d.AvailBefore = memAvailable()
	insts := make([]*instance, n)
	errs := make([]error, n)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			insts[i], errs[i] = start(i)
		}()
	}
	wg.Wait()
	// Whatever happens below, every instance that started is stopped
	// and waited for before this returns.
	defer func() {
		var wg sync.WaitGroup
		for _, in := range insts {
			if in != nil {
				wg.Add(1)
				go func() { defer wg.Done(); in.stop() }()
			}
		}
		wg.Wait()
	}()
	if err := errors.Join(errs...); err != nil {
		d.Error = err.Error()
		return d
	}
	timeout := time.NewTimer(o.Timeout)
	defer timeout.Stop()
	var last time.Time
	for i, in := range insts {
		select {
		case at := <-in.ready:
			d.Ready++
			if at.After(last) {
				last = at
			}
		case <-in.failed:
			d.Error = fmt.Sprintf("instance %d of %d ended before its probe reported: %s", i+1, n, in.why())
			return d
		case <-timeout.C:
			d.Error = fmt.Sprintf("%d of %d instances ready after %v; instance %d: %s", d.Ready, n, o.Timeout, i+1, in.why())
			if in.diagnose != nil {
				d.Error += "; " + in.diagnose()
			}
			return d
		case <-ctx.Done():
			d.Error = "interrupted"
			return d
		}
	}
	d.ReadyMS = float64(last.Sub(t0).Microseconds()) / 1000
	d.AvailDuring = memAvailable()
	for _, in := range insts {
		var pss uint64
		for _, pid := range in.pids() {
			pss += pssOf(pid)
		}
		d.PSS = append(d.PSS, pss)
		d.PSSTotal += pss
	}
	return d
}

// densityVMs starts n `kvmlab run` processes at once.
func densityVMs(ctx context.Context, o *Options, n int) DensitySide {
	return densitySide(ctx, o, n, func(int) (*instance, error) { return startVMProcess(o) })
}

// startVMProcess starts one VM as a `kvmlab run` process of its own, with
// the guest's console on a pipe, watched for the probe's report.
func startVMProcess(o *Options) (*instance, error) {
	argv := []string{"run", "--kernel", o.Kernel, "--initrd", o.Initrd, "--mem", o.Mem, "--cpus", "1",
		"--append", densityCmdline}
	cmd := exec.Command(o.Self, argv...)
	cmd.Stdin = nil // /dev/null: no input for the guest, and no terminal to put in raw mode
	// Its own process group, so a Ctrl-C at the terminal reaches only
	// compare, which stops the VMs in order; and killed with us if we
	// die without that chance (SIGKILL).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	ready := make(chan time.Time, 1)
	watch := &consoleWatch{fn: func(l string, at time.Time) {
		if strings.Contains(l, ProbeMarker) {
			select {
			case ready <- at:
			default:
			}
		}
	}}
	stderr := &limitedBuffer{n: 64 << 10}
	cmd.Stdout = watch
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s run: %w", o.Self, err)
	}
	failed := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(failed)
	}()
	pid := cmd.Process.Pid
	return &instance{
		pids:  func() []int { return append([]int{pid}, descendants(pid)...) },
		ready: ready, failed: failed,
		why: func() string {
			select {
			case <-failed:
				return fmt.Sprintf("kvmlab run: %v: %s%s; console: %s", waitErr, outcomeLine(stderr.String()), human.TailLines(stderr.String(), 2), watch.tail())
			default:
				return "console: " + watch.tail()
			}
		},
		diagnose: func() string {
			// kvmlab run prints a snapshot of its vCPUs (where the
			// guest is, its exits since the last one) on SIGUSR1:
			// two, a second apart, tell a stuck guest from a slow one.
			before := stderr.String()
			for range 2 {
				_ = cmd.Process.Signal(syscall.SIGUSR1)
				time.Sleep(time.Second)
			}
			snap := strings.TrimPrefix(stderr.String(), before)
			if i := strings.Index(snap, "kvmlab: snapshot"); i >= 0 {
				snap = snap[i:]
			}
			return "its VMM's snapshots: " + strings.Join(strings.Fields(human.TailLines(snap, 24)), " ")
		},
		stop: func() {
			// kvmlab run stops its machine on SIGTERM; SIGKILL if
			// it has not gone in ten seconds.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-failed:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-failed
			}
		},
	}, nil
}

// densityContainers starts n containers of the unpacked root at once.
func densityContainers(ctx context.Context, o *Options, root string, n int) DensitySide {
	return densitySide(ctx, o, n, func(int) (*instance, error) {
		ready := make(chan time.Time, 1)
		watch := &consoleWatch{fn: func(l string, at time.Time) {
			if strings.HasPrefix(l, ProbeMarker) {
				select {
				case ready <- at:
				default:
				}
			}
		}}
		stderr := &limitedBuffer{n: 64 << 10}
		c, err := container.Start(container.Config{Args: []string{"/bin/kvmlab-probe", "--no-workload", "--wait"},
			Rootfs: root, Stdout: watch, Stderr: stderr,
			Limits: container.Limits{Memory: o.MemBytes}})
		if err != nil {
			return nil, err
		}
		failed := make(chan struct{})
		var res container.Result
		var waitErr error
		go func() {
			res, waitErr = c.Wait()
			close(failed)
		}()
		return &instance{
			pids: func() []int {
				p, err := c.Pids()
				if err != nil {
					return []int{c.InitPID()}
				}
				return p
			},
			ready: ready, failed: failed,
			why: func() string {
				select {
				case <-failed:
					return fmt.Sprintf("exit status %d (%v): %s", res.ExitCode, waitErr, human.TailLines(stderr.String(), 2))
				default:
					return "no report yet: " + human.TailLines(stderr.String(), 2)
				}
			},
			stop: func() {
				_ = c.Kill()
				<-failed
			},
		}, nil
	})
}

// limitedBuffer keeps the first n bytes written to it and discards the
// rest, so a chatty child cannot grow our memory.
type limitedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// memAvailable is the host's MemAvailable (/proc/meminfo) in bytes: the
// kernel's estimate of what can be given to new work without swapping.
func memAvailable() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	v, _ := meminfoField(b, "MemAvailable")
	return v
}

// MemAvailable is memAvailable for the command's checks.
func MemAvailable() uint64 { return memAvailable() }

// meminfoField reads "Key:   123 kB" from a /proc/meminfo or smaps_rollup
// text, in bytes.
func meminfoField(text []byte, key string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		k, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || v > 1<<44 {
			return 0, false
		}
		if len(f) > 1 && f[1] == "kB" {
			v <<= 10
		}
		return v, true
	}
	return 0, false
}

// pssOf is the proportional set size of process pid in bytes, from
// /proc/PID/smaps_rollup (Linux 4.14+): 0 if it is gone.
func pssOf(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	v, _ := meminfoField(b, "Pss")
	return v
}

// descendants lists the processes below pid (children, their children...),
// from the parent PIDs in /proc/*/stat.
func descendants(pid int) []int {
	parent := parents()
	var out []int
	frontier := []int{pid}
	for len(frontier) > 0 {
		var next []int
		for p, pp := range parent {
			if slices.Contains(frontier, pp) && !slices.Contains(out, p) {
				out = append(out, p)
				next = append(next, p)
			}
		}
		frontier = next
	}
	slices.Sort(out)
	return out
}

// parents maps every visible PID to its parent's, from /proc/PID/stat.
func parents() map[int]int {
	m := map[int]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return m
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if pp, ok := statParent(b); ok {
			m[pid] = pp
		}
	}
	return m
}

// statParent reads the parent PID, field 4 of /proc/PID/stat (proc(5)).
// The command name, field 2, is in parentheses and may hold spaces and
// parentheses itself, so the fields are counted from its last ')'.
func statParent(b []byte) (int, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// leftovers looks for what a comparison could leave behind and must not:
// processes below this one, cgroups and temporary roots or bundles named
// after this process (container/sweep.go names them so), and network
// interfaces not in netBefore (a VM's TAP device). It returns one line
// each; none means nothing was left.
func leftovers(netBefore []string) []string {
	var out []string
	if d := descendants(os.Getpid()); len(d) > 0 {
		var s []string
		for _, p := range d {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
			s = append(s, fmt.Sprintf("%d (%s)", p, strings.TrimSpace(string(comm))))
		}
		out = append(out, "processes: "+strings.Join(s, ", "))
	}
	if tag := ownerTag(); tag != "" {
		for _, dir := range cgroupDirs() {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "kvmlab-"+tag) {
					out = append(out, "cgroup: "+filepath.Join(dir, e.Name()))
				}
			}
		}
		ents, _ := os.ReadDir(os.TempDir())
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "kvmlab-rootfs-"+tag) || strings.HasPrefix(e.Name(), "kvmlab-bundle-"+tag) {
				out = append(out, "temporary directory: "+filepath.Join(os.TempDir(), e.Name()))
			}
		}
	}
	for _, n := range netInterfaces() {
		if !slices.Contains(netBefore, n) {
			out = append(out, "network interface: "+n)
		}
	}
	return out
}

// ownerTag is "PIDNS-PID-" for this process: the start of the names the
// container runtime gives what it makes for us (container/sweep.go).
func ownerTag() string {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d-%d-", st.Ino, os.Getpid())
}

// cgroupDirs are the directories the container runtime makes cgroups in
// (container/cgroup.go): below our own cgroup, or at the top of the
// hierarchy, on v2 and on every v1 hierarchy, as /proc/self/cgroup names
// them ("ID:CONTROLLERS:PATH", CONTROLLERS empty on v2).
func cgroupDirs() []string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	const root = "/sys/fs/cgroup"
	var dirs []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		hiers := []string{root}
		if f[1] != "" {
			hiers = nil
			for _, c := range strings.Split(f[1], ",") {
				hiers = append(hiers, filepath.Join(root, strings.TrimPrefix(c, "name=")))
			}
		}
		for _, h := range hiers {
			for _, d := range []string{filepath.Join(h, f[2]), h} {
				if !slices.Contains(dirs, d) {
					dirs = append(dirs, d)
				}
			}
		}
	}
	return dirs
}

// netInterfaces lists /sys/class/net.
func netInterfaces() []string {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// outcomeLine is the line kvmlab run printed on how the machine ended
// ("kvmlab: triple fault (KVM_EXIT_SHUTDOWN) ..."), which comes before its
// register dump, followed by "; "; "" when there is none. A failed
// instance's report must carry it: the last lines alone are registers, and
// the test harness tells an emulator's fault from kvmlab's by that line.
func outcomeLine(stderr string) string {
	lines := strings.Split(stderr, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "kvmlab: ") {
			return l + "; "
		}
	}
	return ""
}
