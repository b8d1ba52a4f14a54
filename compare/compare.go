package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"kvmlab/container"
	"kvmlab/emuhost"
	"kvmlab/guest/probe"
	"kvmlab/internal/human"
	"kvmlab/vmm"
)

// ProbeMarker starts the probe's JSON line; ProbeStart is printed by the
// guest just before the probe runs, so exits can be counted around it.
const (
	ProbeMarker = "KVMLAB-PROBE "
	ProbeStart  = "KVMLAB-PROBE-START"
	// ReportMarker starts the JSON report printed by the run inside the
	// emulated host, for the outer kvmlab to render.
	ReportMarker = "KVMLAB-COMPARE-JSON "
)

// Options say what to compare and how. The caller has checked the user's
// input: the paths exist, the sizes are in range.
type Options struct {
	// Kernel and Initrd are the guest: a Linux kernel, and the userland
	// both sides run (a u-root initramfs with /bin/kvmlab-probe).
	Kernel, Initrd string
	// Mem is the VM's RAM and the container's memory limit as the user
	// wrote it ("256M"): it is handed on to VMConfig and to the run inside
	// the emulated host. MemBytes is the same, parsed.
	Mem      string
	MemBytes uint64
	// NoRunc leaves runc out even when it is installed.
	NoRunc bool
	// Timeout bounds each side.
	Timeout time.Duration
	// Inner says this is the run inside the emulated host (it only changes
	// what the report says the host is).
	Inner bool
	// VMConfig builds the VM for a kernel command line: the guest's files
	// read and checked the way `kvmlab run` does. Needed by Here.
	VMConfig func(cmdline string) (vmm.Config, error)
	// VMError turns a failure to create the VM into the message a user
	// reads (which module to load, which group to join); nil leaves it.
	VMError func(error) error
	// Progress receives a line per step, for a terminal; nil discards.
	Progress io.Writer
	// Ctx, when done (Ctrl-C, SIGTERM), stops every VM and container
	// the comparison started and makes Here return ErrInterrupted, with
	// its temporary files removed. nil means never.
	Ctx context.Context
	// NoBasic leaves out the basic comparison (the VM, container, runc
	// and restored columns): with Density or Workload, only those run.
	NoBasic bool
	// Density, when above 0, adds the density section: N VMs and N
	// containers at once, for N in DensityPoints(Density). Self is the
	// kvmlab binary each VM runs as (`kvmlab run`).
	Density int
	Self    string
	// Workload adds the application-speed section, each program run
	// WorkloadRuns times per side.
	Workload     bool
	WorkloadRuns int
	// Nested adds the column of a container inside a VM (nested.go):
	// the VM boots with Self carried into it and runs `kvmlab container`
	// there. Part of the basic comparison.
	Nested bool
}

// ErrInterrupted is returned by Here and InEmulatedHost when Options.Ctx
// ended the comparison; everything it started has been stopped.
var ErrInterrupted = errors.New("interrupted")

func (o *Options) ctx() context.Context {
	if o.Ctx == nil {
		return context.Background()
	}
	return o.Ctx
}

func (o *Options) progress() io.Writer {
	if o.Progress == nil {
		return io.Discard
	}
	return o.Progress
}

