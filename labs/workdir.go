package labs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// The learner's directory: `lab start` fills it, `lab check` reads it.
// Two rules keep the learner's work safe and the errors clear: start never
// writes over a file that is there (a second `lab start` into the same
// directory would wipe an evening's work), and check refuses, in one line,
// a directory that does not hold the lab's files, rather than grading an
// empty answer as wrong.

var (
	// ErrExists is returned by Start when DIR already holds a file of
	// the lab.
	ErrExists = errors.New("already holds the lab's files")
	// ErrNoWork is returned by CheckDir for a DIR without the lab's
	// files.
	ErrNoWork = errors.New("does not hold the lab's files")
)

// names returns the keys of m, sorted.
func names(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// localPath turns a lab's slash-separated relative name into a path under
// dir, refusing anything that would leave it (a bug in a lab, not input).
func localPath(dir, name string) (string, error) {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || strings.HasPrefix(name, "../") || name == ".." {
		return "", fmt.Errorf("labs: file name %q is not a plain relative path", name)
	}
	return filepath.Join(dir, filepath.FromSlash(name)), nil
}

// Start writes the lab's starting point into dir, creating dir if it is
// missing. It writes nothing if any of the lab's files is already there,
// and returns the names it wrote.
func (l *Lab) Start(dir string) ([]string, error) {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("%s is a file, not a directory: pick a directory for lab %d", dir, l.N)
	}
	files := l.Files()
	ns := names(files)
	var there []string
	for _, n := range ns {
		p, err := localPath(dir, n)
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(p); err == nil {
			there = append(there, n)
		}
	}
	if len(there) > 0 {
		return nil, fmt.Errorf("%s %w (%s): kvmlab never writes over your work; pick another directory, or move them away", dir, ErrExists, strings.Join(there, ", "))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, n := range ns {
		p, _ := localPath(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
		}
		// O_EXCL: a file that appeared since the check above is still
		// not overwritten.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("writing %s: %w", p, err)
		}
		_, werr := f.Write(files[n])
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("writing %s: %w", p, werr)
		}
	}
	return ns, nil
}

// CheckDir says, in one line, why dir cannot be graded for l: it is not a
// directory, or it lacks a file of the lab's starting point (README.md
// aside, which a learner may well delete).
func (l *Lab) CheckDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: start lab %d there first with 'kvmlab lab start %d %s'", dir, l.N, l.N, dir)
	case err != nil:
		return fmt.Errorf("%s: %w", dir, err)
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory: give the directory 'kvmlab lab start %d' wrote", dir, l.N)
	}
	for _, n := range names(l.Files()) {
		if n == "README.md" {
			continue
		}
		p, err := localPath(dir, n)
		if err != nil {
			return err
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s %w: %s is missing (is this lab %d's directory? 'kvmlab lab start %d %s' writes them)", dir, ErrNoWork, n, l.N, l.N, dir)
		}
	}
	return nil
}

// filesUnder returns the regular files of an embedded tree, keyed by their
// path below root.
func filesUnder(fsys fs.FS, root string) map[string][]byte {
	m := map[string][]byte{}
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		m[strings.TrimPrefix(p, root+"/")] = b
		return nil
	})
	if err != nil || len(m) == 0 {
		// The tree is compiled in: a failure is a bug in this package,
		// which its tests catch.
		panic(fmt.Sprintf("labs: embedded %s: %v (%d files)", root, err, len(m)))
	}
	return m
}
