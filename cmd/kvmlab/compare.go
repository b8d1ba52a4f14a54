package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"kvmlab/container"
	"kvmlab/guest/probe"
	"kvmlab/tests/harness"
	"kvmlab/vmm"
)

// `kvmlab compare` runs the same userland twice, as a virtual machine (its
// own kernel, under kvmlab) and as a container (the host's kernel, behind
// namespaces and cgroups), with the same probe (guest/probe) as the
// workload, and turns the claims people read about VMs and containers into
// measured rows. docs/isolation.md explains each row.

const compareUsage = `usage: kvmlab compare [flags]

Boots the kvmlab guest as a VM and starts its root file system as a
container (and under runc, when installed), runs the same probe in both,
and prints one row per claim (own kernel, start-up, footprint, what each
sees of the host, the system calls or VM exits the workload causes, and
the blast radius of a kernel panic). Without a usable /dev/kvm it runs
inside the emulated host. Needs root (namespaces, cgroups).

Flags:
`

// probeMarker starts the probe's JSON line; probeStart is printed by the
// guest just before the probe runs, so exits can be counted around it.
const (
	probeMarker = "KVMLAB-PROBE "
	probeStart  = "KVMLAB-PROBE-START"
	// compareMarker starts the JSON report printed by the run inside the
	// emulated host, for the outer kvmlab to render.
	compareMarker = "KVMLAB-COMPARE-JSON "
)

type compareFlags struct {
	kernel, initrd, mem string
	jsonOut             bool
	html                string
	noRunc              bool
	timeout             time.Duration
	emulated, inHost    bool
}

func cmdCompare(args []string) error {
	var f compareFlags
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), compareUsage); fs.PrintDefaults() }
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel (default: the kvmlab guest kernel)")
	fs.StringVar(&f.initrd, "initrd", "", "the userland both sides run: a u-root initramfs with /bin/kvmlab-probe (default: the kvmlab initramfs)")
	fs.StringVar(&f.mem, "mem", "256M", "the VM's RAM, and the container's memory limit")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.StringVar(&f.html, "html", "", "also write a self-contained HTML report with charts to this file")
	fs.BoolVar(&f.noRunc, "no-runc", false, "leave runc out even when it is installed")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Minute, "limit for each side")
	fs.BoolVar(&f.emulated, "emulated-host", false, "run inside the emulated host even when /dev/kvm works")
	fs.BoolVar(&f.inHost, "in-emulated-host", false, "internal: this is the run inside the emulated host")
	if help, err := parseFlags(fs, args, false); help || err != nil {
		return err
	}
	mem, err := parseSize(f.mem)
	if err != nil || mem < 128<<20 || mem > 3<<30 {
		return usagef("compare: --mem %q: give 128M to 3G", f.mem)
	}
	if err := resolveGuest("compare", &f.kernel, &f.initrd); err != nil {
		return err
	}
	if f.html != "" {
		if d := filepath.Dir(f.html); d != "" {
			if st, err := os.Stat(d); err != nil || !st.IsDir() {
				return usagef("compare: --html %s: directory %s does not exist: create it or pick another path", f.html, d)
			}
		}
	}
	if os.Geteuid() != 0 && !f.emulated {
		if ok, _ := harness.KVMUsable(); ok {
			return usagef("compare: the container side needs root (namespaces, cgroups): run it with sudo")
		}
	}
	var rep *compareReport
	if ok, why := harness.KVMUsable(); f.inHost || (ok && !f.emulated) {
		rep, err = compareHere(&f, mem)
	} else {
		if !f.emulated {
			fmt.Fprintf(os.Stderr, "kvmlab compare: %s: running inside the emulated host (QEMU TCG, nested SVM)\n", why)
		}
		rep, err = compareEmulated(&f)
	}
	if err != nil {
		return err
	}
	if f.inHost {
		// The outer kvmlab renders; send it the data.
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		fmt.Printf("%s%s\n", compareMarker, b)
		return nil
	}
	return renderCompare(rep, &f)
}

func renderCompare(rep *compareReport, f *compareFlags) error {
	if f.html != "" {
		var b bytes.Buffer
		if err := writeCompareHTML(&b, rep); err != nil {
			return err
		}
		if err := os.WriteFile(f.html, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--html: %w", err)
		}
		fmt.Fprintf(os.Stderr, "kvmlab compare: wrote %s\n", f.html)
	}
	return printReport(f.jsonOut, rep, rep.print)
}

