package container

// The parent side: everything that happens on the host, before the
// container exists and after it is gone.
//
// Namespaces are asked for when the child is created: clone(2) takes
// CLONE_NEW* flags, and Go's os/exec passes them through
// SysProcAttr.Cloneflags. A Go program cannot run code between fork and exec
// (the runtime is multi-threaded), so the child is this same binary run
// again (/proc/self/exe) with the argument InitCommand: it starts inside the
// new namespaces and does the in-container setup itself (init.go).
//
// The cgroup must hold the child before the workload runs, or the workload
// could allocate or fork past its limits before being moved. The child
// therefore blocks reading a pipe until the parent has written its PID into
// cgroup.procs; the config it needs arrives on that pipe, so "config
// received" also means "you are in your cgroup". (On cgroup v2, clone3(2)
// with CLONE_INTO_CGROUP can create a child directly in a group; v1 has no
// such thing, and one mechanism for both is easier to follow.)

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InitCommand is the hidden first argument with which the runtime re-runs
// its own binary as the container's init. Programs using this package call
// Init when they see it.
const InitCommand = "container-init"

// DefaultHostname is the container's hostname unless Config says otherwise.
const DefaultHostname = "kvmlab-container"

// containerPath is the PATH inside: u-root keeps its programs in /bbin
// (one busybox-style binary) and /bin; the rest are the usual places.
const containerPath = "/bbin:/bin:/ubin:/usr/bin:/usr/sbin:/sbin"

// ErrSetup means the container could not be set up: the workload never ran.
var ErrSetup = errors.New("container setup failed")

// Config describes a container.
type Config struct {
	// Args is the command to run inside, looked up in the container's PATH.
	Args []string
	// Initrd is the newc cpio archive to unpack into a fresh root, removed
	// afterwards. Empty means DefaultInitrd().
	Initrd string
	// Rootfs is an already unpacked root directory, used in place of
	// Initrd and kept. Files the container writes land in it.
	Rootfs string
	// Hostname is the container's hostname (its own UTS namespace);
	// empty means DefaultHostname.
	Hostname string
	// Limits are the cgroup limits.
	Limits Limits
	// Stdin, Stdout and Stderr are the workload's; nil means ours.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// CgroupRoot is where the cgroup file systems are mounted; empty means
	// DefaultCgroupRoot.
	CgroupRoot string
	// UserNS, when set, runs the container in a user namespace of its own
	// with this ID map (userns.go): CallerRange for rootless mode, a range
	// of unused host IDs (SubordinateRange) for root. Without root there
	// always is one, with CallerRange, so nil then means CallerRange.
	UserNS *IDRange
	// CountSyscalls runs the workload under ptrace(2) and counts the
	// system calls it and every process and thread it starts make into
	// the kernel (Result.Syscalls). It slows the workload down: see
	// syscalls.go. x86-64 only.
	CountSyscalls bool

	// noPivot makes init use the MS_MOVE and chroot fallback that hosts
	// running from an initramfs need, so tests can exercise it anywhere.
	noPivot bool
	// sysrqProbe makes init run TrySysrqCrash's attempt on this file in
	// place of a workload: /proc/sysrq-trigger, or another file when a
	// test wants the whole path exercised on a kernel without SysRq.
	sysrqProbe string
}

// Result is how a container ended, and what it used.
type Result struct {
	// ExitCode is the workload's exit status as a shell reports it: the
	// status it exited with, or 128+N when signal N killed it.
	ExitCode int
	// Signal is the signal that killed the workload, 0 if none did.
	Signal syscall.Signal
	// OOMKilled tells whether the kernel's OOM killer killed a process of
	// the container (its memory limit was reached and could not be
	// reclaimed).
	OOMKilled bool
	// MemoryPeak is the most memory the container's processes used at
	// once, and MemoryCurrent what they still used when the workload
	// ended, in bytes, as the cgroup counts them; 0 where the kernel does
	// not report it.
	MemoryPeak, MemoryCurrent uint64
	// Unpack is the time spent unpacking the initramfs (0 with Rootfs).
	Unpack time.Duration
	// StartToExec runs from Start (unpacking included) to the workload's
	// execve: a container's "boot time".
	StartToExec time.Duration
	// Wall runs from Start to the end of the workload; Teardown is the
	// time then spent cleaning up.
	Wall, Teardown time.Duration
	// Cgroup says which cgroup version and files were used.
	Cgroup CgroupReport
	// Syscalls is the number of system calls the workload and the
	// processes and threads it started made, from its execve on, and
	// SyscallsByName the same by call ("syscall_N" where this package
	// has no name for number N). Counted only with Config.CountSyscalls.
	Syscalls       uint64
	SyscallsByName map[string]uint64
	// Notes are what the runtime did without, or cleaned up, one line
	// each for the user: limits not applied (no cgroup without root),
	// leftovers of dead kvmlab processes swept at the start.
	Notes []string
}

