package compare

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"

	"kvmlab/guest/probe"
)

func TestDensityPoints(t *testing.T) {
	tests := []struct {
		max  int
		want []int
	}{
		{0, nil}, {1, []int{1}}, {2, []int{1, 2}}, {3, []int{1, 2, 3}}, {8, []int{1, 2, 4, 8}}, {12, []int{1, 2, 4, 8, 12}},
	}
	for _, tc := range tests {
		if got := DensityPoints(tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("DensityPoints(%d) = %v, want %v", tc.max, got, tc.want)
		}
	}
}

func TestCheckDensity(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name      string
		n         int
		mem       uint64
		avail     uint64
		wantErr   string // "" for none
		wantFitIn string
	}{
		{"fits", 8, 256 * mib, 6144 * mib, "", ""},
		{"exactly fits", 4, 256 * mib, 4 * 320 * mib, "", ""},
		{"zero", 0, 256 * mib, 6144 * mib, "give the number of instances", ""},
		{"negative", -2, 256 * mib, 6144 * mib, "give the number of instances", ""},
		{"above the cap", MaxDensity + 1, 128 * mib, 1 << 50, "at most 64 instances", ""},
		{"more than memory", 20, 256 * mib, 3000 * mib, "at most 9 fit", "give --density 9 or less"},
		{"none fit", 1, 3072 * mib, 1000 * mib, "at most 0 fit", "give --density 1 or less, or a smaller --mem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDensity(tc.n, tc.mem, tc.avail, "this machine")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantFitIn) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line with %q and %q", err, tc.wantErr, tc.wantFitIn)
			}
		})
	}
}