// compareEmulated runs `kvmlab compare --in-emulated-host` inside the
// emulated host and reads the report it prints.
func compareEmulated(f *compareFlags) (*compareReport, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	files := emulatedGuestFiles(self, f.kernel, f.initrd)
	argv := []string{"/kvmlab/kvmlab", "compare", "--in-emulated-host", "--kernel", "/kvmlab/kernel",
		"--initrd", "/kvmlab/initrd", "--mem", f.mem, "--timeout", f.timeout.String()}
	if !f.noRunc {
		if _, err := exec.LookPath("runc"); err == nil {
			rf, err := harness.Programs("runc")
			if err != nil {
				return nil, err
			}
			files = append(files, rf...)
		} else {
			argv = append(argv, "--no-runc")
		}
	} else {
		argv = append(argv, "--no-runc")
	}
	var out bytes.Buffer
	// Progress goes to stderr as it comes, the report line aside.
	progress := &consoleWatch{fn: func(line string, _ time.Time) {
		if !strings.Contains(line, compareMarker) {
			fmt.Fprintln(os.Stderr, line)
		}
	}}
	spec := harness.Spec{Files: files, Argv: argv, MemMB: 3072, CPUs: 2, Timeout: 3*f.timeout + 3*time.Minute,
		Output: io.MultiWriter(&out, progress)}
	res, err := harness.Run(context.Background(), spec)
	if err != nil {
		return nil, fmt.Errorf("emulated host: %w", err)
	}
	for _, l := range strings.Split(strings.ReplaceAll(out.String(), "\r", ""), "\n") {
		if i := strings.Index(l, compareMarker); i >= 0 {
			var rep compareReport
			if err := json.Unmarshal([]byte(l[i+len(compareMarker):]), &rep); err != nil {
				return nil, fmt.Errorf("the report from the emulated host: %w", err)
			}
			return &rep, nil
		}
	}
	return nil, fmt.Errorf("the run inside the emulated host printed no report (exit status %d)", res.ExitCode)
}

// sideReport is what one way of running the userland showed.
type sideReport struct {
	Name  string        `json:"name"`
	Probe *probe.Report `json:"probe,omitempty"`
	// StartupMS runs from the start (VM: before loading the kernel;
	// container: before unpacking the root) to the probe's report.
	StartupMS float64 `json:"startup_ms"`
	// FootprintBytes is the memory the side uses: for the VM, the VMM's
	// resident memory including the guest RAM it touched; for a
	// container, the cgroup's peak (memory.peak or max_usage_in_bytes).
	FootprintBytes uint64 `json:"footprint_bytes"`
	FootprintNote  string `json:"footprint_note"`
	// ImageBytes is what had to be on disk: kernel + initramfs, or the
	// unpacked root file system.
	ImageBytes uint64 `json:"image_bytes"`
	// Boundary counts the crossings of the isolation boundary during the
	// probe's workload: VM exits (all, and those kvmlab handled in user
	// space), or system calls into the host kernel.
	BoundaryKind   string            `json:"boundary_kind"` // "vm-exits", "syscalls" or "" (not counted)
	Boundary       uint64            `json:"boundary"`
	BoundaryUser   uint64            `json:"boundary_user_space,omitempty"`
	BoundaryNote   string            `json:"boundary_note"`
	BoundaryDetail map[string]uint64 `json:"boundary_detail,omitempty"`
	// Blast is what happened when the side tried to crash its kernel.
	Blast        string `json:"blast"`
	HostSurvived bool   `json:"host_survived"`
	Error        string `json:"error,omitempty"`
}

// compareRow is one claim with what each side showed.
type compareRow struct {
	Claim     string `json:"claim"`
	Fact      string `json:"fact"`
	Host      string `json:"host"`
	VM        string `json:"vm"`
	Container string `json:"container"`
	Runc      string `json:"runc,omitempty"`
}

type compareReport struct {
	Where      string        `json:"where"`
	HostProbe  *probe.Report `json:"host_probe"`
	VM         sideReport    `json:"vm"`
	Container  sideReport    `json:"container"`
	Runc       *sideReport   `json:"runc,omitempty"`
	CgroupUsed string        `json:"cgroup_used"`
	Rows       []compareRow  `json:"rows"`
}

