package container

// The "blast radius" experiment: can a container crash the host's kernel?
//
// Writing "c" to /proc/sysrq-trigger makes the kernel crash on purpose
// (the kernel's Documentation/admin-guide/sysrq.rst). A container has no
// kernel of its own: that file is the host's kernel's, and no namespace
// hides it. What stops a container's root from writing it is the read-only
// bind mount init puts over it (see maskProc in init.go).
//
// TrySysrqCrash shows the refusal without ever risking the crash. Nothing
// in this package writes to /proc/sysrq-trigger: the attempt is an open(2)
// for writing, and if that open succeeds the file is closed at once,
// untouched. Before it gets that far, three checks must agree that the
// file is read-only in the container:
//
//  1. init sets up the container's mounts as always, reports "ready", and
//     waits;
//  2. the host reads init's mount table (/proc/PID/mountinfo) and, if the
//     kernel has the file at all, requires the mount it is on to be
//     read-only; only then does it tell init to go on, and otherwise it
//     closes the pipe, and init gives up;
//  3. init checks its own mount table the same way, and asks the kernel
//     (statfs(2), whose ST_RDONLY describes the mount the file is on), and
//     only then opens it.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sysrqTrigger is the kernel's magic SysRq file.
const sysrqTrigger = "/proc/sysrq-trigger"

// sysrqGo is what the host sends init once it has seen the read-only mount.
const sysrqGo = "go"

// Outcomes init reports in its "sysrq OUTCOME DETAIL" line.
const (
	sysrqRefused = "refused"  // the open for writing failed: DETAIL says why
	sysrqOpened  = "opened"   // the open succeeded; the file was closed unwritten
	sysrqNotRO   = "writable" // the file is not read-only here: not tried
)

// TrySysrqCrash tries, inside a container set up from cfg, to open
// /proc/sysrq-trigger for writing, as `echo c > /proc/sysrq-trigger` would
// before writing the "c" that crashes the kernel. It never writes: see the
// comment at the top of sysrq.go.
//
// cfg says which root and limits to use; its Args, I/O and CountSyscalls are
// not used. refused is true when the open failed, and detail is then the
// reason, normally "read-only file system" (EROFS) from the read-only
// mount. A kernel built without magic SysRq has no such file: the open fails
// with ENOENT, also reported as refused, with a detail that says so. If the
// open succeeded, refused is false and detail says that nothing was
// written. err is set, and nothing was tried, when the container could not
// be set up or when anything showed the file as writable in it.
func TrySysrqCrash(cfg Config) (refused bool, detail string, err error) {
	if cfg.sysrqProbe == "" {
		cfg.sysrqProbe = sysrqTrigger
	}
	cfg.Args, cfg.CountSyscalls = nil, false
	cfg.Stdin = strings.NewReader("")
	c, err := Start(cfg)
	if err != nil {
		return false, "", err
	}
	checkErr := c.checkSysrqReadOnly()
	if checkErr == nil {
		checkErr = c.sendGate(sysrqGo)
	}
	c.closeGate() // without "go" first, init gives up
	if checkErr != nil {
		_ = c.Kill()
	}
	_, waitErr := c.Wait()
	if checkErr != nil {
		return false, "", errors.Join(fmt.Errorf("sysrq: not tried: %w", checkErr), waitErr)
	}
	if waitErr != nil {
		return false, "", waitErr
	}
	switch c.sysrqOutcome {
	case sysrqRefused:
		return true, c.sysrqDetail, nil
	case sysrqOpened:
		return false, c.sysrqDetail, nil
	case sysrqNotRO:
		return false, "", fmt.Errorf("sysrq: not tried: %s", c.sysrqDetail)
	default:
		return false, "", fmt.Errorf("sysrq: init reported no outcome")
	}
}

// checkSysrqReadOnly waits for init to have set up its mounts, then reads
// its mount table from the host. When this kernel has the file (the host's
// /proc shows it), the container must have it on a read-only mount.
func (c *Container) checkSysrqReadOnly() error {
	select {
	case <-c.ready:
	case <-c.statusDone:
		return errors.New("init ended before setting up its mounts")
	case <-time.After(30 * time.Second):
		return errors.New("init did not set up its mounts within 30 s")
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", c.InitPID()))
	if err != nil {
		return fmt.Errorf("read the container's mount table: %w", err)
	}
	target := c.cfg.sysrqProbe
	point, ro := mountFor(mi, target)
	if !ro && (point == target || exists(target)) {
		return fmt.Errorf("%s is on a read-write mount in the container (%s)", target, point)
	}
	return nil
}

// sendGate sends init the word it waits for after "ready".
func (c *Container) sendGate(word string) error {
	if c.gate == nil {
		return errors.New("no pipe to init")
	}
	_, err := fmt.Fprintf(c.gate, "%q\n", word)
	return err
}

// closeGate closes the pipe to init, if it is still open.
func (c *Container) closeGate() {
	if c.gate != nil {
		c.gate.Close()
		c.gate = nil
	}
}

// sysrqAttempt is the attempt itself, run by init inside the container once
// the host has said go: target is /proc/sysrq-trigger except in tests. It
// returns an outcome and its detail. It never writes to the file.
func sysrqAttempt(target string) (outcome, detail string) {
	// Check again, from inside: our own mount table, and what the kernel
	// says of the mount the file is on.
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return sysrqNotRO, "cannot read the container's mount table: " + err.Error()
	}
	_, ro := mountFor(mi, target)
	var st unix.Statfs_t
	switch err := unix.Statfs(target, &st); {
	case errors.Is(err, unix.ENOENT):
		// No such file: the kernel has no magic SysRq. The open below
		// fails the same way; it is tried so that what is reported is
		// what the attempt met.
	case err != nil:
		return sysrqNotRO, "statfs " + target + ": " + err.Error()
	case !ro || st.Flags&unix.ST_RDONLY == 0:
		return sysrqNotRO, target + " is not read-only in the container"
	}
	// O_WRONLY without O_CREAT or O_TRUNC: the open has no effect on
	// the kernel; only a write(2) would.
	fd, err := unix.Open(target, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		detail := err.Error()
		if errors.Is(err, unix.ENOENT) && target == sysrqTrigger {
			detail += " (this kernel has no magic SysRq key)"
		}
		return sysrqRefused, detail
	}
	unix.Close(fd)
	return sysrqOpened, "open succeeded: not attempting the write"
}

// mountFor finds the mount that holds path in a mount table in the format
// of /proc/PID/mountinfo (proc(5)), and tells whether it is read-only. The
// fifth field of a line is the mount point, the sixth the options of that
// mount ("ro" or "rw" first). The mount holding path is the one at the
// longest mount point that is path or a directory above it; of several at
// the same point, the last, mounted on top of the others. (A mount hidden
// by a later one over a directory above it is not told apart: statfs(2) of
// the file itself is the kernel's word on that.) point is "" when no
// mount matches.
func mountFor(mountinfo []byte, path string) (point string, ro bool) {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if !pathUnder(path, mp) || len(mp) < len(point) {
			continue
		}
		point, ro = mp, slices.Contains(strings.Split(f[5], ","), "ro")
	}
	return point, ro
}

// pathUnder tells whether path is dir or inside it (both clean and
// absolute).
func pathUnder(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}
