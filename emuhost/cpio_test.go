package emuhost

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// newcEntry is one entry read back by readNewc.
type newcEntry struct {
	name             string
	ino, mode, nlink uint32
	rdevMaj, rdevMin uint32
	data             []byte
}

// readNewc is an independent reader for the newc format, strict about
// magic, alignment and the trailer.
func readNewc(t *testing.T, b []byte) []newcEntry {
	t.Helper()
	var out []newcEntry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("entry at offset %d is not 4-byte aligned", off)
		}
		if len(b)-off < 110 {
			t.Fatalf("truncated header at offset %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at offset %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("bad header field %d at offset %d: %v", i, off, err)
			}
			return uint32(v)
		}
		e := newcEntry{ino: field(0), mode: field(1), nlink: field(4), rdevMaj: field(9), rdevMin: field(10)}
		size, namesize := int(field(6)), int(field(11))
		if field(12) != 0 { // check field
			t.Fatalf("check field not 0")
		}
		nameStart := off + 110
		name := b[nameStart : nameStart+namesize]
		if name[len(name)-1] != 0 {
			t.Fatalf("name not NUL-terminated at offset %d", off)
		}
		e.name = string(name[:len(name)-1])
		dataStart := (nameStart + namesize + 3) &^ 3
		for _, c := range b[nameStart+namesize : dataStart] {
			if c != 0 {
				t.Fatalf("non-NUL name padding in %s", e.name)
			}
		}
		e.data = b[dataStart : dataStart+size]
		off = (dataStart + size + 3) &^ 3
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func writeTestArchive(t *testing.T) ([]byte, string) {
	t.Helper()
	hostFile := filepath.Join(t.TempDir(), "hostfile")
	if err := os.WriteFile(hostFile, []byte("from the host\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	steps := []error{
		w.Dir("/etc", 0o755),
		w.File("/etc/hello", 0o644, []byte("hello")),     // 5 bytes: needs padding
		w.File("/a/b/c/deep.txt", 0o600, []byte("1234")), // parents created
		w.FileFrom("/bin/tool", 0, hostFile),             // keeps the host's 0750
		w.File("/empty", 0o644, nil),
		w.Symlink("/bin/link", "tool"),
		w.Dir("/a/b", 0o700), // already there: no-op
		w.Dir("/tmp", 0o1777|os.ModeSticky),
		w.File("/suid", 0o755|os.ModeSetuid, []byte("x")),
		w.CharDevice("/dev/console", 0o600, 5, 1),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := w.File("/late", 0o644, nil); err == nil {
		t.Fatal("write after Close succeeded")
	}
	return buf.Bytes(), hostFile
}

func TestCPIOWriterFormat(t *testing.T) {
	b, _ := writeTestArchive(t)
	entries := readNewc(t, b)
	type want struct {
		mode uint32
		data string
	}
	wants := map[string]want{
		"etc":            {0o040755, ""},
		"etc/hello":      {0o100644, "hello"},
		"a":              {0o040755, ""},
		"a/b":            {0o040755, ""},
		"a/b/c":          {0o040755, ""},
		"a/b/c/deep.txt": {0o100600, "1234"},
		"bin":            {0o040755, ""},
		"bin/tool":       {0o100750, "from the host\n"},
		"empty":          {0o100644, ""},
		"bin/link":       {0o120777, "tool"},
		"tmp":            {0o041777, ""},
		"suid":           {0o104755, "x"},
		"dev":            {0o040755, ""},
		"dev/console":    {0o020600, ""},
	}
	var order []string
	inos := map[uint32]bool{}
	for _, e := range entries {
		order = append(order, e.name)
		w, ok := wants[e.name]
		if !ok {
			t.Errorf("unexpected entry %q", e.name)
			continue
		}
		delete(wants, e.name)
		if e.mode != w.mode {
			t.Errorf("%s: mode %o, want %o", e.name, e.mode, w.mode)
		}
		if string(e.data) != w.data {
			t.Errorf("%s: data %q, want %q", e.name, e.data, w.data)
		}
		if inos[e.ino] || e.ino == 0 {
			t.Errorf("%s: inode %d reused or zero", e.name, e.ino)
		}
		inos[e.ino] = true
		if e.name == "dev/console" && (e.rdevMaj != 5 || e.rdevMin != 1) {
			t.Errorf("dev/console: rdev %d:%d, want 5:1", e.rdevMaj, e.rdevMin)
		}
	}
	for name := range wants {
		t.Errorf("missing entry %q", name)
	}
	// Every parent comes before its children (the kernel needs that).
	seen := map[string]bool{}
	for _, n := range order {
		if d := filepath.Dir(n); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", n, d)
		}
		seen[n] = true
	}
}

func TestCPIOWriterRejectsRoot(t *testing.T) {
	w := NewCPIOWriter(&bytes.Buffer{})
	for _, name := range []string{"/", "", ".", "/.."} {
		if err := w.File(name, 0o644, nil); err == nil {
			t.Errorf("File(%q) succeeded", name)
		}
	}
}

// TestCPIOWriterSystemCpio reads the archive back with GNU cpio.
func TestCPIOWriterSystemCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed (apt-get install cpio); the format is checked by TestCPIOWriterFormat")
	}
	b, _ := writeTestArchive(t)
	arch := filepath.Join(t.TempDir(), "a.cpio")
	if err := os.WriteFile(arch, b, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("cpio", "-t", "--quiet", "-F", arch)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	sort.Strings(got)
	want := []string{"a", "a/b", "a/b/c", "a/b/c/deep.txt", "bin", "bin/link", "bin/tool",
		"dev", "dev/console", "empty", "etc", "etc/hello", "suid", "tmp"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cpio -t lists %v, want %v", got, want)
	}

	// Extract everything but the device node (mknod may be forbidden here).
	dest := t.TempDir()
	cmd = exec.Command("cpio", "-i", "--quiet", "-d", "--no-absolute-filenames", "-F", arch, "-f", "dev/console")
	cmd.Dir = dest
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for name, content := range map[string]string{
		"etc/hello": "hello", "a/b/c/deep.txt": "1234", "bin/tool": "from the host\n", "empty": "", "suid": "x",
	} {
		b, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil {
			t.Errorf("extracted %s: %v", name, err)
		} else if string(b) != content {
			t.Errorf("extracted %s = %q, want %q", name, b, content)
		}
	}
	if target, err := os.Readlink(filepath.Join(dest, "bin/link")); err != nil || target != "tool" {
		t.Errorf("bin/link -> %q, %v; want tool", target, err)
	}
	if st, err := os.Stat(filepath.Join(dest, "bin/tool")); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o750 {
		t.Errorf("bin/tool mode %v, want 0750", st.Mode())
	}
}