// compareHere runs both sides on this machine's KVM and kernel.
func compareHere(f *compareFlags, mem uint64) (*compareReport, error) {
	if os.Geteuid() != 0 {
		return nil, usagef("compare: the container side needs root (namespaces, cgroups): run it with sudo")
	}
	where := "this machine (/dev/kvm)"
	if f.inHost {
		where = "the emulated host (QEMU TCG -cpu max, nested SVM)"
	}
	hostBefore := probe.Collect(probe.Options{})
	rep := &compareReport{Where: where, HostProbe: &hostBefore}
	progress := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "kvmlab compare: "+format+"\n", a...) }

	progress("booting the VM with the probe (%s, %s RAM)", filepath.Base(f.kernel), f.mem)
	rep.VM = vmSide(f)
	progress("booting a VM that crashes its own kernel (sysrq c)")
	rep.VM.Blast = vmCrash(f)

	root, err := os.MkdirTemp("", "kvmlab-compare-root-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	if err := container.Unpack(f.initrd, root); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", f.initrd, err)
	}
	rootSize := dirSize(root)
	progress("starting the container with the probe")
	rep.Container = containerSide(f, root, mem, false)
	rep.Container.ImageBytes = rootSize
	rep.CgroupUsed = rep.Container.FootprintNote
	if !f.noRunc {
		if _, err := exec.LookPath("runc"); err == nil {
			progress("starting the same root under runc")
			r := containerSide(f, root, mem, true)
			r.ImageBytes = rootSize
			rep.Runc = &r
		}
	}
	hostAfter := probe.Collect(probe.Options{})
	survived := hostAfter.BootID == hostBefore.BootID && hostAfter.BootID != ""
	for _, s := range []*sideReport{&rep.VM, &rep.Container, rep.Runc} {
		if s != nil {
			s.HostSurvived = survived
		}
	}
	rep.Rows = compareRows(rep)
	return rep, nil
}

// consoleWatch is the VM's console: it hands each complete line to fn.
type consoleWatch struct {
	mu  sync.Mutex
	buf []byte
	fn  func(line string, at time.Time)
	all bytes.Buffer // the whole console, for error reports
}

func (c *consoleWatch) Write(p []byte) (int, error) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.all.Len() < 1<<20 {
		c.all.Write(p)
	}
	c.buf = append(c.buf, p...)
	for {
		i := bytes.IndexByte(c.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		c.fn(strings.TrimRight(string(c.buf[:i]), "\r"), now)
		c.buf = c.buf[i+1:]
	}
}

func (c *consoleWatch) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return tailLines(c.all.String(), 4)
}

// exitTotals reads the VM's exits so far: those kvmlab handled (user
// space) and all of them (KVM's statistics, which include the first).
func exitTotals(m *vmm.Machine) (user, all uint64) {
	user = m.Stats().TotalExits
	if ks, err := m.KernelStats(); err == nil {
		for _, v := range ks {
			all += v["exits"]
		}
	}
	return user, all
}

// bootVM boots the guest with cmdline in this process and calls onLine for
// each console line (with the machine); it returns when the guest stops or
// the timeout passes.
func bootVM(f *compareFlags, cmdline string, onLine func(m *vmm.Machine, line string, at time.Time)) (vmm.Outcome, string, error) {
	rf := runFlags{kernel: f.kernel, initrd: f.initrd, appendLine: cmdline, mem: f.mem, cpus: 1}
	cfg, err := rf.loadConfig()
	if err != nil {
		return vmm.Outcome{}, "", err
	}
	var mu sync.Mutex
	var m *vmm.Machine
	watch := &consoleWatch{fn: func(line string, at time.Time) {
		mu.Lock()
		mm := m
		mu.Unlock()
		if mm != nil {
			onLine(mm, line, at)
		}
	}}
	cfg.Console = watch
	cfg.Stats = true
	mm, err := vmm.New(cfg)
	if err != nil {
		return vmm.Outcome{}, "", kvmError(err)
	}
	defer mm.Close()
	cfg.Kernel, cfg.Initrd = nil, nil
	debug.FreeOSMemory()
	mu.Lock()
	m = mm
	mu.Unlock()
	timer := time.AfterFunc(f.timeout, mm.Quit)
	defer timer.Stop()
	out := mm.Run()
	return out, watch.tail(), nil
}

func vmSide(f *compareFlags) sideReport {
	s := sideReport{Name: "VM (kvmlab)"}
	start := time.Now()
	var userAtStart, allAtStart uint64
	var got bool
	out, tail, err := bootVM(f, "console=ttyS0 panic=-1 quiet kvmlab.run=kvmlab-probe", func(m *vmm.Machine, line string, at time.Time) {
		switch {
		case strings.HasPrefix(line, probeStart):
			userAtStart, allAtStart = exitTotals(m)
		case strings.HasPrefix(line, probeMarker) && !got:
			got = true
			s.StartupMS = float64(at.Sub(start).Microseconds()) / 1000
			u, a := exitTotals(m)
			s.Boundary, s.BoundaryUser = a-allAtStart, u-userAtStart
			st := m.Stats()
			s.FootprintBytes = st.RSS
			s.FootprintNote = fmt.Sprintf("VMM RSS %.1f MiB = guest RAM touched %.1f MiB + VMM %.1f MiB", mib(st.RSS), mib(st.GuestResident), mib(st.VMMResident()))
			var r probe.Report
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, probeMarker)), &r); err != nil {
				s.Error = "probe output: " + err.Error()
				return
			}
			s.Probe = &r
		}
	})
	if err != nil {
		s.Error = err.Error()
		return s
	}
	if !got && s.Error == "" {
		s.Error = fmt.Sprintf("the probe did not report (%s); console: %s", out.Detail, tail)
	}
	s.ImageBytes = fileSize(f.kernel) + fileSize(f.initrd)
	s.BoundaryKind = "vm-exits"
	s.BoundaryNote = "VM exits while the probe ran (KVM statistics); the part kvmlab handled in user space beside"
	return s
}

