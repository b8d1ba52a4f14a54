package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoServer means nothing listens at the path: no socket there, or a
// socket whose kvmlab is gone.
var ErrNoServer = errors.New("no kvmlab listens there")

// ReplyTimeout bounds how long Call waits for its reply. A snapshot of a
// large guest takes seconds, and the server may be busy with another
// client first; a VMM that says nothing for this long is stuck.
const ReplyTimeout = 5 * time.Minute

// Call connects to the control socket at path, sends req and returns the
// reply, and the reply's line as the server sent it (for --json).
//
// A snapshot is written into a file the client creates, not the VMM: a
// running kvmlab is confined by seccomp and opens no files, and a path
// relative to the client's directory means what its user meant. Call
// creates an empty temporary file (mode 0600: a snapshot holds all of
// guest RAM) beside req.Path, passes its descriptor with the request
// (SCM_RIGHTS), and renames it to req.Path when the reply is ok, or
// removes it: an existing file is only replaced by a complete snapshot.
func Call(path string, req Request) (Reply, []byte, error) {
	if fi, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Reply{}, nil, fmt.Errorf("%w: %s does not exist", ErrNoServer, path)
		}
		return Reply{}, nil, err
	} else if fi.Mode()&os.ModeSocket == 0 {
		return Reply{}, nil, fmt.Errorf("%w: %s is not a socket", ErrNoServer, path)
	}
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return Reply{}, nil, fmt.Errorf("%w: %s is a stale socket (its kvmlab has stopped)", ErrNoServer, path)
		}
		return Reply{}, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ReplyTimeout))
	var oob []byte
	var tmp *os.File
	if req.Cmd == CmdSnapshot {
		if tmp, err = snapshotTemp(req.Path); err != nil {
			return Reply{}, nil, err
		}
		defer func() {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name()) // gone already when renamed
		}()
		oob = unix.UnixRights(int(tmp.Fd()))
	}
	if _, _, err := c.(*net.UnixConn).WriteMsgUnix(encodeLine(req), oob, nil); err != nil {
		return Reply{}, nil, fmt.Errorf("sending the request: %w", err)
	}
	line, err := readLine(bufio.NewReader(c), MaxRequest)
	if err != nil {
		return Reply{}, nil, fmt.Errorf("reading the reply: %w (did kvmlab stop?)", err)
	}
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return Reply{}, nil, fmt.Errorf("the reply is not JSON: %w", err)
	}
	if tmp != nil && r.OK {
		if err := tmp.Sync(); err != nil {
			return r, line, fmt.Errorf("snapshot %s: %w", req.Path, err)
		}
		if err := os.Rename(tmp.Name(), req.Path); err != nil {
			return r, line, fmt.Errorf("snapshot: putting it in place: %w", err)
		}
	}
	return r, line, nil
}

// ErrSnapshotFile is wrapped when the snapshot's file cannot be created.
var ErrSnapshotFile = errors.New("cannot write the snapshot there")

// snapshotTemp creates the empty file a snapshot to path is written into,
// in path's directory so that the final rename stays on one file system.
func snapshotTemp(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s exists and is not a regular file: choose another name", ErrSnapshotFile, path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotFile, err)
	}
	return f, nil
}

// Human is the reply to cmd as text for a terminal.
func (r Reply) Human(cmd string) string {
	if !r.OK {
		return "error: " + r.Error + "\n"
	}
	var b strings.Builder
	state := func() {
		if r.Paused != nil && *r.Paused {
			b.WriteString("paused\n")
		} else {
			b.WriteString("running\n")
		}
	}
	switch cmd {
	case CmdPause, CmdResume:
		state()
	case CmdSnapshot:
		if s := r.Snapshot; s != nil {
			fmt.Fprintf(&b, "snapshot: %s, %d bytes in %v", s.Path, s.Bytes, time.Duration(s.DurationNS).Round(time.Millisecond))
			if s.RAMBytes > 0 {
				fmt.Fprintf(&b, " (%.1f MiB of the guest's %d MiB of RAM; the guest was stopped %v)",
					float64(s.SavedRAMBytes)/(1<<20), s.RAMBytes>>20, time.Duration(s.PausedNS).Round(time.Millisecond))
			}
			b.WriteString("; the machine is ")
		}
		state()
	case CmdStats:
		if r.Stats != nil {
			r.Stats.write(&b)
		}
	case CmdQuit:
		b.WriteString("quitting\n")
	default:
		b.WriteString("ok\n")
	}
	return b.String()
}

// write prints s as a small report: the same facts as run --stats.
func (s *Stats) write(b *strings.Builder) {
	state := "running"
	if s.Paused {
		state = "paused"
	}
	fmt.Fprintf(b, "%s for %v, %d VM exits reached kvmlab\n", state, time.Duration(s.RanNS).Round(time.Millisecond), s.TotalExits)
	table := func(title string, m map[string]uint64) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintf(b, "%s:\n", title)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if m[keys[i]] != m[keys[j]] {
				return m[keys[i]] > m[keys[j]]
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			fmt.Fprintf(b, "  %12d  %s\n", m[k], k)
		}
	}
	table("exits by reason", s.ExitsByReason)
	table("accesses by device", s.AccessesByDevice)
	fmt.Fprintf(b, "memory: guest RAM %d MiB, %d MiB of it resident; VMM process RSS %d MiB\n",
		s.GuestRAM>>20, s.GuestResident>>20, s.RSSBytes>>20)
}
