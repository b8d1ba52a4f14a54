package container

// The child side: the container's init. It starts as PID 1 of a new PID
// namespace, in a new mount, UTS, IPC and network namespace, with a copy of
// the host's mount table, and turns that copy into the container's:
//
//  1. Make every mount private. A copied mount table keeps the host's
//     "shared" propagation (mount_namespaces(7)): a mount or unmount made
//     here would be replayed in the host. Private stops that both ways.
//  2. Bind-mount the root directory onto itself. pivot_root(2) needs the
//     new root to be a mount point, and a plain directory is not.
//  3. Mount what programs expect: /proc (a procfs shows the PID namespace of
//     whoever mounts it, so only the container's processes), /dev (a small
//     tmpfs with a few host devices bind-mounted in, not the host's whole
//     /dev with its disks), /sys read-only (it shows the network devices
//     of our network namespace), and a tmpfs /tmp.
//  4. Make the parts of /proc that are the host's kernel itself, rather than
//     a view of the container's namespaces, read-only (maskProc).
//  5. pivot_root into the new root and detach the old one, so that the
//     host's file tree is not merely hidden (as by chroot(2)) but gone from
//     this mount namespace.
//  6. Set the hostname: it lives in the UTS namespace, so the host's is
//     untouched.
//  7. Bring the loopback device up: a new network namespace has only "lo",
//     and down.
//
// Then init starts the workload, with fewer capabilities and no_new_privs
// (caps.go; under ptrace when it is to count the workload's system calls:
// syscalls.go) and stays, as a tiny PID 1, instead of
// exec'ing it. PID 1 is special (pid_namespaces(7)): orphaned processes are
// re-parented to it and it must reap them, the kernel does not deliver it
// signals it has no handler for (so a plain program as PID 1 ignores Ctrl-C
// and `kill`), and when it exits the kernel kills everything else in the
// namespace. Our init reaps, forwards signals to the workload, and reports
// the workload's exit to the parent; not being PID 1, the workload behaves
// as it would anywhere. The cost is one small Go process inside the container's
// cgroup (a few MiB and a few threads).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// File descriptors init inherits (cmd.ExtraFiles in startInit).
const (
	syncFD   = 3 // read: the config, sent once init is in its cgroup
	statusFD = 4 // write: "started", "error MSG", "syscalls JSON", "exit CODE SIG"
)

// initConfig is what the parent sends init, as JSON on the sync pipe.
type initConfig struct {
	Rootfs   string   `json:"rootfs"`
	Hostname string   `json:"hostname"`
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	NoPivot  bool     `json:"no_pivot,omitempty"`
	// CountSyscalls: trace the workload and report "syscalls
	// {NR: COUNT, ...}" before "exit" (syscalls.go).
	CountSyscalls bool `json:"count_syscalls,omitempty"`
	// SysrqProbe, when set, is the file of the sysrq attempt: no
	// workload; report "ready", wait for the parent's go-ahead on the
	// sync pipe, make the attempt and report "sysrq OUTCOME DETAIL"
	// (sysrq.go).
	SysrqProbe string `json:"sysrq_probe,omitempty"`
}