// Container is a started container.
type Container struct {
	cfg        Config
	name       string // kvmlab-PIDNS-PID-START-RANDOM (sweep.go)
	notes      []string
	start      time.Time
	unpack     time.Duration
	rootfs     string // the root directory
	tempRoot   bool   // rootfs was unpacked by us, to be removed
	cg         *cgroup
	cmd        *exec.Cmd
	statusDone chan struct{}
	ready      chan struct{} // closed when init reports "ready" (sysrq probe)
	gate       *os.File      // the sync pipe, kept open for the sysrq probe
	waitOnce   sync.Once
	result     Result // what Wait returns, every time
	waitErr    error

	// Filled in by the status reader before statusDone is closed.
	execAt             time.Time
	setupErr           string
	exited             bool
	exitCode, exitSig  int
	syscalls           map[uint64]uint64
	sysrqOutcome       string
	sysrqDetail        string
	statusReaderFailed error
}

// Run starts a container, waits for it to end and cleans up. Cancelling
// ctx kills the container.
func Run(ctx context.Context, cfg Config) (Result, error) {
	c, err := Start(cfg)
	if err != nil {
		return Result{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Kill() })
	defer stop()
	return c.Wait()
}

// Start prepares the root file system and the cgroup and starts the
// container's init, which starts the workload. Wait must be called to
// collect the result and clean up.
func Start(cfg Config) (*Container, error) {
	c := &Container{cfg: cfg, start: time.Now(), statusDone: make(chan struct{}), ready: make(chan struct{})}
	if (len(cfg.Args) == 0 || cfg.Args[0] == "") && cfg.sysrqProbe == "" {
		return nil, fmt.Errorf("%w: no command to run", ErrSetup)
	}
	if cfg.CountSyscalls && !canCountSyscalls {
		return nil, fmt.Errorf("%w: counting system calls is implemented for amd64 only", ErrSetup)
	}
	if cfg.Initrd != "" && cfg.Rootfs != "" {
		return nil, fmt.Errorf("%w: both an initrd and a rootfs given: use one", ErrSetup)
	}
	if err := cfg.Limits.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	if err := c.setup(); err != nil {
		return nil, errors.Join(fmt.Errorf("%w: %w", ErrSetup, err), c.teardown())
	}
	return c, nil
}

func (c *Container) setup() error {
	if c.cfg.UserNS == nil && os.Geteuid() != 0 {
		r := CallerRange()
		c.cfg.UserNS = &r
	}
	if c.cfg.UserNS != nil {
		if err := c.cfg.UserNS.validate(); err != nil {
			return err
		}
	}
	var err error
	c.name, c.notes, err = startName(c.cgroupRoot())
	if err != nil {
		return err
	}
	if err := c.prepareRoot(); err != nil {
		return err
	}
	if err := c.makeCgroup(c.name); err != nil {
		return err
	}
	return c.startInit()
}

// startName sweeps what dead kvmlab processes left behind (sweep.go) and
// names a new container after this process, with notes for the user about
// the sweep. A failed sweep is a note, not an error.
func startName(cgroupRoot string) (string, []string, error) {
	var notes []string
	rep, err := Sweep(os.TempDir(), cgroupRoot)
	if err != nil {
		notes = append(notes, "could not look for leftovers of dead kvmlab processes: "+err.Error())
	}
	notes = append(notes, rep.notes()...)
	self, err := selfOwner()
	if err != nil {
		return "", notes, err
	}
	name, err := newName(self)
	return name, notes, err
}

