// Package userfile opens the files a user names on the command line (a
// kernel, an initrd, a disk image, a trace, a snapshot) as untrusted input.
//
// A path is only a name: what it leads to may be a character device that
// never ends (/dev/zero), a named pipe that blocks the reader until someone
// writes (a FIFO), a directory, a socket, a terminal, or a sparse file that
// claims 100 GiB. os.ReadFile on any of those hangs, exhausts memory or
// fails with a runtime error. So a user file is
//
//  1. opened with O_PATH (open(2)): that resolves the name, following
//     symlinks, to one inode without opening the file for I/O. Opening a
//     FIFO for reading blocks until a writer appears, and opening a device
//     runs its driver's open (a tape rewinds, a watchdog starts); O_PATH
//     does neither;
//  2. checked by fstat(2) on that descriptor, not on the name: the kind
//     (regular file, or block device where the caller accepts one) and the
//     size against a limit. A separate stat(2) of the name then open(2)
//     would check one file and open another if the name changed between
//     them (a TOCTOU race);
//  3. reopened for reading or writing through /proc/self/fd/N, the magic
//     link to exactly the inode just checked (proc(5));
//  4. read with a bound (ReadFile): at most the limit, however much the
//     file grows after the check.
//
// Every refusal is an *Error whose text is one line saying what the file
// turned out to be and what to do instead; the caller puts the flag and the
// path in front of it ("--kernel /dev/zero: is a character device ...").
package userfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Sentinels for errors.Is on an *Error.
var (
	ErrNotExist   = fs.ErrNotExist
	ErrPermission = fs.ErrPermission
	ErrKind       = errors.New("not a regular file")
	ErrTooLarge   = errors.New("file too large")
	ErrEmpty      = errors.New("file is empty")
)

// Error is a refused user file.
type Error struct {
	Path string
	Err  error  // one of the sentinels above, or the system call's error
	Size int64  // the size fstat reported, for ErrTooLarge
	Msg  string // one line: what the file is, and the fix
}

// Error is the one line without the path, which the caller names with its
// flag.
func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// Spec says what a caller accepts.
type Spec struct {
	// What the file should be, for messages: "kernel", "trace", ...
	What string
	// Max is the largest size accepted, in bytes; 0 means no limit (disk
	// images are never read whole, so their size costs nothing).
	Max int64
	// BlockDevice accepts a block device as well as a regular file.
	BlockDevice bool
	// Write opens the file read-write instead of read-only.
	Write bool
}

// Open opens path as spec allows and returns the file and its size. The
// size of a block device is found by seeking to its end; the offset is
// back at 0 on return.
func Open(path string, spec Spec) (*os.File, int64, error) {
	ref, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, openError(path, spec, err)
	}
	defer unix.Close(ref)
	var st unix.Stat_t
	if err := unix.Fstat(ref, &st); err != nil {
		return nil, 0, &Error{Path: path, Err: err, Msg: fmt.Sprintf("fstat: %v", err)}
	}
	if err := checkKind(path, ref, spec, st.Mode); err != nil {
		return nil, 0, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		if err := checkSize(path, spec, st.Size); err != nil {
			return nil, 0, err
		}
	}
	f, err := reopen(path, ref, spec, &st)
	if err != nil {
		return nil, 0, err
	}
	size := st.Size
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		// st_size is 0 for a block device; its end is its size.
		if size, err = f.Seek(0, io.SeekEnd); err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, 0, &Error{Path: path, Err: err, Msg: fmt.Sprintf("size of block device: %v", err)}
		}
		if err := checkSize(path, spec, size); err != nil {
			f.Close()
			return nil, 0, err
		}
	}
	return f, size, nil
}

// ReadFile reads a whole user file of at most spec.Max bytes (which must
// be set). An empty file is refused: nothing kvmlab reads whole means
// anything empty.
func ReadFile(path string, spec Spec) ([]byte, error) {
	if spec.Max <= 0 || spec.Write {
		return nil, fmt.Errorf("userfile.ReadFile %s: a read needs a size limit and no write access", path)
	}
	f, size, err := Open(path, spec)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	b.Grow(int(size) + 1)
	// One byte past the limit tells a file that grew since fstat from one
	// that did not.
	if _, err := b.ReadFrom(io.LimitReader(f, spec.Max+1)); err != nil {
		return nil, &Error{Path: path, Err: err, Msg: fmt.Sprintf("read: %v", err)}
	}
	if int64(b.Len()) > spec.Max {
		return nil, tooLarge(path, spec, int64(b.Len()))
	}
	if b.Len() == 0 {
		return nil, &Error{Path: path, Err: ErrEmpty, Msg: fmt.Sprintf("is empty: give a %s file with something in it", what(spec))}
	}
	return b.Bytes(), nil
}