// Init is the container's init (see the package doc): programs call it
// when their first argument is InitCommand, and exit with its result.
func Init() int {
	for _, fd := range []int{syncFD, statusFD} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			fmt.Fprintf(os.Stderr, "kvmlab: %s is started by the container runtime, not by hand\n", InitCommand)
			return 2
		}
		// The workload must not inherit them: it would hold the
		// status pipe open past init's exit.
		unix.CloseOnExec(fd)
	}
	status := os.NewFile(statusFD, "status")
	fail := func(err error) int {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		fmt.Fprintf(status, "error %s\n", msg)
		return 1
	}
	var cfg initConfig
	syncPipe := os.NewFile(syncFD, "sync")
	dec := json.NewDecoder(syncPipe)
	if err := dec.Decode(&cfg); err != nil {
		return fail(fmt.Errorf("init: read config: %w", err))
	}
	if cfg.SysrqProbe == "" {
		syncPipe.Close()
	}
	if err := enterContainer(cfg); err != nil {
		return fail(err)
	}
	if cfg.SysrqProbe != "" {
		// The parent checks our mount table, then sends "go" on the
		// same pipe (through the same decoder, which may have read
		// ahead).
		fmt.Fprintln(status, "ready")
		var word string
		if err := dec.Decode(&word); err != nil || word != sysrqGo {
			return fail(errors.New("sysrq: the runtime did not confirm the read-only mount: not tried"))
		}
		syncPipe.Close()
		fmt.Fprintln(status, "started")
		outcome, detail := sysrqAttempt(cfg.SysrqProbe)
		fmt.Fprintf(status, "sysrq %s %s\n", outcome, strings.ReplaceAll(detail, "\n", "; "))
		fmt.Fprintln(status, "exit 0 0")
		return 0
	}
	// Signals are caught from now on, so none is lost between starting
	// the workload and forwarding.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH)
	var pid int
	var traced <-chan traceResult
	var err error
	if cfg.CountSyscalls {
		pid, traced, err = startTraced(cfg)
	} else {
		pid, err = startWorkload(cfg, false)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(status, "started")
	go func() {
		for s := range sigs {
			_ = unix.Kill(pid, s.(syscall.Signal))
		}
	}()
	var code, sig int
	if traced != nil {
		tr := <-traced
		if tr.err != nil {
			return fail(fmt.Errorf("count system calls: %w", tr.err))
		}
		counts, err := json.Marshal(tr.counts)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(status, "syscalls %s\n", counts)
		code, sig = tr.code, tr.sig
	} else {
		code, sig = reap(pid)
	}
	fmt.Fprintf(status, "exit %d %d\n", code, sig)
	return code
}

