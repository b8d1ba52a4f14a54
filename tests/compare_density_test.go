package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The density and application-speed sections of `kvmlab compare`
// (--density, --workload), and what Ctrl-C and SIGTERM leave behind. Each
// row of the report is checked against the measurements in the same JSON,
// and the host is checked afterwards for anything the comparison started.

// pinToOneCPU keeps this test, and so the VMs compare starts, on the
// emulated AMD host's first CPU. There, eight nested guests at once that
// were free to move between the host's two CPUs triple-faulted or stalled
// with impossible state (a CR3 far beyond the guest's RAM) in most runs: on
// 2026-12-05, two failed attempts in three on a quiet machine and in most
// runs of the full suite, with either guest kernel. Pinned, four runs in a
// row passed. QEMU's software SVM, not KVM or kvmlab, is the one part
// that differs from real hardware there, where a vCPU thread moves between
// CPUs all the time; so on a real /dev/kvm, and in the one-CPU Intel host,
// nothing is pinned. BENCHMARKS.md ("Answered the next day") has the runs.
func pinToOneCPU(t *testing.T) {
	t.Helper()
	if os.Getenv(inHostEnv) != "1" || emulatedCPU() != "amd" {
		return
	}
	// The mask is a thread's, and a child inherits it from the thread
	// that forks it: the test's goroutine stays on this thread (which
	// the runtime ends with it), so compare is forked from it.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatalf("pinning to the emulated host's CPU 0: %v", err)
	}
	t.Log("pinned to the emulated AMD host's CPU 0 (pinToOneCPU), with the VMs compare starts")
}

// densityJSON is the part of compare's --json these tests read.
type densityJSON struct {
	Rows    []struct{ Claim, Fact, Host, VM, Container, Runc string }
	Density []struct {
		N         int
		VM        densitySideJSON `json:"vm"`
		Container densitySideJSON `json:"container"`
	}
	Workload *struct {
		Runs  int
		Sides []struct {
			Name   string
			Result *struct {
				Runs     int
				Programs []struct {
					Name string
					What string
					NS   []int64 `json:"ns"`
				}
				Errors []string
			}
			Error string
		}
	}
	Leftovers        []string
	LeftoversChecked bool `json:"leftovers_checked"`
}

type densitySideJSON struct {
	Ready       int
	ReadyMS     float64  `json:"ready_ms"`
	PSS         []uint64 `json:"pss_bytes"`
	PSSTotal    uint64   `json:"pss_total_bytes"`
	AvailBefore uint64   `json:"host_available_before_bytes"`
	AvailDuring uint64   `json:"host_available_during_bytes"`
	Error       string
}

// runCompareJSON runs kvmlab compare --json with args and decodes it.
func runCompareJSON(t *testing.T, args ...string) densityJSON {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	argv := append([]string{"compare", "--json", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio")}, args...)
	cmd := exec.CommandContext(ctx, kvmlabBin(t), argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kvmlab %s: %v\nstderr:\n%s\nstdout:\n%s", strings.Join(argv, " "), err, stderr.String(), stdout.String())
	}
	t.Logf("kvmlab compare stderr:\n%s", stderr.String())
	var rep densityJSON
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("compare --json: %v\n%s", err, stdout.String())
	}
	for _, r := range rep.Rows {
		t.Logf("%-75s | %-14s | %-22s | %-22s | %s", r.Fact, r.Host, r.VM, r.Container, r.Runc)
	}
	return rep
}

// left is what a comparison may leave behind on this host and must not:
// a process of it (a `kvmlab run` of a density VM, a container's probe), a
// cgroup the container runtime named kvmlab-*, a temporary directory of
// compare or of the runtime, a network interface that was not there.
type left struct {
	procs, cgroups, temps, netifs []string
}

func (l left) empty() bool {
	return len(l.procs)+len(l.cgroups)+len(l.temps)+len(l.netifs) == 0
}

func lookForLeftovers(t *testing.T, netBefore []string) left {
	t.Helper()
	var l left
	l.procs = probeProcesses()
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), "kvmlab-") {
			l.cgroups = append(l.cgroups, p)
			return filepath.SkipDir
		}
		if strings.Count(p, "/") > 6 {
			return filepath.SkipDir
		}
		return nil
	})
	ents, _ := os.ReadDir(os.TempDir())
	for _, e := range ents {
		for _, pre := range []string{"kvmlab-compare-", "kvmlab-rootfs-", "kvmlab-bundle-", "kvmlab-bench-"} {
			if strings.HasPrefix(e.Name(), pre) {
				l.temps = append(l.temps, e.Name())
			}
		}
	}
	for _, n := range netNames() {
		if !slices.Contains(netBefore, n) {
			l.netifs = append(l.netifs, n)
		}
	}
	return l
}

