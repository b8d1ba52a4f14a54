package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		line string
		want Request
		err  string // substring of the error; "" for success
	}{
		{`{"cmd":"pause"}`, Request{Cmd: "pause"}, ""},
		{`  {"cmd":"resume"}  `, Request{Cmd: "resume"}, ""},
		{`{"cmd":"stats"}`, Request{Cmd: "stats"}, ""},
		{`{"cmd":"quit"}`, Request{Cmd: "quit"}, ""},
		{`{"cmd":"snapshot","path":"/tmp/vm.snap"}`, Request{Cmd: "snapshot", Path: "/tmp/vm.snap"}, ""},
		{`{"cmd":"snapshot","path":"vm.snap","paused":true}`, Request{Cmd: "snapshot", Path: "vm.snap", Paused: true}, ""},
		{``, Request{}, "empty line"},
		{`pause`, Request{}, "not a JSON request"},
		{`{"cmd":"pause"`, Request{}, "not a JSON request"},
		{`{"cmd":"pause"}{"cmd":"quit"}`, Request{}, "more than one JSON value"},
		{`{"cmd":"reboot"}`, Request{}, "unknown command"},
		{`{}`, Request{}, "no \"cmd\""},
		{`{"cmd":"pause","pauesd":true}`, Request{}, "unknown field"},
		{`{"cmd":"pause","path":"x"}`, Request{}, "takes no arguments"},
		{`{"cmd":"snapshot"}`, Request{}, "needs \"path\""},
		{`{"cmd":"snapshot","path":"a\u0000b"}`, Request{}, "not a usable file name"},
		{`{"cmd":5}`, Request{}, "not a JSON request"},
		{`[1,2]`, Request{}, "not a JSON request"},
		{"\xff\xfe\x00junk", Request{}, "not UTF-8"},
		{strings.Repeat(" ", MaxRequest+1) + "x", Request{}, "longer than"},
	}
	for _, tc := range tests {
		name := tc.line
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tc.line))
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseRequest = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrRequest) {
				t.Fatalf("ParseRequest error = %v; want one containing %q", err, tc.err)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error of %d bytes: it must not quote the request back", len(err.Error()))
			}
		})
	}
}

// FuzzRequest: no line makes the parser panic, and whatever it accepts is
// a known command with only that command's arguments, which encodes and
// parses back to the same request.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{`{"cmd":"pause"}`, `{"cmd":"snapshot","path":"x","paused":true}`, `{"cmd":"stats"}`, `{`, "\x00\xff", `{"cmd":"quit","x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseRequest(line)
		if err != nil {
			if !errors.Is(err, ErrRequest) {
				t.Fatalf("error %v does not wrap ErrRequest", err)
			}
			return
		}
		switch r.Cmd {
		case CmdSnapshot:
			if r.Path == "" {
				t.Fatal("snapshot accepted without a path")
			}
		case CmdPause, CmdResume, CmdStats, CmdQuit:
			if r.Path != "" || r.Paused {
				t.Fatalf("%s accepted with arguments: %+v", r.Cmd, r)
			}
		default:
			t.Fatalf("accepted unknown command %q", r.Cmd)
		}
		again, err := ParseRequest(encodeLine(r))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, again, err)
		}
	})
}

// fakeMachine is a Handler that records what it was asked.
type fakeMachine struct {
	mu     sync.Mutex
	paused bool
	quit   chan struct{}
	calls  []string
}

func newFake() *fakeMachine { return &fakeMachine{quit: make(chan struct{})} }

func (f *fakeMachine) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}
func (f *fakeMachine) Pause() error  { f.record("pause"); f.setPaused(true); return nil }
func (f *fakeMachine) Resume() error { f.record("resume"); f.setPaused(false); return nil }
func (f *fakeMachine) setPaused(p bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = p
}
func (f *fakeMachine) Paused() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused
}
func (f *fakeMachine) Snapshot(path string, out *os.File, stay bool) (SnapshotResult, error) {
	f.record("snapshot " + filepath.Base(path))
	if filepath.Base(path) == "fail" {
		return SnapshotResult{}, errors.New("snapshot: disk full")
	}
	n, err := out.WriteString("machine state\n")
	if err != nil {
		return SnapshotResult{}, err
	}
	f.setPaused(stay)
	return SnapshotResult{Bytes: int64(n)}, nil
}
func (f *fakeMachine) Stats() (Stats, error) {
	f.record("stats")
	return Stats{TotalExits: 42, ExitsByReason: map[string]uint64{"IO": 40, "HLT": 2}, Paused: f.Paused()}, nil
}
func (f *fakeMachine) Quit() { f.record("quit"); close(f.quit) }

