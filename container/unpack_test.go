package container

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"
)

// archiveOf encodes records, then the trailer, as a newc archive. It writes
// each record as given: u-root's writer drops a second record of the same
// name, which is exactly what a hostile archive holds, so the test encodes
// its own (the kernel's Documentation/driver-api/early-userspace/
// buffer-format.rst).
func archiveOf(t testing.TB, records ...cpio.Record) []byte {
	t.Helper()
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	records = append(records, cpio.Record{Info: cpio.Info{Name: cpio.Trailer}})
	for _, r := range records {
		var data []byte
		if r.ReaderAt != nil {
			data = make([]byte, r.FileSize)
			if _, err := r.ReadAt(data, 0); err != nil && len(data) > 0 {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			r.Ino, r.Mode, r.UID, r.GID, r.NLink, r.MTime, len(data),
			r.Major, r.Minor, r.Rmajor, r.Rminor, len(r.Name)+1, 0)
		b.WriteString(r.Name + "\x00")
		pad()
		b.Write(data)
		pad()
	}
	return b.Bytes()
}

// linked is one name of a regular file with two names (newc hard links: the
// same inode number in each record).
func linked(name, data string, ino uint64) cpio.Record {
	r := cpio.StaticFile(name, data, 0o644)
	r.Ino, r.NLink = ino, 2
	return r
}

// sandbox makes parent/root (to unpack into) beside parent/outside, which
// holds a file and a directory standing for the host's own files.
func sandbox(t testing.TB) (parent, root, outside string) {
	parent = t.TempDir()
	root = filepath.Join(parent, "root")
	outside = filepath.Join(parent, "outside")
	for _, d := range []string{root, outside, filepath.Join(outside, "dir")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "target"), []byte("host file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return parent, root, outside
}

// hostView lists everything under parent except root: path, type, mode,
// owner, size and content or link target. Any write that escaped the root
// changes it.
func hostView(t testing.TB, parent string) string {
	var lines []string
	err := filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(parent, p)
		if rel == "root" {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d %d", rel, info.Mode(), st.Uid, st.Gid, info.Size())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestUnpack(t *testing.T) {
	// An archive with each kind of entry an initramfs holds.
	archive := filepath.Join(t.TempDir(), "test.cpio")
	data := archiveOf(t,
		cpio.Directory("etc", 0o755),
		cpio.StaticFile("etc/hello", "hi\n", 0o640),
		cpio.Directory("bbin", 0o755),
		cpio.StaticFile("bbin/bb", "#!/bin/true\n", 0o755),
		cpio.Symlink("bbin/ls", "bb"),
		cpio.Symlink("bin", "/bbin"), // absolute: means the root's /bbin
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("ro", 0o555), // filled below, made read-only last
		cpio.StaticFile("ro/file", "x", 0o444),
		cpio.StaticFile("deep/er/file", "parents made\n", 0o600),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		linked("hl/one", "", 42), // GNU cpio: the data comes with the last name
		linked("hl/two", "shared\n", 42),
		cpio.StaticFile("bin/through-link", "in bbin\n", 0o644), // resolved inside the root
	)
	if err := os.WriteFile(archive, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, dir, _ := sandbox(t)
	if err := Unpack(archive, dir); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path    string
		mode    os.FileMode // type and permission bits; 0 means absent
		content string      // file content or link target
	}{
		{"etc", os.ModeDir | 0o755, ""},
		{"etc/hello", 0o640, "hi\n"},
		{"bbin/bb", 0o755, "#!/bin/true\n"},
		{"bbin/ls", os.ModeSymlink | 0o777, "bb"},
		{"bin", os.ModeSymlink | 0o777, "/bbin"},
		{"bbin/through-link", 0o644, "in bbin\n"},
		{"tmp", os.ModeDir | os.ModeSticky | 0o777, ""},
		{"ro", os.ModeDir | 0o555, ""},
		{"ro/file", 0o444, "x"},
		{"deep/er", os.ModeDir | 0o755, ""},
		{"deep/er/file", 0o600, "parents made\n"},
		{"dev/null", 0, ""}, // device nodes are skipped
		{"hl/one", 0o644, "shared\n"},
		{"hl/two", 0o644, "shared\n"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			p := filepath.Join(dir, tc.path)
			st, err := os.Lstat(p)
			if tc.mode == 0 {
				if err == nil {
					t.Errorf("%s exists (mode %v), want it skipped", tc.path, st.Mode())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode() != tc.mode {
				t.Errorf("mode %v, want %v", st.Mode(), tc.mode)
			}
			switch {
			case st.Mode()&os.ModeSymlink != 0:
				if target, _ := os.Readlink(p); target != tc.content {
					t.Errorf("link to %q, want %q", target, tc.content)
				}
			case st.Mode().IsRegular():
				if b, _ := os.ReadFile(p); string(b) != tc.content {
					t.Errorf("content %q, want %q", b, tc.content)
				}
			}
		})
	}
	one, err1 := os.Stat(filepath.Join(dir, "hl/one"))
	two, err2 := os.Stat(filepath.Join(dir, "hl/two"))
	if err1 != nil || err2 != nil || !os.SameFile(one, two) {
		t.Errorf("hl/one and hl/two are not one file (%v, %v)", err1, err2)
	}
}

// rawHeader is a newc header with the given file and name sizes, followed
// by the name; for archives the writer would not produce.
func rawHeader(fileSize, nameSize uint32, name string) []byte {
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		1, unix.S_IFREG|0o644, 0, 0, 1, 0, fileSize, 0, 0, 0, 0, nameSize, 0)
	return append([]byte(h), name+"\x00"...)
}

// hostileArchives are archives built to write outside the root, or to make
// the unpacker misbehave. Each is unpacked in a sandbox whose sibling
// directory must come out unchanged; want is what the unpack must return.
func hostileArchives(t testing.TB, outside string) []struct {
	name    string
	archive []byte
	wantErr error // nil: must succeed; ErrUnsafeArchive or errAny
	inRoot  string
} {
	target := filepath.Join(outside, "target")
	relOut, _ := filepath.Rel("/", outside)
	return []struct {
		name    string
		archive []byte
		wantErr error
		inRoot  string // a path that must exist in the root afterwards
	}{
		{"symlink to a host directory, then a file through it", archiveOf(t,
			cpio.Symlink("x", outside),
			cpio.StaticFile("x/f", "pwned\n", 0o644)), errAny, ""},
		{"symlink to /etc, then passwd through it: lands in the root's etc", archiveOf(t,
			cpio.Directory("etc", 0o755),
			cpio.Symlink("x", "/etc"),
			cpio.StaticFile("x/passwd", "pwned\n", 0o644)), nil, "etc/passwd"},
		{"relative symlink climbing out", archiveOf(t,
			cpio.Symlink("up", "../../../../../../../../.."),
			cpio.StaticFile("up/"+relOut+"/f", "pwned\n", 0o644)), nil, relOut + "/f"},
		{"dot-dot name", archiveOf(t, cpio.StaticFile("../f", "pwned\n", 0o644)), ErrUnsafeArchive, ""},
		{"dot-dot inside a name", archiveOf(t, cpio.StaticFile("a/../../f", "pwned\n", 0o644)), ErrUnsafeArchive, ""},
		{"absolute name: made relative to the root", archiveOf(t, cpio.StaticFile(outside+"/abs", "in root\n", 0o644)), nil, relOut + "/abs"},
		{"file over a symlink to a host file", archiveOf(t,
			cpio.Symlink("f", target),
			cpio.StaticFile("f", "pwned\n", 0o777)), nil, "f"},
		{"symlink record alone: its mode must not reach the target", archiveOf(t,
			cpio.Symlink("g", target)), nil, "g"},
		{"directory replaced by a symlink, then a file through it", archiveOf(t,
			cpio.Directory("d", 0o755),
			cpio.Symlink("d", outside),
			cpio.StaticFile("d/f", "pwned\n", 0o644)), errAny, ""},
		{"hard link whose first name became a symlink", archiveOf(t,
			linked("h", "", 7),
			cpio.Symlink("h", target),
			linked("h2", "pwned\n", 7)), errAny, ""},
		{"magic link through /proc", archiveOf(t,
			cpio.Symlink("p", "/proc/self/root"+outside),
			cpio.StaticFile("p/f", "pwned\n", 0o644)), errAny, ""},
		{"device node", archiveOf(t, cpio.CharDev("dev/sda", 0o666, 8, 0)), nil, ""},
		{"four-gigabyte name size", rawHeader(0, 0xffffffff, "x"), ErrUnsafeArchive, ""},
		{"data past the end", rawHeader(1<<20, 2, "x"), ErrUnsafeArchive, ""},
		{"truncated header", []byte("070701000000"), ErrUnsafeArchive, ""},
		{"too deep", archiveOf(t, cpio.StaticFile(strings.Repeat("a/", maxDepth)+"f", "x", 0o644)), ErrUnsafeArchive, ""},
		{"link target longer than PATH_MAX", archiveOf(t, cpio.Symlink("l", strings.Repeat("a", unix.PathMax+1))), ErrUnsafeArchive, ""},
	}
}

// errAny: the unpack must fail, for any reason.
var errAny = errors.New("any error")

func TestUnpackHostile(t *testing.T) {
	hostPasswd, _ := os.ReadFile("/etc/passwd")
	_, _, probe := sandbox(t)
	for i, tc := range hostileArchives(t, probe) {
		t.Run(tc.name, func(t *testing.T) {
			// The archives name the sandbox's outside directory:
			// build them again for this test's own sandbox.
			parent, root, outside := sandbox(t)
			tc := hostileArchives(t, outside)[i]
			archive, inRoot := tc.archive, tc.inRoot
			before := hostView(t, parent)
			err := UnpackReader(bytes.NewReader(archive), int64(len(archive)), root)
			switch tc.wantErr {
			case nil:
				if err != nil {
					t.Errorf("unpack: %v, want success", err)
				}
			case errAny:
				if err == nil {
					t.Error("unpack succeeded, want a refusal")
				}
			default:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("unpack: %v, want %v", err, tc.wantErr)
				}
			}
			if after := hostView(t, parent); after != before {
				t.Errorf("a write escaped the root:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if inRoot != "" {
				if _, err := os.Lstat(filepath.Join(root, inRoot)); err != nil {
					t.Errorf("%s not in the root: %v", inRoot, err)
				}
			}
			if b, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(b, hostPasswd) {
				t.Fatal("the host's /etc/passwd changed")
			}
		})
	}
}

// TestUnpackRefusesSpecialFiles: the archive must be a regular file, checked
// on the open descriptor (a FIFO would block, /dev/zero never ends).
func TestUnpackRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/zero", dir} {
		err := Unpack(p, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Unpack(%s) = %v, want 'not a regular file'", p, err)
		}
	}
	// A FIFO with no writer: the check must not wait for one.
	if err := Unpack(fifo, t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Unpack(fifo) = %v, want 'not a regular file'", err)
	}
}

// FuzzUnpack unpacks arbitrary bytes as an archive: it may fail, but it must
// not panic, and nothing outside the root may change.
func FuzzUnpack(f *testing.F) {
	_, _, outside := sandbox(f)
	for _, tc := range hostileArchives(f, outside) {
		f.Add(tc.archive)
	}
	f.Fuzz(func(t *testing.T, archive []byte) {
		parent, root, _ := sandbox(t)
		before := hostView(t, parent)
		_ = UnpackReader(bytes.NewReader(archive), int64(len(archive)), root)
		if after := hostView(t, parent); after != before {
			t.Fatalf("a write escaped the root:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}
