package bench

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"kvmlab/guest/tiny"
)

// The cost of one user-space exit, kvmlab's Go vCPU loop against the floor
// the KVM API allows (exitfloor.c: ioctl(KVM_RUN), a switch, and back), and
// against the same floor written in Go (gofloor.go), which tells what
// is Go's and what is kvmlab's. All three run a guest that executes
// `out 0x80, al` in a loop, N times, and time their own loop. Each side
// runs twice, with N and 2N exits; the difference divides out what is not
// the loop (the first entry into the guest, the last exit), so what is left
// is the price of N exits.

//go:embed cfloor/exitfloor.c
var exitFloorC []byte

// buildExitFloor compiles exitfloor.c, statically so that it runs inside
// the emulated host too.
func buildExitFloor(dir string) (string, error) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		return "", fmt.Errorf("the exit-loop floor is a C program and needs a C compiler (apt-get install gcc): %w", err)
	}
	src := filepath.Join(dir, "exitfloor.c")
	bin := filepath.Join(dir, "exitfloor")
	if err := os.WriteFile(src, exitFloorC, 0o644); err != nil {
		return "", err
	}
	if out, err := exec.Command(cc, "-O2", "-static", "-o", bin, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cc exitfloor.c: %w\n%s", err, out)
	}
	return bin, nil
}

var (
	floorLine = regexp.MustCompile(`exitfloor: (\d+) exits in (\d+) ns`)
	ranLine   = regexp.MustCompile(`kvmlab: the machine ran for (\d+) ns`)
)

// exitLoopResult is exits per second for kvmlab and the floor.
type exitLoopResult struct {
	N                uint32  `json:"n"`
	KvmlabNsPerExit  float64 `json:"kvmlab_ns_per_exit"`
	FloorNsPerExit   float64 `json:"floor_ns_per_exit"`
	GoFloorNsPerExit float64 `json:"go_floor_ns_per_exit"`
	// The Go floor's variants (gofloor.go).
	GoFloorNoYieldNsPerExit float64 `json:"go_floor_no_yield_ns_per_exit"`
	GoFloorRawNsPerExit     float64 `json:"go_floor_raw_ns_per_exit"`
	GoFloorPinnedNsPerExit  float64 `json:"go_floor_pinned_ns_per_exit"`
	KvmlabExitsPerSecond    float64 `json:"kvmlab_exits_per_second"`
	FloorExitsPerSecond     float64 `json:"floor_exits_per_second"`
	Error                   string  `json:"error,omitempty"`
}

// runExitLoop measures the three sides in turn, each with N then 2N
// exits, repeated runs times; the medians of the differences count.
// Each run is limited to timeout and tried once more if it fails: in the
// emulated host a nested guest now and then stalls or triple-faults for
// reasons of the emulator's, under either side.
func runExitLoop(self, floor string, n uint32, runs int, timeout time.Duration, variants bool) exitLoopResult {
	r := exitLoopResult{N: n}
	dir, err := os.MkdirTemp("", "kvmlab-exitloop-")
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer os.RemoveAll(dir)
	elf := map[uint32]string{}
	for _, k := range []uint32{n, 2 * n} {
		p := filepath.Join(dir, fmt.Sprintf("loop%d.elf", k))
		if err := os.WriteFile(p, tiny.PortLoopELF(k), 0o644); err != nil {
			r.Error = err.Error()
			return r
		}
		elf[k] = p
	}
	run := func(name string, args ...string) ([]byte, error) {
		var err error
		for try := 0; try < 2; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Env = append(os.Environ(), runtimeReportEnv+"=1")
			var out []byte
			out, err = cmd.CombinedOutput()
			if ctx.Err() != nil {
				err = fmt.Errorf("no exit after %v: %w", timeout, ctx.Err())
			}
			cancel()
			if err == nil {
				return out, nil
			}
			err = fmt.Errorf("%w\n%s", err, out)
		}
		return nil, err
	}
	// kvmlab's side is timed by kvmlab itself, from starting its vCPU to
	// the guest's poweroff, as the floor times its own loop: timing the
	// whole process would add its start-up, whose variation in the
	// emulated host (seconds) swamps the loop's.
	kvmlabRun := func(k uint32) (time.Duration, error) {
		out, err := run(self, "run", "--quiet", "--any-kvm", "--kernel", elf[k], "--mem", "64M")
		if err != nil {
			return 0, fmt.Errorf("kvmlab run loop%d: %w", k, err)
		}
		m := ranLine.FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("kvmlab run loop%d did not say how long it ran:\n%s", k, out)
		}
		ns, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return time.Duration(ns), nil
	}
	// A floor prints its own loop time ("exitfloor: N exits in T ns").
	timedFloor := func(k uint32, prog string, args ...string) (time.Duration, error) {
		out, err := run(prog, args...)
		if err != nil {
			return 0, fmt.Errorf("%s %d: %w", filepath.Base(prog), k, err)
		}
		m := floorLine.FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("%s %d printed %q", filepath.Base(prog), k, out)
		}
		if got, _ := strconv.ParseUint(string(m[1]), 10, 64); got != uint64(k) {
			return 0, fmt.Errorf("%s %d counted %d exits", filepath.Base(prog), k, got)
		}
		ns, _ := strconv.ParseInt(string(m[2]), 10, 64)
		return time.Duration(ns), nil
	}
	goSide := func(v GoFloorVariant) func(k uint32) (time.Duration, error) {
		return func(k uint32) (time.Duration, error) {
			return timedFloor(k, self, "bench", "--go-floor", strconv.FormatUint(uint64(k), 10), "--go-floor-variant", string(v))
		}
	}
	sides := []func(k uint32) (time.Duration, error){
		func(k uint32) (time.Duration, error) {
			return timedFloor(k, floor, strconv.FormatUint(uint64(k), 10))
		},
		goSide(GoFloorPlain),
		kvmlabRun,
	}
	if variants {
		sides = append(sides, goSide(goFloorNoYield), goSide(goFloorRaw), goSide(goFloorPinned))
	}
	per := make([][]float64, len(sides)) // ns per exit, by side, one per round
	names := []string{"C floor", "Go floor", "kvmlab", "Go floor without yielding", "Go floor with RawSyscall", "Go floor pinned"}
	for i := 0; i < runs; i++ {
		var line []string
		for j, side := range sides {
			t1, err := side(n)
			if err == nil {
				var t2 time.Duration
				if t2, err = side(2 * n); err == nil {
					per[j] = append(per[j], float64(t2-t1)/float64(n))
					line = append(line, fmt.Sprintf("%s %.0f", names[j], per[j][i]))
					continue
				}
			}
			r.Error = err.Error()
			return r
		}
		fmt.Fprintf(os.Stderr, "kvmlab bench: exit loop run %d, ns per exit: %s\n", i+1, strings.Join(line, ", "))
	}
	fv, gv, kv := per[0], per[1], per[2]
	r.GoFloorNsPerExit = spreadOf(gv).median
	if variants {
		r.GoFloorNoYieldNsPerExit, r.GoFloorRawNsPerExit = spreadOf(per[3]).median, spreadOf(per[4]).median
		r.GoFloorPinnedNsPerExit = spreadOf(per[5]).median
	}
	r.FloorNsPerExit, r.KvmlabNsPerExit = spreadOf(fv).median, spreadOf(kv).median
	if r.FloorNsPerExit > 0 {
		r.FloorExitsPerSecond = 1e9 / r.FloorNsPerExit
	}
	if r.KvmlabNsPerExit > 0 {
		r.KvmlabExitsPerSecond = 1e9 / r.KvmlabNsPerExit
	}
	return r
}