// Side is what one way of running the userland showed.
type Side struct {
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
	// KernelBootID is the boot id of the kernel the workload ran on, read
	// outside the workload (the nested side's guest, by its helper);
	// empty where there is no such outside.
	KernelBootID string `json:"kernel_boot_id,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Row is one claim with what each side showed.
type Row struct {
	Claim     string `json:"claim"`
	Fact      string `json:"fact"`
	Host      string `json:"host"`
	VM        string `json:"vm"`
	Container string `json:"container"`
	Runc      string `json:"runc,omitempty"`
	Restored  string `json:"restored,omitempty"`
	Nested    string `json:"nested,omitempty"`
}

// Report is the whole comparison: the sides' measurements and the rows
// made from them. Its JSON is what `kvmlab compare --json` prints.
type Report struct {
	Where     string        `json:"where"`
	HostProbe *probe.Report `json:"host_probe"`
	VM        Side          `json:"vm"`
	Container Side          `json:"container"`
	Runc      *Side         `json:"runc,omitempty"`
	// Restored is the VM brought back from a snapshot taken at its
	// shell; SnapshotNote says what that snapshot cost.
	Restored     *Side  `json:"restored,omitempty"`
	SnapshotNote string `json:"snapshot_note,omitempty"`
	// Nested is the container inside a VM (--nested), and NestedInfo
	// what carrying the runtime into its guest cost.
	Nested     *Side       `json:"nested,omitempty"`
	NestedInfo *NestedInfo `json:"nested_info,omitempty"`
	CgroupUsed string      `json:"cgroup_used"`
	// NoBasic says the basic comparison was left out (Options.NoBasic).
	NoBasic bool `json:"no_basic,omitempty"`
	// Density is the density section, one point per N (--density).
	Density []DensityPoint `json:"density,omitempty"`
	// Workload is the application-speed section (--workload).
	Workload *Workload `json:"workload,omitempty"`
	// Leftovers is what the check after the density and workload runs
	// found left behind (processes, cgroups, temporary roots, network
	// interfaces), one line each; LeftoversChecked says it ran.
	Leftovers        []string `json:"leftovers,omitempty"`
	LeftoversChecked bool     `json:"leftovers_checked,omitempty"`
	// Notes are lines for the reader that belong to no side (runc not
	// installed).
	Notes []string `json:"notes,omitempty"`
	Rows  []Row    `json:"rows"`
}

// WriteMarked writes the report as one JSON line after ReportMarker: the
// run inside the emulated host hands its report out this way, through the
// serial console that also carries its progress.
func (rep *Report) WriteMarked(w io.Writer) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s%s\n", ReportMarker, b)
	return err
}

// InEmulatedHost runs `kvmlab compare --in-emulated-host` inside the
// emulated host and reads the report it prints. files must carry the kvmlab
// binary to /kvmlab/kvmlab and the guest to /kvmlab/kernel and
// /kvmlab/initrd; runc joins them when it is installed here. The inner run's
// progress goes to o.Progress as it comes.
func InEmulatedHost(o Options, files []emuhost.File) (*Report, error) {
	// A copy: appending runc's must never write into the caller's array.
	files = slices.Clone(files)
	argv := []string{"/kvmlab/kvmlab", "compare", "--in-emulated-host", "--kernel", "/kvmlab/kernel",
		"--initrd", "/kvmlab/initrd", "--mem", o.Mem, "--timeout", o.Timeout.String()}
	timeout := 3*o.Timeout + 3*time.Minute
	memMB := 3072
	if o.NoBasic {
		argv = append(argv, "--basic=false")
	}
	if o.Density > 0 {
		argv = append(argv, "--density", fmt.Sprint(o.Density))
		// Room for the N VMs at their worst (CheckDensity's estimate)
		// beside the emulated host's own files.
		memMB = max(memMB, int(uint64(o.Density)*(o.MemBytes+VMMOverhead)>>20)+1536)
		timeout += time.Duration(len(DensityPoints(o.Density))) * o.Timeout
	}
	if o.Workload {
		argv = append(argv, "--workload", "--workload-runs", fmt.Sprint(o.WorkloadRuns))
		timeout += 2 * o.Timeout
	}
	if o.Nested {
		argv = append(argv, "--nested")
		timeout += o.Timeout
	}
	if !o.NoRunc {
		if _, err := exec.LookPath("runc"); err == nil {
			rf, err := emuhost.Programs("runc")
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
	// Progress goes on as it comes, the report line aside.
	pw := o.progress()
	progress := &consoleWatch{fn: func(line string, _ time.Time) {
		if !strings.Contains(line, ReportMarker) {
			fmt.Fprintln(pw, line)
		}
	}}
	spec := emuhost.Spec{Files: files, Argv: argv, MemMB: memMB, CPUs: 2, Timeout: timeout,
		Output: io.MultiWriter(&out, progress)}
	res, err := emuhost.Run(o.ctx(), spec)
	if o.ctx().Err() != nil {
		// The emulated host, and every VM and container in it, went
		// with its emulator.
		return nil, fmt.Errorf("%w: %w", ErrInterrupted, context.Cause(o.ctx()))
	}
	if err != nil {
		return nil, fmt.Errorf("emulated host: %w", err)
	}
	for _, l := range strings.Split(strings.ReplaceAll(out.String(), "\r", ""), "\n") {
		if i := strings.Index(l, ReportMarker); i >= 0 {
			var rep Report
			if err := json.Unmarshal([]byte(l[i+len(ReportMarker):]), &rep); err != nil {
				return nil, fmt.Errorf("the report from the emulated host: %w", err)
			}
			return &rep, nil
		}
	}
	return nil, fmt.Errorf("the run inside the emulated host printed no report (exit status %d)", res.ExitCode)
}

// Here runs both sides on this machine's KVM and kernel. It needs root
// (namespaces, cgroups) and a /dev/kvm that can boot Linux; the caller
// checks both, to say so in one line before any work.
func Here(o Options) (*Report, error) {
	if o.VMConfig == nil {
		return nil, errors.New("compare: Options.VMConfig is nil")
	}
	if (o.Density > 0 || o.Nested) && o.Self == "" {
		return nil, errors.New("compare: Options.Self is empty: the density VMs and the nested side need the kvmlab binary")
	}
	if o.WorkloadRuns <= 0 {
		o.WorkloadRuns = probe.DefaultBenchRuns
	}
	ctx := o.ctx()
	interrupted := func() error { return fmt.Errorf("%w: %w", ErrInterrupted, context.Cause(ctx)) }
	where := "this machine (/dev/kvm)"
	if o.Inner {
		where = "the emulated host (QEMU TCG -cpu max, nested SVM)"
	}
	netBefore := netInterfaces()
	hostBefore := probe.Collect(probe.Options{})
	rep := &Report{Where: where, HostProbe: &hostBefore, NoBasic: o.NoBasic}
	pw := o.progress()
	progress := func(format string, a ...any) { fmt.Fprintf(pw, "kvmlab compare: "+format+"\n", a...) }
	runc, note := findRunc(o.NoRunc)
	if note != "" {
		rep.Notes = append(rep.Notes, note)
		progress("%s", note)
	}

	if !o.NoBasic {
		progress("booting the VM with the probe (%s, %s RAM)", filepath.Base(o.Kernel), o.Mem)
		rep.VM = vmSide(ctx, &o)
		if ctx.Err() != nil {
			return nil, interrupted()
		}
		progress("booting a VM that crashes its own kernel (sysrq c)")
		rep.VM.Blast = vmCrash(ctx, &o)
		if ctx.Err() != nil {
			return nil, interrupted()
		}
		snapDir, err := os.MkdirTemp("", "kvmlab-compare-snapshot-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(snapDir)
		progress("booting the VM to its shell, taking a snapshot, and restoring it to run the probe")
		restored, note := restoredSide(ctx, &o, snapDir)
		rep.Restored, rep.SnapshotNote = &restored, note
		if ctx.Err() != nil {
			return nil, interrupted()
		}
		if o.Nested {
			// Before the containers on the host: that they run
			// after its guest kernel crashed shows the crash stayed
			// in its VM.
			progress("booting a VM that runs `kvmlab container` with the probe on the guest's kernel, then crashes that kernel (sysrq c)")
			nested, info := nestedSide(ctx, &o)
			rep.Nested, rep.NestedInfo = &nested, info
			if ctx.Err() != nil {
				return nil, interrupted()
			}
		}
	}

	root, err := os.MkdirTemp("", "kvmlab-compare-root-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	if err := container.Unpack(o.Initrd, root); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", o.Initrd, err)
	}
	rootSize := dirSize(root)
	if !o.NoBasic {
		progress("starting the container with the probe")
		rep.Container = containerSide(ctx, &o, root, false)
		rep.Container.ImageBytes = rootSize
		rep.CgroupUsed = rep.Container.FootprintNote
		if runc && ctx.Err() == nil {
			progress("starting the same root under runc")
			r := containerSide(ctx, &o, root, true)
			r.ImageBytes = rootSize
			rep.Runc = &r
		}
		if ctx.Err() != nil {
			return nil, interrupted()
		}
	}
	if o.Workload {
		rep.Workload = workloadRun(ctx, &o, root, runc)
	}
	if o.Density > 0 && ctx.Err() == nil {
		rep.Density = densityRun(ctx, &o, root)
	}
	if ctx.Err() != nil {
		return nil, interrupted()
	}
	if o.Density > 0 || o.Workload {
		// Every instance has been stopped and waited for: nothing of
		// them may remain.
		rep.Leftovers, rep.LeftoversChecked = leftovers(netBefore), true
	}
	hostAfter := probe.Collect(probe.Options{})
	survived := hostAfter.BootID == hostBefore.BootID && hostAfter.BootID != ""
	for _, s := range []*Side{&rep.VM, &rep.Container, rep.Runc, rep.Restored, rep.Nested} {
		if s != nil {
			s.HostSurvived = survived
		}
	}
	rep.Rows = rows(rep)
	return rep, nil
}

// findRunc says whether the runc columns run: not when the user left them
// out, nor when runc is not installed, which gets one line saying so.
func findRunc(noRunc bool) (bool, string) {
	if noRunc {
		return false, ""
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return false, "runc is not installed (not in PATH): its column is left out; install runc to add it, or pass --no-runc"
	}
	return true, ""
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
	return human.TailLines(c.all.String(), 4)
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
func bootVM(ctx context.Context, o *Options, cmdline string, onLine func(m *vmm.Machine, line string, at time.Time)) (vmm.Outcome, string, error) {
	return bootVMExtra(ctx, o, cmdline, nil, onLine)
}

// bootVMExtra is bootVM with a second cpio archive after the initramfs
// (nested.go), nil for none.
func bootVMExtra(ctx context.Context, o *Options, cmdline string, extra []byte, onLine func(m *vmm.Machine, line string, at time.Time)) (vmm.Outcome, string, error) {
	cfg, err := o.VMConfig(cmdline)
	if err != nil {
		return vmm.Outcome{}, "", err
	}
	if extra != nil {
		cfg.Initrd = appendArchive(cfg.Initrd, extra)
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
		if o.VMError != nil {
			err = o.VMError(err)
		}
		return vmm.Outcome{}, "", err
	}
	defer mm.Close()
	// The machine holds the kernel and initramfs in guest RAM now: the
	// copies read from the files can go before the guest boots.
	cfg.Kernel, cfg.Initrd = nil, nil
	debug.FreeOSMemory()
	mu.Lock()
	m = mm
	mu.Unlock()
	timer := time.AfterFunc(o.Timeout, mm.Quit)
	defer timer.Stop()
	stop := context.AfterFunc(ctx, mm.Quit)
	defer stop()
	out := mm.Run()
	return out, watch.tail(), nil
}

// vmProbe records, from a VM's console lines, what the probe run in it
// reports: the time from start to its report, the VM exits while it ran,
// the VMM's memory then, and the report itself (vmSide, nestedSide).
type vmProbe struct {
	s                       *Side
	start                   time.Time
	userAtStart, allAtStart uint64
	got                     bool
}

// see takes one console line and says whether it was the probe's.
func (p *vmProbe) see(m *vmm.Machine, line string, at time.Time) bool {
	switch {
	case strings.HasPrefix(line, ProbeStart):
		p.userAtStart, p.allAtStart = exitTotals(m)
	case strings.Contains(line, ProbeMarker) && !p.got:
		p.got = true
		s := p.s
		s.StartupMS = float64(at.Sub(p.start).Microseconds()) / 1000
		u, a := exitTotals(m)
		s.Boundary, s.BoundaryUser = a-p.allAtStart, u-p.userAtStart
		st := m.Stats()
		s.FootprintBytes = st.RSS
		s.FootprintNote = fmt.Sprintf("VMM RSS %.1f MiB = guest RAM touched %.1f MiB + VMM %.1f MiB", human.MiB(st.RSS), human.MiB(st.GuestResident), human.MiB(st.VMMResident()))
		var r probe.Report
		if err := jsonProbe(line, &r); err != nil {
			s.Error = "probe output: " + err.Error()
		} else {
			s.Probe = &r
		}
	default:
		return false
	}
	return true
}

func vmSide(ctx context.Context, o *Options) Side {
	s := Side{Name: "VM (kvmlab)"}
	start := time.Now()
	p := vmProbe{s: &s, start: start}
	out, tail, err := bootVM(ctx, o, "console=ttyS0 panic=-1 quiet kvmlab.run=kvmlab-probe", func(m *vmm.Machine, line string, at time.Time) {
		p.see(m, line, at)
	})
	if err != nil {
		s.Error = err.Error()
		return s
	}
	if !p.got && s.Error == "" {
		s.Error = fmt.Sprintf("the probe did not report (%s); console: %s", out.Detail, tail)
	}
	s.ImageBytes = fileSize(o.Kernel) + fileSize(o.Initrd)
	s.BoundaryKind = "vm-exits"
	s.BoundaryNote = "VM exits while the probe ran (KVM statistics); the part kvmlab handled in user space beside"
	return s
}

// vmCrash boots a VM whose guest crashes its own kernel through sysrq (the
// guest's kvmlab-crash, guest/uinit) and reports what became of it.
func vmCrash(ctx context.Context, o *Options) string {
	var panicked string
	out, tail, err := bootVM(ctx, o, "console=ttyS0 panic=-1 quiet kvmlab.run=kvmlab-crash", func(m *vmm.Machine, line string, at time.Time) {
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

func containerSide(ctx context.Context, o *Options, root string, runc bool) Side {
	s := Side{Name: "container (kvmlab)"}
	if runc {
		s.Name = "container (runc)"
	}
	// The first run measures start-up and memory with nothing in the
	// way; counting system calls (ptrace stops the workload at each one)
	// would slow it several times over, so that is a second run.
	res, line, at, start, err := runContainerProbe(ctx, o, root, runc, false)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	s.StartupMS = float64(at.Sub(start).Microseconds()) / 1000
	var r probe.Report
	if err := jsonProbe(line, &r); err != nil {
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
	if res, _, _, _, err := runContainerProbe(ctx, o, root, false, true); err != nil {
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
func runContainerProbe(ctx context.Context, o *Options, root string, runc, count bool) (res container.Result, line string, at, start time.Time, err error) {
	var mu sync.Mutex
	watch := &consoleWatch{fn: func(l string, t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(l, ProbeMarker) && at.IsZero() {
			at, line = t, l
		}
	}}
	var stderr bytes.Buffer
	cfg := container.Config{Args: []string{"/bin/kvmlab-probe"}, Rootfs: root, Stdout: watch, Stderr: &stderr,
		Limits: container.Limits{Memory: o.MemBytes}, CountSyscalls: count}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
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
		err = fmt.Errorf("the probe did not report (exit status %d): %s", res.ExitCode, human.TailLines(stderr.String(), 3))
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
func (s *Side) pr() (*probe.Report, error) {
	if s == nil || s.Probe == nil {
		return nil, errNoProbe
	}
	return s.Probe, nil
}
