package labs

// Helpers of labs 4 to 6: reading the learner's files as untrusted input,
// their "key: value" answer files, and finding the kvmlab source tree that
// lab 4 builds from.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"kvmlab/internal/userfile"
	"kvmlab/vmm/kvm"
)

// maxAnswerFile bounds what a check reads of a learner's file: an answer
// file or one Go source file is a few KiB.
const maxAnswerFile = 256 << 10

// readLearnerFile reads name in dir through internal/userfile (a regular
// file, bounded: not a FIFO, not /dev/zero behind a symlink). A missing or
// refused file is the learner's to fix, so it comes back as a failing
// Result with a hint; the error is for the check being unable to run.
func readLearnerFile(dir, name string, lab int) ([]byte, *Result) {
	p := filepath.Join(dir, name)
	b, err := userfile.ReadFile(p, userfile.Spec{What: name, Max: maxAnswerFile})
	if err == nil {
		return b, nil
	}
	var ue *userfile.Error
	switch {
	case errors.Is(err, userfile.ErrNotExist):
		return nil, &Result{Lines: []string{p + ": not found"},
			Hint: fmt.Sprintf("write your answer in %s (kvmlab lab start %d %s writes a starting point)", p, lab, dir)}
	case errors.As(err, &ue):
		return nil, &Result{Lines: []string{p + ": " + ue.Msg}, Hint: fmt.Sprintf("%s must be an ordinary text file", name)}
	}
	return nil, &Result{Lines: []string{fmt.Sprintf("%s: %v", p, err)}, Hint: fmt.Sprintf("make %s readable", p)}
}

// pair is one "key: value" line of an answer file.
type pair struct {
	key, value string
	line       int
}

// parseAnswers reads "key: value" lines. Blank lines and lines starting
// with '#' are skipped; keys are lower-cased. A value may continue on the
// following lines that start with white space (for explanations). A line
// with no colon is an error naming its number.
func parseAnswers(b []byte) ([]pair, error) {
	var out []pair
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxAnswerFile)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1].value = strings.TrimSpace(out[len(out)-1].value + " " + trimmed)
			continue
		}
		k, v, ok := strings.Cut(trimmed, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not \"key: value\"", n, trimmed)
		}
		out = append(out, pair{key: strings.ToLower(strings.TrimSpace(k)), value: strings.TrimSpace(v), line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading answers: %w", err)
	}
	return out, nil
}

// kvmlabSource finds the kvmlab source tree (the directory whose go.mod
// says `module kvmlab`): $KVMLAB_SRC, else the parents of the kvmlab
// binary (bin/kvmlab in the tree), else the parents of the working
// directory.
func kvmlabSource(env *Env) (string, error) {
	if s := os.Getenv("KVMLAB_SRC"); s != "" {
		if isKvmlabTree(s) {
			return s, nil
		}
		return "", fmt.Errorf("KVMLAB_SRC=%s is not the kvmlab source tree (no go.mod saying `module kvmlab`)", s)
	}
	var starts []string
	bin := env.Kvmlab
	if bin == "" {
		bin, _ = os.Executable()
	}
	if bin != "" {
		if r, err := filepath.EvalSymlinks(bin); err == nil {
			bin = r
		}
		if a, err := filepath.Abs(bin); err == nil {
			starts = append(starts, filepath.Dir(a))
		}
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, s := range starts {
		for d := s; ; d = filepath.Dir(d) {
			if isKvmlabTree(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("cannot find the kvmlab source tree next to the kvmlab binary or above the working directory: set KVMLAB_SRC to it (the directory with go.mod)")
}

func isKvmlabTree(d string) bool {
	b, err := userfile.ReadFile(filepath.Join(d, "go.mod"), userfile.Spec{What: "go.mod", Max: 64 << 10})
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "module" && f[1] == "kvmlab" {
			_, err := os.Stat(filepath.Join(d, "devices", "labdev"))
			return err == nil
		}
	}
	return false
}

// tinyGuestsRunHere says whether this host's /dev/kvm runs a hand-made
// guest of a few instructions (guest/tiny), which needs much less than a
// Linux guest: kvm_pvm does it, so lab 4 need not wait for an emulated
// host there.
func tinyGuestsRunHere() bool {
	sys, err := kvm.Open()
	if err != nil {
		return false
	}
	defer sys.Close()
	return sys.CheckRequired() == nil
}

// tail returns the last n lines of s, for showing a failed command's
// output without flooding the terminal.
func tail(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return lines
}

// failure sums up a kvmlab run that failed: kvmlab's own last line (the
// reason the machine stopped, e.g. "kvmlab: vCPU 0: triple fault
// (KVM_EXIT_SHUTDOWN): ...", which the register dump after it would push
// out of a plain tail) and then the last lines of its output. The test
// harness reads that reason to tell an emulator's failure from the lab's.
func failure(out string, n int) string {
	t := strings.Join(tail(out, n), " / ")
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "kvmlab: ") {
			if strings.Contains(t, l) {
				return t
			}
			return l + " ... " + t
		}
	}
	return t
}

// boundedOutput keeps the first max bytes written to it and drops the
// rest, so that a chatty run (a learner's device printing on every
// access) cannot grow a check's memory without bound.
type boundedOutput struct {
	bytes.Buffer
	max int
}

func (c *boundedOutput) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
