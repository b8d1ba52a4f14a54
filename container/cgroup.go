package container

// Control groups (cgroups(7)) put processes into a tree of groups, and
// controllers account and limit resources per group: "memory" counts the
// pages a group's processes use and reclaims or OOM-kills past a limit,
// "cpu" throttles a group once it used its quota of CPU time in a period,
// "pids" refuses fork and clone once a group holds its maximum of tasks.
// Children of a process start in its group, so placing the container's
// first process in a group places everything it will ever start there.
//
// The kernel offers the tree as a file system, in one of two layouts:
//
//   - cgroup v2 (Documentation/admin-guide/cgroup-v2.rst): one "unified"
//     hierarchy, usually at /sys/fs/cgroup. A group is a directory; a
//     controller works in a group only when its parent lists it in
//     cgroup.subtree_control. Limits are files like memory.max, cpu.max and
//     pids.max.
//   - cgroup v1 (Documentation/admin-guide/cgroup-v1/): one hierarchy per
//     controller, at /sys/fs/cgroup/memory, /sys/fs/cgroup/cpu, ... A
//     container has one directory in each, and the files have other names:
//     memory.limit_in_bytes, cpu.cfs_quota_us, pids.max.
//
// Many hosts still run v1 in a "hybrid" layout, with an empty cgroup2
// mounted at /sys/fs/cgroup/unified beside the v1 hierarchies: its
// controllers are all bound to v1, so it cannot limit anything and we use v1
// there. The layout is detected from what is mounted at the cgroup root,
// which tests replace with a fake tree in a temporary directory.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCgroupRoot is where distributions mount the cgroup file systems.
const DefaultCgroupRoot = "/sys/fs/cgroup"

// cfsPeriod is the CPU bandwidth period, in microseconds: a group with
// quota Q may run for Q µs of CPU time in every period (summed over CPUs),
// so Q = CPUs × period. 100 ms is the kernel's default period.
const cfsPeriod = 100000

// minCPUs is the smallest CPU limit: the kernel refuses quotas below 1 ms.
const minCPUs = 0.01

// Limits are a container's resource limits. A zero Memory or Pids means
// the default (DefaultMemory, DefaultPids); MemoryUnlimited and
// PidsUnlimited ask for no limit. A zero CPUs means no CPU limit: a busy
// container slows its neighbours down but cannot take the host with it.
type Limits struct {
	// Memory is the bytes of memory (page cache and kernel memory
	// included) the container's processes may use together; swap is not
	// allowed on top of it.
	Memory uint64
	// CPUs is CPU time per wall-clock time: 0.5 is half of one CPU, 2 is
	// two CPUs' worth, spread over any CPUs.
	CPUs float64
	// Pids is how many tasks may exist at once. The kernel counts
	// threads, not just processes, and the container's init (a Go
	// program with about five threads) is counted too.
	Pids int
}

// The defaults. Without them, one `while true; do sh & done` or one
// runaway allocation inside the container takes the whole host down with
// it: a fork bomb fills the host's PID space (kernel.pid_max) so that no
// one can start a process, and unlimited memory ends in the host's OOM
// killer choosing among everybody's processes. With them, the damage stays
// in the container's cgroup. They are generous for the u-root userland
// (a shell and its tools: a few dozen tasks, a few tens of MiB) and small
// beside any host that can build the guest. Docker and runc set no
// defaults at all; systemd gives every user session a TasksMax (15% of
// pid_max), which is the same idea.
const (
	DefaultMemory uint64 = 512 << 20
	DefaultPids   int    = 512
)

// MemoryUnlimited and PidsUnlimited, as Limits.Memory and Limits.Pids, ask
// for no limit rather than the default.
const (
	MemoryUnlimited uint64 = math.MaxUint64
	PidsUnlimited   int    = -1
)

func (l Limits) validate() error {
	if l.CPUs != 0 && (math.IsNaN(l.CPUs) || math.IsInf(l.CPUs, 0) || l.CPUs < minCPUs) {
		return fmt.Errorf("CPU limit %v: the kernel's smallest quota is %v of a CPU", l.CPUs, minCPUs)
	}
	if l.Pids < PidsUnlimited {
		return fmt.Errorf("pids limit %d: must not be negative (PidsUnlimited, -1, means none)", l.Pids)
	}
	return nil
}

