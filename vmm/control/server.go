package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handler is the machine as the control socket sees it. kvmlab run
// adapts a vmm.Machine to it; tests use a fake, so the protocol is tested
// without KVM. Each method is called from the server's goroutine, one at a
// time.
type Handler interface {
	Pause() error
	Resume() error
	// Snapshot saves the machine into out, an empty regular file the
	// client created and passed with the request (SCM_RIGHTS), and
	// which it renames to path once the reply says ok. The machine
	// stays paused afterwards when stayPaused, and is resumed
	// otherwise. path is for messages only: the VMM opens nothing.
	Snapshot(path string, out *os.File, stayPaused bool) (SnapshotResult, error)
	Stats() (Stats, error)
	// Paused reports the machine's state, for replies.
	Paused() bool
	// Quit stops the machine (kvmlab run then ends, status 0).
	Quit()
}

// IdleTimeout is how long a client may take to send its next request
// line (and to read a reply) before the server drops it and serves the
// next: a client that connects and says nothing, or sends half a line,
// holds the socket for at most this long.
const IdleTimeout = 10 * time.Second

// Listener is a listening control socket.
type Listener struct {
	path  string
	ln    *net.UnixListener
	dirfd int    // the socket's directory, opened O_PATH for the unlink at Close
	base  string // the socket's name in it

	mu     sync.Mutex
	conn   net.Conn // the client being served
	closed bool
	done   chan struct{} // closed when Serve returns
	idle   time.Duration
}

// ErrInUse means the socket path belongs to something else: a live
// socket, or a file that is not a socket.
var ErrInUse = errors.New("control socket path in use")

// Listen creates the socket at path, mode 0600, and listens on it. It
// refuses a path that exists, unless it is a stale socket (nobody
// listens: a kvmlab that was killed), which it replaces.
//
// Binding a Unix socket creates its file with mode 0777 minus the umask,
// and whoever can write the file can connect. To leave no instant in
// which another user could, the socket is bound in a fresh directory of
// mode 0700 beside path, set to 0600 there, and only then renamed to
// path (rename is atomic, and RENAME_NOREPLACE keeps it from replacing
// a file that appeared meanwhile). Changing the process's umask instead
// would race with every other goroutine creating files.
func Listen(path string) (*Listener, error) {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("%s: a Unix socket path has at most %d bytes: use a shorter path", path, len(unix.RawSockaddrUnix{}.Path)-1)
	}
	stale, err := checkFree(path)
	if err != nil {
		return nil, err
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	tmpDir, err := os.MkdirTemp(dir, ".kvmlab-control-")
	if err != nil {
		return nil, fmt.Errorf("creating the socket in %s: %w", dir, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("creating the socket: %w", err)
	}
	// The file is renamed away and removed by Close through dirfd:
	// the listener must not unlink by name (a system call the running,
	// seccomp-confined VMM does not have).
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Listener, error) {
		_ = ln.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("creating the socket: %w", err))
	}
	if stale {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("%s: removing the stale socket: %w", path, err))
		}
	}
	if err := renameNoReplace(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fail(fmt.Errorf("%w: %s appeared while kvmlab created its socket: remove it or choose another path", ErrInUse, path))
		}
		return fail(fmt.Errorf("%s: %w", path, err))
	}
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = os.Remove(path)
		return fail(fmt.Errorf("%s: %w", dir, err))
	}
	return &Listener{path: path, ln: ln, dirfd: dirfd, base: base, done: make(chan struct{}), idle: IdleTimeout}, nil
}

// checkFree says whether path may become the socket: it does not exist
// (false), or it is a stale socket (true). Anything else is ErrInUse.
func checkFree(path string) (stale bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return false, fmt.Errorf("%w: %s exists and is not a socket: remove it or choose another path", ErrInUse, path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return false, fmt.Errorf("%w: %s: another kvmlab (or another program) listens there: stop it or choose another path", ErrInUse, path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true, nil // its server is gone
	}
	return false, fmt.Errorf("%w: %s: %v: remove it or choose another path", ErrInUse, path, err)
}

// renameNoReplace renames old to new unless new exists. renameat2's
// RENAME_NOREPLACE is not on every file system; link(2), which also
// refuses an existing name, stands in there.
func renameNoReplace(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if err = os.Link(oldPath, newPath); err == nil {
			return os.Remove(oldPath)
		}
		return err
	}
	if errors.Is(err, unix.EEXIST) {
		return os.ErrExist
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: err}
	}
	return nil
}

// Path is where the socket is.
func (l *Listener) Path() string { return l.path }

// DirFD is the descriptor of the socket's directory through which Close
// unlinks it (a seccomp filter allows unlinkat on it and no other).
func (l *Listener) DirFD() int { return l.dirfd }

