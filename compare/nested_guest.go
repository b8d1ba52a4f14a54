package compare

// The guest's half of the container-inside-a-VM column (nested.go):
// `kvmlab compare-nested-guest --mem=SIZE`, which the guest's uinit runs
// from the kernel command line (kvmlab.run=) in the VM that nestedSide
// boots. It is the kvmlab binary carried into the guest, so it can run
// `kvmlab container` there, the very command a user runs on a host:
//
//  1. refuse to do anything unless this is that VM (the command line
//     nestedSide wrote, the CPU's hypervisor flag, an initramfs root):
//     the next steps mount over /sys/fs/cgroup and crash the kernel;
//  2. mount cgroup2 at /sys/fs/cgroup (u-root's init mounts none) and
//     check the guest kernel has what the runtime needs, naming the
//     kernel-config option when not;
//  3. make the container's root, /nested/root, a tree of hard links to the
//     guest's own files (rootLinker);
//  4. run `kvmlab container --rootfs /nested/root --mem SIZE --
//     kvmlab-probe --wait` and pass its output on to the console;
//  5. when the probe has reported, print what the container's cgroup used
//     and the guest kernel's boot id (NestedMarker), and crash the guest
//     kernel through sysrq with the container still running in it.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/guest/probe"
	"kvmlab/vmm"
)

// nestedCrashLine is printed just before the helper writes "c" to
// /proc/sysrq-trigger, so the host can tell the panic it then sees was the
// one asked for.
const nestedCrashLine = "KVMLAB-NESTED-CRASH"

// guestCgroupRoot is where the helper mounts cgroup2 in the guest: where
// the runtime looks for it (container.DefaultCgroupRoot).
const guestCgroupRoot = "/sys/fs/cgroup"

// NestedGuestMain is the hidden command's body; args are its arguments.
// It returns an exit status, or does not return at all (the guest kernel
// crashed as asked).
func NestedGuestMain(args []string) int {
	var mem string
	for _, a := range args {
		v, ok := strings.CutPrefix(a, "--mem=")
		if !ok {
			fmt.Fprintf(os.Stderr, "kvmlab %s: unknown argument %q (this command runs inside the VM of kvmlab compare --nested)\n", NestedGuestCommand, a)
			return 2
		}
		mem = v
	}
	if m, err := vmm.ParseMemSize(mem); err != nil || m == 0 {
		fmt.Fprintf(os.Stderr, "kvmlab %s: --mem=%q: give the container's memory limit, e.g. --mem=262144K\n", NestedGuestCommand, mem)
		return 2
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	var st unix.Statfs_t
	rootType := int64(-1)
	if unix.Statfs("/", &st) == nil {
		rootType = st.Type
	}
	if err := nestedGuestHere(string(cmdline), string(cpuinfo), rootType); err != nil {
		fmt.Fprintf(os.Stderr, "kvmlab %s: %v: refusing (this command runs inside the VM of kvmlab compare --nested only)\n", NestedGuestCommand, err)
		return 2
	}
	out := os.Stdout
	g := &NestedGuestReport{UptimeSec: uptime()}
	fail := func(err error) int {
		g.Error = err.Error()
		fmt.Fprintln(out, nestedLine(g))
		drainConsole(out)
		return 1
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		g.BootID = strings.TrimSpace(string(b))
	}
	if err := guestKernelReady(); err != nil {
		return fail(err)
	}
	if err := mountCgroup2(); err != nil {
		return fail(err)
	}
	g.Cgroup = "v2"
	t := time.Now()
	l := rootLinker{src: "/", dst: nestedRoot, skip: []string{nestedDir}, copyDirs: []string{"etc"}}
	n, err := l.link()
	g.RootFiles, g.RootMS = n, float64(time.Since(t).Microseconds())/1000
	if err != nil {
		return fail(fmt.Errorf("the container's root: %w", err))
	}
	cmd := exec.Command(nestedBin, "container", "--rootfs", nestedRoot, "--mem", mem, "--", "/bin/"+probe.Name, "--wait")
	cmd.Stderr = os.Stderr // the probe's start marker, the runtime's notes
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("kvmlab container: %w", err))
	}
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		if strings.Contains(line, ProbeMarker) {
			g.MemoryPeak = containerPeak(guestCgroupRoot)
			fmt.Fprintln(out, nestedLine(g))
			return crashThisGuest(out)
		}
	}
	err = cmd.Wait()
	return fail(fmt.Errorf("kvmlab container ended before the probe reported (%v)", err))
}

