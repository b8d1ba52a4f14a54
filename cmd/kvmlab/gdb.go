package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"kvmlab/vmm"
	"kvmlab/vmm/gdbstub"
	"kvmlab/vmm/seccomp"
)

// kvmlab run --gdb ADDR: a GDB Remote Serial Protocol stub (vmm/gdbstub).

const gdbUsage = "listen for GDB's remote protocol on this TCP address: :1234 or 1234 mean 127.0.0.1:1234 (loopback only; name a host, e.g. 0.0.0.0:1234, to listen beyond it); then in gdb: target remote :1234 (docs/gdb.md)"

const gdbWaitUsage = "with --gdb: stop before the guest's first instruction and wait for gdb"

// gdbAddr resolves --gdb's address: a bare port or :PORT listens on the
// loopback interface only, since whoever reaches the port owns the guest.
func gdbAddr(s string) (string, error) {
	if !strings.Contains(s, ":") {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return "", fmt.Errorf("%q is not HOST:PORT or :PORT", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

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
	if _, err := gdbAddr(f.gdb); err != nil {
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
	addr, err := gdbAddr(f.gdb)
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

// gdbStart binds the stub to m and serves debuggers until the returned
// function is called, after m.Run.
func gdbStart(f *runFlags, m *vmm.Machine, status io.Writer) (stop func()) {
	if f.gdbStub == nil {
		return func() {}
	}
	f.gdbStub.Bind(m)
	srv := gdbstub.NewServer(f.gdbStub, crlfWriter{os.Stderr})
	go func() {
		if err := srv.Serve(f.gdbLn); err != nil {
			fmt.Fprintf(crlfWriter{os.Stderr}, "kvmlab: gdb: no more debuggers: %v\n", err)
		}
	}()
	how := "the guest runs until gdb attaches"
	if f.gdbWait {
		how = "the guest waits before its first instruction"
	}
	fmt.Fprintf(status, "kvmlab: gdb: listening on %s (%s): gdb vmlinux -ex 'target remote %s'\r\n", f.gdbLn.Addr(), how, f.gdbLn.Addr())
	return func() {
		f.gdbStub.Ended()
		_ = f.gdbLn.Close()
	}
}

// gdbSeccompRules are the calls the running VMM needs to serve a debugger
// on a socket that was listening before the filter: accept4, getsockname
// (Go's net package calls it on each accepted connection) and setsockopt
// (TCP_NODELAY on it).
func gdbSeccompRules() []seccomp.Rule {
	return []seccomp.Rule{
		{Name: "accept4", Nr: unix.SYS_ACCEPT4},
		{Name: "getsockname", Nr: unix.SYS_GETSOCKNAME},
		{Name: "setsockopt", Nr: unix.SYS_SETSOCKOPT},
		{Name: "getpeername", Nr: unix.SYS_GETPEERNAME},
	}
}
