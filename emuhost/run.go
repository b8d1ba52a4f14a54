package emuhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// File is a file copied into the emulated host's root file system.
type File struct {
	// HostPath is a file on this machine to copy; when empty, Data is
	// the contents.
	HostPath string
	Data     []byte
	// Path is where the file appears in the emulated host (absolute).
	Path string
	// Mode holds the permissions; 0 means the host file's permissions
	// (HostPath) or 0644 (Data).
	Mode os.FileMode
}

// Emulator names the software that emulates the host machine, and so the
// virtualization extension its CPU offers the kernel inside.
type Emulator string

// QEMUSVM is QEMU's TCG emulating a q35 PC whose CPU ("-cpu max") offers
// AMD SVM: the emulated host loads kvm_amd. The other is [BochsVMX].
const QEMUSVM Emulator = "qemu-svm"

// Spec describes one command to run inside the emulated host.
type Spec struct {
	// Emulator is the machine to emulate; "" means QEMUSVM. BochsVMX
	// has one CPU and at most 2 GiB, whatever CPUs and MemMB say.
	Emulator Emulator
	// Files are added to the host's initramfs (the root file system, in
	// RAM). Parent directories are created.
	Files []File
	// Argv is the command run inside the emulated host, as root, in Dir
	// (default "/"), with stdin /dev/null and stdout/stderr on the
	// console. argv[0] without a "/" is looked up in PATH (default
	// /bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin).
	Argv []string
	// Env is added to the command's environment (PATH, HOME, TERM are
	// set by default; entries here override them).
	Env []string
	// Dir is the command's working directory in the host.
	Dir string
	// MemMB is the emulated host's memory, default 6144 (tests boot a
	// guest with 4 GiB inside). QEMU allocates it lazily.
	MemMB int
	// CPUs is the emulated host's CPU count, default 2.
	CPUs int
	// HostAppend is added to the emulated host kernel's command line
	// (before KVMLAB_HOST_APPEND's words). hostinit passes words of the
	// form module.param=value to the modules it loads, as modprobe does:
	// "kvm_intel.ept=0" runs KVM on shadow page tables.
	HostAppend string
	// Timeout limits each attempt (boot, command, power-off); default
	// 10 minutes.
	Timeout time.Duration
	// Quiet, when not zero, is the longest the console may stay silent
	// once the host has printed something: an attempt silent for longer
	// counts as hung (and is retried once), instead of waiting out
	// Timeout. For a command that reports progress regularly (kvmlab
	// bench prints a line per boot), a host that has stopped is noticed
	// within minutes, not at the end of a long Timeout.
	Quiet time.Duration
	// Output, when not nil, receives the host's console live, line by
	// line, plus Run's own "harness: ..." lines (retries).
	Output io.Writer
	// Interactive connects this process's standard input and output to
	// the emulated host's console, byte for byte, and runs Argv with the
	// console as its controlling terminal: a person can type at the
	// command (kvmlab run's guest shell). There is no hang detection or
	// retry: the person watching decides. Output is ignored.
	Interactive bool
	// Stdout and Stderr, when not nil, receive the command's standard
	// output and standard error as it writes them, each through a
	// serial port of its own (the host's COM2 and COM3, /dev/ttyS1 and
	// /dev/ttyS2 in raw mode) instead of the console, which keeps the
	// host kernel's and hostinit's lines: those never mix into the
	// command's output. Both or neither; QEMU only; not with
	// Interactive. Bytes passed on cannot be taken back, so an attempt
	// that has passed any is not retried: Run fails with an error
	// wrapping ErrHostFlake where it would have retried.
	Stdout, Stderr io.Writer
}

// Result is the outcome of [Run].
type Result struct {
	// ExitCode is the command's exit status as reported by hostinit:
	// 128+N when signal N killed it, and 120-125 when hostinit itself
	// failed inside the host (console/mounts, module load, no /dev/kvm,
	// bad spec, command not startable, hostinit panic); Output then says
	// what failed.
	ExitCode int
	// Output is the console output of the last attempt, one "\n"-ended
	// line per console line.
	Output string
	// Attempts is 1, or 2 when the first attempt hung.
	Attempts int
	// Duration is the time spent running QEMU, all attempts together
	// (kernel download and initramfs build excluded).
	Duration time.Duration
}