// serve starts a server on a fresh socket with the given idle timeout.
func serve(t *testing.T, h Handler, idle time.Duration) *Listener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	l.idle = idle
	go l.Serve(h)
	t.Cleanup(func() {
		_ = l.Close()
		l.Wait()
	})
	return l
}

// dial connects a raw client.
func dial(t *testing.T, l *Listener) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", l.Path())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute)) // a hang detector
	return c, bufio.NewReader(c)
}

// exchange writes raw and reads one reply line.
func exchange(t *testing.T, c net.Conn, r *bufio.Reader, raw string) Reply {
	t.Helper()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("no reply to %.60q: %v", raw, err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("reply %q is not JSON: %v", line, err)
	}
	return rep
}

func TestListenSocketMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the socket (no temporary left)", len(ents))
	}
	// A second Listen on the live socket is refused.
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Errorf("Listen on a live socket: %v, want ErrInUse", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestListenRefusesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("the refused path was changed: %q", b)
	}
	if _, err := Listen(filepath.Join(dir, strings.Repeat("x", 120))); err == nil || !strings.Contains(err.Error(), "shorter path") {
		t.Errorf("Listen on a too long path: %v", err)
	}
	// A stale socket: bound, then its listener gone without unlinking.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	l, err := Listen(stale)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	go l.Serve(newFake())
	if rep, _, err := Call(stale, Request{Cmd: CmdStats}); err != nil || !rep.OK {
		t.Errorf("stats through the replaced socket: %+v, %v", rep, err)
	}
}

func TestServerCommands(t *testing.T) {
	f := newFake()
	l := serve(t, f, IdleTimeout)
	c, r := dial(t, l)
	tests := []struct {
		raw        string
		ok         bool
		errPart    string
		wantPaused *bool
	}{
		{`{"cmd":"pause"}` + "\n", true, "", boolp(true)},
		{`{"cmd":"stats"}` + "\n", true, "", nil},
		{`{"cmd":"resume"}` + "\n", true, "", boolp(false)},
		{`{"cmd":"snapshot","path":"vm.snap","paused":true}` + "\n", false, "without the file's descriptor", nil},
		{"not json\n", false, "not a JSON request", nil},
		{`{"cmd":"launch"}` + "\n", false, "unknown command", nil},
		{"\x00\x01\x02\xff\n", false, "not UTF-8", nil},
		{"\n", false, "empty line", nil},
	}
	for _, tc := range tests {
		rep := exchange(t, c, r, tc.raw)
		if rep.OK != tc.ok || !strings.Contains(rep.Error, tc.errPart) {
			t.Errorf("%q: reply %+v, want ok=%v error containing %q", tc.raw, rep, tc.ok, tc.errPart)
		}
		if tc.wantPaused != nil && (rep.Paused == nil || *rep.Paused != *tc.wantPaused) {
			t.Errorf("%q: paused %v, want %v", tc.raw, rep.Paused, *tc.wantPaused)
		}
	}
	rep := exchange(t, c, r, `{"cmd":"stats"}`+"\n")
	if rep.Stats == nil || rep.Stats.TotalExits != 42 || rep.Stats.ExitsByReason["IO"] != 40 || rep.Stats.Paused {
		t.Errorf("stats reply %+v", rep.Stats)
	}
	if got := strings.Join(f.calls, ","); got != "pause,stats,resume,stats" {
		t.Errorf("the machine was asked %s", got)
	}
}

// A huge line gets an error and the connection is closed; the server
// goes on with the next client.
func TestServerHugeLine(t *testing.T) {
	l := serve(t, newFake(), IdleTimeout)
	c, r := dial(t, l)
	go func() { _, _ = c.Write([]byte(strings.Repeat("A", 4*MaxRequest))) }()
	line, err := r.ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), "longer than") {
		t.Fatalf("reply to a huge line: %q, %v", line, err)
	}
	if _, err := r.ReadBytes('\n'); err == nil {
		t.Error("the connection stays open after a huge line")
	}
	if rep, _, err := Call(l.Path(), Request{Cmd: CmdStats}); err != nil || !rep.OK {
		t.Errorf("next client: %+v, %v", rep, err)
	}
}

