package compare

// Application speed: "performance of the application inside a container is
// generally same or better as compared to the same application running
// within a virtual machine". The same small programs (kvmlab-probe --bench,
// guest/probe/bench.go: cpu, syscall, spawn, file, memory) run on the host
// itself, in the VM, in our container and under runc, and each side's median
// time is shown as a ratio to the host's, with the spread of its runs.
//
// The host run is the very binary the other sides run: the probe from the
// unpacked root, started directly, with its files in that root. So the
// ratios compare the isolation, not two builds of the programs.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"kvmlab/container"
	"kvmlab/guest/probe"
	"kvmlab/internal/human"
	"kvmlab/vmm"
)

// Workload is the application-speed section of a report.
type Workload struct {
	Runs  int            `json:"runs"`
	Sides []WorkloadSide `json:"sides"` // host first, then VM, container, runc
}

// WorkloadSide is one side's run of the programs.
type WorkloadSide struct {
	Name   string             `json:"name"`
	Result *probe.BenchResult `json:"result,omitempty"`
	Error  string             `json:"error,omitempty"`
}

// times returns the run times of program name, or nil.
func (s *WorkloadSide) times(name string) []int64 {
	if s == nil || s.Result == nil {
		return nil
	}
	for _, p := range s.Result.Programs {
		if p.Name == name {
			return p.NS
		}
	}
	return nil
}

// median of the run times (the mean of the middle two for an even count).
func median(ns []int64) float64 {
	if len(ns) == 0 {
		return 0
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return float64(s[len(s)/2])
	}
	return (float64(s[len(s)/2-1]) + float64(s[len(s)/2])) / 2
}

// spread is half the range of the runs as a fraction of their median: "±5%"
// says every run was within 5% of the median's distance either way.
func spread(ns []int64) float64 {
	m := median(ns)
	if m == 0 {
		return 0
	}
	return float64(slices.Max(ns)-slices.Min(ns)) / 2 / m
}

// benchCmdline makes the guest run the programs and power off.
func benchCmdline(runs int) string {
	return "console=ttyS0 panic=-1 quiet kvmlab.run=kvmlab-probe,--bench,--bench-runs=" + strconv.Itoa(runs)
}

// workloadRun runs the programs on each side, one side at a time (they
// would slow each other down otherwise).
func workloadRun(ctx context.Context, o *Options, root string, runc bool) *Workload {
	w := &Workload{Runs: o.WorkloadRuns}
	pw := o.progress()
	type side struct {
		name string
		run  func() (string, error)
	}
	sides := []side{
		{"host", func() (string, error) { return benchOnHost(ctx, o, root) }},
		{"VM (kvmlab)", func() (string, error) { return benchInVM(ctx, o) }},
		{"container (kvmlab)", func() (string, error) { return benchInContainer(ctx, o, root, false) }},
	}
	if runc {
		sides = append(sides, side{"container (runc)", func() (string, error) { return benchInContainer(ctx, o, root, true) }})
	}
	for _, s := range sides {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(pw, "kvmlab compare: workload: %d runs of each program, %s\n", o.WorkloadRuns, s.name)
		ws := WorkloadSide{Name: s.name}
		line, err := s.run()
		if err == nil {
			var r probe.BenchResult
			if err = decodeMarked(line, probe.BenchMarker, &r); err == nil {
				if err = checkBench(&r, o.WorkloadRuns); err == nil {
					ws.Result = &r
				}
			}
		}
		if err != nil {
			ws.Error = err.Error()
		}
		w.Sides = append(w.Sides, ws)
	}
	return w
}

// checkBench bounds what a side (a guest, possibly hostile) reported: the
// programs this kvmlab knows, each with at most the runs asked for, and
// times that are positive.
func checkBench(r *probe.BenchResult, runs int) error {
	names := probe.BenchNames()
	if len(r.Programs) != len(names) {
		return fmt.Errorf("%d programs reported, want %d", len(r.Programs), len(names))
	}
	if len(r.Errors) > 16 {
		return fmt.Errorf("%d errors reported: more than the programs can make", len(r.Errors))
	}
	// The descriptions and errors reach a terminal: no control
	// characters (an escape sequence could rewrite what the user sees).
	for _, e := range r.Errors {
		if len(e) > 500 || strings.ContainsFunc(e, unicode.IsControl) {
			return fmt.Errorf("an error line of %d bytes with control characters or too long", len(e))
		}
	}
	for i, p := range r.Programs {
		if p.Name != names[i] || len(p.NS) > runs || len(p.What) > 200 || strings.ContainsFunc(p.What, unicode.IsControl) {
			return fmt.Errorf("program %d: %.40q with %d runs: not what was asked", i, p.Name, len(p.NS))
		}
		for _, ns := range p.NS {
			if ns <= 0 {
				return fmt.Errorf("program %s: run time %d ns", p.Name, ns)
			}
		}
	}
	return nil
}

// decodeMarked decodes the first JSON value after marker in line (see
// jsonProbe: a guest's printk may land around it).
func decodeMarked(line, marker string, v any) error {
	i := strings.Index(line, marker)
	if i < 0 {
		return fmt.Errorf("no %q in the output", strings.TrimSpace(marker))
	}
	if err := json.NewDecoder(strings.NewReader(line[i+len(marker):])).Decode(v); err != nil {
		return fmt.Errorf("decoding %s: %w", strings.TrimSpace(marker), err)
	}
	return nil
}

