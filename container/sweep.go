package container

// Leftovers of dead runtimes. A container's temporary root, its OCI bundle
// (with --runc) and its cgroup are removed by the process that made them,
// at teardown. A process that is SIGKILLed (or whose machine loses power
// in /tmp-on-disk setups) never reaches teardown: the kernel kills the
// container with it (PR_SET_PDEATHSIG), and its mounts go with its mount
// namespace, but directories stay. Every start therefore sweeps what dead
// kvmlab processes left, and only that.
//
// "Dead" must be certain, so every such directory is named after its
// owner:
//
//	kvmlab-rootfs-PIDNS-PID-START-RANDOM   the temporary root, in $TMPDIR
//	kvmlab-bundle-PIDNS-PID-START-RANDOM   runc's bundle, in $TMPDIR
//	kvmlab-PIDNS-PID-START-RANDOM          the cgroup (one per hierarchy on v1)
//
// PID alone is not enough: PIDs are reused, and a new process may have the
// dead one's number. START is the owner's start time, field 22 of
// /proc/PID/stat (proc(5): clock ticks after boot), which a reused PID does
// not share; PIDNS is the inode of the owner's PID namespace
// (/proc/self/ns/pid), since a PID means something only in its namespace.
// The owner is dead when /proc/PID/stat is gone or shows another start
// time; a name from another PID namespace is never touched.
//
// Even then, a leftover is removed only when nothing can still be using
// it:
//
//   - a cgroup with processes in it (cgroup.procs) is a container still
//     running, for whatever reason: it and the root and bundle of the same
//     name are kept;
//   - a runc container of the same name that runc still knows
//     (/run/runc/NAME) keeps its root and bundle;
//   - a root with anything mounted under it in our mount namespace is kept
//     (removeRoot's rule: removing it would reach into the mounted file
//     system);
//   - a name that is a symbolic link, or not a directory, is left alone, and
//     removal goes through an os.Root opened on $TMPDIR, whose RemoveAll
//     never follows a symbolic link (openat(2) with O_NOFOLLOW at every
//     step), so nothing outside the leftover can be reached through one
//     planted inside it;
//   - without root, only directories we own are considered.
//
// Directories named by older versions (without an owner in the name) are
// never swept: nothing tells whether their owner is alive.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Name prefixes of what a container leaves on the host.
const (
	cgroupPrefix = "kvmlab-"
	rootPrefix   = "kvmlab-rootfs-"
	bundlePrefix = "kvmlab-bundle-"
)

// runcStateDir is where runc (as root) keeps a directory per container it
// knows: `runc --root`'s default.
const runcStateDir = "/run/runc"

// owner identifies a process across PID reuse: its PID namespace, PID and
// start time.
type owner struct {
	pidns, pid, start uint64
}

// selfOwner is this process as an owner.
func selfOwner() (owner, error) {
	ns, err := pidNamespace("self")
	if err != nil {
		return owner{}, err
	}
	start, err := procStartTime("self")
	if err != nil {
		return owner{}, err
	}
	return owner{pidns: ns, pid: uint64(os.Getpid()), start: start}, nil
}

// pidNamespace reads the inode number of a process's PID namespace from
// the link /proc/PID/ns/pid ("pid:[4026531836]").
func pidNamespace(pid string) (uint64, error) {
	l, err := os.Readlink("/proc/" + pid + "/ns/pid")
	if err != nil {
		return 0, fmt.Errorf("pid namespace: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "pid:["), "]"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pid namespace: cannot read %q", l)
	}
	return n, nil
}

// procStartTime reads field 22 (starttime) of /proc/PID/stat. Field 2, the
// command name, is in parentheses and may itself hold spaces and
// parentheses, so the fields are counted from the last ')'.
func procStartTime(pid string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	t, err := parseStartTime(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%s/stat: %w", pid, err)
	}
	return t, nil
}