// Serve answers clients, one after the other, until Close. Requests are
// handled in the order they arrive, each to the end (a snapshot included)
// before the next is read.
func (l *Listener) Serve(h Handler) {
	defer close(l.done)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() {
				return
			}
			// EMFILE and the like: wait a little rather than spin.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conn = c
		l.mu.Unlock()
		quit := serveConn(c, h, l.idle)
		l.mu.Lock()
		l.conn = nil
		l.mu.Unlock()
		_ = c.Close()
		if quit {
			h.Quit()
		}
	}
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// serveConn answers the requests of one client until it hangs up, breaks
// the protocol beyond repair (a line longer than MaxRequest) or idles. It
// reports whether the client asked to quit: the caller stops the machine
// after the reply went out, so the client sees it.
func serveConn(c net.Conn, h Handler, idle time.Duration) (quit bool) {
	fr := &fdReader{c: c}
	defer fr.closeAll()
	r := bufio.NewReaderSize(fr, 4096)
	for {
		_ = c.SetDeadline(time.Now().Add(idle))
		line, err := readLine(r, MaxRequest)
		if errors.Is(err, errTooLong) {
			_, _ = c.Write(encodeLine(Reply{Error: fmt.Sprintf("%v: request longer than %d bytes: closing the connection", ErrRequest, MaxRequest)}))
			return false
		}
		if err != nil {
			if !errors.Is(err, io.EOF) || len(line) == 0 {
				return false // hung up, idle, or half a line then EOF
			}
		}
		req, perr := ParseRequest(line)
		var reply Reply
		if perr != nil {
			reply = Reply{Error: perr.Error()}
		} else {
			var out *os.File
			if req.Cmd == CmdSnapshot {
				out = fr.take(req.Path)
			}
			reply = Do(h, req, out)
			if out != nil {
				_ = out.Close()
			}
		}
		if r.Buffered() == 0 {
			// Descriptors not claimed by the request they came with
			// are not kept for later ones.
			fr.closeAll()
		}
		_ = c.SetDeadline(time.Now().Add(idle))
		if _, werr := c.Write(encodeLine(reply)); werr != nil {
			return perr == nil && req.Cmd == CmdQuit
		}
		if perr == nil && req.Cmd == CmdQuit {
			return true
		}
		if err != nil {
			return false // the last line had no newline: EOF after it
		}
	}
}

var errTooLong = errors.New("line too long")

// readLine reads up to a newline, at most max bytes before it, and
// returns the line without the newline. A longer line is errTooLong
// (what was read of it is dropped, never buffered whole).
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max+1 {
			return nil, errTooLong
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

// Do runs one parsed request against h and builds its reply. out is the
// file a snapshot request came with (nil: none).
func Do(h Handler, req Request, out *os.File) Reply {
	fail := func(err error) Reply { return Reply{Error: err.Error(), Paused: boolp(h.Paused())} }
	switch req.Cmd {
	case CmdPause:
		if err := h.Pause(); err != nil {
			return fail(err)
		}
		return Reply{OK: true, Paused: boolp(h.Paused())}
	case CmdResume:
		if err := h.Resume(); err != nil {
			return fail(err)
		}
		return Reply{OK: true, Paused: boolp(h.Paused())}
	case CmdSnapshot:
		if out == nil {
			return fail(fmt.Errorf("snapshot: the request came without the file's descriptor: use kvmlab control SOCKET snapshot FILE, which creates FILE and passes it (a running, seccomp-confined kvmlab opens no files)"))
		}
		start := time.Now()
		res, err := h.Snapshot(req.Path, out, req.Paused)
		if err != nil {
			return fail(err)
		}
		if res.DurationNS == 0 {
			res.DurationNS = durationNS(time.Since(start))
		}
		if res.Path == "" {
			res.Path = req.Path
		}
		return Reply{OK: true, Snapshot: &res, Paused: boolp(h.Paused())}
	case CmdStats:
		st, err := h.Stats()
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{OK: true, Stats: &st}
	case CmdQuit:
		return Reply{OK: true} // the caller quits once the reply is out
	}
	return Reply{Error: fmt.Sprintf("%v: unknown command %.40q", ErrRequest, req.Cmd)}
}

// Close stops serving (dropping the client being served), removes the
// socket file and waits for Serve to return, if it was started. Safe to
// call more than once; it makes only calls a seccomp-confined VMM has
// (close, unlinkat on DirFD).
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if l.conn != nil {
		_ = l.conn.Close()
	}
	l.mu.Unlock()
	err := l.ln.Close()
	if uerr := unix.Unlinkat(l.dirfd, l.base, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
		err = errors.Join(err, fmt.Errorf("removing %s: %w", l.path, uerr))
	}
	_ = unix.Close(l.dirfd)
	return err
}

// Wait blocks until Serve has returned (after Close).
func (l *Listener) Wait() { <-l.done }

// maxFDs is how many descriptors one message may carry; the kernel closes
// any beyond the room given for them (MSG_CTRUNC).
const maxFDs = 1

// fdReader reads a client's bytes and collects the descriptors passed
// along with them (SCM_RIGHTS, unix(7)): a snapshot request brings the
// file to write.
type fdReader struct {
	c   net.Conn
	fds []int
}

func (f *fdReader) Read(p []byte) (int, error) {
	uc, ok := f.c.(*net.UnixConn)
	if !ok {
		return f.c.Read(p)
	}
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	n, oobn, _, _, err := uc.ReadMsgUnix(p, oob)
	if n < 0 {
		n = 0 // ReadMsgUnix reports -1 on some errors: io.Reader must not
	}
	if n == 0 && err == nil && len(p) > 0 {
		err = io.EOF // recvmsg's 0 on a stream socket: the client hung up
	}
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			if perr != nil {
				break
			}
			fds, rerr := unix.ParseUnixRights(&m)
			if rerr != nil {
				continue
			}
			f.fds = append(f.fds, fds...)
		}
		for len(f.fds) > maxFDs { // never hold more than one
			_ = unix.Close(f.fds[len(f.fds)-1])
			f.fds = f.fds[:len(f.fds)-1]
		}
	}
	return n, err
}

// take hands over the oldest passed descriptor as a file (nil: none).
func (f *fdReader) take(name string) *os.File {
	if len(f.fds) == 0 {
		return nil
	}
	fd := f.fds[0]
	f.fds = f.fds[1:]
	return os.NewFile(uintptr(fd), name)
}

func (f *fdReader) closeAll() {
	for _, fd := range f.fds {
		_ = unix.Close(fd)
	}
	f.fds = nil
}