func TestMeminfoField(t *testing.T) {
	const rollup = `55d0c0000000-7ffc0f5f5000 ---p 00000000 00:00 0                          [rollup]
Rss:               91236 kB
Pss:               60123 kB
Pss_Anon:          50000 kB
Pss_File:          10123 kB
`
	tests := []struct {
		text, key string
		want      uint64
		ok        bool
	}{
		{rollup, "Pss", 60123 << 10, true},
		{rollup, "Pss_File", 10123 << 10, true},
		{rollup, "Swap", 0, false},
		{"MemTotal:  100 kB\nMemAvailable:   2048 kB\n", "MemAvailable", 2 << 20, true},
		{"MemAvailable: lots kB\n", "MemAvailable", 0, false},
		{"MemAvailable:\n", "MemAvailable", 0, false},
		{"MemAvailable: 99999999999999999999 kB\n", "MemAvailable", 0, false},
		{"HugePages_Total: 3\n", "HugePages_Total", 3, true},
	}
	for _, tc := range tests {
		got, ok := meminfoField([]byte(tc.text), tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("meminfoField(%q, %s) = %d, %v; want %d, %v", tc.text, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStatParent(t *testing.T) {
	tests := []struct {
		stat string
		want int
		ok   bool
	}{
		{"1234 (kvmlab) S 99 1234 1234 0 -1", 99, true},
		{"1234 (a) b) (c) R 7 1 1", 7, true}, // a comm with parentheses and spaces
		{"1234 (kvmlab", 0, false},
		{"1234 (x) S", 0, false},
		{"1234 (x) S y", 0, false},
	}
	for _, tc := range tests {
		got, ok := statParent([]byte(tc.stat))
		if got != tc.want || ok != tc.ok {
			t.Errorf("statParent(%q) = %d, %v; want %d, %v", tc.stat, got, ok, tc.want, tc.ok)
		}
	}
}

// TestLeftoversSeesAChild: a process of ours still running is reported,
// and is gone from the report once it has been waited for. The PSS of a
// live process is read, of a dead one is 0.
func TestLeftoversSeesAChild(t *testing.T) {
	net := netInterfaces()
	before := leftovers(net)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	during := leftovers(net)
	if pssOf(pid) == 0 {
		t.Errorf("PSS of the running child %d is 0", pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	after := leftovers(net)
	found := false
	for _, l := range during {
		found = found || (strings.HasPrefix(l, "processes: ") && strings.Contains(l, "(sleep)"))
	}
	if !found || len(during) != len(before)+1 || !slices.Equal(before, after) {
		t.Errorf("leftovers before %q, with a child %q, after %q: want the child listed only while it runs", before, during, after)
	}
	if pssOf(pid) != 0 {
		t.Errorf("PSS of the reaped child %d is not 0", pid)
	}
	if got := leftovers(append(slices.Clone(net)[:0:0], net[1:]...)); len(net) > 0 && !slices.Contains(got, "network interface: "+net[0]) {
		t.Errorf("an interface not there before (%s) is not reported: %q", net[0], got)
	}
}

func TestMedianSpread(t *testing.T) {
	tests := []struct {
		ns             []int64
		median, spread float64
	}{
		{nil, 0, 0},
		{[]int64{10}, 10, 0},
		{[]int64{30, 10, 20}, 20, 0.5},
		{[]int64{10, 40, 20, 30}, 25, 0.6},
	}
	for _, tc := range tests {
		if m, s := median(tc.ns), spread(tc.ns); m != tc.median || s != tc.spread {
			t.Errorf("median, spread of %v = %v, %v; want %v, %v", tc.ns, m, s, tc.median, tc.spread)
		}
	}
}

// benchOf makes a side's result: each program's runs in milliseconds.
func benchOf(ms map[string][]int64) *probe.BenchResult {
	r := &probe.BenchResult{Runs: 3}
	for _, n := range probe.BenchNames() {
		p := probe.BenchProgram{Name: n, What: "does " + n}
		for _, v := range ms[n] {
			p.NS = append(p.NS, v*1e6)
		}
		r.Programs = append(r.Programs, p)
	}
	return r
}

func fakeWorkload() *Workload {
	return &Workload{Runs: 3, Sides: []WorkloadSide{
		{Name: "host", Result: benchOf(map[string][]int64{"cpu": {10, 10, 10}, "syscall": {20, 22, 18}, "spawn": {40, 40, 40}, "file": {5, 5, 5}, "memory": {8, 8, 8}})},
		{Name: "VM (kvmlab)", Result: benchOf(map[string][]int64{"cpu": {10, 11, 9}, "syscall": {20, 20, 20}, "spawn": {80, 80, 80}, "file": {4, 4, 4}, "memory": {24, 24, 24}})},
		{Name: "container (kvmlab)", Result: benchOf(map[string][]int64{"cpu": {10, 10, 10}, "syscall": {20, 20, 20}, "spawn": {44, 44, 44}, "file": {5, 5, 5}, "memory": {8, 8, 8}})},
		{Name: "container (runc)", Error: "runc: exit status 1"},
	}}
}

func TestWorkloadRows(t *testing.T) {
	rows := workloadRows(fakeWorkload())
	want := map[string][4]string{ // fact -> host, VM, container, runc
		"cpu: does cpu":         {"10.0 ms ±0%", "1.00x ±10%", "1.00x ±0%", "failed (see below)"},
		"syscall: does syscall": {"20.0 ms ±10%", "1.00x ±0%", "1.00x ±0%", "failed (see below)"},
		"spawn: does spawn":     {"40.0 ms ±0%", "2.00x ±0%", "1.10x ±0%", "failed (see below)"},
		"file: does file":       {"5.00 ms ±0%", "0.80x ±0%", "1.00x ±0%", "failed (see below)"},
		"memory: does memory":   {"8.00 ms ±0%", "3.00x ±0%", "1.00x ±0%", "failed (see below)"},
	}
	if len(rows) != len(want) || !strings.HasPrefix(rows[0].Claim, "Application speed") {
		t.Fatalf("%d rows, first claim %q", len(rows), rows[0].Claim)
	}
	for _, r := range rows {
		if got := [4]string{r.Host, r.VM, r.Container, r.Runc}; got != want[r.Fact] {
			t.Errorf("row %q = %q, want %q", r.Fact, got, want[r.Fact])
		}
	}
	if got := fakeWorkload().Ratio("VM (kvmlab)", "memory"); got != 3 {
		t.Errorf("Ratio(VM, memory) = %v, want 3", got)
	}
}

func TestCheckBench(t *testing.T) {
	good := func() *probe.BenchResult {
		return benchOf(map[string][]int64{"cpu": {1}, "syscall": {1}, "spawn": {1}, "file": {1}, "memory": {1}})
	}
	tests := []struct {
		name    string
		mangle  func(r *probe.BenchResult)
		wantErr bool
	}{
		{"good", func(*probe.BenchResult) {}, false},
		{"a program missing", func(r *probe.BenchResult) { r.Programs = r.Programs[1:] }, true},
		{"renamed", func(r *probe.BenchResult) { r.Programs[0].Name = "rm -rf" }, true},
		{"more runs than asked", func(r *probe.BenchResult) { r.Programs[1].NS = make([]int64, 4) }, true},
		{"negative time", func(r *probe.BenchResult) { r.Programs[2].NS[0] = -5 }, true},
		{"error flood", func(r *probe.BenchResult) { r.Errors = make([]string, 100) }, true},
		{"an error", func(r *probe.BenchResult) { r.Errors = []string{"file: read-only file system"} }, false},
		{"escape in an error", func(r *probe.BenchResult) { r.Errors = []string{"\x1b[2J"} }, true},
		{"escape in a description", func(r *probe.BenchResult) { r.Programs[0].What = "\x1b]0;owned\x07" }, true},
	}
	for _, tc := range tests {
		r := good()
		tc.mangle(r)
		if err := checkBench(r, 3); (err != nil) != tc.wantErr {
			t.Errorf("%s: checkBench error %v, want error %v", tc.name, err, tc.wantErr)
		}
	}
}

func fakeDensity() []DensityPoint {
	var pts []DensityPoint
	for i, n := range []int{1, 2, 4, 8} {
		vm := DensitySide{Ready: n, ReadyMS: 3000 + 1500*float64(i), AvailBefore: 6000 << 20, AvailDuring: uint64(6000-80*n) << 20}
		ct := DensitySide{Ready: n, ReadyMS: 60 + 30*float64(i), AvailBefore: 6000 << 20, AvailDuring: uint64(6000-6*n) << 20}
		for range n {
			vm.PSS = append(vm.PSS, 70<<20)
			ct.PSS = append(ct.PSS, uint64(12-i)<<20)
		}
		vm.PSSTotal, ct.PSSTotal = uint64(n)*70<<20, uint64(n)*uint64(12-i)<<20
		pts = append(pts, DensityPoint{N: n, VM: vm, Container: ct})
	}
	return pts
}

func TestDensityRows(t *testing.T) {
	rep := &Report{NoBasic: true, Density: fakeDensity(), LeftoversChecked: true}
	rep.Rows = rows(rep)
	want := map[string][3]string{ // fact -> host, VM, container
		"N=1: all N ready (start -> last probe report)":                             {"", "3000 ms", "60 ms"},
		"N=8: all N ready (start -> last probe report)":                             {"", "7500 ms", "150 ms"},
		"N=4: memory per instance / all N (PSS)":                                    {"", "70.0 / 280.0 MiB", "10.0 / 40.0 MiB"},
		"N=2: host memory available before -> during":                               {"", "6000 -> 5840 MiB", "6000 -> 5988 MiB"},
		"left behind afterwards (processes, cgroups, temporary roots, TAP devices)": {"nothing", "", ""},
	}
	if len(rep.Rows) != 4*3+1 {
		t.Errorf("%d rows, want 13 (no basic rows, three per N, the leftovers)", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if w, ok := want[r.Fact]; ok {
			if got := [3]string{r.Host, r.VM, r.Container}; got != w {
				t.Errorf("row %q = %q, want %q", r.Fact, got, w)
			}
			delete(want, r.Fact)
		}
	}
	if len(want) != 0 {
		t.Errorf("rows missing: %v", want)
	}
	rep.Density[2].Container.Error = "instance 3 of 4 ended"
	rep.Leftovers = []string{"cgroup: /sys/fs/cgroup/kvmlab-1-2-3-4"}
	rep.Rows = rows(rep)
	var txt bytes.Buffer
	rep.Print(&txt)
	for _, w := range []string{"failed (see below)", "density N=4, containers FAILED: instance 3 of 4 ended", "LEFT BEHIND: cgroup: /sys/fs/cgroup/kvmlab-1-2-3-4", "1 things (see below)"} {
		if !strings.Contains(txt.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, txt.String())
		}
	}
}

// TestDensityHTML: the plots have one line per side with a dot per N, at
// heights that follow the values (a higher value, a smaller y).
func TestDensityHTML(t *testing.T) {
	rep := &Report{NoBasic: true, Density: fakeDensity(), LeftoversChecked: true, Workload: fakeWorkload()}
	rep.Rows = rows(rep)
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, id := range []string{`<svg id="density-memory"`, `<svg id="density-start"`} {
		if strings.Count(html, id) != 1 {
			t.Errorf("HTML has %d of %s", strings.Count(html, id), id)
		}
	}
	if n := strings.Count(html, `<polyline class="series"`); n != 4 {
		t.Errorf("%d plot lines, want 4 (2 plots x 2 sides)", n)
	}
	if n := strings.Count(html, "<circle"); n != 16 {
		t.Errorf("%d dots, want 16 (2 plots x 2 sides x 4 N)", n)
	}
	if strings.Contains(html, "<rect x=\"170\"") {
		t.Error("bar charts of the basic comparison drawn without it")
	}
	plots := densityPlots(rep.Density)
	start := plots[1].Series[0].Dots // VM start time: rising with N
	for i := 1; i < len(start); i++ {
		if start[i].Y >= start[i-1].Y || start[i].X <= start[i-1].X {
			t.Errorf("VM start-time dots %v do not rise to the right", start)
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}

func TestFindRunc(t *testing.T) {
	withRunc := t.TempDir()
	if err := os.WriteFile(filepath.Join(withRunc, "runc"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		noRunc     bool
		want       bool
		note       string
	}{
		{"installed", withRunc, false, true, ""},
		{"missing", t.TempDir(), false, false, "runc is not installed"},
		{"left out", withRunc, true, false, ""},
		{"left out and missing", t.TempDir(), true, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			got, note := findRunc(tc.noRunc)
			if got != tc.want || !strings.Contains(note, tc.note) || (tc.note == "") != (note == "") || strings.Contains(note, "\n") {
				t.Errorf("findRunc(%v) = %v, %q; want %v and a one-line note with %q", tc.noRunc, got, note, tc.want, tc.note)
			}
		})
	}
}

// FuzzWorkloadLine: a guest's --bench line is guest data. Whatever it
// holds, decoding, checking and rendering it must not panic, and what
// checkBench lets through has the programs asked for, bounded.
func FuzzWorkloadLine(f *testing.F) {
	good, _ := json.Marshal(benchOf(map[string][]int64{"cpu": {1, 2}, "syscall": {3}, "spawn": {4}, "file": {5}, "memory": {6}}))
	f.Add(probe.BenchMarker + string(good))
	f.Add("[ 1.0] printk " + probe.BenchMarker + string(good) + "[ 2.0] more")
	f.Add(probe.BenchMarker + `{"runs":1,"programs":[{"name":"cpu","ns":[-1]}]}`)
	f.Add(probe.BenchMarker + `{"programs":null}`)
	f.Fuzz(func(t *testing.T, line string) {
		var r probe.BenchResult
		if err := decodeMarked(line, probe.BenchMarker, &r); err != nil {
			return
		}
		if checkBench(&r, 3) != nil {
			return
		}
		for _, p := range r.Programs {
			if len(p.NS) > 3 || strings.ContainsFunc(p.What, unicode.IsControl) {
				t.Fatalf("checkBench let %d runs, description %q through", len(p.NS), p.What)
			}
		}
		w := fakeWorkload()
		w.Sides[1].Result = &r
		_ = workloadRows(w)
	})
}

func TestOutcomeLine(t *testing.T) {
	tests := []struct{ stderr, want string }{
		{"\nkvmlab: triple fault (KVM_EXIT_SHUTDOWN): vCPU 0\nCR0=00000010 CR2=0\nGDT=0/ffff\n", "kvmlab: triple fault (KVM_EXIT_SHUTDOWN): vCPU 0; "},
		{"CR0=00000010\n", ""},
		{"", ""},
		{"kvmlab: first\r\nkvmlab: the guest powered off\r\n", "kvmlab: the guest powered off; "},
	}
	for _, tc := range tests {
		if got := outcomeLine(tc.stderr); got != tc.want {
			t.Errorf("outcomeLine(%q) = %q, want %q", tc.stderr, got, tc.want)
		}
	}
}