func what(spec Spec) string {
	if spec.What == "" {
		return "non-empty"
	}
	return spec.What
}

func openError(path string, spec Spec, err error) error {
	e := &Error{Path: path, Err: err}
	switch {
	case errors.Is(err, unix.ENOENT):
		e.Err, e.Msg = ErrNotExist, "no such file: check the path"
	case errors.Is(err, unix.ENOTDIR):
		e.Err, e.Msg = ErrNotExist, "no such file (a component of the path is not a directory): check the path"
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		e.Err = ErrPermission
		e.Msg = "permission denied: make it readable (chmod) or run as its owner"
		if spec.Write {
			e.Msg = "permission denied: make it readable and writable (chmod), run as its owner, or open it read-only"
		}
	case errors.Is(err, unix.ELOOP):
		e.Msg = "too many levels of symbolic links: fix the symlink loop"
	case errors.Is(err, unix.EROFS):
		e.Msg = "on a read-only file system: open it read-only"
	default:
		e.Msg = err.Error()
	}
	return e
}

// checkKind refuses everything but a regular file (and a block device when
// spec allows one), naming what the path leads to.
func checkKind(path string, ref int, spec Spec, mode uint32) error {
	var kind, why, fix string
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFBLK:
		if spec.BlockDevice {
			return nil
		}
		kind, fix = "a block device", "copy what you need into a regular file"
	case unix.S_IFDIR:
		kind, fix = "a directory", "name a file in it"
	case unix.S_IFCHR:
		kind, why, fix = "a character device", " (reading one may never end)", "give a regular file"
	case unix.S_IFIFO:
		kind, why, fix = "a named pipe (FIFO)", " (it has no size, and blocks until written)", "save the data to a regular file first"
	case unix.S_IFSOCK:
		kind, fix = "a socket", "give a regular file"
	default:
		kind, fix = "of an unknown kind", "give a regular file"
	}
	if spec.BlockDevice {
		fix = "give a regular file or a block device"
	}
	msg := "is " + kind
	// Name the target when the path is a symlink to it: "--kernel k: leads
	// to /dev/zero, a character device".
	if target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(ref)); err == nil {
		if abs, err := filepath.Abs(path); err == nil && filepath.Clean(abs) != target {
			msg = "leads to " + target + ", " + kind
		}
	}
	return &Error{Path: path, Err: ErrKind, Msg: msg + ", not a regular file" + why + ": " + fix}
}

func checkSize(path string, spec Spec, size int64) error {
	if spec.Max > 0 && size > spec.Max {
		return tooLarge(path, spec, size)
	}
	return nil
}

func tooLarge(path string, spec Spec, size int64) error {
	return &Error{Path: path, Err: ErrTooLarge, Size: size,
		Msg: fmt.Sprintf("is %s, more than the %s a %s may be: check that it is the right file", Human(size), Human(spec.Max), what(spec))}
}

// reopen opens the inode behind ref for I/O.
func reopen(path string, ref int, spec Spec, st *unix.Stat_t) (*os.File, error) {
	flags := unix.O_RDONLY
	if spec.Write {
		flags = unix.O_RDWR
	}
	// O_NOCTTY: never let a terminal become our controlling terminal.
	flags |= unix.O_CLOEXEC | unix.O_NOCTTY
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(ref), flags, 0)
	if errors.Is(err, unix.ENOENT) {
		// No /proc: open the name again, without blocking (O_NONBLOCK
		// makes a FIFO's open return at once, though a FIFO cannot be
		// here unless the name changed), and check that it is still the
		// inode we looked at.
		fd, err = unix.Open(path, flags|unix.O_NONBLOCK, 0)
		if err == nil {
			var again unix.Stat_t
			if err = unix.Fstat(fd, &again); err == nil && (again.Dev != st.Dev || again.Ino != st.Ino) {
				unix.Close(fd)
				return nil, &Error{Path: path, Err: ErrKind, Msg: "changed while it was being opened: try again, and keep it still"}
			}
			if err == nil { // blocking I/O from here on
				_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0)
			}
			if err != nil {
				unix.Close(fd)
			}
		}
	}
	if err != nil {
		return nil, openError(path, spec, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Human writes a size in the largest binary unit that keeps it at 1 or
// more: "512 B", "1.5 MiB", "100.0 GiB".
func Human(n int64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n)/(1<<10), 0
	for v >= 1<<10 && i < len(units)-1 {
		v /= 1 << 10
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
