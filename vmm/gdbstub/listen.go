package gdbstub

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"kvmlab/vmm"
)

// ListenAddr resolves the address of `kvmlab run --gdb`: a bare port or
// :PORT listens on the loopback interface only, since whoever reaches the
// port owns the guest.
func ListenAddr(s string) (string, error) {
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

// Serve binds t to m, the machine built from the config t was attached
// to, and serves debuggers on ln, one at a time, until stop is called
// (after m.Run), which closes ln. Why serving ended is written to log.
func (t *Machine) Serve(m *vmm.Machine, ln net.Listener, log io.Writer) (stop func()) {
	t.Bind(m)
	srv := NewServer(t, log)
	go func() {
		if err := srv.Serve(ln); err != nil {
			fmt.Fprintf(log, "kvmlab: gdb: no more debuggers: %v\n", err)
		}
	}()
	return func() {
		t.Ended()
		_ = ln.Close()
	}
}
