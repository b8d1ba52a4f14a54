// Command hostinit is PID 1 of the emulated host that package
// kvmlab/emuhost boots (under QEMU's TCG emulating AMD SVM, or under Bochs
// emulating Intel VT-x).
//
// It mounts the usual file systems, loads the KVM modules listed in
// /harness/modules, checks that /dev/kvm appeared, runs the command described
// by /harness/spec.json with its output on the serial console, prints
//
//	KVMLAB-HOST-EXIT <code>
//
// and powers the machine off. PID 1 must never exit (the kernel panics when
// it does), so every path, errors included, ends in a power-off.
//
// Exit codes reported for hostinit's own failures (the command's own status is
// reported as is, and 128+N when a signal N killed it):
//
//	120  setting up the console or a required mount failed
//	121  loading a module failed
//	122  /dev/kvm did not appear
//	123  /harness/spec.json missing or invalid
//	124  the command could not be started
//	125  hostinit itself panicked
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	exitSetup   = 120
	exitModule  = 121
	exitNoKVM   = 122
	exitSpec    = 123
	exitStart   = 124
	exitPanic   = 125
	modulesList = "/harness/modules"
	specFile    = "/harness/spec.json"
	exitMarker  = "KVMLAB-HOST-EXIT"
	defaultPath = "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin"
)

