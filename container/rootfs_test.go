package container

import (
	"os"
	"path/filepath"
	"testing"
)

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
