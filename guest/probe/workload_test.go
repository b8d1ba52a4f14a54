package probe

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The children are this test binary again (see TestMain).

func TestWorkload(t *testing.T) {
	// Root/tmp does not exist yet: the workload makes it.
	tmp := filepath.Join(t.TempDir(), "tmp")
	w, errs := runWorkload(tmp)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := WorkloadResult{Files: 32, Bytes: 32 * 16 << 10, Processes: 8, DurationNS: w.DurationNS}
	if w != want || w.DurationNS <= 0 {
		t.Errorf("workload %+v, want %+v and a duration", w, want)
	}
	left, err := os.ReadDir(tmp)
	if err != nil || len(left) != 0 {
		t.Errorf("left behind in %s: %v (%v)", tmp, left, err)
	}
}

// TestWorkloadHere runs the workload the way the probe does, under this
// machine's /tmp.
func TestWorkloadHere(t *testing.T) {
	r := Collect(Options{Workload: true})
	for _, e := range r.Errors {
		if strings.HasPrefix(e, "workload") {
			t.Error(e)
		}
	}
	if r.Workload.Files != WorkloadFiles || r.Workload.Bytes != WorkloadFiles*WorkloadFileSize ||
		r.Workload.Processes != WorkloadProcesses || r.Workload.DurationNS <= 0 {
		t.Errorf("workload %+v", r.Workload)
	}
}

func TestWorkloadCannotMakeTmp(t *testing.T) {
	// A file where the directory should be: the file part fails, the
	// children still run, and every failure is reported.
	tmp := filepath.Join(t.TempDir(), "tmp")
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, errs := runWorkload(tmp)
	if len(errs) != 1 || w.Files != 0 || w.Bytes != 0 || w.Processes != WorkloadProcesses {
		t.Errorf("workload %+v, errors %v", w, errs)
	}
}

func TestMainCommand(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		status     int
		report     bool // stdout is one probe line
		stderrHave string
	}{
		{"noop", []string{NoopArg}, 0, false, ""},
		{"no workload", []string{"--no-workload"}, 0, true, StartMarker + "\n"},
		{"unknown", []string{"--bogus"}, 2, false, `unknown argument "--bogus"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := Main(tt.args, &stdout, &stderr); got != tt.status {
				t.Errorf("status %d, want %d", got, tt.status)
			}
			if !strings.Contains(stderr.String(), tt.stderrHave) || (tt.stderrHave == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.stderrHave)
			}
			if !tt.report {
				if stdout.Len() != 0 {
					t.Errorf("stdout %q", stdout.String())
				}
				return
			}
			line, rest, _ := strings.Cut(stdout.String(), "\n")
			if rest != "" || !strings.HasPrefix(line, Marker) {
				t.Fatalf("stdout %q: want one line starting %q", stdout.String(), Marker)
			}
			var r Report
			dec := json.NewDecoder(strings.NewReader(strings.TrimPrefix(line, Marker)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				t.Fatal(err)
			}
			if _, err := dec.Token(); err != io.EOF {
				t.Errorf("more than one JSON value: %v", err)
			}
			if r.PID != os.Getpid() || r.KernelRelease == "" || r.Workload != (WorkloadResult{}) {
				t.Errorf("report %+v", r)
			}
		})
	}
}