// ExitMarker starts the line hostinit prints last: "KVMLAB-HOST-EXIT <code>".
const ExitMarker = "KVMLAB-HOST-EXIT"

const (
	defaultMemMB   = 6144
	defaultCPUs    = 2
	defaultTimeout = 10 * time.Minute
	qemuBinary     = "qemu-system-x86_64"
	hostinitPkg    = "kvmlab/emuhost/hostinit"
)

// BzImageEnv names the environment variable that, set to 1, makes Run boot
// the packaged bzImage (vmlinuz) even where HostKernel extracted the
// uncompressed vmlinux, which boots several seconds faster under TCG.
const BzImageEnv = "KVMLAB_HOST_BZIMAGE"

// HostAppendEnv names the environment variable whose words are added to
// the emulated host's kernel command line, for experiments with the host
// itself (for example transparent_hugepage=never).
const HostAppendEnv = "KVMLAB_HOST_APPEND"

// HostCPUEnv names the environment variable that replaces the emulated
// host's CPU model ("max"): QEMU's -cpu argument, features included (for
// example "max,la57=off").
const HostCPUEnv = "KVMLAB_HOST_CPU"

// silentHangTimeout is how long a booting host may print nothing at all
// before it counts as hung. Under TCG, about 1 boot in 16 hangs early with
// both CPUs busy and no output; a healthy boot prints within seconds.
var silentHangTimeout = 90 * time.Second

// ErrHostFlake is wrapped by Run's errors that are the emulated host's own
// failures, the kinds it retries: a host that hung, or whose kernel crashed
// (QEMU's software SVM is not perfect, and a nested hypervisor stresses it).
// They are the test bed failing, not the command in it.
var ErrHostFlake = errors.New("the emulated host failed (a known flake of the emulator, not of the command)")

// ErrNoQEMU is returned by Run when QEMU is not installed.
var ErrNoQEMU = errors.New("qemu-system-x86_64 not found: apt-get install qemu-system-x86")

