package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kvmlab/emuhost"
)

// TestGDB debugs the booting guest kernel with Debian's real gdb, in batch
// mode, through kvmlab run --gdb (vmm/gdbstub): the guest waits before its
// first instruction, gdb loads the guest's vmlinux, breaks at start_kernel,
// continues, shows the backtrace, the registers and four instructions,
// steps one instruction, watches jiffies with a hardware watchpoint, is
// refused a second connection, stops the running guest with Ctrl-C
// (SIGINT to gdb, which sends 0x03), and detaches; the guest then runs its
// one command and powers off by itself.
//
// The guest kernel has no DWARF (kernel-config/ builds it without debug
// info), so gdb knows symbols but not types: jiffies is watched as
// *(unsigned long *)&jiffies, and the backtrace is asserted only for its
// first frame. The breakpoint is a hardware one (hbreak, Z1): at the first
// instruction the kernel is still compressed inside the bzImage, so an
// INT3 written at start_kernel (break, Z0) would be overwritten when it
// decompresses itself, and in the emulated AMD host QEMU's software SVM
// lets the guest take its own #BP for an INT3 anyway (see TestStepDebug).
// Z0 is tested on a tiny guest in vmm/gdbstub.
func TestGDB(t *testing.T) {
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		t.Fatalf("gdb is not installed (bash tests/deps.sh installs it): %v", err)
	}
	if emulatedCPU() != "" {
		// The emulated host's loopback interface starts down: gdb's
		// connection to 127.0.0.1 needs it up.
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
	}
	port := freePort(t)
	g := startGuestCmd(t, 12*time.Minute, []string{kvmlabBin(t)}, "run", "--kernel", guestFile(t, "bzImage"),
		"--initrd", guestFile(t, "initramfs.cpio"), "--mem", "256M",
		"--append", "console=ttyS0 panic=-1 quiet kvmlab.run=sleep,20", "--gdb", fmt.Sprint(port), "--gdb-wait")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, 2*time.Minute, "kvmlab to listen for gdb", func() bool {
		return strings.Contains(g.stderr(), "kvmlab: gdb: listening on "+addr)
	}, g.stderr)

	script := strings.Join([]string{
		"set pagination off",
		"set confirm off",
		"target remote " + addr,
		"hbreak start_kernel",
		"continue",
		"bt 3",
		"info registers",
		"x/4i $pc",
		"printf \"PC-BEFORE %#lx\\n\", $pc",
		"stepi",
		"printf \"PC-AFTER %#lx\\n\", $pc",
		"delete",
		"watch *(unsigned long *)&jiffies",
		"continue",
		"delete",
		"info threads",
		"monitor explain",
		"monitor stats",
		"echo MARK-CTRL-C\\n",
		"continue",
		"echo AFTER-CTRL-C\\n",
		"detach",
	}, "\n") + "\n"
	cmdFile := filepath.Join(t.TempDir(), "cmds.gdb")
	if err := os.WriteFile(cmdFile, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gdb, "-nx", "-batch", "-x", cmdFile, guestFile(t, "vmlinux"))
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gdbDone := make(chan error, 1)
	gdbExited := make(chan struct{})
	go func() {
		gdbDone <- cmd.Wait()
		close(gdbExited)
	}()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	// While gdb is attached and the guest runs, a second debugger is
	// refused with a message; then Ctrl-C.
	waitFor(t, 8*time.Minute, "gdb to continue after the watchpoint", func() bool {
		select {
		case <-gdbExited:
			t.Fatalf("gdb exited before the Ctrl-C part:\n%s", out.String())
		default:
		}
		// gdb -batch does not print "Continuing.": the mark is echoed
		// right before the continue.
		return strings.Contains(out.String(), "MARK-CTRL-C")
	}, out.String)
	if reply := secondClient(t, addr); !strings.Contains(reply, "another debugger is attached") {
		t.Errorf("a second client got %q, want the refusal", reply)
	}
	// Let gdb send the continue and the guest run a little (not an
	// assertion: the guest sleeps 20 s in user space before its poweroff).
	time.Sleep(2 * time.Second)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gdbDone:
		if err != nil {
			t.Errorf("gdb: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("gdb did not finish after Ctrl-C:\n%s", out.String())
	}
	o := out.String()
	t.Logf("gdb's output:\n%s", o)

	checks := []struct{ what, re string }{
		{"the breakpoint is set on start_kernel", `(?m)^(Hardware assisted )?[Bb]reakpoint 1 at 0xffffffff[0-9a-f]+`},
		{"the breakpoint is hit at start_kernel", `(?m)^(Hardware assisted )?[Bb]reakpoint 1, 0xffffffff[0-9a-f]+ in start_kernel \(\)`},
		{"bt starts at start_kernel", `(?m)^#0\s+0xffffffff[0-9a-f]+ in start_kernel \(\)`},
		{"info registers: rip in start_kernel", `(?m)^rip\s+0xffffffff[0-9a-f]+\s+0xffffffff[0-9a-f]+ <start_kernel(\+\d+)?>`},
		{"info registers: the general and segment registers", `(?ms)^rax\s+0x.*^r15\s+0x.*^eflags\s+0x.*^cs\s+0x10\s.*^gs\s+0x`},
		{"info registers: fs_base, gs_base and the control registers", `(?ms)^fs_base\s+0x.*^gs_base\s+0x.*^cr0\s+0x8[0-9a-f]{7}\s.*^cr3\s+0x.*^cr4\s+0x.*^efer\s+0x`},
		{"x/4i disassembles four instructions from start_kernel", `(?m)^=> 0xffffffff[0-9a-f]+ <start_kernel(\+0)?>:\t\S+.*\n   0xffffffff[0-9a-f]+ <start_kernel\+\d+>:\t\S+.*\n   0xffffffff[0-9a-f]+ <start_kernel\+\d+>:\t\S+.*\n   0xffffffff[0-9a-f]+ <start_kernel\+\d+>:\t\S+`},
		{"the hardware watchpoint is set", `(?m)^Hardware watchpoint \d+: \*\(unsigned long \*\)&jiffies`},
		{"the watchpoint triggers with the old and new value", `(?m)^Hardware watchpoint \d+: \*\(unsigned long \*\)&jiffies\n\nOld value = \d+\nNew value = \d+`},
		{"one thread per vCPU", `(?m)^\* 1\s+Thread 1 \(vCPU 0\)`},
		{"monitor explain reaches the observatory", `the last exit of vCPU 0, #\d+ KVM_EXIT_\w+`},
		{"monitor explain names the SVM or VT-x layer", vendorRe(`SVM exit code VMEXIT_\w+`, `VT-x|VMX|basic exit reason`)},
		{"monitor stats: the exits so far", `(?m)^Exits by KVM exit reason`},
		{"Ctrl-C stops the running guest", `(?m)^Program received signal SIGINT, Interrupt\.`},
		{"the script goes on after Ctrl-C", `(?m)^AFTER-CTRL-C`},
		{"detach", `\[Inferior 1 \(Remote target\) detached\]`},
	}
	for _, c := range checks {
		if !regexp.MustCompile(c.re).MatchString(o) {
			t.Errorf("%s: no match for %q in gdb's output", c.what, c.re)
		}
	}
	// stepi moved the PC by one instruction.
	before := regexp.MustCompile(`PC-BEFORE (0x[0-9a-f]+)`).FindStringSubmatch(o)
	after := regexp.MustCompile(`PC-AFTER (0x[0-9a-f]+)`).FindStringSubmatch(o)
	if before == nil || after == nil || before[1] == after[1] {
		t.Errorf("stepi did not move the PC: before %v, after %v", before, after)
	}
	// The watchpoint's values are jiffies ticking: new = old + 1 or more.
	if m := regexp.MustCompile(`Old value = (\d+)\nNew value = (\d+)`).FindStringSubmatch(o); m != nil {
		var oldV, newV uint64
		fmt.Sscan(m[1], &oldV)
		fmt.Sscan(m[2], &newV)
		if newV <= oldV {
			t.Errorf("jiffies went from %d to %d", oldV, newV)
		}
	}

	// After the detach the guest runs its command and powers off by
	// itself, and kvmlab ends with status 0.
	select {
	case <-g.done:
	case <-time.After(6 * time.Minute):
		t.Fatalf("the guest did not power off after gdb detached; console:\n%s", tailStr(g.output(), 2000))
	}
	if code := g.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("kvmlab exited %d, want 0; stderr:\n%s", code, g.stderr())
	}
	if !strings.Contains(g.stderr(), "(poweroff)") {
		t.Errorf("kvmlab did not report the guest's poweroff; stderr:\n%s", g.stderr())
	}
	t.Logf("kvmlab's stderr:\n%s", g.stderr())
	for _, want := range []string{"attached", "detached: the guest runs on"} {
		if !strings.Contains(g.stderr(), want) {
			t.Errorf("kvmlab's log lacks %q:\n%s", want, g.stderr())
		}
	}
}

