package gdbstub

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
		got, err := ListenAddr(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ListenAddr(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
