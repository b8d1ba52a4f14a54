package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The control socket (issue 14, item 1): kvmlab run --control SOCK and
// kvmlab control SOCK COMMAND, with the real VMM under its seccomp filter.

// controlCmd runs kvmlab control with args and returns its standard
// output and exit status.
func controlCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(kvmlabBin(t), append([]string{"control"}, args...)...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("kvmlab control %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("kvmlab control %s: status %d: %s%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), strings.TrimSpace(string(out)), strings.TrimSpace(errb.String()))
	return string(out), cmd.ProcessState.ExitCode()
}

// controlStats asks for stats as JSON.
func controlStats(t *testing.T, sock string) map[string]any {
	t.Helper()
	out, code := controlCmd(t, "--json", sock, "stats")
	var reply struct {
		OK    bool           `json:"ok"`
		Stats map[string]any `json:"stats"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil || code != 0 || !reply.OK {
		t.Fatalf("stats: status %d, reply %q (%v)", code, out, err)
	}
	return reply.Stats
}

// rawRequest sends one raw line on its own connection and returns the
// reply line.
func rawRequest(t *testing.T, sock, line string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(cmdTimeout))
	go func() { _, _ = c.Write([]byte(line)) }()
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no reply to %.40q: %v", line, err)
	}
	return reply
}

func TestControl(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	g := bootToShell(t, "run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "256M", "--append", quietCmdline, "--control", sock)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}

	// A second kvmlab on the same socket is refused before it boots.
	out, err := exec.Command(kvmlabBin(t), "run", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"), "--control", sock).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "listens there") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("second kvmlab run --control on a live socket: status %d, %q; want one line and status 2", code, out)
	}

	// A counter on the console, one line every 0.2 s.
	g.send("i=0; while true; do i=$((i+1)); echo tock-$i-; sleep 0.2; done &\n")
	tock := regexp.MustCompile(`tock-(\d+)-`)
	g.expect(tock, cmdTimeout)
	g.expect(tock, cmdTimeout)

	if out, code := controlCmd(t, sock, "pause"); code != 0 || strings.TrimSpace(out) != "paused" {
		t.Fatalf("pause: status %d, %q", code, out)
	}
	// Let the console pass on what the guest wrote before it stopped,
	// then watch: nothing new may appear while paused, and no VM exit
	// may reach kvmlab.
	time.Sleep(time.Second)
	before, s1 := g.output(), controlStats(t, sock)
	time.Sleep(3 * time.Second)
	after, s2 := g.output(), controlStats(t, sock)
	if after != before {
		t.Errorf("the console went on while paused: %q", after[len(before):])
	}
	if s1["paused"] != true || s1["total_exits"] != s2["total_exits"] {
		t.Errorf("while paused: stats said paused=%v, exits %v then %v; want paused and no new exits", s1["paused"], s1["total_exits"], s2["total_exits"])
	}
	last := lastTock(before, tock)
	t.Logf("paused at tock %d; %v exits, unchanged over 3 s", last, s1["total_exits"])

	if out, code := controlCmd(t, sock, "resume"); code != 0 || strings.TrimSpace(out) != "running" {
		t.Fatalf("resume: status %d, %q", code, out)
	}
	g.expect(tock, cmdTimeout)      // perhaps cut off by the pause
	m := g.expect(tock, cmdTimeout) // the next full one
	if n, _ := strconv.Atoi(m[1]); n <= last {
		t.Errorf("after resume the counter printed %d, want more than %d", n, last)
	}

	st := controlStats(t, sock)
	byReason, _ := st["exits_by_reason"].(map[string]any)
	if total, _ := st["total_exits"].(float64); total <= 0 || len(byReason) == 0 || st["paused"] != false {
		t.Errorf("stats after resume: %v; want exits by reason, not paused", st)
	}
	if out, code := controlCmd(t, sock, "stats"); code != 0 || !strings.Contains(out, "exits by reason") {
		t.Errorf("stats for a terminal: status %d, %q", code, out)
	}

	// Bad requests get error replies; kvmlab goes on.
	for _, bad := range []struct{ line, want string }{
		{"junk\n", "not a JSON request"},
		{`{"cmd":"reboot"}` + "\n", "unknown command"},
		{"\x00\x01\xfe\xff\n", "not UTF-8"},
		{strings.Repeat("x", 100<<10), "longer than"},
	} {
		if r := rawRequest(t, sock, bad.line); !strings.Contains(r, `"ok":false`) || !strings.Contains(r, bad.want) {
			t.Errorf("%.30q: reply %q, want an error naming %q", bad.line, r, bad.want)
		}
	}
	if _, code := controlCmd(t, sock, "snapshot"); code != 2 {
		t.Errorf("snapshot without FILE: status %d, want 2", code)
	}
	// A client that connects and never writes holds the socket only
	// until the server's idle timeout: the next client is served.
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	controlStats(t, sock)
	if v := g.value("ALIVE", "echo $((6*7))", cmdTimeout); v != "42" {
		t.Errorf("after the bad requests the shell answered %q, want 42", v)
	}

	// Paused, then quit: the stop releases the parked vCPUs, kvmlab
	// exits 0 and removes its socket.
	if _, code := controlCmd(t, sock, "pause"); code != 0 {
		t.Fatalf("second pause: status %d", code)
	}
	if out, code := controlCmd(t, sock, "quit"); code != 0 || strings.TrimSpace(out) != "quitting" {
		t.Errorf("quit: status %d, %q", code, out)
	}
	if code := g.wait(cmdTimeout); code != 0 {
		t.Errorf("kvmlab exited %d after quit, want 0\n%s", code, g.stderr())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after kvmlab ended: %v", err)
	}
	if _, code := controlCmd(t, sock, "stats"); code != 2 {
		t.Errorf("control without a kvmlab: status %d, want 2", code)
	}
}

// exitCode is a command's exit status from its error (0 for nil).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// lastTock is the highest counter value in out.
func lastTock(out string, re *regexp.Regexp) int {
	last := 0
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if n, _ := strconv.Atoi(m[1]); n > last {
			last = n
		}
	}
	return last
}
