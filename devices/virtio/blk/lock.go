package blk

// Locking a disk image against a second VMM.
//
// Two VMMs writing one raw image corrupt it: each guest's file system
// believes it owns every block. Even one writer and one reader is wrong, as
// the reader's guest caches blocks the writer then changes. So an image is
// locked when it is opened, and a second user is refused with one line.
//
// The lock is an open file description lock (fcntl(2), F_OFD_SETLK, Linux
// 3.15). Classic POSIX record locks (F_SETLK) belong to the process: they do
// not conflict between two opens in one process, and closing any descriptor
// of the file, anywhere in the process, silently drops them. An OFD lock
// belongs to the open file: two opens conflict even in one process, and the
// lock lives exactly as long as the image is open, however the VMM ends,
// since the kernel releases it with the file.
//
// QEMU locks its images with OFD locks too (block/file-posix.c, "image
// locking"), one byte per block-layer permission rather than the whole file:
// byte 100+i is read-locked by every user that holds permission i, byte
// 200+i by every user that refuses to share permission i, where i is 0 for
// consistent read, 1 write, 2 write-unchanged, 3 resize. Read locks never
// conflict with each other, so QEMU also tests, with F_OFD_GETLK for a
// write lock, the bytes that say someone refuses what it wants (200+i for
// each permission it takes) or holds what it refuses to share (100+i). A
// -drive with no device on it only reads: it read-locks byte 100 alone. A
// virtio-blk device on a read-write drive adds 101 (it writes) and 201 (it
// does not share write unless share-rw=on).
//
// kvmlab locks the same bytes, so that it and QEMU refuse each other in
// either order:
//
//   - read-write: a write lock on bytes 100-299. Every other user of the
//     image, QEMU or kvmlab, holds a read lock on byte 100 at least, so
//     this fails while one runs, and their read locks fail while kvmlab
//     holds it (QEMU: "Failed to lock byte 100").
//   - read-only: read locks on byte 100 (kvmlab reads) and 201 (it does not
//     share write: the guest's disk must not change under it), then a test
//     that no one read-locks byte 101, that is holds write permission.
//     A QEMU writer started later tests 201 and refuses ("Failed to get
//     "write" lock"); a QEMU writer started earlier is found on 101. Two
//     read-only users, kvmlab or QEMU, share the image.
//
// Both sides take their locks before they test for the other's, so two
// users starting at the same moment cannot both miss each other.

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrInUse is Open's error when another process holds the image.
var ErrInUse = errors.New("in use by another process (a VMM holds a lock on it)")

// QEMU's lock bytes (block/file-posix.c: RAW_LOCK_PERM_BASE,
// RAW_LOCK_SHARED_BASE; BLK_PERM_WRITE is bit 1).
const (
	lockPermBase   = 100
	lockSharedBase = 200
	permWrite      = 1
	lockEnd        = 300 // one past the last byte a read-write open locks
)

// lockImage takes the lock for a read-only or read-write open of f.
func lockImage(f *os.File, path string, readOnly bool) error {
	fd := int(f.Fd())
	if !readOnly {
		return setLock(fd, path, unix.F_WRLCK, lockPermBase, lockEnd-lockPermBase)
	}
	if err := setLock(fd, path, unix.F_RDLCK, lockPermBase, 1); err != nil {
		return err
	}
	if err := setLock(fd, path, unix.F_RDLCK, lockSharedBase+permWrite, 1); err != nil {
		return err
	}
	// Could a write lock go on "holds write permission"? If not, a
	// writer holds it. F_OFD_GETLK ignores our own open file's locks.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: lockPermBase + permWrite, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return lockError(path, err)
	}
	if lk.Type != unix.F_UNLCK {
		return inUse(path)
	}
	return nil
}

func setLock(fd int, path string, typ int16, start, n int64) error {
	// Pid must be 0 for an OFD lock; Whence 0 is SEEK_SET.
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: n}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		return lockError(path, err)
	}
	return nil
}

func lockError(path string, err error) error {
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return inUse(path)
	}
	// EINVAL: a kernel before 3.15; ENOLCK or EOPNOTSUPP: a file system
	// without locks.
	return fmt.Errorf("cannot lock the image (%w): keep it on a local file system, and make sure no other VMM uses it", err)
}

func inUse(path string) error {
	return fmt.Errorf("%w: stop it, or attach it read-only with %s,ro in both", ErrInUse, path)
}