// TestCPIOWriterRepeatedNames: u-root's newc writer keeps the first record
// of a name and drops later ones without a word; CPIOWriter turns a
// repeated name into an error, except a directory added again.
func TestCPIOWriterRepeatedNames(t *testing.T) {
	tests := []struct {
		name    string
		first   func(*CPIOWriter) error
		second  func(*CPIOWriter) error
		wantErr bool
	}{
		{"dir twice", func(w *CPIOWriter) error { return w.Dir("/d", 0o755) },
			func(w *CPIOWriter) error { return w.Dir("/d/", 0o700) }, false},
		{"dir made as a parent", func(w *CPIOWriter) error { return w.File("/d/f", 0o644, nil) },
			func(w *CPIOWriter) error { return w.Dir("d", 0o755) }, false},
		{"file twice", func(w *CPIOWriter) error { return w.File("/f", 0o644, []byte("1")) },
			func(w *CPIOWriter) error { return w.File("//f", 0o644, []byte("2")) }, true},
		{"dir over a file", func(w *CPIOWriter) error { return w.File("/f", 0o644, nil) },
			func(w *CPIOWriter) error { return w.Dir("/f", 0o755) }, true},
		{"file over a dir", func(w *CPIOWriter) error { return w.Dir("/d", 0o755) },
			func(w *CPIOWriter) error { return w.Symlink("/d", "x") }, true},
		{"file under a file", func(w *CPIOWriter) error { return w.File("/f", 0o644, nil) },
			func(w *CPIOWriter) error { return w.File("/f/g", 0o644, nil) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewCPIOWriter(&buf)
			if err := tt.first(w); err != nil {
				t.Fatalf("first entry: %v", err)
			}
			err := tt.second(w)
			if (err != nil) != tt.wantErr {
				t.Fatalf("second entry: error %v, want an error: %v", err, tt.wantErr)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// Whatever happened, the archive holds each name once.
			seen := map[string]bool{}
			for _, e := range readNewc(t, buf.Bytes()) {
				if seen[e.name] {
					t.Errorf("%s is in the archive twice", e.name)
				}
				seen[e.name] = true
			}
		})
	}
}
