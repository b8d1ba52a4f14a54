package container

// Unpacking an archive a stranger may have written.
//
// A cpio archive is a list of (name, mode, data) records. Writing each one
// with os.Create(filepath.Join(root, name)) is the classic "zip slip" hole,
// and cleaning the name does not close it: an archive can first create a
// symbolic link "x -> /etc" and then a file "x/passwd". The name is clean and
// relative, but the kernel follows the link while resolving the path, and
// the file lands in the host's /etc. Run as root, that is an arbitrary file
// write on the host. String checks cannot see this, because the danger is in
// what the file system holds at the moment the path is resolved, and an
// earlier record of the same archive put it there.
//
// So we ask the kernel to resolve every path as if the new root were "/":
// openat2(2) with RESOLVE_IN_ROOT treats the directory we pass as the root
// for this one lookup. ".." at that directory stays there, and an absolute
// symbolic link ("/etc") is read as relative to it, exactly what the
// container, or the guest kernel unpacking the same archive as its
// initramfs, will see after pivot_root. Go's os.Root would also keep us
// inside, but it refuses absolute symbolic links instead of resolving them
// inside the root, which every real root file system holds (lib64 ->
// /lib, ...); RESOLVE_IN_ROOT gives the kernel's own semantics, and no
// user-space walk that could race with the file system.
//
// Only the parent directory of each entry is resolved that way. The entry
// itself is created relative to the parent's descriptor with the *at calls
// and O_NOFOLLOW, so the last component is never followed either: a file
// record over an existing symbolic link replaces the link instead of writing
// through it. Ownership and modes are set on the open descriptor (fchown,
// fchmod), never by name, so a link swapped in between cannot redirect them.
// Hard links are made only between two names of this archive, each resolved
// inside the root. Device nodes, FIFOs and sockets are not created: the
// runtime builds the container's /dev itself (see Init).
//
// The archive's own fields are bounded before they are used: a name is at
// most PATH_MAX bytes, a symbolic link's target too, and a file's data must
// lie inside the archive. (u-root's reader allocates the name's length as
// declared in the header, up to 4 GiB, so the header is checked first.)

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"
)

// Limits on an archive's fields (newc stores each as 8 hex digits, so up to
// 4 GiB). PATH_MAX is the longest path the kernel resolves.
const (
	maxNameLen    = unix.PathMax
	maxLinkTarget = unix.PathMax
	maxDepth      = 256 // path components in one name
	// MaxArchiveSize bounds what Unpack reads: an archive larger than
	// this is refused before anything is written. The kvmlab initramfs
	// is about 18 MB.
	MaxArchiveSize = 2 << 30
)

// ErrUnsafeArchive is returned (wrapped) for an archive whose entries try to
// leave the root or whose headers are out of bounds.
var ErrUnsafeArchive = errors.New("unsafe archive")

// newc header layout (the kernel's Documentation/driver-api/early-userspace/
// buffer-format.rst): the 6-byte magic "070701", then thirteen 8-digit hex
// fields; c_filesize is the 7th field (index 6) and c_namesize the 12th
// (index 11). The name follows, then the data, each padded to 4 bytes.
const (
	newcHeaderLen = 6 + 13*8
	newcMagic     = "070701"
)

func newcField(h []byte, i int) (uint64, error) {
	off := 6 + 8*i
	return strconv.ParseUint(string(h[off:off+8]), 16, 32)
}

// boundedReader checks each newc header before u-root's reader decodes it:
// the name length, and that the data lies inside the archive.
type boundedReader struct {
	ra   io.ReaderAt
	rr   cpio.RecordReader
	size int64
	next int64 // offset of the next header
}

func (b *boundedReader) ReadRecord() (cpio.Record, error) {
	var h [newcHeaderLen]byte
	n, err := b.ra.ReadAt(h[:], b.next)
	if n == 0 && errors.Is(err, io.EOF) {
		return cpio.Record{}, io.EOF // no trailer: the archive just ends
	}
	if n < len(h) {
		return cpio.Record{}, fmt.Errorf("%w: truncated header at offset %d", ErrUnsafeArchive, b.next)
	}
	if string(h[:6]) != newcMagic {
		return cpio.Record{}, fmt.Errorf("not a newc cpio archive: bad magic %q at offset %d (a compressed initramfs must be decompressed first)", h[:6], b.next)
	}
	nameLen, err := newcField(h[:], 11)
	if err != nil {
		return cpio.Record{}, fmt.Errorf("%w: bad name size at offset %d", ErrUnsafeArchive, b.next)
	}
	if nameLen == 0 || nameLen > maxNameLen+1 {
		return cpio.Record{}, fmt.Errorf("%w: name of %d bytes at offset %d (at most %d)", ErrUnsafeArchive, nameLen, b.next, maxNameLen)
	}
	rec, err := b.rr.ReadRecord()
	if err != nil {
		return rec, err
	}
	end := rec.FilePos + int64(rec.FileSize)
	if end > b.size || end < rec.FilePos {
		return cpio.Record{}, fmt.Errorf("%w: %q: %d bytes of data past the end of the archive", ErrUnsafeArchive, rec.Name, end-b.size)
	}
	b.next = (end + 3) &^ 3
	return rec, nil
}