// nestedGuestHere says why this is not the VM nestedSide booted, or nil:
// its command line runs this command through uinit, the CPU says it is a
// virtual machine, and "/" is the initramfs (rootfs: ramfs or tmpfs).
// Pure, for tests: the caller reads /proc/cmdline, /proc/cpuinfo and
// statfs("/").
func nestedGuestHere(cmdline, cpuinfo string, rootFSType int64) error {
	want := "kvmlab.run=" + nestedBin + "," + NestedGuestCommand + ","
	if !slices.ContainsFunc(strings.Fields(cmdline), func(f string) bool { return strings.HasPrefix(f, want) }) {
		return fmt.Errorf("the kernel command line has no %s", want)
	}
	if !strings.Contains(" "+strings.Join(strings.Fields(cpuinfo), " ")+" ", " hypervisor ") {
		return errors.New("no hypervisor flag in /proc/cpuinfo: not a VM")
	}
	if rootFSType != unix.RAMFS_MAGIC && rootFSType != unix.TMPFS_MAGIC {
		return fmt.Errorf("/ is not an initramfs (file system type %#x)", rootFSType)
	}
	return nil
}

// guestKernelReady checks the guest kernel has what `kvmlab container`
// asks of it, naming the kernel-config/kvmlab.config option when not: an
// older guest kernel fails here with the fix, not in the runtime's clone.
func guestKernelReady() error {
	for _, ns := range []struct{ file, option string }{
		{"ipc", "CONFIG_SYSVIPC (for CONFIG_IPC_NS)"}, {"pid", "CONFIG_PID_NS"}, {"net", "CONFIG_NET_NS"},
		{"uts", "CONFIG_UTS_NS"}, {"cgroup", "CONFIG_CGROUPS"},
	} {
		if _, err := os.Stat("/proc/self/ns/" + ns.file); err != nil {
			return fmt.Errorf("the guest kernel has no %s namespace (/proc/self/ns/%s): rebuild it with %s (kernel-config/kvmlab.config, bash kernel-config/build.sh)", ns.file, ns.file, ns.option)
		}
	}
	return nil
}

// mountCgroup2 mounts the cgroup v2 hierarchy where the runtime looks for
// it, unless it is there, and checks the memory and pids controllers are
// in it (the runtime's limits and memory.peak need them).
func mountCgroup2() error {
	controllers := filepath.Join(guestCgroupRoot, "cgroup.controllers")
	if _, err := os.Stat(controllers); err != nil {
		if err := os.MkdirAll(guestCgroupRoot, 0o755); err != nil {
			return fmt.Errorf("cgroup2: %w", err)
		}
		if err := unix.Mount("cgroup2", guestCgroupRoot, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount cgroup2 on %s: %w", guestCgroupRoot, err)
		}
	}
	b, err := os.ReadFile(controllers)
	if err != nil {
		return fmt.Errorf("cgroup2: %w", err)
	}
	have := strings.Fields(string(b))
	for _, c := range []struct{ name, option string }{{"memory", "CONFIG_MEMCG"}, {"pids", "CONFIG_CGROUP_PIDS"}} {
		if !slices.Contains(have, c.name) {
			return fmt.Errorf("the guest kernel's cgroup v2 has no %s controller (%s: %q): rebuild it with %s (kernel-config/kvmlab.config)", c.name, controllers, strings.TrimSpace(string(b)), c.option)
		}
	}
	return nil
}

