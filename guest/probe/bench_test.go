package probe

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestRunBench runs the real programs (the spawn children are this test
// binary again, see TestMain) and checks every run was timed and nothing
// was left in the directory.
func TestRunBench(t *testing.T) {
	dir := t.TempDir()
	res := RunBench(dir, 2)
	if len(res.Errors) != 0 {
		t.Fatalf("errors: %v", res.Errors)
	}
	var names []string
	for _, p := range res.Programs {
		names = append(names, p.Name)
		if len(p.NS) != 2 || p.NS[0] <= 0 || p.NS[1] <= 0 || p.What == "" {
			t.Errorf("program %s: %d runs %v, what %q; want 2 positive times and a description", p.Name, len(p.NS), p.NS, p.What)
		}
	}
	if want := []string{"cpu", "syscall", "spawn", "file", "memory"}; !slices.Equal(names, want) || !slices.Equal(BenchNames(), want) {
		t.Errorf("programs %v (BenchNames %v), want %v", names, BenchNames(), want)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("left behind in %s: %v (%v)", dir, left, err)
	}
}

// TestRunBenchNoDir: the file program cannot run, the others still do.
func TestRunBenchNoDir(t *testing.T) {
	res := RunBench("/nonexistent/kvmlab", 1)
	if len(res.Errors) != 1 || !strings.HasPrefix(res.Errors[0], "file: ") {
		t.Fatalf("errors %v, want one for the file program", res.Errors)
	}
	for _, p := range res.Programs {
		if (p.Name == "file") != (len(p.NS) == 0) {
			t.Errorf("program %s ran %d times", p.Name, len(p.NS))
		}
	}
}

func TestBenchCommand(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		status   int
		runs     int
		errMatch string
	}{
		{"runs", []string{"--bench", "--bench-runs=1", "--bench-dir=" + t.TempDir()}, 0, 1, ""},
		{"zero runs", []string{"--bench", "--bench-runs=0"}, 2, 0, "from 1 to 50"},
		{"too many runs", []string{"--bench", "--bench-runs=51"}, 2, 0, "from 1 to 50"},
		{"not a number", []string{"--bench", "--bench-runs=3x"}, 2, 0, "whole number"},
		{"empty dir", []string{"--bench", "--bench-dir="}, 2, 0, "give a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if st := Main(tc.args, &out, &errb); st != tc.status {
				t.Fatalf("status %d, want %d; stderr %s", st, tc.status, errb.String())
			}
			if tc.status != 0 {
				if !strings.Contains(errb.String(), tc.errMatch) || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
					t.Errorf("stderr %q: want one line with %q", errb.String(), tc.errMatch)
				}
				return
			}
			line, ok := strings.CutPrefix(out.String(), BenchMarker)
			if !ok || strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("output %q: want one line after %q", out.String(), BenchMarker)
			}
			var r BenchResult
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatal(err)
			}
			if r.Runs != tc.runs || len(r.Programs) != 5 || len(r.Programs[0].NS) != tc.runs {
				t.Errorf("result %+v, want %d runs of 5 programs", r, tc.runs)
			}
		})
	}
}

// asMainEnv makes this test binary run the probe command (see TestMain).
const asMainEnv = "KVMLAB_PROBE_AS_MAIN"

// TestWaitUntilSignal: with --wait the probe prints its report and stays
// up until SIGTERM, which ends it with status 0 (an instance of kvmlab
// compare --density).
func TestWaitUntilSignal(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--no-workload", "--wait")
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, Marker) {
		_ = cmd.Process.Kill()
		t.Fatalf("first line %q (%v), want the report", line, err)
	}
	// Still running after the report: Signal fails once it has exited
	// and been reaped, which cannot happen before Wait.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want exit status 0", err)
	}
	// Only a probe that waited for the signal says it was stopped by it.
	if !strings.Contains(stderr.String(), "kvmlab-probe: stopped by terminated") {
		t.Errorf("stderr %q: want the probe to say SIGTERM stopped it", stderr.String())
	}
}
