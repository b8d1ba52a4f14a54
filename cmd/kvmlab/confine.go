package main

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"kvmlab/vmm"
	"kvmlab/vmm/seccomp"
)

// confine puts the running VMM under its seccomp filter (package
// vmm/seccomp), once the machine is built and before the first vCPU
// enters the guest, unless --seccomp=false. Whatever a running VMM reads
// later must be open by now: the /proc/self files for --stats here, the
// symbol files for snapshots in runMachine, the trace file, disk images
// and TAPs in set-up. cooked, when not nil, is the terminal's state before
// raw mode on fd, which the filter's SIGSYS handler restores before its
// message.
func confine(f *runFlags, status io.Writer, cooked *unix.Termios, fd int) error {
	if !f.seccomp {
		return nil
	}
	if f.tracepoints {
		// The tracepoint reader stats /proc/self/task/TID for every
		// event and rewrites tracefs files when it stops: file-system
		// calls the filter refuses. It is root-only and experimental.
		fmt.Fprint(status, "kvmlab: --kvm-exit-tracepoint reads tracefs while the guest runs: no seccomp filter for this run\r\n")
		return nil
	}
	for _, sf := range []*vmm.SelfFile{vmm.SelfStatm, vmm.SelfStatus} {
		if err := sf.Open(); err != nil {
			return fmt.Errorf("seccomp: opening what the confined VMM reads: %w", err)
		}
	}
	filter := seccomp.VMM()
	if f.controlLn != nil { // --control: serve the socket, remove it at the end
		filter.Rules = append(filter.Rules, seccomp.ControlSocketRules(f.controlLn.DirFD())...)
	}
	if f.gdbLn != nil { // --gdb: accept debuggers (gdb.go)
		filter.Rules = append(filter.Rules, seccomp.GDBSocketRules()...)
	}
	if err := seccomp.Install(filter, seccomp.Options{Terminal: cooked, TerminalFD: fd}); err != nil {
		return usagef("%v: run with --seccomp=false to go on without the filter", err)
	}
	return nil
}
