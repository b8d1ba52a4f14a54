package vmm

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"kvmlab/devices/exitport"
	"kvmlab/guest/tiny"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/x86"
)

// out returns x86-64 code that writes s to port, one OUT of a byte per
// character: mov dx, port; then mov al, c; out dx, al for each.
func out(port uint16, s string) []byte {
	code := []byte{0x66, 0xba, byte(port), byte(port >> 8)}
	for _, c := range []byte(s) {
		code = append(code, 0xb0, c, 0xee)
	}
	return code
}

// spin is jmp $: the guest runs on until the VMM stops it.
var spin = []byte{0xeb, 0xfe}

// TestExecTinyGuests runs hand-assembled guests on this machine's /dev/kvm
// (kvm_pvm runs them too) with Config.Exec: the bytes a guest writes to
// COM2 and COM4 reach the command's stdout and stderr writers, COM1 stays
// on the console, a byte written to the exit-status port stops the machine
// with that status (a wider write is refused), a panic report on the
// console stops it as a panic, and StopTimeout stops a guest that never
// ends. TestExec in tests/ does the same with Linux and uinit.
func TestExecTinyGuests(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("no /dev/kvm here (%v): TestExec in tests/ runs the same paths in the emulated host", err)
	}
	err = sys.CheckRequired()
	sys.Close()
	if err != nil {
		t.Skipf("this /dev/kvm cannot run even a tiny guest: %v", err)
	}
	const panicText = "Kernel panic - not syncing: tiny\n---[ end Kernel panic - not syncing: tiny ]---\n"
	status := func(v byte) []byte { return append(out(exitport.Base, ""), 0xb0, v, 0xee) }
	tests := []struct {
		name                string
		code                [][]byte
		timeout             bool
		reason              StopReason
		status              int
		stdout, stderr, con string
		detail              string
	}{
		{"status and streams", [][]byte{out(x86.COM1Port, "boot\n"), out(x86.COM2Port, "hi\n"), out(x86.COM4Port, "err\n"), status(3), spin},
			false, StopExit, 3, "hi\n", "err\n", "boot\n", "exit status 3"},
		{"a word to the port is refused", [][]byte{out(exitport.Base, ""), {0x66, 0xb8, 7, 7, 0x66, 0xef}, status(9), spin},
			false, StopExit, 9, "", "", "", "exit status 9"},
		{"the first status counts", [][]byte{status(0), status(1), spin}, false, StopExit, 0, "", "", "", "exit status 0"},
		{"panic", [][]byte{out(x86.COM2Port, "before\n"), out(x86.COM1Port, panicText), spin},
			false, StopGuestPanic, 0, "before\n", "", panicText, "Kernel panic - not syncing: tiny"},
		{"timeout", [][]byte{out(x86.COM2Port, "started\n"), spin}, true, StopTimeout, 0, "started\n", "", "", "timed out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr, console, log bytes.Buffer
			m, err := New(Config{Kernel: tiny.ELF(bytes.Join(tc.code, nil)), MemBytes: 64 << 20, CPUs: 1,
				Console: &console, Log: &log, Exec: &ExecConfig{Stdout: &stdout, Stderr: &stderr}})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer m.Close()
			if tc.timeout {
				// When the stop comes does not matter: the guest
				// never ends by itself.
				time.AfterFunc(100*time.Millisecond, func() { m.StopTimeout(100 * time.Millisecond) })
			}
			o := m.Run()
			if o.Reason != tc.reason || o.Status != tc.status || !strings.Contains(o.Detail, tc.detail) {
				t.Fatalf("outcome %v status %d (%s); want %v status %d with %q", o.Reason, o.Status, o.Detail, tc.reason, tc.status, tc.detail)
			}
			if stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Errorf("stdout %q, stderr %q; want %q, %q", stdout.String(), stderr.String(), tc.stdout, tc.stderr)
			}
			if console.String() != tc.con || o.Console != tc.con {
				t.Errorf("console %q, outcome's console %q; want %q", console.String(), o.Console, tc.con)
			}
			t.Logf("%v: %s; VMM log: %q", o.Reason, o.Detail, log.String())
		})
	}
}