// Notes are the runtime's notes so far (see Result.Notes): what the sweep
// at Start removed, and which default limits could not be applied.
func (c *Container) Notes() []string { return slices.Clone(c.notes) }

func (c *Container) cgroupRoot() string {
	if c.cfg.CgroupRoot != "" {
		return c.cfg.CgroupRoot
	}
	return DefaultCgroupRoot
}

// prepareRoot unpacks the initramfs into a temporary directory, or checks
// the given root directory. In a user namespace with a range, an unpacked
// root is given to the range (userns.go).
func (c *Container) prepareRoot() error {
	var err error
	c.rootfs, c.tempRoot, c.unpack, err = prepareRoot(c.cfg, c.name)
	if err == nil && c.tempRoot && c.cfg.UserNS != nil && c.cfg.UserNS.needsShift() {
		err = shiftOwnership(c.rootfs, *c.cfg.UserNS)
	}
	return err
}

// prepareRoot returns the root directory for cfg, whether it is a
// temporary one to remove afterwards, and how long unpacking took. A
// temporary root is called after the container (rootName), so that a
// later start can tell whether its owner is still alive (sweep.go).
func prepareRoot(cfg Config, name string) (dir string, temp bool, unpack time.Duration, err error) {
	if cfg.Rootfs != "" {
		st, err := os.Stat(cfg.Rootfs)
		if err != nil {
			return "", false, 0, fmt.Errorf("rootfs: %w", err)
		}
		if !st.IsDir() {
			return "", false, 0, fmt.Errorf("rootfs: %s is not a directory", cfg.Rootfs)
		}
		return cfg.Rootfs, false, 0, nil
	}
	archive := cfg.Initrd
	if archive == "" {
		archive = DefaultInitrd()
	}
	// Mkdir fails if the name exists (even as a symbolic link): the
	// random part of the name makes that an attack, not an accident.
	dir = filepath.Join(os.TempDir(), rootName(name))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", false, 0, fmt.Errorf("rootfs: %w", err)
	}
	// Made 0700 so no one looks in while it is prepared; as the
	// container's "/", it must be searchable by every user inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		return dir, true, 0, fmt.Errorf("rootfs: %w", err)
	}
	t := time.Now()
	if err := Unpack(archive, dir); err != nil {
		return dir, true, 0, err
	}
	return dir, true, time.Since(t), nil
}

// makeCgroup creates the container's cgroup with the limits in force
// (Limits.Effective). The default limits are applied where they can be: a
// host without the controller runs without that default, and a user
// without root (who usually may not create cgroups) runs without a cgroup
// at all, each with a note saying so. Limits asked for by name are never
// dropped: failing to apply one fails the start.
func (c *Container) makeCgroup(name string) error {
	root := c.cgroupRoot()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	asked, eff := c.cfg.Limits.Explicit(), c.cfg.Limits.Effective()
	defaults := describeDefaults(c.cfg.Limits)
	cg, err := newCgroup(root, self, name, eff)
	if firstErr := err; errors.Is(err, ErrNoController) && eff != asked {
		cg, err = newCgroup(root, self, name, asked)
		if err == nil {
			cg.report.Notes = append(cg.report.Notes, fmt.Sprintf("the default limits (%s) are not applied: %v", defaults, firstErr))
		}
	}
	if err != nil && os.Geteuid() != 0 && asked == (Limits{}) {
		cg, err = &cgroup{version: "none", report: CgroupReport{Version: "none"}}, nil
		if defaults != "" {
			cg.report.Notes = append(cg.report.Notes, fmt.Sprintf("no cgroup (creating one needs root): running without the default limits (%s)", defaults))
		}
	}
	if err != nil {
		return err
	}
	c.cg = cg
	c.notes = append(c.notes, cg.report.Notes...)
	return nil
}

// describeDefaults names the default limits that l leaves in force (its
// zero Memory and Pids), "" when none.
func describeDefaults(l Limits) string {
	var d []string
	if l.Memory == 0 {
		d = append(d, fmt.Sprintf("memory %d MiB", DefaultMemory>>20))
	}
	if l.Pids == 0 {
		d = append(d, fmt.Sprintf("%d tasks", DefaultPids))
	}
	return strings.Join(d, ", ")
}

