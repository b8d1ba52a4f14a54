package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Marker starts the probe's one line of output; a host reading a console
// picks the report out by it.
const Marker = "KVMLAB-PROBE "

// StartMarker is written to standard error as the probe starts, before it
// reads anything, so that a host watching a VM's console (where standard
// error goes too) can count the VM exits from there to the report. It goes
// to standard error so that standard output stays the one line.
const StartMarker = "KVMLAB-PROBE-START"

const usage = `usage: kvmlab-probe [--no-workload] [--wait]
       kvmlab-probe --bench [--bench-runs=N] [--bench-dir=DIR]

Prints what this process can see of its machine (kernel, CPUs, processes,
mounts, network interfaces, devices, kernel log, sysrq) as one line:
"KVMLAB-PROBE " and a JSON object. Then runs a small fixed workload (32
files of 16 KiB written, read and removed; 8 processes started) and
includes its duration, unless --no-workload. With --wait it then waits
until SIGTERM or SIGINT (kvmlab compare --density: an instance that is up).

--bench runs the application-speed programs instead (cpu, syscall, spawn,
file, memory: see kvmlab compare --workload) N times each (default 5), the
file program's files in a new directory under DIR (default /), and prints
"KVMLAB-WORKLOAD " and each run's time as JSON.
`

// Main is the kvmlab-probe command: args are its arguments (without the
// program name). It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	opt := Options{Workload: true}
	wait, bench, runs, dir := false, false, DefaultBenchRuns, "/"
	for _, a := range args {
		if ok, err := parseBenchArg(a, &runs, &dir); ok {
			if err != nil {
				fmt.Fprintf(stderr, "kvmlab-probe: %v\n", err)
				return 2
			}
			continue
		}
		switch a {
		case "--wait":
			wait = true
		case "--bench":
			bench = true
		case NoopArg:
			// The workload's children: exit before doing anything.
			return 0
		case "--no-workload":
			opt.Workload = false
		case "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return 0
		default:
			fmt.Fprintf(stderr, "kvmlab-probe: unknown argument %q\n%s", a, usage)
			return 2
		}
	}
	if bench {
		return printLine(stdout, stderr, BenchMarker, RunBench(dir, runs))
	}
	// Caught before the report is out, so that a signal sent as soon as
	// the line is seen cannot kill the probe with the default action.
	var sigs chan os.Signal
	if wait {
		sigs = make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}
	fmt.Fprintln(stderr, StartMarker)
	if st := printLine(stdout, stderr, Marker, Collect(opt)); st != 0 || !wait {
		return st
	}
	fmt.Fprintf(stderr, "kvmlab-probe: stopped by %v\n", <-sigs)
	return 0
}

// printLine prints marker and v as JSON on one line, in one write so the
// line reaches a console or pipe in one piece.
func printLine(stdout, stderr io.Writer, marker string, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		// Collect keeps every value encodable (no NaN, valid UTF-8);
		// this is for the report a bug would need.
		fmt.Fprintf(stderr, "kvmlab-probe: %v\n", err)
		return 1
	}
	line := append([]byte(marker), b...)
	if _, err := stdout.Write(append(line, '\n')); err != nil {
		fmt.Fprintf(stderr, "kvmlab-probe: %v\n", err)
		return 1
	}
	return 0
}
