package main

import (
	"fmt"
	"io"
	"net"
	"os"

	"kvmlab/internal/rawterm"
	"kvmlab/vmm"
	"kvmlab/vmm/gdbstub"
)

// kvmlab run --gdb ADDR: a GDB Remote Serial Protocol stub (vmm/gdbstub).

const gdbUsage = "listen for GDB's remote protocol on this TCP address: :1234 or 1234 mean 127.0.0.1:1234 (loopback only; name a host, e.g. 0.0.0.0:1234, to listen beyond it); then in gdb: target remote :1234 (docs/gdb.md)"

const gdbWaitUsage = "with --gdb: stop before the guest's first instruction and wait for gdb"

// gdbCheck refuses a bad --gdb or --gdb-wait before any other work.
func gdbCheck(f *runFlags) error {
	if f.gdb == "" {
		if f.gdbWait {
			return usagef("--gdb-wait waits for the debugger of --gdb: add --gdb :1234")
		}
		return nil
	}
	if f.emulated || f.emulatedCPU != "amd" {
		return usagef("--gdb with --emulated-host: the stub would listen inside the emulated host; run kvmlab there with --gdb")
	}
	if _, err := gdbstub.ListenAddr(f.gdb); err != nil {
		return usagef("--gdb %s: %v", f.gdb, err)
	}
	return nil
}

// gdbListen listens on --gdb's address before the machine is built (and
// before the seccomp filter, which allows no socket or bind): a port in
// use refuses the run at once.
func gdbListen(f *runFlags) error {
	if f.gdb == "" {
		return nil
	}
	addr, err := gdbstub.ListenAddr(f.gdb)
	if err != nil {
		return usagef("--gdb %s: %v", f.gdb, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usagef("--gdb %s: %v: choose another port", f.gdb, err)
	}
	f.gdbLn = ln
	return nil
}

// gdbAttach makes cfg's machine a GDB target (before vmm.New).
func gdbAttach(f *runFlags, cfg *vmm.Config) {
	if f.gdbLn != nil {
		f.gdbStub = gdbstub.Attach(cfg, f.gdbWait)
	}
}

// gdbStart serves debuggers for m until the returned function is called,
// after m.Run.
func gdbStart(f *runFlags, m *vmm.Machine, status io.Writer) (stop func()) {
	if f.gdbStub == nil {
		return func() {}
	}
	stop = f.gdbStub.Serve(m, f.gdbLn, rawterm.CRLF(os.Stderr))
	how := "the guest runs until gdb attaches"
	if f.gdbWait {
		how = "the guest waits before its first instruction"
	}
	fmt.Fprintf(status, "kvmlab: gdb: listening on %s (%s): gdb vmlinux -ex 'target remote %s'\r\n", f.gdbLn.Addr(), how, f.gdbLn.Addr())
	return stop
}
