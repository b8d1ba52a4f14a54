package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// guestConsole is a running `kvmlab run` whose serial console the test reads
// and types into through pipes.
type guestConsole struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	out    bytes.Buffer // guest console (kvmlab's stdout)
	errb   bytes.Buffer // kvmlab's own messages (stderr)
	done   chan struct{}
	err    error
	seen   int // offset in out already matched
	start  time.Time
	last   time.Time // when the console last produced output
	first  time.Time // when it first did
	cancel context.CancelFunc
}

func kvmlabBin(t testing.TB) string {
	t.Helper()
	b := os.Getenv("KVMLAB_BIN")
	if b == "" {
		t.Fatal("KVMLAB_BIN is not set: run 'make integration'")
	}
	return b
}

func guestFile(t testing.TB, name string) string {
	t.Helper()
	d := os.Getenv("KVMLAB_GUEST_DIR")
	if d == "" {
		t.Fatal("KVMLAB_GUEST_DIR is not set: run 'make integration'")
	}
	return filepath.Join(d, name)
}

type lockedWriter struct {
	mu   *sync.Mutex
	b    *bytes.Buffer
	tee  io.Writer
	last *time.Time // if set, the time of the latest write
	// first, if set, is set to the time of the first write.
	first *time.Time
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last != nil {
		*w.last = time.Now()
	}
	if w.first != nil && w.first.IsZero() {
		*w.first = time.Now()
	}
	if w.tee != nil {
		_, _ = w.tee.Write(p)
	}
	return w.b.Write(p)
}