// secondClient connects while gdb is attached and returns the reply to its
// first packet.
func secondClient(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("second client: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("$qSupported#37")); err != nil {
		t.Fatal(err)
	}
	reply, _ := bufio.NewReader(c).ReadString('#')
	return reply
}

// freePort returns a TCP port free on the loopback interface now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds, failing the test after timeout with
// what seen says.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, seen func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; so far:\n%s", what, seen())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncBuffer is a strings.Builder safe for gdb's two output streams and
// the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hostFiles are the host programs an emulated-host run carries in:
// hostTools, plus gdb when the run may include TestGDB or TestDocsKVM
// (docs/gdb.md's session; a run that names its tests without either does
// not carry gdb's ~70 MB in), with what gdb needs beyond its libraries
// (gdbFiles).
func hostFiles(args []string) ([]emuhost.File, error) {
	withGDB := true
	for _, a := range args {
		if r, ok := strings.CutPrefix(a, "-test.run="); ok && !strings.Contains(r, "TestGDB") && !strings.Contains(r, "TestDocsKVM") {
			withGDB = false
		}
	}
	if !withGDB {
		return emuhost.Programs(hostTools...)
	}
	files, err := emuhost.Programs(append(append([]string{}, hostTools...), "gdb")...)
	if err != nil {
		return nil, err
	}
	py, err := gdbFiles()
	if err != nil {
		return nil, err
	}
	return append(files, py...), nil
}