// Clients that connect and say nothing, or send half a line, are dropped
// after the idle timeout, and the client waiting behind them is served.
func TestServerIdleClients(t *testing.T) {
	for _, tc := range []struct{ name, send string }{{"silent", ""}, {"half a line", `{"cmd":"pa`}} {
		t.Run(tc.name, func(t *testing.T) {
			l := serve(t, newFake(), 200*time.Millisecond)
			c, r := dial(t, l)
			if tc.send != "" {
				_, _ = c.Write([]byte(tc.send))
			}
			// Served after the idle one is dropped (bounded by the
			// client's own timeout, ReplyTimeout).
			rep, _, err := Call(l.Path(), Request{Cmd: CmdPause})
			if err != nil || !rep.OK {
				t.Fatalf("waiting client: %+v, %v", rep, err)
			}
			if _, err := r.ReadBytes('\n'); err == nil {
				t.Error("the idle client got a reply")
			}
		})
	}
}

// Two clients at once are both served, one after the other.
func TestServerTwoClients(t *testing.T) {
	f := newFake()
	l := serve(t, f, IdleTimeout)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, cmd := range []string{CmdPause, CmdStats} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, _, err := Call(l.Path(), Request{Cmd: cmd})
			if err == nil && !rep.OK {
				err = errors.New(rep.Error)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// quit is answered first, then the machine is told to stop.
func TestServerQuit(t *testing.T) {
	f := newFake()
	l := serve(t, f, IdleTimeout)
	rep, raw, err := Call(l.Path(), Request{Cmd: CmdQuit})
	if err != nil || !rep.OK || string(raw) != `{"ok":true}` {
		t.Fatalf("quit: %+v %q %v", rep, raw, err)
	}
	select {
	case <-f.quit:
	case <-time.After(time.Minute):
		t.Fatal("the machine was not told to quit")
	}
}

func TestCallNoServer(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Call(filepath.Join(dir, "none"), Request{Cmd: CmdStats}); !errors.Is(err, ErrNoServer) {
		t.Errorf("no socket: %v", err)
	}
	stale := filepath.Join(dir, "stale")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, _, err := Call(stale, Request{Cmd: CmdStats}); !errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "stale") {
		t.Errorf("stale socket: %v", err)
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		cmd  string
		r    Reply
		want []string
	}{
		{CmdPause, Reply{OK: true, Paused: boolp(true)}, []string{"paused"}},
		{CmdResume, Reply{OK: true, Paused: boolp(false)}, []string{"running"}},
		{CmdSnapshot, Reply{OK: true, Paused: boolp(false), Snapshot: &SnapshotResult{Path: "a.snap", Bytes: 99, DurationNS: 2e6}}, []string{"a.snap", "99 bytes", "2ms", "running"}},
		{CmdStats, Reply{OK: true, Stats: &Stats{TotalExits: 7, ExitsByReason: map[string]uint64{"IO": 5, "HLT": 2}, GuestRAM: 512 << 20}}, []string{"7 VM exits", "5  IO\n", "512 MiB"}},
		{CmdStats, Reply{Error: "boom"}, []string{"error: boom"}},
	}
	for _, tc := range tests {
		got := tc.r.Human(tc.cmd)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", tc.cmd, got, w)
			}
		}
	}
}

// A snapshot is written into a file the client creates and passes: it
// appears under its name only when the snapshot worked, and an existing
// file is left alone by a failed one.
func TestSnapshotPassesTheFile(t *testing.T) {
	f := newFake()
	l := serve(t, f, IdleTimeout)
	dir := t.TempDir()
	good := filepath.Join(dir, "vm.snap")
	rep, _, err := Call(l.Path(), Request{Cmd: CmdSnapshot, Path: good, Paused: true})
	if err != nil || !rep.OK || rep.Snapshot == nil || rep.Snapshot.Bytes != 14 || rep.Paused == nil || !*rep.Paused {
		t.Fatalf("snapshot: %+v, %v", rep, err)
	}
	if b, err := os.ReadFile(good); err != nil || string(b) != "machine state\n" {
		t.Errorf("snapshot file: %q, %v", b, err)
	}
	if fi, _ := os.Stat(good); fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file mode %v, want 0600", fi.Mode().Perm())
	}
	bad := filepath.Join(dir, "fail")
	if err := os.WriteFile(bad, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _, err = Call(l.Path(), Request{Cmd: CmdSnapshot, Path: bad})
	if err != nil || rep.OK || !strings.Contains(rep.Error, "disk full") {
		t.Fatalf("failing snapshot: %+v, %v", rep, err)
	}
	if b, _ := os.ReadFile(bad); string(b) != "old" {
		t.Errorf("a failed snapshot changed the existing file: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d files in the directory, want 2 (no partial file left)", len(ents))
	}
	if _, _, err := Call(l.Path(), Request{Cmd: CmdSnapshot, Path: dir}); !errors.Is(err, ErrSnapshotFile) {
		t.Errorf("snapshot onto a directory: %v", err)
	}
}