// probeProcesses lists the processes running a density instance: a
// `kvmlab run` whose guest runs the probe with --wait, or the probe itself
// with --wait in a container.
func probeProcesses() []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cl, "kvmlab-probe") && strings.Contains(cl, "--wait") {
			out = append(out, e.Name()+": "+cl)
		}
	}
	return out
}

func netNames() []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// TestCompareDensity runs `kvmlab compare --density 8`: 1, 2, 4 and 8 VMs
// and containers at once. Every instance must have reported; the rows
// must say what the measurements in the same JSON say; a container's share
// of memory must fall as N grows (PSS splits the binary they share) and
// stay below a VM's (which carries its guest's RAM); and nothing may be
// left behind, by compare's own check and by this test's.
func TestCompareDensity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kvmlab compare needs root (the container side): run the tests as root")
	}
	netBefore := netNames()
	pinToOneCPU(t)
	rep := runCompareJSON(t, "--basic=false", "--density", "8")
	if got := len(rep.Density); got != 4 {
		t.Fatalf("%d density points, want 4 (N = 1, 2, 4, 8)", got)
	}
	row := map[string][3]string{}
	for _, r := range rep.Rows {
		row[r.Fact] = [3]string{r.Host, r.VM, r.Container}
	}
	for i, p := range rep.Density {
		if want := []int{1, 2, 4, 8}[i]; p.N != want {
			t.Errorf("point %d is N=%d, want %d", i, p.N, want)
		}
		for _, s := range []struct {
			name string
			d    densitySideJSON
			col  int
		}{{"VMs", p.VM, 1}, {"containers", p.Container, 2}} {
			d := s.d
			if d.Error != "" || d.Ready != p.N || len(d.PSS) != p.N || d.ReadyMS <= 0 {
				// A guest stalled inside KVM (compare's error carries
				// its VMM's snapshots) is the emulator's failure:
				// the verdict lets the runner tell (emulatorFault).
				t.Errorf("N=%d %s: %d ready in %.0f ms, %d PSS figures, error %q: want all %d%s", p.N, s.name, d.Ready, d.ReadyMS, len(d.PSS), d.Error, p.N, prefixed("\n", flatStallVerdict(d.Error)))
				continue
			}
			var sum uint64
			for _, v := range d.PSS {
				if v == 0 {
					t.Errorf("N=%d %s: an instance with PSS 0: %v", p.N, s.name, d.PSS)
				}
				sum += v
			}
			if sum != d.PSSTotal || d.AvailBefore == 0 || d.AvailDuring == 0 {
				t.Errorf("N=%d %s: PSS %v sums to %d, total says %d; available %d -> %d", p.N, s.name, d.PSS, sum, d.PSSTotal, d.AvailBefore, d.AvailDuring)
			}
			per := d.PSSTotal / uint64(p.N)
			want := map[string]string{
				fmt.Sprintf("N=%d: all N ready (start -> last probe report)", p.N): fmt.Sprintf("%.0f ms", d.ReadyMS),
				fmt.Sprintf("N=%d: memory per instance / all N (PSS)", p.N):        fmt.Sprintf("%.1f / %.1f MiB", float64(per)/(1<<20), float64(d.PSSTotal)/(1<<20)),
				fmt.Sprintf("N=%d: host memory available before -> during", p.N):   fmt.Sprintf("%d -> %d MiB", d.AvailBefore>>20, d.AvailDuring>>20),
			}
			for fact, cell := range want {
				if got := row[fact][s.col]; got != cell {
					t.Errorf("row %q, %s: %q, want %q (from the measurements)", fact, s.name, got, cell)
				}
			}
		}
		// A VM's share is its guest's RAM (the unpacked initramfs
		// alone is tens of MiB), a container's its processes'.
		if p.VM.PSSTotal > 0 && p.Container.PSSTotal > 0 && p.Container.PSSTotal >= p.VM.PSSTotal {
			t.Errorf("N=%d: containers' PSS %d >= VMs' %d", p.N, p.Container.PSSTotal, p.VM.PSSTotal)
		}
		if p.VM.PSSTotal > 0 && p.VM.PSSTotal/uint64(p.N) < 16<<20 {
			t.Errorf("N=%d: a VM's PSS %d is under 16 MiB: the guest's RAM is not counted", p.N, p.VM.PSSTotal/uint64(p.N))
		}
	}
	first, last := rep.Density[0].Container, rep.Density[3].Container
	if len(first.PSS) == 1 && len(last.PSS) == 8 && last.PSSTotal/8 >= first.PSSTotal {
		t.Errorf("a container's PSS is %d at N=8, %d at N=1: want it lower with 8 sharing the binary", last.PSSTotal/8, first.PSSTotal)
	}
	if !rep.LeftoversChecked || len(rep.Leftovers) != 0 {
		t.Errorf("compare's own check: ran %v, found %q", rep.LeftoversChecked, rep.Leftovers)
	}
	if r := row["left behind afterwards (processes, cgroups, temporary roots, TAP devices)"]; r[0] != "nothing" {
		t.Errorf("leftovers row %q, want nothing", r)
	}
	if l := lookForLeftovers(t, netBefore); !l.empty() {
		t.Errorf("left behind: %+v", l)
	}
}