// gdbFiles are the Python modules gdb's embedded interpreter imports when
// it starts: Debian's gdb links libpython, and without the standard
// library's encodings, codecs, site... Python's initialisation fails and
// takes gdb with it. Which files those are is asked of this machine's gdb,
// so the list follows its Python version.
func gdbFiles() ([]emuhost.File, error) {
	out, err := exec.Command("gdb", "-nx", "-batch", "-ex",
		"python import sys; print('\\n'.join(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)))").Output()
	if err != nil {
		return nil, fmt.Errorf("asking gdb for its Python modules: %w", err)
	}
	var files []emuhost.File
	seen := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		if !filepath.IsAbs(p) || seen[p] { // os.path is posixpath: listed twice
			continue
		}
		seen[p] = true
		if _, err := os.Stat(p); err != nil {
			continue
		}
		files = append(files, emuhost.File{HostPath: p, Path: p, Mode: 0o755})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("gdb listed no Python modules: %q", out)
	}
	// Python finds its platform-dependent directory (exec_prefix) by
	// looking for lib-dynload beside the standard library, and gdb
	// prints "Could not find platform dependent libraries" without it,
	// a line no reader's gdb prints (docs/gdb.md's session is checked
	// line by line): one file of it brings the directory in.
	for _, f := range files {
		if filepath.Base(f.Path) != "os.py" {
			continue
		}
		so, _ := filepath.Glob(filepath.Join(filepath.Dir(f.Path), "lib-dynload", "*.so"))
		if len(so) > 0 && !seen[so[0]] {
			seen[so[0]] = true
			files = append(files, emuhost.File{HostPath: so[0], Path: so[0], Mode: 0o644})
		}
		break
	}
	// Python picks the codec of the locale, which in the emulated host
	// is C (ASCII), not this machine's: the whole encodings package
	// goes in.
	for _, f := range files {
		if filepath.Base(filepath.Dir(f.Path)) != "encodings" {
			continue
		}
		all, _ := filepath.Glob(filepath.Join(filepath.Dir(f.Path), "*.py"))
		for _, p := range all {
			if !seen[p] {
				seen[p] = true
				files = append(files, emuhost.File{HostPath: p, Path: p, Mode: 0o644})
			}
		}
		break
	}
	return files, nil
}