// spec mirrors the JSON written by emuhost.Run.
type spec struct {
	Argv    []string `json:"argv"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
	Console bool     `json:"console"`
	// Stdout and Stderr name serial ports for the command's output
	// ("": the console).
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// console is where hostinit's messages (and the command's output) go: the
// kernel console, which is the first serial port (console=ttyS0).
var console io.Writer = os.Stdout

func logf(format string, args ...any) {
	fmt.Fprintf(console, "hostinit: "+format+"\n", args...)
}

// finish reports the exit code and powers off. It never returns.
func finish(code int) {
	fmt.Fprintf(console, "%s %d\n", exitMarker, code)
	drainConsole()
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: power-off failed. QEMU runs with -no-reboot, so a
	// restart ends it too.
	logf("power off failed (%v), trying restart", err)
	err = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	logf("restart failed (%v); halting here", err)
	for {
		time.Sleep(time.Hour)
	}
}

// drainConsole waits until the serial port has sent everything written to
// the console (tcdrain, TCSBRK with a non-zero argument): a UART sends at
// its baud rate, and one emulated by Bochs does so in emulated time, so
// without this the last lines (the exit marker among them) are lost when
// the machine powers off. Under QEMU the wait is nil: its UART sends at once.
func drainConsole() {
	if f, ok := console.(*os.File); ok {
		_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
	}
}

func fail(code int, format string, args ...any) {
	logf("FAILED: "+format, args...)
	finish(code)
}

func main() {
	defer func() {
		if r := recover(); r != nil {
			fail(exitPanic, "panic: %v", r)
		}
	}()
	finish(run())
}

// mount mounts a file system, creating the mount point; "already mounted"
// counts as success.
func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	err := unix.Mount(source, target, fstype, flags, data)
	if errors.Is(err, unix.EBUSY) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mount -t %s %s %s: %w", fstype, source, target, err)
	}
	return nil
}

func run() int {
	// /dev first: with devtmpfs mounted, /dev/console and /dev/null exist
	// whatever the initramfs held.
	if err := mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		fail(exitSetup, "%v", err)
	}
	if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		console = c
	}
	required := []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
	for _, m := range required {
		if err := mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			fail(exitSetup, "%v", err)
		}
	}
	optional := []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		// tracefs, as a distribution mounts it, for kvmlab's reading of
		// the kvm:kvm_exit tracepoint.
		{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	}
	for _, m := range optional {
		if err := mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			logf("warning: %v (continuing)", err)
		}
	}
	_ = unix.Sethostname([]byte("kvmlab-host"))
	logf("kernel up after %s", uptime())

	if code := loadModules(); code != 0 {
		return code
	}
	if code := waitForKVM(); code != 0 {
		return code
	}
	logf("/dev/kvm ready after %s", uptime())
	return runCommand()
}

// uptime returns the time since the kernel started, from /proc/uptime.
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}

func loadModules() int {
	f, err := os.Open(modulesList)
	if errors.Is(err, os.ErrNotExist) {
		logf("no %s, loading no modules", modulesList)
		return 0
	}
	if err != nil {
		fail(exitModule, "%v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" || strings.HasPrefix(path, "#") {
			continue
		}
		if err := loadModule(path); err != nil {
			hint := ""
			if strings.Contains(path, "kvm-amd") && errors.Is(err, unix.ENODEV) {
				hint = " (the emulated CPU has no SVM: run QEMU with -cpu max under TCG)"
			}
			if strings.Contains(path, "kvm-intel") && errors.Is(err, unix.ENODEV) {
				hint = " (the emulated CPU has no VMX: run Bochs with a CPU model that has it, such as corei7_haswell_4770)"
			}
			fail(exitModule, "loading module %s: %v%s", path, err, hint)
		}
	}
	if err := sc.Err(); err != nil {
		fail(exitModule, "reading %s: %v", modulesList, err)
	}
	return 0
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cmdline, _ := os.ReadFile("/proc/cmdline")
	params := moduleParams(string(cmdline), moduleName(path))
	if params != "" {
		logf("module %s: %s", moduleName(path), params)
	}
	err = unix.FinitModule(int(f.Fd()), params, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil // already loaded or built in
	}
	return err
}

// moduleName is the kernel's name of the module in a file of /harness/ko,
// "N-name.ko": dashes become underscores, as the kernel names modules
// ("2-kvm-intel.ko" is kvm_intel).
func moduleName(path string) string {
	name := strings.TrimSuffix(filepath.Base(path), ".ko")
	if i := strings.IndexByte(name, '-'); i > 0 && strings.Trim(name[:i], "0123456789") == "" {
		name = name[i+1:]
	}
	return strings.ReplaceAll(name, "-", "_")
}

// moduleParams picks the module's parameters from the kernel command line,
// "module.param=value" words, as modprobe(8) does (the kernel itself
// applies them only to built-in code): so the emulated host's command line
// (KVMLAB_HOST_APPEND) can say kvm_intel.ept=0.
func moduleParams(cmdline, module string) string {
	var params []string
	for _, w := range strings.Fields(cmdline) {
		mod, param, ok := strings.Cut(w, ".")
		if ok && strings.ReplaceAll(mod, "-", "_") == module && param != "" && !strings.HasPrefix(param, "=") {
			params = append(params, param)
		}
	}
	return strings.Join(params, " ")
}

// waitForKVM waits briefly for devtmpfs to show /dev/kvm.
func waitForKVM() int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat("/dev/kvm")
		if err == nil {
			return 0
		}
		if time.Now().After(deadline) {
			fail(exitNoKVM, "/dev/kvm did not appear after loading the modules: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runCommand() int {
	b, err := os.ReadFile(specFile)
	if err != nil {
		fail(exitSpec, "%v", err)
	}
	var s spec
	if err := json.Unmarshal(b, &s); err != nil {
		fail(exitSpec, "parsing %s: %v", specFile, err)
	}
	if len(s.Argv) == 0 {
		fail(exitSpec, "%s: empty argv", specFile)
	}
	env := append([]string{"PATH=" + defaultPath, "HOME=/root", "TERM=dumb"}, s.Env...)
	// Resolve argv[0] with the command's own PATH (the last one wins, as
	// in the environment exec.Cmd passes on).
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			os.Setenv("PATH", v)
		}
	}
	_ = os.MkdirAll("/root", 0o700)
	dir := s.Dir
	if dir == "" {
		dir = "/"
	}
	devNull, err := os.Open("/dev/null")
	if err != nil {
		fail(exitSetup, "%v", err)
	}
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdin = devNull
	cmd.Stdout = console
	cmd.Stderr = console
	if s.Console {
		// Interactive: the serial port becomes the command's
		// controlling terminal, so it can switch it to raw mode and
		// read keystrokes.
		tty, err := os.OpenFile("/dev/ttyS0", os.O_RDWR, 0)
		if err != nil {
			fail(exitSetup, "opening /dev/ttyS0: %v", err)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		env = append(env, "TERM=vt100")
		cmd.Env = env
	}
	var outputs []*os.File
	for _, p := range []struct {
		path string
		to   *io.Writer
	}{{s.Stdout, &cmd.Stdout}, {s.Stderr, &cmd.Stderr}} {
		if p.path == "" {
			continue
		}
		tty, err := openRawTTY(p.path)
		if err != nil {
			fail(exitSetup, "%v", err)
		}
		*p.to = tty
		outputs = append(outputs, tty)
	}
	logf("running %s (in %s)", strings.Join(quoteAll(s.Argv), " "), filepath.Clean(dir))
	if err := cmd.Start(); err != nil {
		fail(exitStart, "starting %s: %v", s.Argv[0], err)
	}
	err = cmd.Wait()
	// Everything the command wrote leaves the serial ports before the
	// exit marker does, so that the reader outside has all of it when
	// the marker arrives.
	for _, tty := range outputs {
		_ = unix.IoctlSetInt(int(tty.Fd()), unix.TCSBRK, 1) // tcdrain
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			logf("command killed by signal %v", ws.Signal())
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	default:
		fail(exitStart, "waiting for %s: %v", s.Argv[0], err)
	}
	return exitStart
}

// openRawTTY opens a serial port for a stream of the command's output, in
// raw mode (termios(3)'s cfmakeraw): bytes go out as written, without the
// line discipline's "\n" to "\r\n" or any echo, so what arrives outside
// is exactly what the command wrote. O_NOCTTY keeps it from becoming
// hostinit's controlling terminal.
func openRawTTY(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s for the command's output: %w", path, err)
	}
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: raw mode: %w", path, err)
	}
	return f, nil
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'\\") {
			a = fmt.Sprintf("%q", a)
		}
		out[i] = a
	}
	return out
}
