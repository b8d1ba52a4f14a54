package container

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestUnpack(t *testing.T) {
	// An archive with each kind of entry an initramfs holds, and one
	// trying to escape.
	archive := filepath.Join(t.TempDir(), "test.cpio")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	records := []cpio.Record{
		cpio.Directory("etc", 0o755),
		cpio.StaticFile("etc/hello", "hi\n", 0o640),
		cpio.Directory("bbin", 0o755),
		cpio.StaticFile("bbin/bb", "#!/bin/true\n", 0o755),
		cpio.Symlink("bbin/ls", "bb"),
		cpio.Directory("tmp", 0o1777),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.StaticFile("../escaped", "out\n", 0o644),
	}
	if err := cpio.WriteRecordsAndDirs(w, records); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	parent := t.TempDir()
	dir := filepath.Join(parent, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
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
		{"tmp", os.ModeDir | os.ModeSticky | 0o777, ""},
		{"dev/null", 0, ""},     // device nodes are skipped
		{"../escaped", 0, ""},   // outside the root: skipped
		{"dev", os.ModeDir, ""}, // the parent of a skipped node may exist; any mode
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
			if tc.path == "dev" {
				if err == nil && !st.IsDir() {
					t.Errorf("dev is %v", st.Mode())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.mode
			if os.Geteuid() != 0 {
				// Without root the cpio package stops at the plain
				// permission bits (it sets set-id and sticky bits only
				// after chown, which fails).
				want &^= os.ModeSticky
			}
			if st.Mode() != want {
				t.Errorf("mode %v, want %v", st.Mode(), want)
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
}

func TestUnescapeMountinfo(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/tmp/plain", "/tmp/plain"},
		{`/tmp/with\040space`, "/tmp/with space"},
		{`/a\011tab\134back`, "/a\ttab\\back"},
		{`/trailing\04`, `/trailing\04`}, // too short to be an escape
		{`/not\999octal`, `/not\999octal`},
	}
	for _, tc := range tests {
		if got := unescapeMountinfo(tc.in); got != tc.want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDefaultInitrd(t *testing.T) {
	xdg, home := t.TempDir(), t.TempDir()
	inXDG := filepath.Join(xdg, "kvmlab", "default", "initramfs.cpio")
	inHome := filepath.Join(home, ".cache", "kvmlab", "default", "initramfs.cpio")
	tests := []struct {
		name    string
		xdg     string
		present []string
		want    string
	}{
		{"XDG_CACHE_HOME set, file there", xdg, []string{inXDG, inHome}, inXDG},
		{"XDG_CACHE_HOME set, file only in HOME", xdg, []string{inHome}, inHome},
		{"XDG_CACHE_HOME set, no file: name the XDG path", xdg, nil, inXDG},
		{"XDG_CACHE_HOME unset", "", []string{inHome}, inHome},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []string{inXDG, inHome} {
				os.Remove(p)
			}
			for _, p := range tc.present {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("XDG_CACHE_HOME", tc.xdg)
			t.Setenv("HOME", home)
			if got := DefaultInitrd(); got != tc.want {
				t.Errorf("DefaultInitrd() = %s, want %s", got, tc.want)
			}
		})
	}
}
