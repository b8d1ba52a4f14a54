package probe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Options says where Collect looks and what it does.
type Options struct {
	// Root is the directory Collect reads /proc, /sys and /dev under, and
	// makes the workload's temporary directory in (Root/tmp); "" means "/".
	// Tests point it at a fake tree.
	Root string
	// Workload runs the fixed workload after the facts are read.
	Workload bool
	// Sys replaces the system calls Collect makes; nil, or a nil field,
	// means the real one. Tests set it, since a fake Root cannot fake a
	// system call.
	Sys *Syscalls
}

// Syscalls are the facts the probe asks the kernel for directly rather
// than through a file. Each field has the signature of its function in
// golang.org/x/sys/unix.
type Syscalls struct {
	Uname            func(buf *unix.Utsname) error
	Klogctl          func(typ int, buf []byte) (int, error)
	SchedGetaffinity func(pid int, set *unix.CPUSet) error
	ClockGettime     func(clockid int32, ts *unix.Timespec) error
}

// withDefaults fills in the real system calls where s has none.
func (s *Syscalls) withDefaults() Syscalls {
	var r Syscalls
	if s != nil {
		r = *s
	}
	if r.Uname == nil {
		r.Uname = unix.Uname
	}
	if r.Klogctl == nil {
		r.Klogctl = unix.Klogctl
	}
	if r.SchedGetaffinity == nil {
		r.SchedGetaffinity = unix.SchedGetaffinity
	}
	if r.ClockGettime == nil {
		r.ClockGettime = unix.ClockGettime
	}
	return r
}

const (
	// maxFile is the most the probe reads of a small /proc file (uptime,
	// boot_id, comm, cgroup): each is a line or a few.
	maxFile = 64 << 10
	// maxKlog bounds the buffer for the kernel log. The ring is 2^17 bytes
	// by default (CONFIG_LOG_BUF_SHIFT) and log_buf_len= can make it
	// larger; syslog(2)'s READ_ALL hands back the newest records that fit,
	// so on a larger ring the probe counts the lines of its newest 16 MiB.
	maxKlog = 16 << 20
	// maxCgroup bounds the report's copy of /proc/self/cgroup.
	maxCgroup = 4 << 10
)

// collector carries one Collect call's state.
type collector struct {
	root string
	sys  Syscalls
	r    *Report
}

// Collect reads every fact of a Report and, with opt.Workload, runs the
// workload. It does not fail: a fact it cannot read keeps its zero value
// (Modules: -1) and a line in Report.Errors says why.
func Collect(opt Options) Report {
	c := &collector{root: opt.Root, sys: opt.Sys.withDefaults(), r: &Report{Modules: -1}}
	if c.root == "" {
		c.root = "/"
	}
	// First, so the figure is as close as it can be to the probe's start.
	var ts unix.Timespec
	if err := c.sys.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		c.fail("monotonic clock", err)
	} else {
		c.r.MonotonicNS = ts.Nano()
	}
	c.r.PID = os.Getpid()

	c.uname()
	c.uptime()
	c.bootID()
	c.cpus()
	c.memory()
	c.processes()
	c.mounts()
	c.interfaces()
	c.modules()
	c.devices()
	c.cgroup()
	c.dmesg()
	c.sysrq()

	if opt.Workload {
		w, errs := runWorkload(c.path("tmp"))
		c.r.Workload = w
		for _, err := range errs {
			c.fail("workload", err)
		}
	}
	return *c.r
}

// path is p (relative to /) under the collector's root.
func (c *collector) path(p ...string) string {
	return filepath.Join(append([]string{c.root}, p...)...)
}

func (c *collector) fail(fact string, err error) {
	c.r.Errors = append(c.r.Errors, fact+": "+err.Error())
}

// open opens the file at p (under the root) for reading. O_NONBLOCK keeps
// a FIFO planted where a /proc file should be from stalling the probe: it
// makes no difference to a regular file.
func (c *collector) open(p ...string) (*os.File, error) {
	return os.OpenFile(c.path(p...), os.O_RDONLY|unix.O_NONBLOCK, 0)
}

// readSmall reads at most maxFile bytes of the file at p (under the root).
func (c *collector) readSmall(p ...string) ([]byte, error) {
	f, err := c.open(p...)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxFile))
}

// parseFile opens the file at p (under the root) and hands it to parse.
func (c *collector) parseFile(parse func(io.Reader) error, p ...string) error {
	f, err := c.open(p...)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := parse(f); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}

// uname asks the kernel serving this process who it is. The release and
// version are the kernel's own, which no namespace changes; the node name
// is the UTS namespace's hostname.
func (c *collector) uname() {
	var u unix.Utsname
	if err := c.sys.Uname(&u); err != nil {
		c.fail("uname", err)
		return
	}
	c.r.Hostname = clip(unix.ByteSliceToString(u.Nodename[:]))
	c.r.KernelRelease = clip(unix.ByteSliceToString(u.Release[:]))
	c.r.KernelVersion = clip(unix.ByteSliceToString(u.Version[:]))
}

func (c *collector) uptime() {
	b, err := c.readSmall("proc", "uptime")
	if err == nil {
		c.r.UptimeSec, err = parseUptime(b)
	}
	if err != nil {
		c.fail("uptime", err)
	}
}

func (c *collector) bootID() {
	b, err := c.readSmall("proc", "sys", "kernel", "random", "boot_id")
	if err != nil {
		c.fail("boot id", err)
		return
	}
	c.r.BootID = clip(string(b))
}