// Unpack extracts the newc cpio archive at archive into dir, which must
// exist. Directories, regular files, hard links and symbolic links are
// created with their modes (and owners, when run as root); device nodes,
// FIFOs and sockets are skipped. Every path is resolved inside dir as if dir
// were "/" (see the comment at the top of this file), and an entry whose
// name leaves the root ("../x") makes the whole archive refused with
// ErrUnsafeArchive, before or after other entries were written: the caller
// removes dir on error.
func Unpack(archive, dir string) error {
	// O_NONBLOCK: opening a FIFO would otherwise wait for a writer
	// before the check below could refuse it. It changes nothing for a
	// regular file.
	f, err := os.OpenFile(archive, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("rootfs: %s: not a regular file (%v): give a cpio archive", archive, st.Mode().Type())
	}
	if st.Size() > MaxArchiveSize {
		return fmt.Errorf("rootfs: %s: %d MiB is larger than the %d MiB an initramfs may be", archive, st.Size()>>20, MaxArchiveSize>>20)
	}
	if err := UnpackReader(f, st.Size(), dir); err != nil {
		return fmt.Errorf("rootfs: %s: %w", archive, err)
	}
	return nil
}

// UnpackReader is Unpack on an archive of size bytes read through ra.
func UnpackReader(ra io.ReaderAt, size int64, dir string) error {
	rootFD, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unpack: open root %s: %w", dir, err)
	}
	defer unix.Close(rootFD)
	u := &unpacker{
		root:   rootFD,
		asRoot: os.Geteuid() == 0,
		links:  map[inode]string{},
	}
	rr := &boundedReader{ra: ra, rr: cpio.Newc.Reader(ra), size: size}
	if err := cpio.ForEachRecord(rr, u.entry); err != nil {
		return err
	}
	return u.finish()
}

// inode identifies a file across the records of one archive: newc repeats
// a hard-linked file's record under each name with the same numbers.
type inode struct{ ino, major, minor uint64 }

type unpacker struct {
	root   int // O_PATH descriptor of the new root
	asRoot bool
	links  map[inode]string // first name of each multiply-linked file
	dirs   []dirMode        // applied last, so a read-only directory is still filled
}

type dirMode struct {
	name string
	mode uint32
	uid  int
	gid  int
}

// resolveHow is the lookup every path goes through: inside the root, with no
// /proc magic links (which point anywhere), and without crossing into
// another mount.
var resolveHow = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openIn opens name, resolved inside the root.
func (u *unpacker) openIn(name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat2(u.root, name, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_CLOEXEC),
			Resolve: uint64(resolveHow),
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a rename raced with the lookup; try again
		}
		if errors.Is(err, unix.ENOSYS) {
			return -1, fmt.Errorf("openat2: this kernel has none (Linux 5.6 or newer is needed to unpack safely): %w", err)
		}
		return fd, err
	}
}

// parent returns a descriptor of the directory that will hold name, creating
// missing directories on the way (archives often list a file before, or
// without, its directory), and the last component.
func (u *unpacker) parent(name string) (int, string, error) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := u.openIn(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil {
		return fd, base, nil
	}
	if err != unix.ENOENT {
		return -1, "", fmt.Errorf("%s: %w", dir, err)
	}
	// Walk from the root, making each missing component.
	comps := strings.Split(dir, "/")
	cur, err := u.openIn(".", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", err
	}
	for i, c := range comps {
		next, err := u.openIn(strings.Join(comps[:i+1], "/"), unix.O_PATH|unix.O_DIRECTORY)
		if err == unix.ENOENT {
			// Something missing: make it, unless the name exists as
			// something else (a dangling link, say).
			var st unix.Stat_t
			if serr := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil {
				unix.Close(cur)
				return -1, "", fmt.Errorf("%s: not a directory inside the root (a %s)", strings.Join(comps[:i+1], "/"), typeName(st.Mode))
			}
			if merr := unix.Mkdirat(cur, c, 0o755); merr != nil && merr != unix.EEXIST {
				unix.Close(cur)
				return -1, "", fmt.Errorf("mkdir %s: %w", strings.Join(comps[:i+1], "/"), merr)
			}
			next, err = u.openIn(strings.Join(comps[:i+1], "/"), unix.O_PATH|unix.O_DIRECTORY)
		}
		unix.Close(cur)
		if err != nil {
			return -1, "", fmt.Errorf("%s: %w", strings.Join(comps[:i+1], "/"), err)
		}
		cur = next
	}
	return cur, base, nil
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}

// clearName removes what stands at base in dirfd, as the kernel's initramfs
// unpacker does before creating an entry: a later record replaces an earlier
// one of the same name. It never follows a link (unlinkat removes the link)
// and removes only an empty directory.
func clearName(dirfd int, base string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	flags := 0
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	return unix.Unlinkat(dirfd, base, flags)
}