// parseStartTime reads starttime from the text of a /proc/PID/stat.
func parseStartTime(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	// After ") " come fields 3 (state), 4, ...: starttime is field 22,
	// the 20th of these.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("%d fields after the name, want at least 20", len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive says whether o may still be running: true when it is, and when we
// cannot tell (another PID namespace).
func (o owner) alive(self owner) bool {
	if o.pidns != self.pidns {
		return true
	}
	start, err := procStartTime(strconv.FormatUint(o.pid, 10))
	if err != nil {
		// ENOENT: no such process. Any other error: we cannot tell,
		// so it counts as alive.
		return !errors.Is(err, fs.ErrNotExist)
	}
	return start == o.start
}

// newName returns a fresh container name owned by o:
// kvmlab-PIDNS-PID-START-RANDOM, RANDOM being 12 hex digits so that one
// process's containers differ.
func newName(o owner) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%d-%d-%d-%s", cgroupPrefix, o.pidns, o.pid, o.start, hex.EncodeToString(b)), nil
}

// rootName and bundleName are the temporary directories of container name.
func rootName(name string) string   { return rootPrefix + strings.TrimPrefix(name, cgroupPrefix) }
func bundleName(name string) string { return bundlePrefix + strings.TrimPrefix(name, cgroupPrefix) }

// parseName reads the owner and the container name (kvmlab-...) back from
// the base name of a leftover; ok is false for any other name.
func parseName(base string) (name string, o owner, ok bool) {
	rest := base
	for _, p := range []string{rootPrefix, bundlePrefix, cgroupPrefix} {
		if strings.HasPrefix(base, p) {
			rest = strings.TrimPrefix(base, p)
			break
		}
	}
	if rest == base {
		return "", owner{}, false
	}
	f := strings.Split(rest, "-")
	if len(f) != 4 || len(f[3]) != 12 {
		return "", owner{}, false
	}
	var n [3]uint64
	for i := range n {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil || f[i] != strconv.FormatUint(v, 10) {
			return "", owner{}, false
		}
		n[i] = v
	}
	if _, err := hex.DecodeString(f[3]); err != nil || strings.ToLower(f[3]) != f[3] {
		return "", owner{}, false
	}
	return cgroupPrefix + rest, owner{n[0], n[1], n[2]}, true
}

// SweepReport says what a sweep found.
type SweepReport struct {
	// Removed are the leftovers removed, as paths.
	Removed []string
	// Kept are leftovers of dead owners that were not removed, each
	// with the reason.
	Kept []string
}

// Notes says what the sweep did in lines for the user ("" when nothing
// was found).
func (r SweepReport) notes() []string {
	var n []string
	if len(r.Removed) > 0 {
		n = append(n, fmt.Sprintf("removed %d leftovers of dead kvmlab processes: %s", len(r.Removed), strings.Join(r.Removed, ", ")))
	}
	for _, k := range r.Kept {
		n = append(n, "kept a leftover of a dead kvmlab process: "+k)
	}
	return n
}

// maxCgroupDepth bounds the walk of the cgroup tree: containers are made
// in the group of their runtime, which systemd nests a few levels deep.
const maxCgroupDepth = 12

