package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"

	"kvmlab/internal/userfile"
	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/reportlimit"
	"kvmlab/vmm/trace"
	"kvmlab/vmm/tracepoint"
)

// statsSink feeds every exit event into the statistics table.
type statsSink struct{ s *trace.Stats }

func (s statsSink) Record(ev *trace.Event) { s.s.Add(ev) }

// observation holds what `run --trace/--stats` set up.
type observation struct {
	out    *userfile.Output // the trace file, put in place by start
	stats  *trace.Stats
	tp     *tracepoint.Collector
	tpErr  error
	useTP  bool
	closer []func() error
	before []map[string]uint64
}

// checkTraceFlags refuses a bad --trace or --trace-format, creating
// nothing.
func checkTraceFlags(traceFile, format string) error {
	switch format {
	case "json", "jsonl", "chrome", "":
	default:
		return usagef("--trace-format %s: use json (one object per exit) or chrome (Perfetto timeline)", format)
	}
	if traceFile == "" {
		if format != "json" && format != "" {
			return usagef("--trace-format %s: needs --trace FILE", format)
		}
		return nil
	}
	if err := userfile.CheckOutput(traceFile); err != nil {
		return usagef("--trace %s: %v", traceFile, err)
	}
	return nil
}

// setupObservation starts the trace file and statistics for cfg. The trace
// is written under a temporary name until start puts it in place, so a run
// refused before the machine exists leaves an old file as it was.
func setupObservation(cfg *vmm.Config, traceFile, format string, stats, tracepoints bool) (*observation, error) {
	if err := checkTraceFlags(traceFile, format); err != nil {
		return nil, err
	}
	o := &observation{useTP: tracepoints}
	var sinks []trace.Sink
	if traceFile != "" {
		f, err := userfile.CreateOutput(traceFile)
		if err != nil {
			return nil, usagef("--trace %s: %v", traceFile, err)
		}
		o.out = f
		if format == "chrome" {
			w := trace.NewChromeWriter(f)
			sinks = append(sinks, w)
			o.closer = append(o.closer, w.Close, f.Close)
		} else {
			w := trace.NewJSONWriter(f)
			sinks = append(sinks, w)
			o.closer = append(o.closer, w.Close, f.Close)
		}
	}
	if stats {
		o.stats = trace.NewStats()
		sinks = append(sinks, statsSink{o.stats})
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

// abort ends an observation whose machine never ran: the trace writers
// stop and the trace file is thrown away, leaving an old one as it was.
func (o *observation) abort() {
	for _, c := range o.closer { // the writers stop, then the file goes
		_ = c()
	}
	if o.out != nil {
		o.out.Abort()
	}
}

func (o *observation) start(m *vmm.Machine) {
	// The trace file goes in place now, the machine built: before the
	// seccomp filter, which allows no rename or unlink (confine.go).
	if o.out != nil {
		if err := o.out.Commit(); err != nil {
			fmt.Fprintf(os.Stderr, "kvmlab: --trace: %v: no trace is written\n", err)
			o.out.Abort()
		}
	}
	if o.stats != nil {
		o.before, _ = m.KernelStats()
		if o.useTP {
			o.tp, o.tpErr = tracepoint.Start()
		}
	}
}

// finish flushes the trace and prints the statistics.
func (o *observation) finish(m *vmm.Machine, w io.Writer) error {
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
	if o.tp != nil {
		tpCounts = o.tp.Stop()
	}
	fmt.Fprintln(w, "\n=== VM exits that reached kvmlab (user space) ===")
	o.stats.Write(w)
	fmt.Fprintf(w, "kvmlab: %d user-space exits\n", o.stats.Total())
	after, err := m.KernelStats()
	if err == nil && len(o.before) == len(after) {
		printKernelStats(w, o.before, after)
	} else if err != nil {
		fmt.Fprintf(w, "\nKVM's own exit counters unavailable: %v\n", err)
	}
	if o.useTP {
		printTracepoint(w, tpCounts, o.tpErr)
	}
	totals, dropped := m.Reports()
	printReports(w, totals, dropped)
	printMemory(w, m)
	return first
}

// printReports shows the errors the guest caused, per device, as the
// report limiter counted them: on stderr only the first few of each were
// printed in full, the rest summarised once a second (vmm/reportlimit).
func printReports(w io.Writer, totals []reportlimit.Total, dropped reportlimit.Dropped) {
	if len(totals) == 0 {
		return
	}
	fmt.Fprintln(w, "\n=== Errors the guest caused, by device (rate-limited on stderr) ===")
	fmt.Fprintf(w, "  %-28s %10s %10s %12s\n", "device", "errors", "in full", "summarised")
	for _, t := range totals {
		fmt.Fprintf(w, "  %-28s %10d %10d %12d\n", t.Source, t.Reports, t.Full, t.Summarised)
	}
	lines := func(n uint64) string {
		if n == 1 {
			return "1 line"
		}
		return fmt.Sprintf("%d lines", n)
	}
	if dropped.OverLimitLines > 0 {
		fmt.Fprintf(w, "  %s (%d bytes) not written: over the limit of bytes per second\n", lines(dropped.OverLimitLines), dropped.OverLimitBytes)
	}
	if dropped.StuckLines > 0 {
		fmt.Fprintf(w, "  %s (%d bytes) not written: stderr did not keep up\n", lines(dropped.StuckLines), dropped.StuckBytes)
	}
}

// printTracepoint shows every exit by its hardware name, as the kernel's
// kvm:kvm_exit tracepoint reported it.
func printTracepoint(w io.Writer, counts map[string]uint64, err error) {
	if err != nil {
		fmt.Fprintf(w, "\n(every exit by hardware reason: %v; run as root with tracefs mounted to see it)\n", err)
		return
	}
	var total uint64
	for _, n := range counts {
		total += n
	}
	fmt.Fprintf(w, "\n=== Every VM exit by hardware reason, from the kvm:kvm_exit tracepoint (%d events) ===\n", total)
	for _, e := range tracepoint.Sorted(counts) {
		fmt.Fprintf(w, "  %-28s %10d %6.1f%%\n", e.Reason, e.Count, 100*float64(e.Count)/float64(max(total, 1)))
	}
	fmt.Fprintf(w, "kvmlab: %d exits seen by the tracepoint\n", total)
}

// printKernelStats shows KVM's binary statistics as deltas over the run:
// these count every exit, including the many handled inside the kernel that
// kvmlab never sees.
func printKernelStats(w io.Writer, before, after []map[string]uint64) {
	fmt.Fprintln(w, "\n=== All VM exits, from KVM's statistics (KVM_GET_STATS_FD), per vCPU ===")
	total := map[string]uint64{}
	for i := range after {
		for k, v := range kvm.Delta(before[i], after[i]) {
			total[k] += v
		}
	}
	keys := []string{"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "signal_exits", "irq_window_exits",
		"nmi_window_exits", "request_irq_exits", "insn_emulation", "hypercalls", "pf_taken", "halt_wakeup"}
	fmt.Fprintf(w, "  %-20s", "counter")
	for i := range after {
		fmt.Fprintf(w, " %10s", fmt.Sprintf("vCPU%d", i))
	}
	fmt.Fprintf(w, " %10s  %s\n", "total", "meaning")
	for _, k := range keys {
		if _, ok := after[0][k]; !ok {
			continue
		}
		fmt.Fprintf(w, "  %-20s", k)
		for i := range after {
			fmt.Fprintf(w, " %10d", after[i][k]-before[i][k])
		}
		fmt.Fprintf(w, " %10d  %s\n", total[k], kvm.StatMeaning(k))
	}
	if all := total["exits"]; all > 0 {
		user := total["io_exits"] + total["mmio_exits"]
		fmt.Fprintf(w, "kvmlab: %d exits in all (KVM statistics); about %d (%.1f%%) were port or MMIO accesses that needed kvmlab; the rest KVM handled in the kernel.\n",
			all, user, 100*float64(user)/float64(all))
	}
}

func printMemory(w io.Writer, m *vmm.Machine) {
	if lines := m.VirtioStats(); len(lines) > 0 {
		fmt.Fprintln(w, "\n=== Virtio devices ===")
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	st := m.Stats()
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "\n=== Memory ===\n  RSS %.1f MiB = guest RAM touched %.1f MiB (of %.0f MiB) + VMM %.1f MiB\n",
		mib(st.RSS), mib(st.GuestResident), mib(st.GuestRAM), mib(st.VMMResident()))
	fmt.Fprintf(w, "  %s\n", runtimeSummary())
	if len(st.AccessesByDevice) > 0 {
		type kv struct {
			k string
			v uint64
		}
		var l []kv
		for k, v := range st.AccessesByDevice {
			l = append(l, kv{k, v})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
		fmt.Fprintln(w, "\n=== Port/MMIO accesses by device ===")
		for _, e := range l {
			fmt.Fprintf(w, "  %-28s %10d\n", e.k, e.v)
		}
	}
}

// runtimeSummary is one line on what the Go runtime holds of the VMM's own
// memory, in its view: memory obtained from the kernel, whether or not all
// of it is resident. kvmlab run prints it at exit with --stats, or when
// KVMLAB_RUNTIME_REPORT is set (kvmlab bench --smaps sets it).
func runtimeSummary() string {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	threads := "?"
	if b, err := vmm.SelfStatus.ReadAll(); err == nil { // opened before the seccomp filter
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Threads:"); ok {
				threads = strings.TrimSpace(v)
			}
		}
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	return fmt.Sprintf("Go runtime: heap live %.2f MiB (in spans %.2f, free but not returned %.2f), goroutine stacks %.2f MiB, runtime metadata %.2f MiB; %d goroutines on %s threads; %d GC cycles",
		mib(ms.HeapAlloc), mib(ms.HeapInuse), mib(ms.HeapIdle-ms.HeapReleased), mib(ms.StackInuse),
		mib(ms.MSpanInuse+ms.MCacheInuse+ms.BuckHashSys+ms.GCSys+ms.OtherSys), runtime.NumGoroutine(), threads, ms.NumGC)
}

// runtimeReportEnv asks kvmlab run for runtimeSummary at exit.
const runtimeReportEnv = "KVMLAB_RUNTIME_REPORT"

// cmdStat prints statistics from a saved JSON trace.
func cmdStat(args []string) error {
	fset := flag.NewFlagSet("stat", flag.ContinueOnError)
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), "Usage: kvmlab stat TRACE.json\n\nPrint exit statistics (like perf kvm stat report) from a trace written by 'kvmlab run --trace FILE'.\n")
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2}
	}
	if fset.NArg() != 1 {
		return usagef("stat: give one trace file, e.g. kvmlab stat boot.json")
	}
	path := fset.Arg(0)
	// A regular file (not /dev/zero, not a FIFO) of at most maxTraceSize,
	// read as a stream: the reader holds one line at a time
	// (trace.MaxLine), and the statistics one entry per reason, device
	// and vCPU.
	f, _, err := userfile.Open(path, userfile.Spec{What: "trace", Max: maxTraceSize})
	if err != nil {
		return usagef("stat %s: %v", path, err)
	}
	defer f.Close()
	head := make([]byte, 16)
	n, _ := io.ReadFull(f, head)
	if bytes.HasPrefix(bytes.TrimSpace(head[:n]), []byte(`{"traceEvents"`)) {
		return usagef("stat %s: this is a Chrome trace; kvmlab stat reads the json format (--trace-format json)", path)
	}
	s := trace.NewStats()
	sc, err := trace.ScanJSON(io.MultiReader(bytes.NewReader(head[:n]), io.LimitReader(f, maxTraceSize-int64(n))),
		func(ev *trace.Event) { s.Add(ev) })
	if sc.Events == 0 {
		return usagef("stat %s: %s: not a trace written by 'kvmlab run --trace FILE'", path, noEvents(sc, err))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvmlab: %s: %v (skipped; showing the %d events that are)\n", path, err, sc.Events)
	}
	s.Write(os.Stdout)
	return nil
}

// maxTraceSize bounds what kvmlab stat reads. A trace line is a few hundred
// bytes, so this is some ten million exits, far more than a Linux boot
// makes.
const maxTraceSize = 4 << 30

// noEvents says what a file with no exit events held instead.
func noEvents(sc trace.Scanned, err error) string {
	plural := func(n int) string {
		if n == 1 {
			return "1 line"
		}
		return fmt.Sprintf("%d lines", n)
	}
	switch {
	case err != nil && sc.First == nil: // a read error
		return err.Error()
	case sc.Lines == 0:
		return "is empty"
	case sc.Bad == 0:
		return fmt.Sprintf("no exit events in %s, all blank", plural(sc.Lines))
	}
	return fmt.Sprintf("no exit events in %s (line %d: %v)", plural(sc.Lines), sc.First.Line, sc.First.Err)
}
