package main

import (
	"strings"
	"testing"
)

// TestGDBAddr: --gdb's address listens on loopback unless a host is named.
func TestGDBAddr(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: ":1234", want: "127.0.0.1:1234"},
		{in: "1234", want: "127.0.0.1:1234"},
		{in: "0.0.0.0:1234", want: "0.0.0.0:1234"},
		{in: "[::1]:9", want: "[::1]:9"},
		{in: "localhost:1234", want: "localhost:1234"},
		{in: "host:", err: "is not HOST:PORT"},
		{in: ":gdb", err: "not a number"},
		{in: "99999", err: "not a number"},
		{in: ":0", err: "not a number"},
		{in: "a:b:c", err: "is not HOST:PORT"},
	} {
		got, err := gdbAddr(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("gdbAddr(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("gdbAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestGDBFlags: bad uses of --gdb and --gdb-wait are refused in one line
// before any work.
func TestGDBFlags(t *testing.T) {
	for _, tc := range []struct {
		f    runFlags
		want string
	}{
		{runFlags{gdbWait: true, emulatedCPU: "amd"}, "--gdb-wait waits for the debugger of --gdb"},
		{runFlags{gdb: ":1234", emulated: true, emulatedCPU: "amd"}, "--gdb with --emulated-host"},
		{runFlags{gdb: ":x", emulatedCPU: "amd"}, `--gdb :x: port "x" is not a number`},
		{runFlags{gdb: ":1234", emulatedCPU: "amd"}, ""},
	} {
		err := gdbCheck(&tc.f)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.f, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want %q", tc.f, err, tc.want)
		}
	}
}