// startGuestCmd runs kvmlab with args, through prefix: a wrapper's argv
// ending with kvmlab's path, or just kvmlab's path. The guest console is
// echoed to the test log only when KVMLAB_TEST_ECHO=1 (keeping the emulated
// host's slow console quiet otherwise).
func startGuestCmd(t *testing.T, timeout time.Duration, prefix []string, args ...string) *guestConsole {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	g := &guestConsole{t: t, done: make(chan struct{}), start: time.Now(), cancel: cancel}
	g.cmd = exec.CommandContext(ctx, prefix[0], append(append([]string{}, prefix[1:]...), args...)...)
	var tee io.Writer
	if os.Getenv("KVMLAB_TEST_ECHO") == "1" {
		tee = os.Stdout
	}
	g.cmd.Stdout = lockedWriter{&g.mu, &g.out, tee, &g.last, &g.first}
	g.cmd.Stderr = lockedWriter{&g.mu, &g.errb, tee, nil, nil}
	var err error
	if g.stdin, err = g.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start kvmlab: %v", err)
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			// A kvmlab still running when its test failed: SIGQUIT makes
			// the Go runtime print every goroutine's stack to stderr, so
			// the log says where it was stuck, not only that it was.
			select {
			case <-g.done:
			default:
				_ = g.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-g.done:
				case <-time.After(5 * time.Second):
				}
			}
		}
		cancel()
		<-g.done
		if t.Failed() {
			g.mu.Lock()
			t.Logf("guest console (last 3000 bytes):\n%s", tailStr(g.out.String(), 3000))
			t.Logf("kvmlab stderr:\n%s", g.errb.String())
			g.mu.Unlock()
		}
	})
	return g
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// expect waits until re matches console output after the last match, and
// returns the submatches.
func (g *guestConsole) expect(re *regexp.Regexp, timeout time.Duration) []string {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g.mu.Lock()
		rest := g.out.String()[g.seen:]
		loc := re.FindStringSubmatchIndex(rest)
		if loc != nil {
			m := make([]string, len(loc)/2)
			for i := range m {
				if loc[2*i] >= 0 {
					m[i] = rest[loc[2*i]:loc[2*i+1]]
				}
			}
			g.seen += loc[1]
			g.mu.Unlock()
			return m
		}
		g.mu.Unlock()
		select {
		case <-g.done:
			g.t.Fatalf("kvmlab exited (%v) before the console showed %q", g.err, re)
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("console did not show %q within %v%s", re, timeout, g.stallReport())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *guestConsole) send(s string) {
	g.t.Helper()
	if _, err := io.WriteString(g.stdin, s); err != nil {
		g.t.Fatalf("type %q: %v", s, err)
	}
}

// waitShell types a probe until the u-root shell answers it: bytes sent
// before the guest opens its console are lost, so the probe is repeated.
// It returns how long it took from the start of kvmlab.
func (g *guestConsole) waitShell(timeout time.Duration) time.Duration {
	g.t.Helper()
	d, err := g.tryWaitShell(timeout)
	if err != nil {
		g.t.Fatal(err)
	}
	return d
}

func (g *guestConsole) tryWaitShell(timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	re := regexp.MustCompile(`ready-42`)
	for {
		g.send("echo ready-$((6*7))\n")
		g.mu.Lock()
		ok := re.MatchString(g.out.String()[g.seen:])
		g.mu.Unlock()
		if ok {
			g.expect(re, time.Second)
			return time.Since(g.start), nil
		}
		select {
		case <-g.done:
			return 0, fmt.Errorf("kvmlab exited (%v) before the guest shell answered", g.err)
		case <-time.After(2 * time.Second):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the guest shell did not answer within %v%s", timeout, g.stallReport())
		}
		// A boot takes 10-30 s in the emulated host and its console is
		// never quiet for a minute: judge a silent one now rather than
		// at the deadline (stallReport says nothing outside it).
		if g.silentFor() >= stallSilence {
			if r := g.stallReport(); r != "" {
				return 0, fmt.Errorf("the guest shell had not answered after %v%s", time.Since(g.start).Round(time.Second), r)
			}
		}
	}
}

// bootToShell starts kvmlab and waits for the guest's shell. Inside the
// emulated host only, a boot that ends in a triple fault before the shell is
// retried once, loudly: QEMU's software SVM occasionally corrupts a nested
// guest's early boot (seen about once in ten 2-vCPU boots, during the
// guest's FPU/XSAVE setup, never on the 1-vCPU boots or on real KVM). On a
// real /dev/kvm there is no retry: a triple fault there is our bug.
func bootToShell(t *testing.T, args ...string) *guestConsole {
	t.Helper()
	return bootToShellCmd(t, []string{kvmlabBin(t)}, args...)
}

// bootToShellCmd is bootToShell through a wrapper command (startGuestCmd).
func bootToShellCmd(t *testing.T, prefix []string, args ...string) *guestConsole {
	t.Helper()
	for attempt := 1; ; attempt++ {
		g := startGuestCmd(t, bootTimeout+2*time.Minute, prefix, args...)
		took, err := g.tryWaitShell(bootTimeout)
		if err == nil {
			t.Logf("shell answered %v after kvmlab started", took.Round(time.Millisecond))
			return g
		}
		if attempt == 1 && os.Getenv(inHostEnv) == "1" && strings.Contains(g.stderr(), "triple fault") {
			t.Logf("RETRY: the guest triple-faulted inside the emulated host before its shell started; booting again once (kvmlab said: %s)",
				strings.SplitN(strings.TrimSpace(g.stderr()), "\n", 2)[0])
			continue
		}
		if attempt == 1 && os.Getenv(inHostEnv) == "1" && strings.Contains(err.Error(), stallInKVM) {
			t.Logf("RETRY: the guest stopped dead inside KVM_RUN in the emulated host before its shell started; booting again once:%s\nkvmlab's snapshots:\n%s\nthe console's last 1000 bytes:\n%s",
				err.Error(), snapshotsIn(g.stderr()), tailStr(g.output(), 1000))
			continue
		}
		t.Fatal(err)
	}
}

// run types a shell command whose output is wrapped in a marker and returns
// the value. The command must print "<key>=<value>" via `echo key=$(...)`;
// the typed echo of the line itself still contains "$(", so it never
// matches.
func (g *guestConsole) value(key, cmd string, timeout time.Duration) string {
	g.t.Helper()
	g.send(fmt.Sprintf("echo %s=$(%s)\n", key, cmd))
	m := g.expect(regexp.MustCompile(regexp.QuoteMeta(key)+`=([^\r\n$]*)\r?\n`), timeout)
	v := m[1]
	// The guest kernel writes its messages to the same console whenever
	// it likes, so one can land in the middle of the shell's line: seen,
	// "ANSWER=42[    9.618789] clocksource: timekeeping watchdog on
	// CPU0: Marking clocksource 'tsc' as unstable ..." in a clone restored
	// on a loaded machine (docs/snapshot.md, "Time"). The value ends where
	// a message's timestamp starts; the message stays in the log.
	if loc := printkStamp.FindStringIndex(v); loc != nil {
		g.t.Logf("a kernel message cut into the shell's answer for %s: %q", key, v[loc[0]:])
		v = v[:loc[0]]
	}
	return strings.TrimSpace(v)
}

// printkStamp is the time stamp the guest kernel puts before each of its
// console messages (CONFIG_PRINTK_TIME): seconds and microseconds.
var printkStamp = regexp.MustCompile(`\[\s*\d+\.\d{6}\]`)

// wait waits for kvmlab to exit and returns its exit code.
func (g *guestConsole) wait(timeout time.Duration) int {
	g.t.Helper()
	select {
	case <-g.done:
	case <-time.After(timeout):
		g.t.Fatalf("kvmlab did not exit within %v", timeout)
	}
	if g.cmd.ProcessState == nil {
		g.t.Fatalf("kvmlab: %v", g.err)
	}
	return g.cmd.ProcessState.ExitCode()
}

// silentFor is how long the guest console has been quiet (since kvmlab
// started, if it never spoke).
func (g *guestConsole) silentFor() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	last := g.last
	if last.IsZero() {
		last = g.start
	}
	return time.Since(last)
}

func (g *guestConsole) stderr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.errb.String()
}

func (g *guestConsole) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}
