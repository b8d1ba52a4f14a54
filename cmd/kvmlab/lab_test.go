package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLabCLI runs kvmlab lab with the bad input a learner gives: each is
// one line on stderr, nothing on stdout, status 2 (1 for a missing
// assembler, which is not a usage error), and nothing in the directory
// is touched. The grading itself is tested in package labs.
func TestLabCLI(t *testing.T) {
	dir := t.TempDir()
	bin, _ := buildCLI(t, dir)
	work := filepath.Join(dir, "work", "lab1") // created by start
	if r := runBin(t, bin, nil, "lab", "start", "1", work); r.code != 0 || !strings.Contains(r.stdout, "wrote README.md, guest.S in "+work) {
		t.Fatalf("lab start 1: %+v", r)
	}
	mine := []byte("# my work\n")
	if err := os.WriteFile(filepath.Join(work, "guest.S"), mine, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(work, "guest.S")
	empty := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		want string // the one stderr line, from its start
	}{
		{"no verb", []string{"lab"}, nil, 2, "kvmlab: lab: say list, start N DIR or check N DIR"},
		{"unknown verb", []string{"lab", "begin", "1", work}, nil, 2, `kvmlab: lab: unknown verb "begin"`},
		{"list with an argument", []string{"lab", "list", "1"}, nil, 2, `kvmlab: lab list: unexpected argument "1"`},
		{"start without DIR", []string{"lab", "start", "1"}, nil, 2, "kvmlab: lab start: give a lab number and a directory"},
		{"no such lab", []string{"lab", "start", "99", empty}, nil, 2, "kvmlab: lab start: no such lab 99: the labs are numbered 1 to"},
		{"lab zero", []string{"lab", "check", "0", work}, nil, 2, "kvmlab: lab check: no such lab 0"},
		{"not a number", []string{"lab", "check", "one", work}, nil, 2, `kvmlab: lab check: "one" is not a lab number`},
		{"start over work", []string{"lab", "start", "1", work}, nil, 2, "kvmlab: lab start 1: " + work + " already holds the lab's files (README.md, guest.S): kvmlab never writes over your work"},
		{"start into a file", []string{"lab", "start", "1", file}, nil, 2, "kvmlab: lab start 1: " + file + " is a file, not a directory"},
		{"check without the files", []string{"lab", "check", "1", empty}, nil, 2, "kvmlab: lab check 1: " + empty + " does not hold the lab's files: guest.S is missing"},
		{"check another lab's directory", []string{"lab", "check", "2", work}, nil, 2, "kvmlab: lab check 2: " + work + " does not hold the lab's files: answers.txt is missing"},
		{"check a missing DIR", []string{"lab", "check", "3", filepath.Join(empty, "nope")}, nil, 2, "kvmlab: lab check 3: " + filepath.Join(empty, "nope") + " does not exist"},
		{"check a file", []string{"lab", "check", "1", file}, nil, 2, "kvmlab: lab check 1: " + file + " is not a directory"},
		{"no assembler", []string{"lab", "check", "1", work}, []string{"PATH=" + empty}, 1, "kvmlab: lab check 1: lab 1 builds guest.S and GNU as and ld are not installed: install the binutils package"},
		{"quiz with a stray argument", []string{"step", "--quiz", "x"}, nil, 2, `kvmlab: step: unexpected argument "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, bin, tc.env, tc.args...)
			// Progress lines ("lab 1: building ...") may come first;
			// the verdict is the last line, and the only one for a
			// usage error.
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			if r.code != tc.code || r.stdout != "" || !strings.HasPrefix(last, tc.want) || (tc.code == 2 && len(lines) != 1) {
				t.Errorf("kvmlab %q: status %d, stdout %q, stderr %q; want %d, nothing, and the line %q...", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(work, "guest.S")); string(b) != string(mine) {
		t.Errorf("guest.S changed to %q", b)
	}
	if r := runBin(t, bin, nil, "lab", "list"); r.code != 0 || !strings.HasPrefix(r.stdout, "1. The first exit") || !strings.Contains(r.stdout, "\n2. Predict the exit") || !strings.Contains(r.stdout, "\n3. Into long mode") {
		t.Errorf("lab list: %+v", r)
	}
}
