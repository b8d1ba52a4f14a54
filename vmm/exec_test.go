package vmm

import (
	"bytes"
	"strings"
	"testing"
	"unicode"
)

// A panic report as Linux 6.x prints it on the serial console (with
// printk times; the stack dump shortened).
const panicReport = "[    2.101] sysrq: Trigger a crash\r\n" +
	"[    2.102] Kernel panic - not syncing: sysrq triggered crash\r\n" +
	"[    2.103] CPU: 0 PID: 77 Comm: sh Not tainted 6.12.0 #1\r\n" +
	"[    2.104] Call Trace:\r\n" +
	"[    2.105] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\r\n"

func TestConsoleWatch(t *testing.T) {
	tests := []struct {
		name      string
		writes    []string
		wantLine  string
		wantEnded bool
		wantCalls int
	}{
		{"quiet boot", []string{"Run /init as init process\r\n", "hello\r\n"}, "", false, 0},
		{"a whole panic", []string{panicReport}, "Kernel panic - not syncing: sysrq triggered crash", true, 1},
		{"byte by byte", strings.Split(panicReport, ""), "Kernel panic - not syncing: sysrq triggered crash", true, 1},
		{"the start only (reset came first)", []string{panicReport[:120]}, "Kernel panic - not syncing: sysrq triggered crash", false, 0},
		{"an end marker alone names the panic", []string{"---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---\n"},
			"Kernel panic - not syncing: VFS: Unable to mount root fs", true, 1},
		{"two reports: one call", []string{panicReport, panicReport}, "Kernel panic - not syncing: sysrq triggered crash", true, 1},
		{"control characters dropped", []string{"Kernel panic - not syncing: \x1b[31mred\x07\n"}, "Kernel panic - not syncing: [31mred", false, 0},
		{"a marker split across writes", []string{"Kernel pa", "nic - not syncing: x\n---[ end Kernel ", "panic - not syncing: x ]---\n"}, "Kernel panic - not syncing: x", true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var calls []string
			w := newConsoleWatch(&out, func(l string) { calls = append(calls, l) })
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			line, ended := w.Panic()
			if line != tc.wantLine || ended != tc.wantEnded || len(calls) != tc.wantCalls {
				t.Fatalf("Panic() = %q, %v with %d calls; want %q, %v with %d", line, ended, len(calls), tc.wantLine, tc.wantEnded, tc.wantCalls)
			}
			if len(calls) == 1 && calls[0] != tc.wantLine {
				t.Fatalf("onEnd(%q), want %q", calls[0], tc.wantLine)
			}
			if want := strings.Join(tc.writes, ""); out.String() != want {
				t.Fatalf("passed on %q, want %q", out.String(), want)
			}
		})
	}
}

func TestConsoleWatchTailBounded(t *testing.T) {
	w := newConsoleWatch(nil, nil)
	line := strings.Repeat("x", 999) + "\n"
	for i := 0; i < 100; i++ {
		_, _ = w.Write([]byte(line))
	}
	_, _ = w.Write([]byte("last line\n"))
	tail := w.Tail()
	if len(tail) != consoleTailMax || !strings.HasSuffix(tail, "last line\n") {
		t.Fatalf("tail is %d bytes ending %q; want %d ending with the last line", len(tail), tail[max(0, len(tail)-20):], consoleTailMax)
	}
	if len(w.tail) > 2*consoleTailMax || cap(w.line) > 2*consoleLineMax {
		t.Fatalf("buffers grew: tail %d, line cap %d", len(w.tail), cap(w.line))
	}
}

// FuzzConsoleWatch writes guest console output, split into writes at
// positions the input chooses: the result must not depend on the split,
// the buffers stay bounded, onEnd is called at most once, and the panic
// line is printable text.
func FuzzConsoleWatch(f *testing.F) {
	f.Add([]byte(panicReport), uint16(7))
	f.Add([]byte("Kernel panic - not syncing\n---[ end Kernel panic - not syncing\n"), uint16(1))
	f.Add(bytes.Repeat([]byte("Kernel panic - not syncing"), 40), uint16(300))
	f.Fuzz(func(t *testing.T, in []byte, step uint16) {
		whole := newConsoleWatch(nil, nil)
		_, _ = whole.Write(in)
		calls := 0
		split := newConsoleWatch(nil, func(string) { calls++ })
		s := int(step)%64 + 1
		for i := 0; i < len(in); i += s {
			_, _ = split.Write(in[i:min(i+s, len(in))])
		}
		l1, e1 := whole.Panic()
		l2, e2 := split.Panic()
		if l1 != l2 || e1 != e2 {
			t.Fatalf("one write: %q %v; in pieces of %d: %q %v", l1, e1, s, l2, e2)
		}
		if whole.Tail() != split.Tail() {
			t.Fatalf("tails differ")
		}
		if calls > 1 || (calls == 1) != e2 {
			t.Fatalf("onEnd called %d times, ended %v", calls, e2)
		}
		if len(split.tail) > 2*consoleTailMax+s || len(split.line) > consoleLineMax || len(l2) > consoleLineMax {
			t.Fatalf("unbounded: tail %d, line %d, panic line %d", len(split.tail), len(split.line), len(l2))
		}
		if strings.IndexFunc(l2, func(r rune) bool { return r == unicode.ReplacementChar || !unicode.IsPrint(r) }) >= 0 {
			t.Fatalf("panic line %q is not printable text", l2)
		}
	})
}