func (u *unpacker) entry(r cpio.Record) error {
	name := r.Name // already made relative to "/" and cleaned by cpio.Normalize
	if name == "." || name == "" {
		return nil // the root itself: it exists
	}
	if name == ".." || strings.HasPrefix(name, "../") || strings.HasPrefix(name, "/") {
		return fmt.Errorf("%w: entry %q would land outside the root", ErrUnsafeArchive, r.Name)
	}
	if strings.Count(name, "/") >= maxDepth {
		return fmt.Errorf("%w: entry %q is more than %d directories deep", ErrUnsafeArchive, truncate(name), maxDepth)
	}
	kind := r.Mode & unix.S_IFMT
	switch kind {
	case unix.S_IFDIR, unix.S_IFREG, unix.S_IFLNK:
	default:
		return nil // devices, FIFOs, sockets: the runtime makes /dev itself
	}
	pfd, base, err := u.parent(name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(pfd)
	switch kind {
	case unix.S_IFDIR:
		err = u.mkdir(pfd, base, name, r)
	case unix.S_IFLNK:
		err = u.symlink(pfd, base, r)
	default:
		err = u.file(pfd, base, name, r)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (u *unpacker) owner(r cpio.Record) (int, int) { return int(r.UID), int(r.GID) }

func (u *unpacker) mkdir(pfd int, base, name string, r cpio.Record) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	if err == unix.EEXIST {
		var st unix.Stat_t
		if serr := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := clearName(pfd, base); err != nil {
				return err
			}
			err = unix.Mkdirat(pfd, base, 0o700)
		} else {
			err = nil // the directory is there already: keep its contents
		}
	}
	if err != nil {
		return err
	}
	uid, gid := u.owner(r)
	u.dirs = append(u.dirs, dirMode{name, uint32(r.Mode) & 0o7777, uid, gid})
	return nil
}

func (u *unpacker) symlink(pfd int, base string, r cpio.Record) error {
	if r.FileSize > maxLinkTarget {
		return fmt.Errorf("%w: link target of %d bytes", ErrUnsafeArchive, r.FileSize)
	}
	target := make([]byte, r.FileSize)
	if _, err := r.ReadAt(target, 0); err != nil && !(errors.Is(err, io.EOF) && len(target) == 0) {
		return fmt.Errorf("read link target: %w", err)
	}
	if err := clearName(pfd, base); err != nil {
		return err
	}
	// The target is stored as written: a link is only a string until
	// something resolves it, and everything that resolves it during the
	// unpack does so inside the root.
	if err := unix.Symlinkat(string(target), pfd, base); err != nil {
		return err
	}
	if u.asRoot {
		uid, gid := u.owner(r)
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	return nil
}

func (u *unpacker) file(pfd int, base, name string, r cpio.Record) error {
	if err := clearName(pfd, base); err != nil {
		return err
	}
	// A file with more than one name: newc repeats the record under each,
	// and the data comes once (GNU cpio puts it on the last). The first
	// name is created; later ones are linked to it, both resolved inside
	// the root, so a link can only join two names of this archive.
	key := inode{r.Ino, r.Major, r.Minor}
	if r.NLink > 1 {
		if first, ok := u.links[key]; ok {
			ofd, obase, err := u.parent(first)
			if err != nil {
				return fmt.Errorf("hard link to %s: %w", first, err)
			}
			err = unix.Linkat(ofd, obase, pfd, base, 0)
			unix.Close(ofd)
			if err != nil {
				return fmt.Errorf("hard link to %s: %w", first, err)
			}
			if r.FileSize == 0 {
				return nil
			}
			return u.writeData(pfd, base, unix.O_WRONLY|unix.O_TRUNC, r)
		}
		u.links[key] = name
	}
	return u.writeData(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, r)
}

func (u *unpacker) writeData(pfd int, base string, flags int, r cpio.Record) error {
	fd, err := unix.Openat(pfd, base, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	n, err := io.Copy(f, io.NewSectionReader(r, 0, int64(r.FileSize)))
	if err != nil {
		return err
	}
	if uint64(n) != r.FileSize {
		return fmt.Errorf("%w: %d of %d bytes of data", ErrUnsafeArchive, n, r.FileSize)
	}
	return u.setMode(fd, r)
}

// setMode sets owner, then mode, on an open descriptor: chown clears the
// set-user-ID bit, so the mode goes last.
func (u *unpacker) setMode(fd int, r cpio.Record) error {
	if u.asRoot {
		uid, gid := u.owner(r)
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, uint32(r.Mode)&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// finish gives directories their modes and owners, deepest first, once
// nothing more is written into them. Each is reopened inside the root
// without following a final link: a directory that a later record replaced
// by something else is skipped.
func (u *unpacker) finish() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		fd, err := u.openIn(d.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if err != nil {
			if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
				continue
			}
			return fmt.Errorf("%s: %w", d.name, err)
		}
		err = u.setMode(fd, cpio.Record{Info: cpio.Info{Mode: uint64(d.mode), UID: uint64(d.uid), GID: uint64(d.gid)}})
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