// TestCompareWorkload runs `kvmlab compare --workload`: the five programs
// on the host, in the VM, in our container and under runc when installed.
// Every side must have run every program the times asked; each row's
// cells must be the ratio of the side's median to the host's, as the run
// times in the same JSON give it.
func TestCompareWorkload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kvmlab compare needs root (the container side): run the tests as root")
	}
	netBefore := netNames()
	const runs = 3
	rep := runCompareJSON(t, "--basic=false", "--workload", "--workload-runs", fmt.Sprint(runs))
	w := rep.Workload
	if w == nil || w.Runs != runs {
		t.Fatalf("workload section %+v, want %d runs", w, runs)
	}
	wantSides := []string{"host", "VM (kvmlab)", "container (kvmlab)"}
	if _, err := exec.LookPath("runc"); err == nil {
		wantSides = append(wantSides, "container (runc)")
	}
	var names []string
	medians := map[string]map[string]float64{}
	for _, s := range w.Sides {
		names = append(names, s.Name)
		if s.Error != "" || s.Result == nil || len(s.Result.Errors) != 0 {
			t.Errorf("side %s: error %q, result %+v", s.Name, s.Error, s.Result)
			continue
		}
		medians[s.Name] = map[string]float64{}
		var progs []string
		for _, p := range s.Result.Programs {
			progs = append(progs, p.Name)
			if len(p.NS) != runs || slices.Min(p.NS) <= 0 {
				t.Errorf("side %s, %s: runs %v, want %d positive times", s.Name, p.Name, p.NS, runs)
				continue
			}
			ns := slices.Clone(p.NS)
			slices.Sort(ns)
			medians[s.Name][p.Name] = float64(ns[len(ns)/2])
		}
		if want := []string{"cpu", "syscall", "spawn", "file", "memory"}; !slices.Equal(progs, want) {
			t.Errorf("side %s ran %v, want %v", s.Name, progs, want)
		}
	}
	if !slices.Equal(names, wantSides) {
		t.Errorf("sides %v, want %v", names, wantSides)
	}
	host := medians["host"]
	checked := 0
	for _, r := range rep.Rows {
		prog, _, ok := strings.Cut(r.Fact, ": ")
		if _, known := host[prog]; !ok || !known {
			continue
		}
		checked++
		if !strings.HasSuffix(r.Host, "%") || !strings.Contains(r.Host, " ms ±") {
			t.Errorf("row %q: host cell %q, want the host's median in ms with its spread", r.Fact, r.Host)
		}
		for side, cell := range map[string]string{"VM (kvmlab)": r.VM, "container (kvmlab)": r.Container, "container (runc)": r.Runc} {
			m, ok := medians[side]
			if !ok {
				continue
			}
			want := fmt.Sprintf("%.2fx ±", m[prog]/host[prog])
			if !strings.HasPrefix(cell, want) {
				t.Errorf("row %q, %s: %q, want %q... (median %.0f ns over the host's %.0f)", r.Fact, side, cell, want, m[prog], host[prog])
			}
		}
	}
	if checked != 5 {
		t.Errorf("%d program rows checked, want 5", checked)
	}
	if !rep.LeftoversChecked || len(rep.Leftovers) != 0 {
		t.Errorf("compare's own check: ran %v, found %q", rep.LeftoversChecked, rep.Leftovers)
	}
	if l := lookForLeftovers(t, netBefore); !l.empty() {
		t.Errorf("left behind: %+v", l)
	}
}

