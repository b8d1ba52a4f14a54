package userfile

// Output files: a trace, a report. A run that is refused must leave an
// existing file as it was, so an output is written under a temporary name
// beside its path and renamed over it (rename(2) replaces the old file in
// one step) only when the caller commits: for kvmlab run, once the machine
// exists and the first exit can happen. A refused run removes the
// temporary file and the old one is untouched.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Output is an output file being written. Write to it as to any file;
// Commit puts it in place, Abort throws it away, Close closes it (and, if
// it was never committed, throws it away).
type Output struct {
	*os.File
	path      string // where it goes (symlinks resolved)
	tmp       string // its temporary name; "" when written in place
	committed bool   // in place at path
	closed    bool
}

// CheckOutput says, creating nothing, whether path can be an output file:
// its directory exists, and path is not a directory.
func CheckOutput(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return &Error{Path: path, Err: ErrNotExist, Msg: fmt.Sprintf("directory %s does not exist: create it or pick another path", dir)}
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return &Error{Path: path, Err: ErrKind, Msg: "is a directory: name a file"}
	}
	if unix.Access(dir, unix.W_OK) != nil {
		return &Error{Path: path, Err: ErrPermission, Msg: fmt.Sprintf("directory %s is not writable: pick another path", dir)}
	}
	return nil
}

var tmpSeq atomic.Uint64

// CreateOutput starts an output file for path. When path exists and is not
// a regular file (a FIFO such as bash's >(jq ...), /dev/stdout, /dev/null)
// it is opened and written in place: there is nothing there to keep, and a
// rename would replace the pipe or device node itself.
func CreateOutput(path string) (*Output, error) {
	if err := CheckOutput(path); err != nil {
		return nil, err
	}
	target := path
	if t, err := filepath.EvalSymlinks(path); err == nil {
		target = t // write to what the symlink points at, keep the symlink
	}
	if st, err := os.Stat(target); err == nil && !st.Mode().IsRegular() {
		f, err := os.OpenFile(target, os.O_WRONLY, 0)
		if err != nil {
			return nil, &Error{Path: path, Err: err, Msg: err.Error()}
		}
		return &Output{File: f, path: target, committed: true}, nil
	}
	// O_EXCL: the name is ours alone. 0o666 less the umask, as os.Create.
	for {
		tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".kvmlab-"+
			strconv.Itoa(os.Getpid())+"-"+strconv.FormatUint(tmpSeq.Add(1), 10))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, &Error{Path: path, Err: err, Msg: err.Error()}
		}
		return &Output{File: f, path: target, tmp: tmp}, nil
	}
}

// Commit puts the file in place of path. Writes may go on after it. If the
// rename fails the file is still the temporary one, which Close or Abort
// removes.
func (o *Output) Commit() error {
	if o.committed || o.closed {
		return nil
	}
	if err := os.Rename(o.tmp, o.path); err != nil {
		return &Error{Path: o.path, Err: err, Msg: fmt.Sprintf("cannot put the output in place as %s: %v", o.path, err)}
	}
	o.committed = true
	return nil
}

// Abort closes the file and removes it unless it was committed: path is
// left as it was.
func (o *Output) Abort() {
	if o.closed {
		return
	}
	o.closed = true
	_ = o.File.Close()
	if !o.committed {
		_ = os.Remove(o.tmp)
	}
}

// Close closes the file; one never committed is removed.
func (o *Output) Close() error {
	if o.closed {
		return nil
	}
	if !o.committed {
		o.Abort()
		return nil
	}
	o.closed = true
	return o.File.Close()
}

// WriteOutput writes data to path as one step: path holds either its old
// content or all of data, never a part.
func WriteOutput(path string, data []byte) error {
	o, err := CreateOutput(path)
	if err != nil {
		return err
	}
	if _, err := o.Write(data); err != nil {
		o.Abort()
		return err
	}
	if err := o.Commit(); err != nil {
		o.Abort()
		return err
	}
	return o.Close()
}