// startInit starts the container's init in new namespaces, puts it in the
// cgroup and sends it its config.
func (c *Container) startInit() error {
	// Two pipes: sync carries the config to init, status carries
	// init's reports back ("started", "error MSG", "exit CODE SIG").
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return err
	}
	if c.cfg.sysrqProbe != "" {
		// Kept open: init waits on it for a second word (sysrq.go).
		c.gate = syncW
	} else {
		defer syncW.Close()
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		syncR.Close()
		return err
	}

	cmd := exec.Command("/proc/self/exe", InitCommand)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orStd(c.cfg)
	// ExtraFiles become fds 3 and 4 in the child (syncFD, statusFD).
	cmd.ExtraFiles = []*os.File{syncR, statusW}
	// One OS thread's worth of Go scheduler in init: it has little to do,
	// and every thread counts against pids.max. Init replaces its
	// environment with the container's before starting the workload.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// New namespaces (namespaces(7)): PID (init is PID 1, /proc
		// shows only the container), mount (its mounts are its own),
		// UTS (hostname), IPC (System V IPC and POSIX message queues)
		// and network (only a loopback device). The cgroup namespace is
		// made later, by init, once it is in its cgroup (see init.go).
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
		// If we die, the kernel kills init, and with it the container.
		Pdeathsig: unix.SIGKILL,
	}
	if r := c.cfg.UserNS; r != nil {
		// A user namespace (userns.go), in which ID 0 is r's first
		// host ID: it gives the capabilities the other namespaces and
		// the mounts need, over those namespaces only. Go's os/exec
		// writes uid_map and gid_map (and "deny" to setgroups when
		// asked) while the child waits, before it runs anything.
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostUID), Size: int(r.Size)}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostGID), Size: int(r.Size)}}
		// An unprivileged gid map is allowed only once setgroups is
		// denied (user_namespaces(7)); root may leave it allowed, so
		// that su and login work inside.
		cmd.SysProcAttr.GidMappingsEnableSetgroups = os.Geteuid() == 0
		if r.needsShift() {
			// The child starts as our host IDs, which the map does
			// not cover: it becomes the container's root (host
			// IDs HostUID, HostGID) once the maps are written.
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
		}
	}
	err = cmd.Start()
	syncR.Close() // the child has its copies
	statusW.Close()
	if err != nil {
		statusR.Close()
		return fmt.Errorf("start init: %w", err)
	}
	c.cmd = cmd
	go c.readStatus(statusR)

	// Init is blocked reading the sync pipe: move it into the cgroup,
	// then let it go.
	if err := c.cg.addProcess(cmd.Process.Pid); err != nil {
		return err
	}
	ic := initConfig{Rootfs: c.rootfs, Hostname: c.hostname(), Args: c.cfg.Args, Env: containerEnv(c.hostname()), NoPivot: c.cfg.noPivot,
		CountSyscalls: c.cfg.CountSyscalls, SysrqProbe: c.cfg.sysrqProbe}
	if err := json.NewEncoder(syncW).Encode(ic); err != nil {
		return fmt.Errorf("send config to init: %w", err)
	}
	return nil
}

// containerEnv is the workload's environment: a fresh one, not ours, with
// the terminal type passed on so that interactive programs work.
func containerEnv(hostname string) []string {
	env := []string{"PATH=" + containerPath, "HOME=/", "HOSTNAME=" + hostname}
	if t := os.Getenv("TERM"); t != "" {
		env = append(env, "TERM="+t)
	}
	return env
}

func orStd(cfg Config) (io.Reader, io.Writer, io.Writer) {
	var in io.Reader = os.Stdin
	var out, errw io.Writer = os.Stdout, os.Stderr
	if cfg.Stdin != nil {
		in = cfg.Stdin
	}
	if cfg.Stdout != nil {
		out = cfg.Stdout
	}
	if cfg.Stderr != nil {
		errw = cfg.Stderr
	}
	return in, out, errw
}

func (c *Container) hostname() string {
	if c.cfg.Hostname != "" {
		return c.cfg.Hostname
	}
	return DefaultHostname
}

