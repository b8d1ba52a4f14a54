package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"kvmlab/internal/userfile"
	"kvmlab/vmm"
	"kvmlab/vmm/observatory"
	"kvmlab/vmm/trace"
)

// observation is what `run --trace/--stats` set up (package observatory).
type observation = observatory.Observation

// checkTraceFlags refuses a bad --trace or --trace-format, creating
// nothing.
func checkTraceFlags(traceFile, format string) error {
	return asUsage(observatory.Options{TraceFile: traceFile, TraceFormat: format}.Check())
}

// setupObservation starts the trace file and statistics for cfg. The trace
// is written under a temporary name until the machine starts, so a run
// refused before the machine exists leaves an old file as it was.
func setupObservation(cfg *vmm.Config, traceFile, format string, stats, tracepoints bool) (*observation, error) {
	if err := checkTraceFlags(traceFile, format); err != nil {
		return nil, err
	}
	o, err := observatory.Setup(cfg, observatory.Options{TraceFile: traceFile, TraceFormat: format,
		Stats: stats, Tracepoint: tracepoints, Log: os.Stderr})
	if err != nil {
		return nil, usagef("--trace %s: %v", traceFile, err)
	}
	return o, nil
}

// runtimeReportEnv asks kvmlab run for vmm.RuntimeSummary at exit.
const runtimeReportEnv = "KVMLAB_RUNTIME_REPORT"

// cmdStat prints statistics from a saved JSON trace.
func cmdStat(args []string) error {
	fset := flag.NewFlagSet("stat", flag.ContinueOnError)
	setUsage(fset, "Usage: kvmlab stat TRACE.json\n\nPrint exit statistics (like perf kvm stat report) from a trace written by 'kvmlab run --trace FILE'.\n")
	if help, err := parseFlags(fset, args, true); help || err != nil {
		return err
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
	s, sc, err := trace.ReadStats(io.LimitReader(f, maxTraceSize))
	if errors.Is(err, trace.ErrChromeTrace) {
		return usagef("stat %s: this is a Chrome trace; kvmlab stat reads the json format (--trace-format json)", path)
	}
	if sc.Events == 0 {
		return usagef("stat %s: %s: not a trace written by 'kvmlab run --trace FILE'", path, sc.NoEvents(err))
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