// Sweep removes the temporary roots and bundles in tmpDir and the cgroups
// under cgroupRoot that kvmlab processes now dead left behind (see the
// comment at the top of sweep.go). Start and RunRunc call it with
// os.TempDir() and the cgroup root; it does not fail them, it reports.
func Sweep(tmpDir, cgroupRoot string) (SweepReport, error) {
	var rep SweepReport
	// mountinfo shows mount points with symbolic links resolved.
	if d, err := filepath.EvalSymlinks(tmpDir); err == nil {
		tmpDir = d
	}
	self, err := selfOwner()
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	type leftovers struct {
		owner   owner
		cgroups []string // paths
		temps   []string // base names in tmpDir
	}
	found := map[string]*leftovers{}
	add := func(base string) *leftovers {
		name, o, ok := parseName(base)
		if !ok || o.alive(self) {
			return nil
		}
		l := found[name]
		if l == nil {
			l = &leftovers{owner: o}
			found[name] = l
		}
		return l
	}

	// Cgroups: directories named kvmlab-... anywhere in the tree, not
	// looked into (a container's own groups are not ours to judge).
	if cgroupRoot != "" {
		root := filepath.Clean(cgroupRoot)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil // unreadable parts are skipped
			}
			if p == root {
				return nil
			}
			if strings.Count(strings.TrimPrefix(p, root), "/") > maxCgroupDepth {
				return fs.SkipDir
			}
			if !strings.HasPrefix(d.Name(), cgroupPrefix) {
				return nil
			}
			if l := add(d.Name()); l != nil && !strings.HasPrefix(d.Name(), rootPrefix) && !strings.HasPrefix(d.Name(), bundlePrefix) {
				l.cgroups = append(l.cgroups, p)
			}
			return fs.SkipDir
		})
	}
	// Temporary roots and bundles.
	ents, err := os.ReadDir(tmpDir)
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), rootPrefix) && !strings.HasPrefix(e.Name(), bundlePrefix) {
			continue
		}
		if l := add(e.Name()); l != nil {
			l.temps = append(l.temps, e.Name())
		}
	}
	if len(found) == 0 {
		return rep, nil
	}

	tmp, err := os.OpenRoot(tmpDir)
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	defer tmp.Close()
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		l := found[name]
		if busy := busyCgroup(l.cgroups); busy != "" {
			rep.Kept = append(rep.Kept, fmt.Sprintf("%s: processes still in %s", name, busy))
			continue
		}
		if exists(filepath.Join(runcStateDir, name)) {
			rep.Kept = append(rep.Kept, fmt.Sprintf("%s: runc still knows the container (%s)", name, filepath.Join(runcStateDir, name)))
			continue
		}
		// Deepest first: on v2 nothing nests, but a v1 hierarchy could
		// hold a kvmlab group inside another one's parent.
		slices.SortFunc(l.cgroups, func(a, b string) int { return len(b) - len(a) })
		for _, cg := range l.cgroups {
			if err := unix.Rmdir(cg); err != nil && !errors.Is(err, unix.ENOENT) {
				rep.Kept = append(rep.Kept, fmt.Sprintf("%s: %v", cg, err))
				continue
			}
			rep.Removed = append(rep.Removed, cg)
		}
		for _, base := range l.temps {
			p := filepath.Join(tmpDir, base)
			if why := tempNotRemovable(tmp, base, p); why != "" {
				rep.Kept = append(rep.Kept, fmt.Sprintf("%s: %s", p, why))
				continue
			}
			if err := tmp.RemoveAll(base); err != nil {
				rep.Kept = append(rep.Kept, fmt.Sprintf("%s: %v", p, err))
				continue
			}
			rep.Removed = append(rep.Removed, p)
		}
	}
	return rep, nil
}

// busyCgroup returns the first of dirs that still holds a process, or "".
// A directory that is gone or unreadable holds none we could see.
func busyCgroup(dirs []string) string {
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err == nil && strings.TrimSpace(string(b)) != "" {
			return d
		}
	}
	return ""
}

// tempNotRemovable says why the leftover base in tmp (p as a path) must be
// kept, or "" when it may go: it must be a real directory (not a symbolic
// link), ours unless we are root, with nothing mounted under it.
func tempNotRemovable(tmp *os.Root, base, p string) string {
	st, err := tmp.Lstat(base)
	if err != nil {
		return err.Error()
	}
	if !st.IsDir() {
		return "not a directory (" + st.Mode().Type().String() + "): left alone"
	}
	if uid, _, ok := fileOwner(st); !ok || (os.Geteuid() != 0 && int(uid) != os.Geteuid()) {
		return "owned by another user"
	}
	m, err := mountsUnder(p)
	if err != nil {
		return err.Error()
	}
	if len(m) > 0 {
		return m[0] + " is still mounted"
	}
	return ""
}
