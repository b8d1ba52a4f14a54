package labs

import (
	"testing"

	"kvmlab/compare"
)

// FuzzAnswers feeds arbitrary bytes to the parsers of the learner's answer
// files (lab 5's answers.txt, lab 6's facts.txt) and to their graders: a
// file a learner hands in is untrusted input, and no content may panic a
// check. A file that parses must grade to a pass or a fail with a hint.
func FuzzAnswers(f *testing.F) {
	f.Add([]byte("exits_eventfds: 12\nwhy_doorbells: ioeventfd\n  mmio doorbell\n"))
	f.Add([]byte("fact: processes\nvm: 28 (init)\ncontainer: 2 (exe)\ncause: pid-namespace\n"))
	f.Add([]byte("fact: kernel release\nvm: 6.1.192\ncontainer:\ncause: own-kernel\n# c\n\n  x\n"))
	f.Add([]byte("interrupts:    \nfact:\n"))
	rows := []compare.Row{
		{Fact: "processes visible (PID 1)", VM: "28 (init)", Container: "2 (exe)"},
		{Fact: "kernel release", VM: "6.1.192", Container: "6.1.0-57-amd64"},
		{Fact: "host kernel still up afterwards", VM: "yes", Container: "yes"},
	}
	counts := [3]lab5Counts{{userExits: 2150, com1: 1240}, {userExits: 2355, doorbells: 205, interrupts: 205}, {com1: 26409}}
	f.Fuzz(func(t *testing.T, b []byte) {
		if pairs, err := parseAnswers(b); err == nil {
			if r := gradeLab5(pairs, counts); !r.Passed && r.Hint == "" {
				t.Fatalf("lab 5 failed without a hint: %q", b)
			}
		}
		if claims, err := lab6Claims(b); err == nil {
			if r := gradeLab6(claims, rows); !r.Passed && r.Hint == "" {
				t.Fatalf("lab 6 failed without a hint: %q", b)
			}
		}
	})
}