// containerPeak reads memory.peak of the one container cgroup under root
// (the runtime names its groups kvmlab-...), 0 when there is not exactly
// one or the kernel has no such file.
func containerPeak(root string) uint64 {
	m, _ := filepath.Glob(filepath.Join(root, "kvmlab-*", "memory.peak"))
	if len(m) != 1 {
		return 0
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// crashThisGuest crashes the guest kernel through magic SysRq ("c":
// Documentation/admin-guide/sysrq.rst), the container still running on
// it. NestedGuestMain has checked this is the VM it was meant for. It
// returns only when the kernel did not crash.
func crashThisGuest(out *os.File) int {
	fmt.Fprintln(out, nestedCrashLine+": writing c to /proc/sysrq-trigger, outside the container, with the container running")
	drainConsole(out)
	unix.Sync()
	f, err := os.OpenFile("/proc/sysrq-trigger", os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintf(out, "kvmlab %s: %v\n", NestedGuestCommand, err)
		return 1
	}
	_, err = f.Write([]byte("c"))
	fmt.Fprintf(out, "kvmlab %s: still running after sysrq c: %v\n", NestedGuestCommand, err)
	return 1
}

// drainConsole waits until the serial port has sent what was written
// (tcdrain), so the host sees the lines before the crash.
func drainConsole(f *os.File) {
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}

// uptime is the kernel's uptime in seconds (/proc/uptime), 0 if unknown.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// rootLinker makes dst a tree of hard links to the files under src: the
// guest's own userland becomes the container's root without a byte copied
// (hard links share the inode, and with it the data already in RAM).
// Directories are made anew, with the same permissions. What is not on
// src's file system cannot be linked: a directory mounted there (/proc,
// /sys, /dev, /tmp) is left empty, as the container mounts its own; one
// in copyDirs (/etc, which u-root's init moves to a tmpfs) has its files
// copied. skip are absolute paths left out (dst's own directory).
type rootLinker struct {
	src, dst string
	skip     []string
	copyDirs []string // relative to src
	// dev returns the file system an entry is on; nil means st_dev.
	// Tests set it to exercise the other-file-system cases.
	dev func(p string, fi fs.FileInfo) uint64
}

func (l *rootLinker) devOf(p string, fi fs.FileInfo) uint64 {
	if l.dev != nil {
		return l.dev(p, fi)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Dev
	}
	return 0
}

func (l *rootLinker) inCopyDir(rel string) bool {
	for _, c := range l.copyDirs {
		if rel == c || strings.HasPrefix(rel, c+"/") {
			return true
		}
	}
	return false
}

// link makes the tree and returns how many entries it made.
func (l *rootLinker) link() (int, error) {
	fi, err := os.Lstat(l.src)
	if err != nil {
		return 0, err
	}
	rootDev := l.devOf(l.src, fi)
	if err := os.MkdirAll(l.dst, 0o755); err != nil {
		return 0, err
	}
	n := 0
	err = filepath.WalkDir(l.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == l.src {
			return nil
		}
		if slices.Contains(l.skip, p) || p == l.dst {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(l.src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(l.dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		elsewhere, copyHere := l.devOf(p, info) != rootDev, l.inCopyDir(rel)
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
			// Mkdir's mode passes through the umask.
			if err := os.Chmod(target, info.Mode().Perm()|info.Mode()&(fs.ModeSticky|fs.ModeSetuid|fs.ModeSetgid)); err != nil {
				return err
			}
			n++
			if elsewhere && !copyHere {
				return fs.SkipDir
			}
		case !elsewhere:
			if err := os.Link(p, target); err != nil {
				return err
			}
			n++
		case copyHere:
			made, err := copyEntry(p, target, info)
			if err != nil {
				return err
			}
			if made {
				n++
			}
		}
		return nil
	})
	return n, err
}

// copyEntry copies a regular file or a symbolic link; it skips any other
// kind of file (made is false).
func copyEntry(src, dst string, fi fs.FileInfo) (made bool, err error) {
	switch {
	case fi.Mode().IsRegular():
		in, err := os.Open(src)
		if err != nil {
			return false, err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
		if err != nil {
			return false, err
		}
		_, err = io.Copy(out, in)
		return true, errors.Join(err, out.Close())
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return false, err
		}
		return true, os.Symlink(t, dst)
	}
	return false, nil
}
