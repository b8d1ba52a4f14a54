// Package observatory puts the exit observatory's instruments on one run of
// a machine and reads them out at its end: what `kvmlab run --trace FILE`
// and `kvmlab run --stats` do (docs/exits.md). It also writes the snapshots
// `kill -USR1` asks a running kvmlab for: where each vCPU is, the code at
// RIP, its registers and the exits since the last one (snapshot.go).
//
// A VM exit can be counted in three places, and each sees a different
// share of them:
//
//   - kvmlab itself sees the exits KVM_RUN returns to user space: every
//     event goes to a trace file (package trace: JSON Lines, or a Chrome
//     Trace Event timeline for Perfetto) and into a statistics table in the
//     manner of `perf kvm stat report` (trace.Stats).
//   - KVM counts every exit, the many it handles in the kernel included, in
//     its binary statistics (KVM_GET_STATS_FD, Documentation/virt/kvm/
//     api.rst); the report shows their change over the run
//     (kvm.WriteExitDeltas).
//   - The kernel's kvm:kvm_exit tracepoint names the hardware reason of
//     every exit (package tracepoint; root only). With it, each exit that
//     reached kvmlab is paired with the VM exit that led to it, and the
//     hardware reason kvmlab derived is checked against the one the
//     hardware gave (hwcheck.go).
//
// The report then adds the errors the guest caused, as the report limiter
// counted them (package reportlimit), and the memory the run used
// (vmm.Machine.WriteUsage). Each package formats its own figures; this one
// orders them and owns the life of the trace file: written under a
// temporary name, put in place only when the machine has been built, so a
// refused run leaves an old trace as it was (package internal/userfile).
package observatory

import (
	"fmt"
	"io"

	"kvmlab/internal/cli"
	"kvmlab/internal/userfile"
	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/reportlimit"
	"kvmlab/vmm/trace"
	"kvmlab/vmm/tracepoint"
)

// Options says what to observe.
type Options struct {
	TraceFile   string // the trace to write, "" for none
	TraceFormat string // "json" (or "jsonl", ""): one object per exit; "chrome": a timeline
	Stats       bool   // the statistics tables, printed by Finish
	Tracepoint  bool   // with Stats: every exit by hardware reason too (root, tracefs)
	// Log gets the one line saying the trace file could not be put in
	// place (Start); nil discards it.
	Log io.Writer
}

// Check refuses a bad trace file or format in one line naming the flag
// (a cli.UsageError), creating nothing: an existing trace file stays as it
// was.
func (opt Options) Check() error {
	switch opt.TraceFormat {
	case "json", "jsonl", "chrome", "":
	default:
		return cli.Usagef("--trace-format %s: use json (one object per exit) or chrome (Perfetto timeline)", opt.TraceFormat)
	}
	if opt.TraceFile == "" {
		if opt.TraceFormat != "json" && opt.TraceFormat != "" {
			return cli.Usagef("--trace-format %s: needs --trace FILE", opt.TraceFormat)
		}
		return nil
	}
	if err := userfile.CheckOutput(opt.TraceFile); err != nil {
		return cli.Usagef("--trace %s: %v", opt.TraceFile, err)
	}
	return nil
}

// Observation is what Setup put on a machine's config, until Finish.
type Observation struct {
	opt    Options
	out    *userfile.Output // the trace file, put in place by Start
	stats  *trace.Stats
	tp     *tracepoint.Collector
	tpErr  error
	hw     *hwRecorder // with Tracepoint: the exits, for the hardware-layer check
	closer []func() error
	before []map[string]uint64
}

// statsSink feeds every exit event into the statistics table.
type statsSink struct{ s *trace.Stats }

func (s statsSink) Record(ev *trace.Event) { s.s.Add(ev) }

// Setup creates the trace file, under a temporary name, and the statistics
// opt asks for, and sets cfg.Trace to feed them. The caller has checked
// opt (Check); an error is the trace file's.
func Setup(cfg *vmm.Config, opt Options) (*Observation, error) {
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	o := &Observation{opt: opt}
	var sinks []trace.Sink
	if opt.TraceFile != "" {
		f, err := userfile.CreateOutput(opt.TraceFile)
		if err != nil {
			return nil, err
		}
		o.out = f
		if opt.TraceFormat == "chrome" {
			w := trace.NewChromeWriter(f)
			sinks = append(sinks, w)
			o.closer = append(o.closer, w.Close, f.Close)
		} else {
			w := trace.NewJSONWriter(f)
			sinks = append(sinks, w)
			o.closer = append(o.closer, w.Close, f.Close)
		}
	}
	if opt.Stats {
		o.stats = trace.NewStats()
		sinks = append(sinks, statsSink{o.stats})
		if opt.Tracepoint {
			// Each exit's derived hardware reason, for the check
			// against the tracepoint (hwcheck.go).
			o.hw = newHWRecorder()
			sinks = append(sinks, o.hw)
		}
	}
	switch len(sinks) {
	case 0:
	case 1:
		cfg.Trace = sinks[0]
	default:
		cfg.Trace = trace.Multi(sinks...)
	}
	return o, nil
}

// Abort ends an observation whose machine never ran: the trace writers
// stop and the trace file is thrown away, leaving an old one as it was.
func (o *Observation) Abort() {
	for _, c := range o.closer { // the writers stop, then the file goes
		_ = c()
	}
	if o.out != nil {
		o.out.Abort()
	}
}

// Start is called once m is built and before it runs: the trace file goes
// in place, and KVM's counters and the tracepoint start from here.
func (o *Observation) Start(m *vmm.Machine) {
	// Before the seccomp filter (vmm/seccomp), which allows no rename or
	// unlink.
	if o.out != nil {
		if err := o.out.Commit(); err != nil {
			fmt.Fprintf(o.opt.Log, "kvmlab: --trace: %v: no trace is written\n", err)
			o.out.Abort()
		}
	}
	if o.stats != nil {
		o.before, _ = m.KernelStats()
		if o.opt.Tracepoint {
			o.tp, o.tpErr = tracepoint.Start()
		}
	}
}

// Finish flushes the trace and, with Stats, writes the report to w: the
// exits kvmlab saw, every exit KVM counted, the tracepoint's view, the
// errors the guest caused and the memory used. The error is the trace's.
func (o *Observation) Finish(m *vmm.Machine, w io.Writer) error {
	var first error
	for _, c := range o.closer {
		if err := c(); err != nil && first == nil {
			first = err
		}
	}
	if o.stats == nil {
		return first
	}
	var tpCounts map[string]uint64
	var check *hwCheck
	if o.tp != nil {
		tpCounts = o.tp.Stop()
		check = checkHardware(o.hw, o.tp.Check())
	}
	fmt.Fprintln(w, "\n=== VM exits that reached kvmlab (user space) ===")
	o.stats.Write(w)
	fmt.Fprintf(w, "kvmlab: %d user-space exits\n", o.stats.Total())
	after, err := m.KernelStats()
	if err == nil && len(o.before) == len(after) {
		kvm.WriteExitDeltas(w, o.before, after)
	} else if err != nil {
		fmt.Fprintf(w, "\nKVM's own exit counters unavailable: %v\n", err)
	}
	if o.opt.Tracepoint {
		tracepoint.WriteCounts(w, tpCounts, o.tpErr)
		if check != nil {
			check.write(w)
		}
	}
	totals, dropped := m.Reports()
	reportlimit.WriteTotals(w, totals, dropped)
	m.WriteUsage(w)
	return first
}