// cpus reads /proc/cpuinfo (model, hypervisor bit) and counts the CPUs the
// probe may run on: its affinity mask, which a container's cpuset narrows,
// or failing that the CPUs the kernel has online.
func (c *collector) cpus() {
	var info cpuInfo
	err := c.parseFile(func(r io.Reader) (err error) {
		info, err = parseCPUInfo(r)
		return err
	}, "proc", "cpuinfo")
	if err != nil {
		c.fail("cpuinfo", err)
	}
	c.r.CPUModel, c.r.Hypervisor = info.Model, info.Hypervisor

	var set unix.CPUSet
	err = c.sys.SchedGetaffinity(0, &set)
	if err == nil && set.Count() > 0 {
		c.r.CPUs = set.Count()
		return
	}
	if err == nil {
		err = errors.New("empty mask")
	}
	c.r.CPUs = info.Processors
	if c.r.CPUs == 0 {
		c.fail("cpus", fmt.Errorf("sched_getaffinity: %w, and /proc/cpuinfo lists no processor", err))
	}
}

func (c *collector) memory() {
	err := c.parseFile(func(r io.Reader) (err error) {
		c.r.MemTotalKB, err = parseMemInfo(r)
		return err
	}, "proc", "meminfo")
	if err != nil {
		c.fail("meminfo", err)
	}
}

// processes counts the numeric directories of /proc, one per process (a
// thread group: threads do not show at the top level) in the PID namespace
// that mounted this /proc, and lists their names.
func (c *collector) processes() {
	ents, err := os.ReadDir(c.path("proc"))
	if err != nil {
		c.fail("processes", err)
		return
	}
	var names []string
	for _, e := range ents {
		if !isPID(e.Name()) {
			continue
		}
		c.r.Processes++
		// A process may exit between the listing and this read; it
		// still counted, it just has no name to show.
		if b, err := c.readSmall("proc", e.Name(), "comm"); err == nil {
			names = append(names, clip(string(b)))
		}
	}
	c.r.ProcessList = sortedCapped(names)

	b, err := c.readSmall("proc", "1", "comm")
	if err != nil {
		c.fail("pid 1", err)
		return
	}
	c.r.PID1 = clip(string(b))
}

// isPID says whether name is a /proc entry for a process: digits only.
func isPID(name string) bool {
	if name == "" || len(name) > 10 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return false
		}
	}
	return true
}

func (c *collector) mounts() {
	err := c.parseFile(func(r io.Reader) (err error) {
		c.r.Mounts, c.r.MountList, err = parseMountInfo(r)
		return err
	}, "proc", "self", "mountinfo")
	if err != nil {
		c.fail("mounts", err)
	}
}

// interfaces lists /sys/class/net, which sysfs shows for the network
// namespace of whoever mounted it.
func (c *collector) interfaces() {
	ents, err := os.ReadDir(c.path("sys", "class", "net"))
	if err != nil {
		c.fail("interfaces", err)
		return
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, clip(e.Name()))
	}
	c.r.Interfaces = sortedCapped(names)
}

// modules counts /proc/modules' lines. A kernel built without module
// support has no such file, and that is an answer (-1), not an error.
func (c *collector) modules() {
	f, err := c.open("proc", "modules")
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		c.fail("modules", err)
		return
	}
	defer f.Close()
	n := 0
	if err := eachLine(f, func(line []byte) {
		if len(line) > 0 {
			n++
		}
	}); err != nil {
		c.fail("modules", err)
		return
	}
	c.r.Modules = n
}

func (c *collector) devices() {
	ents, err := os.ReadDir(c.path("dev"))
	if err != nil {
		c.fail("devices", err)
		return
	}
	c.r.Devices = len(ents)
}

// cgroup keeps /proc/self/cgroup as it is: "0::/path" on cgroup v2, one
// line per hierarchy on v1, the path relative to the cgroup namespace's
// root. (On v1 that is a dozen lines; maxCgroup leaves room for them.)
func (c *collector) cgroup() {
	b, err := c.readSmall("proc", "self", "cgroup")
	if err != nil {
		c.fail("cgroup", err)
		return
	}
	c.r.Cgroup = clipTo(string(b), maxCgroup)
}

// dmesg reads the kernel log with syslog(2), as dmesg does, and counts its
// lines. Being refused (EPERM: no CAP_SYSLOG while kernel.dmesg_restrict is
// set) is an answer, not an error.
func (c *collector) dmesg() {
	size, err := c.sys.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err == nil {
		size = min(max(size, 4<<10), maxKlog)
		buf := make([]byte, size)
		var n int
		n, err = c.sys.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
		if err == nil {
			n = min(max(n, 0), len(buf))
			c.r.DmesgReadable = true
			c.r.DmesgLines = countLines(buf[:n])
			return
		}
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		c.fail("dmesg", err)
	}
}

// sysrq opens /proc/sysrq-trigger for writing and closes it at once: it
// only asks whether a write would be let through. It must never write: one
// byte there can crash or reboot the kernel. Refusal (EACCES, EROFS on a
// read-only mount, EPERM) is an answer, not an error, and so is a missing
// file (ENOENT: a kernel built without CONFIG_MAGIC_SYSRQ, or a /proc that
// hides it).
func (c *collector) sysrq() {
	// O_NONBLOCK: opening a FIFO for writing would otherwise wait for a
	// reader; procfs ignores it.
	f, err := os.OpenFile(c.path("proc", "sysrq-trigger"), os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err == nil {
		c.r.SysrqWritable = true
		_ = f.Close()
		return
	}
	if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOENT) {
		c.fail("sysrq", err)
	}
}