// Explicit returns the limits the caller asked for by name: the defaults
// and the "unlimited" markers become zero.
func (l Limits) Explicit() Limits {
	if l.Memory == MemoryUnlimited {
		l.Memory = 0
	}
	if l.Pids == PidsUnlimited {
		l.Pids = 0
	}
	return l
}

// Effective returns the limits in force: a zero Memory or Pids becomes its
// default, an "unlimited" one zero (no limit), as settings expects.
func (l Limits) Effective() Limits {
	switch l.Memory {
	case 0:
		l.Memory = DefaultMemory
	case MemoryUnlimited:
		l.Memory = 0
	}
	switch l.Pids {
	case 0:
		l.Pids = DefaultPids
	case PidsUnlimited:
		l.Pids = 0
	}
	return l
}

// setting is one cgroup file to write for a limit.
type setting struct {
	controller, file, value string
	optional                bool // written only where the kernel has the file
}

// settings translates l into the files of one cgroup version, in the order
// they must be written.
func (l Limits) settings(version string) []setting {
	var s []setting
	v2 := version == "v2"
	if l.Memory > 0 {
		m := strconv.FormatUint(l.Memory, 10)
		if v2 {
			// memory.swap.max limits swap alone; 0 keeps the
			// container from dodging memory.max by swapping. It
			// exists only with swap accounting.
			s = append(s, setting{"memory", "memory.max", m, false},
				setting{"memory", "memory.swap.max", "0", true})
		} else {
			// v1's memsw limit is memory plus swap, so the same
			// number means no swap. It must be set after the memory
			// limit (memsw >= memory always), and exists only with
			// swap accounting.
			s = append(s, setting{"memory", "memory.limit_in_bytes", m, false},
				setting{"memory", "memory.memsw.limit_in_bytes", m, true})
		}
	}
	if l.CPUs > 0 {
		quota := strconv.Itoa(int(math.Round(l.CPUs * cfsPeriod)))
		period := strconv.Itoa(cfsPeriod)
		if v2 {
			s = append(s, setting{"cpu", "cpu.max", quota + " " + period, false})
		} else {
			s = append(s, setting{"cpu", "cpu.cfs_period_us", period, false},
				setting{"cpu", "cpu.cfs_quota_us", quota, false})
		}
	}
	if l.Pids > 0 {
		s = append(s, setting{"pids", "pids.max", strconv.Itoa(l.Pids), false})
	}
	return s
}

// CgroupReport says what the runtime did with cgroups, for --verbose and
// for comparisons with a VM.
type CgroupReport struct {
	// Version is "v2", "v1", "none" (no cgroup: no limits, no figures) or
	// "runc" (runc managed it; see RunRunc).
	Version string
	// Dirs are the container's cgroup directories: one on v2, one per
	// controller hierarchy on v1.
	Dirs []string
	// Wrote lists every file written to set the cgroup up, as
	// "path=value", in order.
	Wrote []string
	// Read lists the files read back for the Result.
	Read []string
	// Notes say what could not be done and was done without: the
	// defaults not applied because this host or user cannot create the
	// cgroup or lacks a controller. One line each, for the user.
	Notes []string
}

// cgroup is one container's cgroup: a directory per controller (the same
// directory for every controller on v2).
type cgroup struct {
	version string
	dirs    map[string]string // controller -> directory
	report  CgroupReport
}

// detectCgroups tells which layout is mounted at root.
func detectCgroups(root string) string {
	if exists(filepath.Join(root, "cgroup.controllers")) {
		return "v2"
	}
	for _, c := range []string{"memory", "cpu", "pids"} {
		if exists(filepath.Join(root, c, "cgroup.procs")) {
			return "v1"
		}
	}
	return "none"
}