// markedLine watches output for the first line holding marker.
type markedLine struct {
	mu   sync.Mutex
	line string
}

func (m *markedLine) watch(marker string) *consoleWatch {
	return &consoleWatch{fn: func(l string, _ time.Time) { m.see(l, marker) }}
}

func (m *markedLine) see(l, marker string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.line == "" && strings.Contains(l, marker) {
		m.line = l
	}
}

func (m *markedLine) get() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.line
}

// benchOnHost runs the root's probe binary directly on the host, with its
// files in the root (the file system the containers' root is on).
func benchOnHost(ctx context.Context, o *Options, root string) (string, error) {
	var got markedLine
	watch := got.watch(probe.BenchMarker)
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", probe.Name), "--bench",
		"--bench-runs="+strconv.Itoa(o.WorkloadRuns), "--bench-dir="+root)
	cmd.Args[0] = probe.Name // the multi-call binary dispatches on it
	cmd.Stdout = watch
	stderr := &limitedBuffer{n: 16 << 10}
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", cmd.Path, err, human.TailLines(stderr.String(), 2))
	}
	if got.get() == "" {
		return "", fmt.Errorf("%s printed no result", cmd.Path)
	}
	return got.get(), nil
}

// benchInVM boots the guest with the programs as its command.
func benchInVM(ctx context.Context, o *Options) (string, error) {
	var got markedLine
	out, tail, err := bootVM(ctx, o, benchCmdline(o.WorkloadRuns), func(_ *vmm.Machine, l string, _ time.Time) {
		got.see(l, probe.BenchMarker)
	})
	if err != nil {
		return "", err
	}
	if got.get() == "" {
		return "", fmt.Errorf("the guest printed no result (%s); console: %s", out.Detail, tail)
	}
	return got.get(), nil
}

// benchInContainer runs the programs in a container of the root.
func benchInContainer(ctx context.Context, o *Options, root string, runc bool) (string, error) {
	var got markedLine
	stderr := &limitedBuffer{n: 16 << 10}
	cfg := container.Config{Args: []string{"/bin/" + probe.Name, "--bench", "--bench-runs=" + strconv.Itoa(o.WorkloadRuns)},
		Rootfs: root, Stdout: got.watch(probe.BenchMarker), Stderr: stderr, Limits: container.Limits{Memory: o.MemBytes}}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var res container.Result
	var err error
	if runc {
		res, err = container.RunRunc(ctx, cfg)
	} else {
		res, err = container.Run(ctx, cfg)
	}
	if err != nil {
		return "", err
	}
	if got.get() == "" {
		return "", fmt.Errorf("no result (exit status %d): %s", res.ExitCode, human.TailLines(stderr.String(), 2))
	}
	return got.get(), nil
}

// workloadRows are the section's rows: one per program, the host's median
// time and each side's ratio to it.
func workloadRows(w *Workload) []Row {
	if w == nil {
		return nil
	}
	side := func(name string) *WorkloadSide {
		for i := range w.Sides {
			if w.Sides[i].Name == name {
				return &w.Sides[i]
			}
		}
		return nil
	}
	host := side("host")
	claim := fmt.Sprintf("Application speed: time against the host's (median of %d runs, ± half their range)", w.Runs)
	var out []Row
	for i, name := range probe.BenchNames() {
		what := name
		for _, s := range w.Sides {
			if s.Result != nil && i < len(s.Result.Programs) {
				what = name + ": " + s.Result.Programs[i].What
				break
			}
		}
		hm := median(host.times(name))
		cell := func(s *WorkloadSide) string {
			switch {
			case s == nil:
				return ""
			case s.Error != "" && s.Result == nil:
				return "failed (see below)"
			}
			t := s.times(name)
			if len(t) == 0 {
				return "failed (see below)"
			}
			if s == host {
				return fmt.Sprintf("%s ms ±%.0f%%", human.Num(hm/1e6), 100*spread(t))
			}
			if hm == 0 {
				return fmt.Sprintf("%s ms ±%.0f%% (no host figure)", human.Num(median(t)/1e6), 100*spread(t))
			}
			return fmt.Sprintf("%.2fx ±%.0f%%", median(t)/hm, 100*spread(t))
		}
		r := Row{Fact: what, Host: cell(host), VM: cell(side("VM (kvmlab)")), Container: cell(side("container (kvmlab)")),
			Runc: cell(side("container (runc)"))}
		if i == 0 {
			r.Claim = claim
		}
		out = append(out, r)
	}
	return out
}

// Ratio is side's median time for program name over the host's; 0 when
// either is missing.
func (w *Workload) Ratio(sideName, name string) float64 {
	var host, s *WorkloadSide
	for i := range w.Sides {
		switch w.Sides[i].Name {
		case "host":
			host = &w.Sides[i]
		case sideName:
			s = &w.Sides[i]
		}
	}
	hm, sm := median(host.times(name)), median(s.times(name))
	if hm == 0 || sm == 0 {
		return 0
	}
	return sm / hm
}
