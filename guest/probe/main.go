package probe

import (
	"encoding/json"
	"fmt"
	"io"
)

// Marker starts the probe's one line of output; a host reading a console
// picks the report out by it.
const Marker = "KVMLAB-PROBE "

// StartMarker is written to standard error as the probe starts, before it
// reads anything, so that a host watching a VM's console (where standard
// error goes too) can count the VM exits from there to the report. It goes
// to standard error so that standard output stays the one line.
const StartMarker = "KVMLAB-PROBE-START"

const usage = `usage: kvmlab-probe [--no-workload]

Prints what this process can see of its machine (kernel, CPUs, processes,
mounts, network interfaces, devices, kernel log, sysrq) as one line:
"KVMLAB-PROBE " and a JSON object. Then runs a small fixed workload (32
files of 16 KiB written, read and removed; 8 processes started) and
includes its duration, unless --no-workload.
`

// Main is the kvmlab-probe command: args are its arguments (without the
// program name). It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	opt := Options{Workload: true}
	for _, a := range args {
		switch a {
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
	fmt.Fprintln(stderr, StartMarker)
	r := Collect(opt)
	b, err := json.Marshal(r)
	if err != nil {
		// Collect keeps every value encodable (no NaN, valid UTF-8);
		// this is for the report a bug would need.
		fmt.Fprintf(stderr, "kvmlab-probe: %v\n", err)
		return 1
	}
	// One write, so the line reaches a console or pipe in one piece.
	line := append([]byte(Marker), b...)
	if _, err := stdout.Write(append(line, '\n')); err != nil {
		fmt.Fprintf(stderr, "kvmlab-probe: %v\n", err)
		return 1
	}
	return 0
}