// newCgroup creates a cgroup called name under root and writes l into it.
// self is the text of /proc/self/cgroup: where this process is, which is
// where the new group goes when possible, so that limits set on us (by a
// login session, a CI job, a container we run in) apply to it too.
func newCgroup(root string, self []byte, name string, l Limits) (*cgroup, error) {
	// memory and pids are wanted even without a limit, for the figures
	// (memory peak, OOM kills) and for finding every process at teardown;
	// cpu only for a limit, as it changes how the group is scheduled.
	want := []string{"memory", "pids"}
	if l.CPUs > 0 {
		want = append(want, "cpu")
	}
	need := neededControllers(l)
	cg := &cgroup{version: detectCgroups(root), dirs: map[string]string{}}
	cg.report.Version = cg.version
	var err error
	switch cg.version {
	case "v2":
		err = cg.createV2(root, self, name, want, need)
	case "v1":
		err = cg.createV1(root, self, name, want, need)
	default:
		if len(need) > 0 {
			return nil, fmt.Errorf("%w: no cgroup file system at %s to set limits with", ErrNoController, root)
		}
		return cg, nil
	}
	if err == nil {
		err = cg.apply(l)
	}
	if err != nil {
		return nil, errors.Join(err, cg.remove())
	}
	return cg, nil
}

// ErrNoController means a limit was asked for that this kernel's cgroups
// cannot enforce.
var ErrNoController = errors.New("cgroup controller not available")

func neededControllers(l Limits) []string {
	var need []string
	if l.Memory > 0 {
		need = append(need, "memory")
	}
	if l.CPUs > 0 {
		need = append(need, "cpu")
	}
	if l.Pids > 0 {
		need = append(need, "pids")
	}
	return need
}