// readStatus reads init's reports until init exits (and the pipe ends).
func (c *Container) readStatus(r *os.File) {
	defer close(c.statusDone)
	defer r.Close()
	readyClosed := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		verb, rest, _ := strings.Cut(sc.Text(), " ")
		switch verb {
		case "started":
			c.execAt = time.Now()
		case "ready":
			if !readyClosed {
				close(c.ready)
				readyClosed = true
			}
		case "syscalls":
			// Counts by number, as JSON; a line that does not parse
			// leaves them out.
			var counts map[uint64]uint64
			if json.Unmarshal([]byte(rest), &counts) == nil {
				c.syscalls = counts
			}
		case "sysrq":
			c.sysrqOutcome, c.sysrqDetail, _ = strings.Cut(rest, " ")
		case "error":
			c.setupErr = rest
		case "exit":
			if _, err := fmt.Sscanf(rest, "%d %d", &c.exitCode, &c.exitSig); err == nil {
				c.exited = true
			}
		}
	}
	c.statusReaderFailed = sc.Err()
}

// InitPID is the host PID of the container's init.
func (c *Container) InitPID() int { return c.cmd.Process.Pid }

// Pids lists the host PIDs of the container's processes.
func (c *Container) Pids() ([]int, error) {
	if len(c.cg.report.Dirs) == 0 {
		return []int{c.InitPID()}, nil
	}
	return c.cg.pids()
}

// Signal sends sig to the container's init, which passes it on to the
// workload.
func (c *Container) Signal(sig os.Signal) error {
	return c.cmd.Process.Signal(sig)
}

// Kill kills the container: SIGKILL to its init, after which the kernel
// kills every other process in its PID namespace.
func (c *Container) Kill() error {
	return c.cmd.Process.Kill()
}

// Wait waits for the container to end, cleans up after it and reports.
// The error is nil when the workload ran, whatever its exit status.
func (c *Container) Wait() (Result, error) {
	c.waitOnce.Do(func() { c.result, c.waitErr = c.wait() })
	return c.result, c.waitErr
}

func (c *Container) wait() (Result, error) {
	waitErr := c.cmd.Wait()
	<-c.statusDone
	res := Result{Unpack: c.unpack, Wall: time.Since(c.start)}
	if !c.execAt.IsZero() {
		res.StartToExec = c.execAt.Sub(c.start)
	}
	ws, _ := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case c.exited:
		// Init reported the workload's end.
		res.ExitCode, res.Signal = c.exitCode, syscall.Signal(c.exitSig)
	case ws.Signaled():
		// Init itself was killed (SIGKILL from outside, or chosen by
		// the OOM killer); the workload died with it.
		res.Signal = ws.Signal()
		res.ExitCode = 128 + int(res.Signal)
	default:
		res.ExitCode = ws.ExitStatus()
	}
	if c.cfg.CountSyscalls && c.syscalls != nil {
		res.SyscallsByName, res.Syscalls = namedCounts(c.syscalls)
	}
	mem := c.cg.memory()
	res.MemoryPeak, res.MemoryCurrent, res.OOMKilled = mem.peak, mem.current, mem.oomKills > 0

	t := time.Now()
	tdErr := c.teardown()
	res.Teardown = time.Since(t)
	res.Cgroup = c.cg.report
	res.Notes = c.Notes()

	var errs []error
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		errs = append(errs, fmt.Errorf("wait for init: %w", waitErr))
	}
	if c.setupErr != "" {
		errs = append(errs, fmt.Errorf("%w: %s", ErrSetup, c.setupErr))
	} else if c.execAt.IsZero() && !ws.Signaled() {
		errs = append(errs, fmt.Errorf("%w: init exited with status %d before starting the workload", ErrSetup, ws.ExitStatus()))
	}
	if c.statusReaderFailed != nil {
		errs = append(errs, fmt.Errorf("read init's status: %w", c.statusReaderFailed))
	}
	errs = append(errs, tdErr)
	return res, errors.Join(errs...)
}

// teardown kills what is left in the cgroup, removes the cgroup and the
// temporary root. Each step runs even when an earlier one failed.
func (c *Container) teardown() error {
	var errs []error
	c.closeGate()
	if c.cmd != nil && c.cmd.ProcessState == nil {
		// Start failed after init was started.
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
	if c.cg != nil {
		errs = append(errs, c.cg.kill(), c.cg.remove())
	}
	if c.tempRoot {
		errs = append(errs, removeRoot(c.rootfs))
	}
	return errors.Join(errs...)
}