// TestCompareInterrupted stops `kvmlab compare --density 2` mid-run, with
// SIGTERM while its first VM boots and with SIGINT (Ctrl-C) once its first
// container has started (the N=2 VMs are still to come, so the signal lands
// mid-run whichever phase it meets), and the basic comparison with SIGTERM
// while it snapshots a VM booted in its own process, and checks it exits with the signal's status and leaves no process,
// cgroup, temporary root or network interface behind.
func TestCompareInterrupted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kvmlab compare needs root (the container side): run the tests as root")
	}
	tests := []struct {
		name  string
		sig   syscall.Signal
		args  []string
		after string // the progress line to wait for
		// running: wait until an instance's process is seen first (the
		// VMs take seconds to boot; the containers come and go in less
		// than a poll might see).
		running bool
	}{
		{"SIGTERM while the VM boots", syscall.SIGTERM, []string{"--basic=false", "--density", "2"}, "density: starting 1 VM(s) at once", true},
		{"SIGINT after the container starts", syscall.SIGINT, []string{"--basic=false", "--density", "2"}, "density: starting 1 container(s) at once", false},
		{"SIGTERM during the basic comparison's snapshot", syscall.SIGTERM, nil, "taking a snapshot, and restoring it", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			netBefore := netNames()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, kvmlabBin(t), append([]string{"compare", "--kernel", guestFile(t, "bzImage"),
				"--initrd", guestFile(t, "initramfs.cpio")}, tc.args...)...)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var log strings.Builder
			sc := bufio.NewScanner(stderr)
			seen := false
			for sc.Scan() {
				fmt.Fprintln(&log, sc.Text())
				if strings.Contains(sc.Text(), tc.after) {
					seen = true
					break
				}
			}
			if !seen {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("compare ended before %q:\n%s", tc.after, log.String())
			}
			// The instances are starting: wait until at least one
			// is running, so the signal lands on live ones.
			var running []string
			for deadline := time.Now().Add(5 * time.Minute); tc.running && len(running) == 0 && time.Now().Before(deadline); {
				running = probeProcesses()
				if len(running) == 0 {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if tc.running && len(running) == 0 {
				t.Errorf("no instance was seen running before the signal")
			}
			t.Logf("sending %v with %d instance process(es) running: %q", tc.sig, len(running), running)
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			for sc.Scan() {
				fmt.Fprintln(&log, sc.Text())
			}
			err = cmd.Wait()
			t.Logf("compare's stderr:\n%s", log.String())
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 128+int(tc.sig) {
				t.Errorf("compare ended with %v, want exit status %d", err, 128+int(tc.sig))
			}
			if !strings.Contains(log.String(), "stopped by "+tc.sig.String()) || stdout.Len() != 0 {
				t.Errorf("want a line saying the signal stopped it, and no report; stdout %q", stdout.String())
			}
			if l := lookForLeftovers(t, netBefore); !l.empty() {
				t.Errorf("left behind after %v: %+v", tc.sig, l)
			}
		})
	}
}
