package emuhost

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// The emulated host's root file system is an initramfs: a cpio archive in
// the "newc" format, which the Linux kernel unpacks into RAM before it runs
// /init (the kernel's Documentation/driver-api/early-userspace/
// buffer-format.rst). Each entry is a 110-byte ASCII header (the magic
// "070701" and 13 fields of 8 hex digits: inode, mode, uid, gid, nlink,
// mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
// check), the NUL-terminated name and the data, each padded to 4 bytes; an
// entry named "TRAILER!!!" ends the archive.
//
// u-root's pkg/cpio encodes those records (the same library
// container.Unpack reads them with), so this file holds no format code of
// its own. What it adds is what an initramfs built by a program needs and
// the library leaves to its caller:
//
//   - Parent directories. The kernel does not create missing directories
//     while unpacking: a file "a/b/c" whose "a/b" came before it in no entry
//     is silently dropped. Every entry's ancestors are written first.
//   - Inode numbers. The kernel makes hard links of regular files that
//     share an inode number and have nlink > 1, and GNU cpio does the
//     same; a distinct number per entry keeps every file one of its own.
//   - Reproducibility. uid, gid and mtime are 0, so the same input makes
//     the same archive.
//   - Names written once. u-root's newc writer keeps the first record of a
//     name and silently drops later ones; here a second directory of the
//     same name is a no-op, and any other repeated name is an error, so a
//     file can never quietly lose to an earlier one.

// Unix file type bits of the mode field, as in <sys/stat.h>.
const (
	modeDir     = cpio.S_IFDIR
	modeRegular = cpio.S_IFREG
	modeSymlink = cpio.S_IFLNK
	modeCharDev = cpio.S_IFCHR
)

// CPIOWriter writes an initramfs: a cpio archive in the "newc" format.
// Parent directories of every entry are created automatically (mode 0755)
// when the archive has not got them yet. Entries carry uid 0, gid 0 and
// mtime 0, so the same input gives the same archive. Close writes the
// trailer; it does not close the underlying writer.
type CPIOWriter struct {
	buf   *bufio.Writer
	w     cpio.RecordWriter
	ino   uint64
	names map[string]bool // every name written; true for directories
	done  bool
}

// NewCPIOWriter returns a writer that writes a newc archive to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	// u-root's writer issues a write per header, name and padding: buffer
	// them, as a file underneath would otherwise see a system call each.
	buf := bufio.NewWriter(w)
	return &CPIOWriter{buf: buf, w: cpio.Newc.Writer(buf), ino: 1,
		names: map[string]bool{".": true, "": true}}
}

// cleanName turns an absolute or relative path into an archive name:
// cleaned, without leading "/". The root itself is rejected.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(path.Clean("/"+name), "/")
	if n == "" {
		return "", fmt.Errorf("cpio: invalid entry name %q", name)
	}
	return n, nil
}

// permBits converts the permission part of an os.FileMode, including the
// setuid, setgid and sticky bits, to the Unix mode bits.
func permBits(m os.FileMode) uint64 {
	bits := uint64(m.Perm())
	if m&os.ModeSetuid != 0 {
		bits |= cpio.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		bits |= cpio.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		bits |= cpio.S_ISVTX
	}
	return bits
}

// write numbers and writes one record named n (already clean, parents
// written). A directory's nlink is 2 (itself and its "."), anything
// else's 1.
func (c *CPIOWriter) write(n string, rec cpio.Record) error {
	if c.done {
		return errors.New("cpio: write after Close")
	}
	isDir := rec.Mode&cpio.S_IFMT == modeDir
	if dir, ok := c.names[n]; ok {
		if dir && isDir {
			return nil // Dir of a directory already there
		}
		return fmt.Errorf("cpio: %s is already in the archive", n)
	}
	// newc stores the size in 8 hex digits; the library would truncate
	// a larger one and write a corrupt archive.
	if rec.FileSize > 0xFFFFFFFF {
		return fmt.Errorf("cpio: %s: size %d does not fit the newc format (4 GiB max)", n, rec.FileSize)
	}
	rec.Name = n
	rec.Ino = c.ino
	rec.NLink = 1
	if isDir {
		rec.NLink = 2
	}
	if err := c.w.WriteRecord(rec); err != nil {
		return fmt.Errorf("cpio: %s: %w", n, err)
	}
	c.ino++
	c.names[n] = isDir
	return nil
}

// parents makes sure every ancestor directory of name is in the archive.
func (c *CPIOWriter) parents(name string) error {
	dir := path.Dir(name)
	if isDir, ok := c.names[dir]; ok {
		if !isDir {
			return fmt.Errorf("cpio: %s: its parent %s is in the archive and not a directory", name, dir)
		}
		return nil
	}
	if err := c.parents(dir); err != nil {
		return err
	}
	return c.write(dir, cpio.Directory(dir, 0o755))
}

// add writes rec under name, after its parents.
func (c *CPIOWriter) add(name string, rec cpio.Record) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if c.done {
		return errors.New("cpio: write after Close")
	}
	if err := c.parents(n); err != nil {
		return err
	}
	return c.write(n, rec)
}

// Dir adds a directory. Adding a directory that is already in the archive
// (for example one created as a parent) is a no-op.
func (c *CPIOWriter) Dir(name string, perm os.FileMode) error {
	return c.add(name, cpio.Directory(name, permBits(perm)))
}

// File adds a regular file with the given contents.
func (c *CPIOWriter) File(name string, perm os.FileMode, data []byte) error {
	return c.add(name, cpio.StaticRecord(data, cpio.Info{Mode: modeRegular | permBits(perm)}))
}

// readerAtOnly hides the file's Close from u-root's writer, which closes a
// record's reader when it implements io.Closer: FileFrom closes its own.
type readerAtOnly struct{ io.ReaderAt }

// FileFrom adds a regular file whose contents are read from hostPath on this
// machine (streamed, not loaded in memory). A perm of 0 keeps the host
// file's permissions.
func (c *CPIOWriter) FileFrom(name string, perm os.FileMode, hostPath string) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("cpio: %s is not a regular file", hostPath)
	}
	if perm == 0 {
		perm = st.Mode()
	}
	// The writer reads the file to its end and fails when that is not
	// FileSize bytes: a file that grew or shrank meanwhile is an error,
	// not a header that lies about its data.
	rec := cpio.Record{
		ReaderAt: readerAtOnly{f},
		Info:     cpio.Info{Mode: modeRegular | permBits(perm), FileSize: uint64(st.Size())},
	}
	if err := c.add(name, rec); err != nil {
		return fmt.Errorf("archiving %s: %w", hostPath, err)
	}
	return nil
}

// Symlink adds a symbolic link name pointing to target.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.add(name, cpio.Symlink(name, target))
}

// CharDevice adds a character device node (for example /dev/console, 5:1).
func (c *CPIOWriter) CharDevice(name string, perm os.FileMode, major, minor uint32) error {
	return c.add(name, cpio.CharDev(name, permBits(perm), uint64(major), uint64(minor)))
}

// Close writes the trailer entry and flushes. It does not close the
// underlying writer.
func (c *CPIOWriter) Close() error {
	if c.done {
		return nil
	}
	// cpio.WriteTrailer would write nlink 0; GNU cpio writes 1, and so
	// did the writer this package had before, so archives stay byte for
	// byte what they were. The kernel reads only the trailer's name.
	trailer := cpio.TrailerRecord
	trailer.NLink = 1
	if err := c.w.WriteRecord(trailer); err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	c.done = true
	return c.buf.Flush()
}
