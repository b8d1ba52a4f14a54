package container

// User namespaces (user_namespaces(7)) give a container user and group IDs
// of its own. A process's IDs in a new user namespace are translated to
// host IDs through two tables the parent writes once, /proc/PID/uid_map and
// /proc/PID/gid_map, one line per range: "ID-inside ID-outside COUNT".
// The container's root is then root only over what the namespace owns: its
// own mount, PID, UTS, IPC and network namespaces, which it may set up as it
// likes. Toward the host's kernel and files it is the host ID it maps to:
// an unprivileged user, when that ID is not 0. A file owned by a host ID
// that the map does not cover shows as the "overflow" ID, nobody (65534),
// and no capability inside lets it be changed.
//
// This runtime uses two kinds of map:
//
//   - the caller: the container's 0 is the ID of whoever runs kvmlab, one
//     ID long. Any user may write that map for a namespace it creates, with
//     one condition: setgroups(2) must first be denied in the namespace
//     (/proc/PID/setgroups = "deny"), or the user could drop a group that
//     the host uses to deny it access ("negative" group permissions). This
//     is what runs kvmlab as a non-root user, and is rootless mode.
//   - a range, for root: IDs 0 to N-1 inside are N host IDs starting at
//     HostUID and HostGID, normally the range /etc/subuid and /etc/subgid
//     (subuid(5)) reserve for root, so that they belong to no real user.
//     Only a process with CAP_SETUID over the host may write such a map
//     (unprivileged users reach for the set-user-ID helper newuidmap(1),
//     which this runtime does not use). The unpacked root's files are then
//     given to the range (chown by the same offset), or the container's
//     root could not write its own "/".
//
// The capabilities the container's root keeps (caps.go) are the same either
// way; in a user namespace they are capabilities over the namespace only,
// and the read-only mounts over /proc become "locked" (mount_namespaces(7)):
// no process in the namespace can remove them.

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// IDRange maps user and group IDs 0 to Size-1 in the container to HostUID
// and HostGID onwards on the host.
type IDRange struct {
	HostUID, HostGID, Size uint32
}

// CallerRange is the map of rootless mode: the container's root is the
// caller's user and group, and no other ID exists inside.
func CallerRange() IDRange {
	return IDRange{HostUID: uint32(os.Geteuid()), HostGID: uint32(os.Getegid()), Size: 1}
}

// ErrNoSubordinateRange means /etc/subuid or /etc/subgid lists no range for
// the user.
var ErrNoSubordinateRange = errors.New("no subordinate ID range")

// SubordinateRange reads the first range user has in /etc/subuid and in
// /etc/subgid (subuid(5): lines "NAME-OR-ID:FIRST:COUNT"), the IDs set aside
// for that user's containers. The returned Size is the smaller of the two
// counts.
func SubordinateRange(user string, uid int) (IDRange, error) {
	hu, nu, err := subordinate("/etc/subuid", user, uid)
	if err != nil {
		return IDRange{}, err
	}
	hg, ng, err := subordinate("/etc/subgid", user, uid)
	if err != nil {
		return IDRange{}, err
	}
	return IDRange{HostUID: hu, HostGID: hg, Size: min(nu, ng)}, nil
}

func subordinate(file, user string, uid int) (first, count uint32, err error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("%w: %s does not exist", ErrNoSubordinateRange, file)
	}
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || (fields[0] != user && fields[0] != strconv.Itoa(uid)) {
			continue
		}
		a, err1 := strconv.ParseUint(fields[1], 10, 32)
		n, err2 := strconv.ParseUint(fields[2], 10, 32)
		if err1 != nil || err2 != nil || n == 0 || a+n > 1<<32-1 {
			return 0, 0, fmt.Errorf("%s: bad line %q", file, sc.Text())
		}
		return uint32(a), uint32(n), nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", file, err)
	}
	return 0, 0, fmt.Errorf("%w: %s has no line for %s", ErrNoSubordinateRange, file, user)
}

// validate checks that this process may write the map r: a range needs
// root, and the ranges must not overflow 32 bits or hand out host ID 0
// beyond the caller's own.
func (r IDRange) validate() error {
	switch {
	case r.Size == 0:
		return errors.New("user namespace: an empty ID range")
	case uint64(r.HostUID)+uint64(r.Size) > 1<<32-1 || uint64(r.HostGID)+uint64(r.Size) > 1<<32-1:
		return fmt.Errorf("user namespace: the range %d+%d goes past the largest ID", max(r.HostUID, r.HostGID), r.Size)
	case os.Geteuid() != 0 && r != CallerRange():
		return fmt.Errorf("user namespace: without root only your own IDs (%d:%d, one ID) can be mapped; a range needs root", os.Geteuid(), os.Getegid())
	case os.Geteuid() == 0 && r.Size > 1 && (r.HostUID == 0 || r.HostGID == 0):
		return errors.New("user namespace: a range starting at host ID 0 would make the container's users the host's: use a range of unused IDs, e.g. 100000:65536")
	}
	return nil
}

// needsShift says whether the container's root (ID 0 inside) is not the
// host's ID of the files we unpacked, so that they must be given to the
// range.
func (r IDRange) needsShift() bool {
	return r.HostUID != uint32(os.Geteuid()) || r.HostGID != uint32(os.Getegid())
}

// shiftOwnership gives the files of a freshly unpacked root to the range: a
// file of uid U and gid G (inside the range) becomes HostUID+U and
// HostGID+G. Files outside it are left alone (they show as nobody inside).
//
// Names are collected first and changed children before parents, with
// lchown(2), which never follows a symbolic link: until a directory is
// given away, it is ours and its parents are too, so no one in the range
// can replace what we are about to change with a symbolic link somewhere
// else.
func shiftOwnership(dir string, r IDRange) error {
	type entry struct {
		path     string
		uid, gid uint32
	}
	var entries []entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		uid, gid, ok := fileOwner(info)
		if ok && uid < r.Size && gid < r.Size {
			entries = append(entries, entry{p, uid, gid})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("user namespace: give the root to the range: %w", err)
	}
	for _, e := range slices.Backward(entries) {
		if err := os.Lchown(e.path, int(r.HostUID+e.uid), int(r.HostGID+e.gid)); err != nil {
			return fmt.Errorf("user namespace: give the root to the range: %w", err)
		}
	}
	return nil
}

// fileOwner returns the owner of a file from its FileInfo.
func fileOwner(info fs.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
