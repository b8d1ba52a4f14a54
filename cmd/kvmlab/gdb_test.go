package main

import (
	"strings"
	"testing"
)

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