// vmCrash boots a VM whose guest crashes its own kernel through sysrq (the
// guest's kvmlab-crash, guest/uinit) and reports what became of it.
func vmCrash(f *compareFlags) string {
	var panicked string
	out, tail, err := bootVM(f, "console=ttyS0 panic=-1 quiet kvmlab.run=kvmlab-crash", func(m *vmm.Machine, line string, at time.Time) {
		if strings.Contains(line, "Kernel panic") && panicked == "" {
			panicked = strings.TrimSpace(line[strings.Index(line, "Kernel panic"):])
		}
	})
	if err != nil {
		return "could not boot: " + err.Error()
	}
	if panicked == "" {
		return fmt.Sprintf("no panic seen (%s); console: %s", out.Detail, tail)
	}
	return fmt.Sprintf("guest kernel panicked (%q); the VM ended (%s); the host kernel carried on", panicked, out.Detail)
}

func containerSide(f *compareFlags, root string, mem uint64, runc bool) sideReport {
	s := sideReport{Name: "container (kvmlab)"}
	if runc {
		s.Name = "container (runc)"
	}
	// The first run measures start-up and memory with nothing in the
	// way; counting system calls (ptrace stops the workload at each one)
	// would slow it several times over, so that is a second run.
	res, line, at, start, err := runContainerProbe(f, root, mem, runc, false)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	s.StartupMS = float64(at.Sub(start).Microseconds()) / 1000
	var r probe.Report
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, probeMarker)), &r); err != nil {
		s.Error = "probe output: " + err.Error()
		return s
	}
	s.Probe = &r
	s.FootprintBytes = res.MemoryPeak
	if res.MemoryPeak == 0 {
		s.FootprintNote = "n/a: " + res.Cgroup.Version + " reports no peak"
	} else {
		s.FootprintNote = fmt.Sprintf("cgroup %s peak", res.Cgroup.Version)
	}
	if runc {
		s.BoundaryNote = "not counted under runc"
		s.Blast = "not tried under runc"
		return s
	}
	if res, _, _, _, err := runContainerProbe(f, root, mem, false, true); err != nil {
		s.BoundaryNote = "counting failed: " + err.Error()
	} else {
		s.BoundaryKind = "syscalls"
		s.Boundary = res.Syscalls
		s.BoundaryDetail = res.SyscallsByName
		s.BoundaryNote = "system calls the probe made into the host kernel (ptrace, in a second run)"
	}
	refused, detail, err := container.TrySysrqCrash(container.Config{Rootfs: root})
	switch {
	case err != nil:
		s.Blast = "the attempt could not run: " + err.Error()
	case refused:
		s.Blast = "refused: " + detail
	default:
		s.Blast = "not refused: " + detail
	}
	return s
}

// runContainerProbe runs the probe once in a container and returns the
// result, the probe's line, when it arrived, and when the start was.
func runContainerProbe(f *compareFlags, root string, mem uint64, runc, count bool) (res container.Result, line string, at, start time.Time, err error) {
	var mu sync.Mutex
	watch := &consoleWatch{fn: func(l string, t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(l, probeMarker) && at.IsZero() {
			at, line = t, l
		}
	}}
	var stderr bytes.Buffer
	cfg := container.Config{Args: []string{"/bin/kvmlab-probe"}, Rootfs: root, Stdout: watch, Stderr: &stderr,
		Limits: container.Limits{Memory: mem}, CountSyscalls: count}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	start = time.Now()
	if runc {
		res, err = container.RunRunc(ctx, cfg)
	} else {
		res, err = container.Run(ctx, cfg)
	}
	mu.Lock()
	defer mu.Unlock()
	if err == nil && at.IsZero() {
		err = fmt.Errorf("the probe did not report (exit status %d): %s", res.ExitCode, tailLines(stderr.String(), 3))
	}
	return res, line, at, start, err
}

func fileSize(p string) uint64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return uint64(st.Size())
}

func dirSize(root string) uint64 {
	var n uint64
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if i, err := d.Info(); err == nil {
				n += uint64(i.Size())
			}
		}
		return nil
	})
	return n
}

var errNoProbe = errors.New("no probe report")

// pr returns a side's probe report or errNoProbe.
func (s *sideReport) pr() (*probe.Report, error) {
	if s == nil || s.Probe == nil {
		return nil, errNoProbe
	}
	return s.Probe, nil
}