// createV2 makes the group in our own cgroup when controllers can be
// enabled there, else at the root. v2's "no internal processes" rule
// forbids enabling controllers for the children of a group that has
// processes of its own (the write fails with EBUSY), and our own group
// usually has one: us. The root group is exempt from that rule. A runtime
// under systemd would ask it for a delegated subtree instead.
func (cg *cgroup) createV2(root string, self []byte, name string, want, need []string) error {
	avail := strings.Fields(readString(filepath.Join(root, "cgroup.controllers")))
	var ctrls []string
	for _, c := range want {
		if slices.Contains(avail, c) {
			ctrls = append(ctrls, c)
		} else if slices.Contains(need, c) {
			return fmt.Errorf("%w: %s is not in %s", ErrNoController, c, filepath.Join(root, "cgroup.controllers"))
		}
	}
	parents := []string{filepath.Join(root, selfCgroup(self, ""))}
	if parents[0] != filepath.Clean(root) {
		parents = append(parents, filepath.Clean(root))
	}
	var errs []error
	for _, parent := range parents {
		if err := cg.enable(parent, ctrls); err != nil {
			errs = append(errs, err)
			continue
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		for _, c := range ctrls {
			cg.dirs[c] = dir
		}
		cg.report.Dirs = []string{dir}
		return nil
	}
	return errors.Join(errs...)
}

// enable makes sure ctrls are enabled for the children of dir.
func (cg *cgroup) enable(dir string, ctrls []string) error {
	on := strings.Fields(readString(filepath.Join(dir, "cgroup.subtree_control")))
	avail := strings.Fields(readString(filepath.Join(dir, "cgroup.controllers")))
	var add []string
	for _, c := range ctrls {
		if slices.Contains(on, c) {
			continue
		}
		if !slices.Contains(avail, c) {
			return fmt.Errorf("%w: %s is not available in %s (its parent does not enable it)", ErrNoController, c, dir)
		}
		add = append(add, "+"+c)
	}
	if len(add) == 0 {
		return nil
	}
	return cg.write(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(add, " "))
}

// createV1 makes one group per controller hierarchy, each under the group
// this process is in within that hierarchy. v1 has no rule against
// processes in inner groups, so nothing needs enabling.
func (cg *cgroup) createV1(root string, self []byte, name string, want, need []string) error {
	for _, c := range want {
		hier := filepath.Join(root, c)
		if !exists(filepath.Join(hier, "cgroup.procs")) {
			if slices.Contains(need, c) {
				return fmt.Errorf("%w: no %s hierarchy at %s", ErrNoController, c, hier)
			}
			continue
		}
		dir := filepath.Join(hier, selfCgroup(self, c), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		cg.dirs[c] = dir
		cg.report.Dirs = append(cg.report.Dirs, dir)
	}
	return nil
}

// apply writes the limits.
func (cg *cgroup) apply(l Limits) error {
	for _, s := range l.settings(cg.version) {
		p := filepath.Join(cg.dirs[s.controller], s.file)
		if s.optional && !exists(p) {
			continue
		}
		if err := cg.write(p, s.value); err != nil {
			return err
		}
	}
	return nil
}

// addProcess moves pid (with all its threads) into the group. Writing to
// cgroup.procs is how a process changes group; on v1 it is done once per
// hierarchy.
func (cg *cgroup) addProcess(pid int) error {
	for _, dir := range cg.report.Dirs {
		if err := cg.write(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// write writes one cgroup file and notes it in the report. Values go in
// with a single write(2): the kernel parses each write as a whole.
func (cg *cgroup) write(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", value, path, err)
	}
	cg.report.Wrote = append(cg.report.Wrote, path+"="+value)
	return nil
}

// memStats are the memory controller's figures for the whole group.
type memStats struct {
	current, peak uint64 // bytes; 0 where the kernel does not say
	oomKills      uint64 // processes the OOM killer killed in the group
}

// memory reads the memory figures: on v2 memory.current, memory.peak
// (Linux 5.19 and later) and the oom_kill count in memory.events; on v1
// memory.usage_in_bytes, memory.max_usage_in_bytes and the oom_kill count in
// memory.oom_control (Linux 4.13 and later). memory.failcnt is not used: it
// counts every time usage hit the limit, and reclaim usually succeeds then.
func (cg *cgroup) memory() memStats {
	var st memStats
	dir, ok := cg.dirs["memory"]
	if !ok {
		return st
	}
	current, peak, events := "memory.current", "memory.peak", "memory.events"
	if cg.version == "v1" {
		current, peak, events = "memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.oom_control"
	}
	read := func(name string) string {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			return ""
		}
		cg.report.Read = append(cg.report.Read, p)
		return string(b)
	}
	st.current, _ = strconv.ParseUint(strings.TrimSpace(read(current)), 10, 64)
	st.peak, _ = strconv.ParseUint(strings.TrimSpace(read(peak)), 10, 64)
	st.oomKills, _ = keyedValue(read(events), "oom_kill")
	return st
}

// pids lists the host PIDs of the processes in the group.
func (cg *cgroup) pids() ([]int, error) {
	if len(cg.report.Dirs) == 0 {
		return nil, nil
	}
	p := filepath.Join(cg.report.Dirs[0], "cgroup.procs")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// kill ends every process in the group and waits until none is left.
//
// v2 has cgroup.kill (Linux 5.14): one write, and the kernel SIGKILLs every
// process in the group, including ones being forked at that moment. v1 (and
// older v2) can only read cgroup.procs and kill each PID, which races with
// forks, so it loops until the list is empty. Normally there is nothing to
// kill: when the container's init dies, the kernel kills the rest of its PID
// namespace (pid_namespaces(7)). This is for processes that got into the
// group some other way.
func (cg *cgroup) kill() error {
	if len(cg.report.Dirs) == 0 {
		return nil
	}
	if killFile := filepath.Join(cg.report.Dirs[0], "cgroup.kill"); cg.version == "v2" && exists(killFile) {
		if err := os.WriteFile(killFile, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("cgroup: kill: %w", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := cg.pids()
		if err != nil || len(pids) == 0 {
			return err
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL) // ESRCH: it just exited
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup: %d processes still in %s 5 s after SIGKILL (stuck in the kernel?)", len(pids), cg.report.Dirs[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// remove deletes the group's directories. rmdir is the only way to delete
// a cgroup (its files are not real files), and it fails with EBUSY while a
// process is still inside; a process that has just been killed may take a
// moment to leave.
func (cg *cgroup) remove() error {
	var errs []error
	for _, dir := range slices.Backward(cg.report.Dirs) {
		var err error
		for range 200 {
			err = unix.Rmdir(dir)
			if !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("cgroup: remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// selfCgroup finds, in the text of /proc/self/cgroup, the path of our group
// in the hierarchy of controller ("" for the v2 hierarchy, whose line is
// "0::/path"). Lines are "ID:CONTROLLERS:PATH". It returns "/" when the line
// is missing.
func selfCgroup(self []byte, controller string) string {
	for _, line := range strings.Split(string(self), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(path, "/") {
			continue
		}
		if controller == "" && id == "0" && ctrls == "" {
			return path
		}
		if controller != "" && slices.Contains(strings.Split(ctrls, ","), controller) {
			return path
		}
	}
	return "/"
}

// keyedValue finds "key N" among the lines of a flat-keyed cgroup file
// such as memory.events.
func keyedValue(text, key string) (uint64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			n, err := strconv.ParseUint(f[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
