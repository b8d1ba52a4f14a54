package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// A cpio "newc" archive (what the Linux kernel unpacks as an initramfs) is a
// sequence of entries, each:
//
//	header   110 ASCII bytes: the magic "070701" and 13 fields, each 8 hex digits
//	name     the path (no leading "/"), NUL-terminated, padded with NULs so
//	         that header+name is a multiple of 4 bytes
//	data     the file contents (or a symlink's target), padded to 4 bytes
//
// and ends with an entry named "TRAILER!!!". The 13 header fields are: inode,
// mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
// rdevminor, namesize (including the NUL) and check (0 for "newc").

const (
	cpioMagic   = "070701"
	cpioTrailer = "TRAILER!!!"

	// File type bits of the mode field, as in <sys/stat.h>.
	cpioTypeDir     = 0o040000
	cpioTypeRegular = 0o100000
	cpioTypeSymlink = 0o120000
	cpioTypeCharDev = 0o020000
)

// CPIOWriter writes a cpio archive in the "newc" format. Parent directories
// of every entry are created automatically (mode 0755) when the archive has
// not got them yet. Entries carry uid 0, gid 0 and mtime 0, so the same input
// gives the same archive. Close writes the trailer; it does not close the
// underlying writer.
type CPIOWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	done bool
}

// NewCPIOWriter returns a writer that writes a newc archive to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: bufio.NewWriter(w), ino: 1, dirs: map[string]bool{".": true, "": true}}
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
func permBits(m os.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

func (c *CPIOWriter) writeHeader(name string, mode, nlink uint32, size int64, rdevMajor, rdevMinor uint32) error {
	if c.done {
		return errors.New("cpio: write after Close")
	}
	if size < 0 || size > 0xFFFFFFFF {
		return fmt.Errorf("cpio: %s: size %d does not fit the newc format (4 GiB max)", name, size)
	}
	ino := uint32(0)
	if name != cpioTrailer {
		ino = c.ino
		c.ino++
	}
	fields := []uint32{
		ino, mode, 0 /*uid*/, 0 /*gid*/, nlink, 0, /*mtime*/
		uint32(size), 0, 0 /*devmajor, devminor*/, rdevMajor, rdevMinor,
		uint32(len(name) + 1), 0, /*check*/
	}
	var b strings.Builder
	b.WriteString(cpioMagic)
	for _, f := range fields {
		fmt.Fprintf(&b, "%08X", f)
	}
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, err := c.w.WriteString(b.String())
	return err
}

// pad writes the NULs that align data of length n to 4 bytes.
func (c *CPIOWriter) pad(n int64) error {
	if r := n % 4; r != 0 {
		_, err := c.w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// parents makes sure every ancestor directory of name is in the archive.
func (c *CPIOWriter) parents(name string) error {
	dir := path.Dir(name)
	if c.dirs[dir] {
		return nil
	}
	if err := c.parents(dir); err != nil {
		return err
	}
	return c.dir(dir, 0o755)
}

func (c *CPIOWriter) dir(name string, perm os.FileMode) error {
	if err := c.writeHeader(name, cpioTypeDir|permBits(perm), 2, 0, 0, 0); err != nil {
		return err
	}
	c.dirs[name] = true
	return nil
}

// Dir adds a directory. Adding a directory that is already in the archive
// (for example one created as a parent) is a no-op.
func (c *CPIOWriter) Dir(name string, perm os.FileMode) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if c.dirs[n] {
		return nil
	}
	if err := c.parents(n); err != nil {
		return err
	}
	return c.dir(n, perm)
}

// File adds a regular file with the given contents.
func (c *CPIOWriter) File(name string, perm os.FileMode, data []byte) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := c.parents(n); err != nil {
		return err
	}
	if err := c.writeHeader(n, cpioTypeRegular|permBits(perm), 1, int64(len(data)), 0, 0); err != nil {
		return err
	}
	if _, err := c.w.Write(data); err != nil {
		return err
	}
	return c.pad(int64(len(data)))
}

// FileFrom adds a regular file whose contents are read from hostPath on this
// machine (streamed, not loaded in memory). A perm of 0 keeps the host
// file's permissions.
func (c *CPIOWriter) FileFrom(name string, perm os.FileMode, hostPath string) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
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
	if err := c.parents(n); err != nil {
		return err
	}
	if err := c.writeHeader(n, cpioTypeRegular|permBits(perm), 1, st.Size(), 0, 0); err != nil {
		return err
	}
	copied, err := io.Copy(c.w, f)
	if err != nil {
		return fmt.Errorf("cpio: copying %s: %w", hostPath, err)
	}
	if copied != st.Size() {
		return fmt.Errorf("cpio: %s changed size while being archived", hostPath)
	}
	return c.pad(copied)
}

// Symlink adds a symbolic link name pointing to target.
func (c *CPIOWriter) Symlink(name, target string) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := c.parents(n); err != nil {
		return err
	}
	if err := c.writeHeader(n, cpioTypeSymlink|0o777, 1, int64(len(target)), 0, 0); err != nil {
		return err
	}
	if _, err := c.w.WriteString(target); err != nil {
		return err
	}
	return c.pad(int64(len(target)))
}

// CharDevice adds a character device node (for example /dev/console, 5:1).
func (c *CPIOWriter) CharDevice(name string, perm os.FileMode, major, minor uint32) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := c.parents(n); err != nil {
		return err
	}
	return c.writeHeader(n, cpioTypeCharDev|permBits(perm), 1, 0, major, minor)
}

// Close writes the trailer entry and flushes. It does not close the
// underlying writer.
func (c *CPIOWriter) Close() error {
	if c.done {
		return nil
	}
	if err := c.writeHeader(cpioTrailer, 0, 1, 0, 0, 0); err != nil {
		return err
	}
	c.done = true
	return c.w.Flush()
}