// Run boots the emulated host (Linux under QEMU's TCG, with kvm_amd loaded),
// runs spec.Argv inside it and returns its exit status and console output.
//
// An attempt that reaches spec.Timeout, or that prints nothing within 90 s
// of starting, is killed and retried once; so is one whose kernel stops
// before /init ran (the retry is announced on spec.Output). Run returns an error when it could not run the
// command (no QEMU, no kernel, build failures, two hung attempts, a host
// that stopped without reporting an exit code, ctx done); a non-zero exit
// status of the command itself is not an error.
func Run(ctx context.Context, spec Spec) (*Result, error) {
	switch spec.Emulator {
	case "", QEMUSVM, BochsVMX:
	default:
		return nil, fmt.Errorf("emuhost.Run: unknown emulator %q (known: %q, %q)", spec.Emulator, QEMUSVM, BochsVMX)
	}
	if len(spec.Argv) == 0 {
		return nil, errors.New("emuhost.Run: empty Argv")
	}
	if (spec.Stdout == nil) != (spec.Stderr == nil) {
		return nil, errors.New("emuhost.Run: give both Stdout and Stderr, or neither")
	}
	if spec.Stdout != nil && spec.Interactive {
		return nil, errors.New("emuhost.Run: Stdout and Stderr need a host that is not interactive")
	}
	for _, f := range spec.Files {
		if !filepath.IsAbs(f.Path) {
			return nil, fmt.Errorf("emuhost.Run: file path %q in the host must be absolute", f.Path)
		}
		if f.HostPath != "" && f.Data != nil {
			return nil, fmt.Errorf("emuhost.Run: file %s has both HostPath and Data", f.Path)
		}
	}
	if spec.MemMB <= 0 {
		spec.MemMB = defaultMemMB
	}
	if spec.CPUs <= 0 {
		spec.CPUs = defaultCPUs
	}
	if spec.Timeout <= 0 {
		spec.Timeout = defaultTimeout
	}
	var qemu string
	if spec.Emulator == BochsVMX {
		if err := CheckBochs(ctx); err != nil {
			return nil, err
		}
	} else {
		var err error
		if qemu, err = exec.LookPath(qemuBinary); err != nil {
			return nil, ErrNoQEMU
		}
	}
	kernel, err := HostKernel(ctx)
	if err != nil {
		return nil, fmt.Errorf("host kernel: %w", err)
	}

	tmp, err := os.MkdirTemp("", "kvmlab-host-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	initBin := filepath.Join(tmp, "init")
	if err := GoBuild(ctx, hostinitPkg, initBin); err != nil {
		return nil, err
	}
	initrd := filepath.Join(tmp, "host.cpio")
	if err := writeInitramfs(initrd, initBin, kernel, spec); err != nil {
		return nil, fmt.Errorf("building the initramfs: %w", err)
	}

	if spec.Emulator == BochsVMX {
		if spec.Interactive {
			return runBochsInteractive(ctx, tmp, kernel, initrd, spec)
		}
		m, err := bochsMachine(ctx, tmp, kernel, initrd, spec, "file", "/dev/fd/3")
		if err != nil {
			return nil, err
		}
		res, err := runMachineAttempts(ctx, m, limits{spec.Timeout, spec.Quiet}, &syncWriter{w: spec.Output})
		if err == nil {
			err = bochsHostVerdict(res.Output) // no VT-x in the host: one line naming the fix
		}
		return res, err
	}

	image := kernel.Vmlinuz
	if kernel.Vmlinux != "" && os.Getenv(BzImageEnv) != "1" {
		image = kernel.Vmlinux
	}
	args := qemuArgs(image, initrd, spec)
	if spec.Interactive {
		return runInteractive(ctx, qemu, args)
	}
	m := machine{path: qemu, args: args}
	if spec.Stdout != nil {
		m.outputs = []*streamOut{{w: spec.Stdout}, {w: spec.Stderr}}
	}
	return runMachineAttempts(ctx, m, limits{spec.Timeout, spec.Quiet}, &syncWriter{w: spec.Output})
}

// runInteractive runs QEMU once with its serial console on this process's
// terminal. QEMU's stdio character device puts the terminal in raw mode
// itself; signal=off passes Ctrl-C through to the host's console instead of
// killing QEMU.
func runInteractive(ctx context.Context, qemu string, args []string) (*Result, error) {
	for i := range args {
		if args[i] == "-serial" && i+1 < len(args) && args[i+1] == "stdio" {
			args = append(append(args[:i:i], "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0"), args[i+2:]...)
			break
		}
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdin = os.Stdin
	scan := &markerScanner{w: os.Stdout}
	cmd.Stdout = scan
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	res := &Result{Attempts: 1, Duration: time.Since(start), Output: scan.tail.String()}
	code, ok := exitCodeFromOutput(strings.ReplaceAll(res.Output, "\r", ""))
	if !ok {
		if err != nil {
			return res, fmt.Errorf("%s: %w", qemu, err)
		}
		return res, errors.New("emulated host stopped without reporting an exit code")
	}
	res.ExitCode = code
	return res, nil
}

// markerScanner passes console bytes straight through (a prompt has no
// newline, so line buffering would hide it) and keeps the last few KiB to
// find hostinit's exit marker in.
type markerScanner struct {
	w    io.Writer
	tail bytes.Buffer
}

func (m *markerScanner) Write(p []byte) (int, error) {
	m.tail.Write(p)
	if m.tail.Len() > 8192 {
		b := m.tail.Bytes()[m.tail.Len()-4096:]
		keep := append([]byte(nil), b...)
		m.tail.Reset()
		m.tail.Write(keep)
	}
	return m.w.Write(p)
}

// MaxAttempts is how many times an emulated host that hangs or whose kernel
// crashes is started in all. Measured here: about 1 run in 8 of a minute or
// two of nested guests ends in a host kernel crash inside QEMU's emulated SVM,
// so three attempts make a spurious failure rare (about 1 in 500).
const MaxAttempts = 3

// hostinitPrefix starts every line hostinit prints; its absence from the
// console means /init never ran.
const hostinitPrefix = "hostinit: "

// limits are an attempt's time limits: in all, and silent after the first
// output (0: none).
type limits struct{ total, quiet time.Duration }

// machine is how to start one emulator for an attempt, and how to read it.
type machine struct {
	path string
	args []string
	// dir is the emulator's working directory ("": this process's).
	dir string
	// consoleFD3: the host's serial console arrives on a pipe the
	// emulator inherits as file descriptor 3; its stdout and stderr are
	// its own messages. Otherwise the console is its stdout.
	consoleFD3 bool
	// exitStatusMeaningless: the emulator's exit status says nothing
	// about the run (Bochs exits 1 after a clean power-off); the console
	// is judged alone.
	exitStatusMeaningless bool
	// ownNetNS: run the emulator in a new network namespace where this
	// process may create one (Bochs's VNC display listens on TCP).
	ownNetNS bool
	// logFile is the emulator's own log, whose tail goes into errors.
	logFile string
	// silence replaces silentHangTimeout when not zero.
	silence time.Duration
	// stopAfter, when not nil, returns for a console line how long the
	// emulator may go on after it before it is stopped (0: no limit).
	stopAfter func(line string) time.Duration
	// outputs receive what the emulator writes to the pipes it inherits
	// as its next file descriptors (after the console's fd 3, if any):
	// the command's stdout and stderr serial ports (Spec.Stdout).
	outputs []*streamOut
}

// streamOut passes one output stream of the command on to its writer and
// remembers whether it has passed anything.
type streamOut struct {
	w     io.Writer
	wrote atomic.Bool
}

func (s *streamOut) Write(p []byte) (int, error) {
	if len(p) > 0 {
		s.wrote.Store(true)
	}
	// A writer that fails must not stop the serial port from being read.
	_, _ = s.w.Write(p)
	return len(p), nil
}

// passedOn reports whether any of m's outputs has passed a byte on.
func (m machine) passedOn() bool {
	for _, o := range m.outputs {
		if o.wrote.Load() {
			return true
		}
	}
	return false
}

func (m machine) name() string { return filepath.Base(m.path) }

// runAttempts runs QEMU up to MaxAttempts times: an attempt that hangs, or
// that stops before /init printed anything (a crash while booting: under TCG
// on a loaded machine, the kernel's timer checks can fail), is retried.
func runAttempts(ctx context.Context, qemu string, args []string, lim limits, out *syncWriter) (*Result, error) {
	return runMachineAttempts(ctx, machine{path: qemu, args: args}, lim, out)
}

// runMachineAttempts is runAttempts for any emulator: the same retry and
// diagnosis rules for the QEMU and the Bochs host.
func runMachineAttempts(ctx context.Context, m machine, lim limits, out *syncWriter) (*Result, error) {
	res := &Result{}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	const maxAttempts = MaxAttempts
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		res.Attempts = attempt
		a := runMachine(ctx, m, lim, out)
		res.Output = a.output
		if a.err != nil {
			return res, a.err
		}
		code, ok := exitCodeFromOutput(a.output)
		if a.hung == "" && ok {
			res.ExitCode = code
			return res, nil
		}
		what, why := "hung", a.hung
		if a.hung == "" {
			switch crash := hostCrash(a.output); {
			case crash != "" && strings.Contains(a.output, hostinitPrefix):
				// The emulated host's own kernel died while the
				// command ran: QEMU's software SVM is not
				// perfect, and a nested hypervisor stresses it.
				// That is the test bed failing, not the code
				// under test, so it is retried like a hang.
				what, why = "kernel crashed", crash
			case strings.Contains(a.output, hostinitPrefix):
				return res, fmt.Errorf("emulated host stopped without printing %q (%s: %v); console tail:\n%s\n%s stderr:\n%s",
					ExitMarker+" <code>", m.name(), exitStatus(a.waitErr), tail(a.output, 3000), m.name(), tail(a.stderr, 1000))
			default:
				what, why = "crashed while booting", "it stopped before /init ran"
				if strings.Contains(a.output, "Kernel panic") {
					why = "kernel panic before /init ran"
				}
			}
		}
		if m.passedOn() {
			return res, fmt.Errorf("%w: it %s after %s (%s), with the command's output partly passed on, so it is not run again; console tail:\n%s\n%s stderr:\n%s",
				ErrHostFlake, what, a.duration.Round(time.Second), why, tail(a.output, 3000), m.name(), tail(a.stderr, 1000))
		}
		if attempt < maxAttempts {
			out.printf("harness: emulated host %s after %s (%s), retrying (attempt %d/%d)\n",
				what, a.duration.Round(time.Second), why, attempt+1, maxAttempts)
			continue
		}
		return res, fmt.Errorf("%w: it %s %d times; last attempt after %s (%s); console tail:\n%s\n%s stderr:\n%s",
			ErrHostFlake, what, maxAttempts, a.duration.Round(time.Second), why, tail(a.output, 3000), m.name(), tail(a.stderr, 1000))
	}
	panic("unreachable")
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// qemuArgs is the QEMU command line: a q35 PC with the "max" CPU under TCG
// (no -enable-kvm: there is no KVM here, and TCG is what emulates SVM),
// the serial port on stdout, nothing else attached. image is a bzImage or
// an ELF kernel with a PVH entry point; -kernel takes both.
func qemuArgs(image, initrd string, spec Spec) []string {
	cpu := "max"
	if c := os.Getenv(HostCPUEnv); c != "" {
		cpu = c
	}
	cmdline := hostCmdline(spec)
	var outputs []string
	if spec.Stdout != nil {
		// COM2 and COM3 write to the pipes runMachine hands QEMU as
		// its file descriptors 3 and 4 (machine.outputs); QEMU opens
		// /dev/fd/N, which for a pipe is the same pipe.
		outputs = []string{"-serial", "file:/dev/fd/3", "-serial", "file:/dev/fd/4"}
	}
	return append([]string{
		"-machine", "q35",
		"-cpu", cpu,
		"-smp", strconv.Itoa(spec.CPUs),
		"-m", strconv.Itoa(spec.MemMB),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-serial", "stdio",
		"-monitor", "none",
		"-no-reboot",
		"-kernel", image,
		"-initrd", initrd,
		// panic=-1: reboot at once on panic, which -no-reboot turns into
		// QEMU exiting. no_timer_check: skip the IO-APIC timer test,
		// which fails ("IO-APIC + timer doesn't work!", a panic) when
		// the emulated CPUs are starved on a loaded machine.
		"-append", cmdline,
	}, outputs...)
}

// hostCmdline is the emulated host kernel's command line, for both
// emulators.
func hostCmdline(spec Spec) string {
	cmdline := "console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init"
	if a := strings.TrimSpace(spec.HostAppend); a != "" {
		cmdline += " " + a
	}
	if a := strings.TrimSpace(os.Getenv(HostAppendEnv)); a != "" {
		cmdline += " " + a
	}
	return cmdline
}

// GoBuild builds the Go package pkg (an import path in module kvmlab, or a
// directory) into a static linux/amd64 binary at out (CGO_ENABLED=0), for
// use inside the emulated host.
func GoBuild(ctx context.Context, pkg, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goroot := os.Getenv("GOROOT")
		if goroot == "" {
			return errors.New("go not found in PATH (needed to build the emulated host's /init)")
		}
		goBin = filepath.Join(goroot, "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = sourceDir()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("command `%s` (in %s) failed: %v\n%s", strings.Join(cmd.Args, " "), cmd.Dir, err, tail(buf.String(), 2000))
	}
	return nil
}

// sourceDir is this package's source directory when it exists (so that go
// build resolves module kvmlab wherever the caller's working directory is),
// else "" (the working directory).
func sourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	dir := filepath.Dir(file)
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir
	}
	return ""
}

