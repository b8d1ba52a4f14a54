package userfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// leftovers lists the temporary files in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.kvmlab-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestOutput(t *testing.T) {
	tests := []struct {
		name   string
		commit bool
		want   string // content of old.json afterwards
	}{
		{"aborted run keeps the old file", false, "old trace\n"},
		{"committed run replaces it", true, "new trace\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "old.json")
			if err := os.WriteFile(p, []byte("old trace\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			o, err := CreateOutput(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := o.WriteString("new "); err != nil {
				t.Fatal(err)
			}
			if got := readString(t, p); got != "old trace\n" {
				t.Fatalf("before commit the file holds %q", got)
			}
			if tt.commit {
				if err := o.Commit(); err != nil {
					t.Fatal(err)
				}
				// Writes go on after the commit, into the same file.
				if _, err := o.WriteString("trace\n"); err != nil {
					t.Fatal(err)
				}
				if err := o.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				o.Abort()
				if err := o.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if got := readString(t, p); got != tt.want {
				t.Errorf("old.json holds %q, want %q", got, tt.want)
			}
			if l := leftovers(t, dir); len(l) != 0 {
				t.Errorf("temporary files left: %v", l)
			}
		})
	}
}

func TestOutputThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.json")
	link := filepath.Join(dir, "link.json")
	if err := os.WriteFile(real, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteOutput(link, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", st.Mode(), err)
	}
	if got := readString(t, real); got != "new" {
		t.Errorf("target holds %q", got)
	}
}

// TestOutputFIFO: a FIFO is written in place, not renamed over.
func TestOutputFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	got := make(chan string)
	go func() {
		b, _ := os.ReadFile(fifo) // the reader the writer's open waits for
		got <- string(b)
	}()
	if err := WriteOutput(fifo, []byte("through the pipe")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "through the pipe" {
		t.Errorf("reader got %q", s)
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v", err)
	}
}

func TestCheckOutput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		path string
		want error
		msg  string
	}{
		{filepath.Join(dir, "new.json"), nil, ""},
		{filepath.Join(dir, "no", "such", "dir.json"), ErrNotExist, "does not exist"},
		{dir, ErrKind, "is a directory"},
	}
	for _, tt := range tests {
		err := CheckOutput(tt.path)
		if tt.want == nil {
			if err != nil {
				t.Errorf("CheckOutput(%s) = %v", tt.path, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("CheckOutput(%s) = %v, want %v with %q", tt.path, err, tt.want, tt.msg)
		}
	}
	if l, _ := filepath.Glob(filepath.Join(dir, "*")); len(l) != 0 {
		t.Errorf("CheckOutput created %v", l)
	}
}