// enterContainer does steps 1 to 7 of the file comment.
func enterContainer(cfg initConfig) error {
	root := cfg.Rootfs
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s onto itself: %w", root, err)
	}
	mounts := []struct {
		source, target, fstype string
		flags                  uintptr
		data                   string
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=755,size=1m"},
		{"sysfs", "sys", "sysfs", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
	for _, m := range mounts {
		target := filepath.Join(root, m.target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on /%s: %w", m.fstype, m.target, err)
		}
	}
	if err := maskProc(filepath.Join(root, "proc")); err != nil {
		return err
	}
	if err := populateDev(filepath.Join(root, "dev")); err != nil {
		return err
	}
	if err := changeRoot(root, cfg.NoPivot); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// readOnlyProc are the files and directories of /proc that maskProc makes
// read-only.
var readOnlyProc = []string{"sys", "sysrq-trigger", "irq", "bus"}

// maskProc makes parts of the container's /proc read-only.
//
// A new procfs shows the container's PID namespace, but much of /proc is not
// per-namespace at all: it is the host's kernel itself, shared by every
// container. Written to by the container's root (who, without a user
// namespace, is the host's user 0, and owns these files):
//
//   - /proc/sys changes the host kernel's settings (sysctl), most of them
//     global: kernel.panic, vm.overcommit_memory, kernel.core_pattern (a
//     program the host runs as root on every crash);
//   - /proc/sysrq-trigger takes commands for the kernel: "c" crashes it, "b"
//     reboots the machine, "o" powers it off;
//   - /proc/irq sets which CPUs take which hardware interrupts;
//   - /proc/bus gives access to the host's PCI and USB devices.
//
// Each is bind-mounted onto itself and the bind remounted read-only, as
// OCI runtimes do for the same paths. A write then fails with EROFS, even
// for root. A process holding CAP_SYS_ADMIN could unmount the bind or
// remount it read-write: the workload does not hold it (caps.go), and in a
// user namespace these mounts are also "locked" (mount_namespaces(7)).
//
// A path the kernel does not have (no CONFIG_MAGIC_SYSRQ, say) is skipped:
// there is nothing to protect.
func maskProc(proc string) error {
	for _, name := range readOnlyProc {
		p := filepath.Join(proc, name)
		if err := unix.Mount(p, p, "", unix.MS_BIND, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("bind-mount /proc/%s: %w", name, err)
		}
		// A bind mount takes the flags of the mount it comes from
		// only at creation; read-only needs a remount of the bind.
		// The remount sets all of its flags, so /proc's nosuid, nodev
		// and noexec are repeated.
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
		if err := unix.Mount("", p, "", flags, ""); err != nil {
			return fmt.Errorf("make /proc/%s read-only: %w", name, err)
		}
	}
	return nil
}

// populateDev fills the container's /dev. Device nodes are bind mounts of
// the host's: mknod(2) would need CAP_MKNOD, which a user namespace does not
// grant over device nodes, while a bind mount works with or without one.
// /dev/pts is a new devpts instance, so the container's pseudo-terminals
// are its own.
func populateDev(dev string) error {
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		target := filepath.Join(dev, name)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return fmt.Errorf("/dev/%s: %w", name, err)
		}
		if err := unix.Mount("/dev/"+name, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount /dev/%s: %w", name, err)
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return fmt.Errorf("/dev/pts: %w", err)
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts on /dev/pts: %w", err)
	}
	links := [][2]string{{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("/dev/%s: %w", l[1], err)
		}
	}
	return nil
}

// changeRoot makes root the container's "/".
//
// pivot_root(".", ".") is the form pivot_root(2) describes for this: it
// puts the new root at "/" and stacks the old root on top of it, and
// unmounting "." then removes the old root; MNT_DETACH lets that happen
// even though the old root is busy (the host's processes use it, in their
// own mount namespace, unaffected).
//
// pivot_root refuses (EINVAL) when the current root is the kernel's initial
// ramfs, as on a host that runs straight from an initramfs (the emulated
// host of kvmlab's tests does). That case falls back to what switch_root(8)
// does: move the new root's mount onto "/" and chroot into it. The old root
// then stays mounted underneath, reachable to a process that can chroot
// again: weaker, and the reason runtimes prefer pivot_root.
func changeRoot(root string, noPivot bool) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir %s: %w", root, err)
	}
	if !noPivot {
		err := unix.PivotRoot(".", ".")
		if err == nil {
			if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
				return fmt.Errorf("detach the old root: %w", err)
			}
			return unix.Chdir("/")
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("pivot_root: %w", err)
		}
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root onto /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// loopbackUp sets IFF_UP on "lo" with the SIOCGIFFLAGS and SIOCSIFFLAGS
// ioctls (netdevice(7)), on a socket of our network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// startWorkload starts the command, with the container's
// environment, in a new cgroup namespace, with the capabilities of
// workloadCaps and no_new_privs (caps.go). With trace, the child asks to be
// traced (PTRACE_TRACEME) just before its execve, so it stops right after
// it; the thread that starts it becomes the tracer.
//
// The cgroup namespace is made here rather than with the other namespaces:
// its root is the cgroup its creator is in at that moment, and only now is
// init in the container's cgroup. The workload then sees its group as "/"
// in /proc/self/cgroup, and nothing of the host's tree above it.
//
// Namespaces, capabilities and no_new_privs are all per thread, and a child
// copies the thread that forks it: so this thread is locked to its
// goroutine, unshares the cgroup namespace (which needs CAP_SYS_ADMIN, so
// before the drop), drops its privileges, and forks. It stays locked, and
// is never handed to another goroutine: when the goroutine ends, the Go
// runtime ends the thread with it.
func startWorkload(cfg initConfig, trace bool) (int, error) {
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return 0, fmt.Errorf("new cgroup namespace: %w", err)
	}
	if err := restrictThread(); err != nil {
		return 0, err
	}
	// Init's environment becomes the container's, so that the PATH
	// lookup happens in the container's PATH.
	os.Clearenv()
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	path, err := exec.LookPath(cfg.Args[0])
	if err != nil {
		return 0, fmt.Errorf("command %q not found in the container (PATH=%s)", cfg.Args[0], os.Getenv("PATH"))
	}
	// A command named without a slash gets the path it was found at as
	// argv[0]. u-root's busybox picks the program from argv[0] and
	// follows a symbolic link (sh -> gosh) only when argv[0] is a path.
	argv := append([]string{}, cfg.Args...)
	if !strings.Contains(argv[0], "/") {
		argv[0] = path
	}
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Ptrace: trace},
	})
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", cfg.Args[0], err)
	}
	return p.Pid, nil
}

// reap waits for every child, as PID 1 must, until the workload has
// ended, and returns its exit status the way a shell reports it (128+N for
// signal N) and the signal, if any. Processes still running then are killed
// by the kernel when init exits.
func reap(workload int) (code, sig int) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 255, 0 // ECHILD: cannot happen while the workload runs
		}
		if pid != workload {
			continue // an orphan, re-parented to us: now reaped
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal()), int(ws.Signal())
		}
		return ws.ExitStatus(), 0
	}
}