// hostSpec is /harness/spec.json, read by hostinit.
type hostSpec struct {
	Argv    []string `json:"argv"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
	Console bool     `json:"console"`
	// Stdout and Stderr are the serial ports the command's output goes
	// to ("": the console), for Spec.Stdout and Spec.Stderr.
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
}

// writeInitramfs writes the emulated host's root file system: /init
// (hostinit), /harness/ko/*.ko and their list /harness/modules, /harness/spec.json,
// /dev/console, and the spec's files.
func writeInitramfs(path, initBin string, k *Kernel, spec Spec) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := NewCPIOWriter(f)
	// The kernel opens /dev/console as PID 1's stdin/stdout/stderr before
	// running /init; provide the node in case the kernel has no built-in
	// initramfs holding it.
	if err := w.CharDevice("/dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	for _, d := range []string{"/proc", "/sys", "/tmp", "/run", "/root"} {
		if err := w.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := w.FileFrom("/init", 0o755, initBin); err != nil {
		return err
	}
	var list strings.Builder
	for i, name := range spec.Emulator.modules() {
		m, err := k.module(name)
		if err != nil {
			return err
		}
		p := fmt.Sprintf("/harness/ko/%d-%s.ko", i, name)
		if err := w.FileFrom(p, 0o644, m); err != nil {
			return err
		}
		list.WriteString(p + "\n")
	}
	if err := w.File("/harness/modules", 0o644, []byte(list.String())); err != nil {
		return err
	}
	hs := hostSpec{Argv: spec.Argv, Env: spec.Env, Dir: spec.Dir, Console: spec.Interactive}
	if spec.Stdout != nil {
		hs.Stdout, hs.Stderr = "/dev/ttyS1", "/dev/ttyS2" // COM2, COM3: qemuArgs
	}
	js, err := json.Marshal(hs)
	if err != nil {
		return err
	}
	if err := w.File("/harness/spec.json", 0o644, js); err != nil {
		return err
	}
	for _, file := range spec.Files {
		if file.HostPath != "" {
			err = w.FileFrom(file.Path, file.Mode, file.HostPath)
		} else {
			mode := file.Mode
			if mode == 0 {
				mode = 0o644
			}
			err = w.File(file.Path, mode, file.Data)
		}
		if err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

// parseExitMarker returns the code of a "KVMLAB-HOST-EXIT <code>" line. The
// marker may follow other text on the line (output of the command that did
// not end in a newline); the code must be followed by the end of the line
// or white space.
func parseExitMarker(line string) (int, bool) {
	i := strings.LastIndex(line, ExitMarker+" ")
	if i < 0 {
		return 0, false
	}
	rest := line[i+len(ExitMarker)+1:]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > 9 {
		return 0, false
	}
	if n < len(rest) && !strings.ContainsRune(" \t\r\n", rune(rest[n])) {
		return 0, false
	}
	code, err := strconv.Atoi(rest[:n])
	if err != nil {
		return 0, false
	}
	return code, true
}

// exitCodeFromOutput returns the code of the last exit marker in output.
func exitCodeFromOutput(output string) (int, bool) {
	lines := strings.Split(output, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if code, ok := parseExitMarker(lines[i]); ok {
			return code, true
		}
	}
	return 0, false
}

// syncWriter serializes writes to the caller's Output (nil: discard).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	// An Output that fails must not stop the console from being read.
	_, _ = s.w.Write(p)
	return len(p), nil
}

func (s *syncWriter) printf(format string, args ...any) {
	fmt.Fprintf(s, format, args...)
}

// lockedBuffer is a bytes.Buffer safe for one writer and later readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil // enough for an error message
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type attempt struct {
	output   string
	stderr   string
	hung     string // why the attempt counts as hung; "" if it did not
	waitErr  error  // QEMU's exit status
	err      error  // Run failed (or ctx done)
	duration time.Duration
}

// runAttempt runs QEMU once, streaming its stdout (the host's serial
// console) to out line by line.
func runAttempt(ctx context.Context, qemu string, args []string, lim limits, out *syncWriter) attempt {
	return runMachine(ctx, machine{path: qemu, args: args}, lim, out)
}

// startMachine starts the emulator with the write end of the console pipe
// as its stdout or its fd 3, in a network namespace of its own when asked
// and allowed (as root a new one; else inside a new user namespace, where
// the kernel permits them; else none).
func startMachine(m machine, pw *os.File, outputs []*os.File, stderr io.Writer) (*exec.Cmd, error) {
	try := func(clone uintptr) (*exec.Cmd, error) {
		cmd := exec.Command(m.path, m.args...)
		cmd.Dir = m.dir
		cmd.Stdin = nil // /dev/null
		cmd.Stdout = pw
		cmd.Stderr = stderr
		if m.consoleFD3 {
			cmd.Stdout = stderr
			cmd.ExtraFiles = []*os.File{pw}
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, outputs...)
		// Own process group, so that killing it gets everything the
		// emulator started; and die with us.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: clone}
		return cmd, cmd.Start()
	}
	if m.ownNetNS {
		flags := []uintptr{syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET}
		if os.Geteuid() == 0 {
			flags = []uintptr{syscall.CLONE_NEWNET, syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET}
		}
		for _, f := range flags {
			if cmd, err := try(f); err == nil {
				return cmd, nil
			}
		}
	}
	return try(0)
}

// runMachine runs the emulator once, streaming the host's serial console to
// out line by line.
func runMachine(ctx context.Context, m machine, lim limits, out *syncWriter) attempt {
	timeout := lim.total
	start := time.Now()
	pr, pw, err := os.Pipe()
	if err != nil {
		return attempt{err: err}
	}
	// The command's output streams (Spec.Stdout), each a pipe of its
	// own, copied as it arrives.
	var outR, outW []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range m.outputs {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(outR)
			closeAll(outW)
			pr.Close()
			pw.Close()
			return attempt{err: err}
		}
		outR, outW = append(outR, r), append(outW, w)
	}
	var stderr lockedBuffer
	cmd, err := startMachine(m, pw, outW, &stderr)
	closeAll(outW)
	if err != nil {
		closeAll(outR)
		pr.Close()
		pw.Close()
		return attempt{err: fmt.Errorf("starting %s: %w", m.path, err)}
	}
	pw.Close()
	var copies sync.WaitGroup
	for i, r := range outR {
		copies.Add(1)
		go func() {
			defer copies.Done()
			_, _ = io.Copy(m.outputs[i], r)
			r.Close()
		}()
	}
	copiesDone := make(chan struct{})
	go func() { copies.Wait(); close(copiesDone) }()

	firstOutput := make(chan struct{})
	activity := make(chan struct{}, 1)
	readerDone := make(chan string, 1)
	// stopAt receives the grace periods of console lines after which
	// the emulator is to stop (machine.stopAfter).
	stopAt := make(chan time.Duration, 4)
	var watch func(string)
	if m.stopAfter != nil {
		watch = func(line string) {
			if d := m.stopAfter(line); d > 0 {
				select {
				case stopAt <- d:
				default:
				}
			}
		}
	}
	go func() {
		readerDone <- readConsoleWatch(pr, out, firstOutput, activity, watch)
		pr.Close()
	}()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	finish := func(a attempt) attempt {
		// After QEMU is gone, the console pipe reaches EOF.
		a.waitErr = <-waitDone
		select {
		case a.output = <-readerDone:
		case <-time.After(10 * time.Second):
			a.output = "(console output lost: pipe still open after QEMU exited)\n"
		}
		select {
		case <-copiesDone: // the command's output, all of it passed on
		case <-time.After(10 * time.Second):
			closeAll(outR) // something else holds the pipes open
		}
		a.stderr = stderr.String()
		if m.logFile != "" {
			if b, err := os.ReadFile(m.logFile); err == nil && len(b) > 0 {
				a.stderr += "\n" + m.name() + " log (" + m.logFile + ") tail:\n" + tail(string(b), 2000)
			}
		}
		a.duration = time.Since(start)
		return a
	}

	attemptTimer := time.NewTimer(timeout)
	defer attemptTimer.Stop()
	silence := silentHangTimeout
	if m.silence > 0 {
		silence = m.silence
	}
	if silence > timeout {
		silence = timeout
	}
	silenceTimer := time.NewTimer(silence)
	defer silenceTimer.Stop()
	first := firstOutput
	// The quiet timer runs from the first output on, restarted by each
	// read of the console.
	var quiet <-chan time.Time
	var quietTimer *time.Timer
	// stop fires when the grace after a stop line has run out.
	var stop <-chan time.Time
	for {
		select {
		case d := <-stopAt:
			if stop == nil {
				stop = time.After(d)
			}
		case <-stop:
			// Not a hang: the console says the host is done (or
			// dead); it is judged like one that stopped by itself.
			kill()
			return finish(attempt{})
		case <-ctx.Done():
			kill()
			return finish(attempt{err: fmt.Errorf("emulated host stopped: %w", ctx.Err())})
		case <-attemptTimer.C:
			kill()
			return finish(attempt{hung: fmt.Sprintf("reached its timeout of %s", timeout)})
		case <-silenceTimer.C:
			kill()
			return finish(attempt{hung: fmt.Sprintf("no output at all within %s of starting", silence)})
		case <-first:
			silenceTimer.Stop()
			first = nil
			if lim.quiet > 0 {
				quietTimer = time.NewTimer(lim.quiet)
				defer quietTimer.Stop()
				quiet = quietTimer.C
			}
		case <-activity:
			if quietTimer != nil {
				quietTimer.Reset(lim.quiet)
			}
		case <-quiet:
			kill()
			return finish(attempt{hung: fmt.Sprintf("printed nothing for %s", lim.quiet)})
		case err := <-waitDone:
			// Hand the status back for finish.
			waitDone <- err
			a := finish(attempt{})
			if m.exitStatusMeaningless && a.output != "" {
				err = nil
			}
			if m.exitStatusMeaningless && a.output == "" && err == nil {
				err = errors.New("exited before the host printed anything")
			}
			if err != nil && !strings.Contains(a.output, ExitMarker) {
				a.err = fmt.Errorf("%s failed: %v\n%s stderr:\n%s\nconsole tail:\n%s",
					m.path, err, m.name(), tail(a.stderr, 2000), tail(a.output, 2000))
			}
			return a
		}
	}
}

// readConsole copies the console from r to out line by line ("\r\n" becomes
// "\n"), closes firstOutput at the first byte, signals activity (without
// blocking) at every read, and returns everything read.
func readConsole(r io.Reader, out io.Writer, firstOutput, activity chan<- struct{}) string {
	return readConsoleWatch(r, out, firstOutput, activity, nil)
}

// readConsoleWatch is readConsole that also hands each line (without its
// end) to watch, when not nil.
func readConsoleWatch(r io.Reader, out io.Writer, firstOutput, activity chan<- struct{}, watch func(string)) string {
	var all strings.Builder
	var pending []byte
	emit := func(line []byte) {
		line = bytes.TrimRight(line, "\r")
		if watch != nil {
			watch(string(line))
		}
		line = append(line, '\n')
		all.Write(line)
		_, _ = out.Write(line)
	}
	buf := make([]byte, 32*1024)
	seen := false
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if !seen {
				seen = true
				close(firstOutput)
			}
			select {
			case activity <- struct{}{}:
			default:
			}
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				emit(pending[:i])
				pending = pending[i+1:]
			}
		}
		if err != nil {
			break
		}
	}
	if len(pending) > 0 {
		emit(pending)
	}
	return all.String()
}

// hostCrash returns the first line of a kernel crash report of the emulated
// host itself (not of a guest inside it, whose console lines are indented or
// prefixed by the test output), or "".
func hostCrash(output string) string {
	for _, line := range strings.Split(output, "\n") {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(line, "[") {
			continue // the host kernel's printk lines start with a timestamp
		}
		for _, sig := range []string{"Kernel panic - not syncing", "BUG: ", "general protection fault"} {
			if strings.Contains(l, sig) {
				return l
			}
		}
	}
	return ""
}
