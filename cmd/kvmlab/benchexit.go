package main

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"kvmlab/vmm/boot"
)

// The cost of one user-space exit, kvmlab's Go vCPU loop against the floor
// the KVM API allows (exitfloor.c: ioctl(KVM_RUN), a switch, and back).
// Both run a guest that executes `out 0x80, al` in a loop, N times. Each
// side runs twice, with N and 2N exits; the difference divides out
// everything that is not the loop (process start, VM creation, the ELF
// load), so what is left is the price of N exits.

//go:embed cfloor/exitfloor.c
var exitFloorC []byte

// exitLoopELF is a guest for kvmlab: 64-bit code at 1 MiB (kvmlab's ELF
// loader enters it in long mode) that writes port 0x80 n times, which
// kvmlab's POST-code device handles, then powers off through ACPI PM1a_CNT
// (SLP_TYP=5, SLP_EN).
func exitLoopELF(n uint32) []byte {
	code := []byte{0xb9, 0, 0, 0, 0, // mov ecx, n
		0xe6, 0x80, // 1: out 0x80, al
		0xff, 0xc9, // dec ecx
		0x75, 0xfa, // jnz 1b
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xb8, 0x00, 0x34, // mov ax, SLP_EN | 5<<10
		0x66, 0xef, // out dx, ax
		0xf4, 0xeb, 0xfd} // 2: hlt; jmp 2b
	binary.LittleEndian.PutUint32(code[1:], n)
	return boot.TinyELF(code)
}

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

var floorLine = regexp.MustCompile(`exitfloor: (\d+) exits in (\d+) ns`)

// exitLoopResult is exits per second for kvmlab and the floor.
type exitLoopResult struct {
	N                    uint32  `json:"n"`
	KvmlabNsPerExit      float64 `json:"kvmlab_ns_per_exit"`
	FloorNsPerExit       float64 `json:"floor_ns_per_exit"`
	KvmlabExitsPerSecond float64 `json:"kvmlab_exits_per_second"`
	FloorExitsPerSecond  float64 `json:"floor_exits_per_second"`
	Error                string  `json:"error,omitempty"`
}

// runExitLoop measures both sides, interleaved: floor N, kvmlab N, floor
// 2N, kvmlab 2N, repeated runs times; the medians of the differences count.
func runExitLoop(self, floor string, n uint32, runs int) exitLoopResult {
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
		if err := os.WriteFile(p, exitLoopELF(k), 0o644); err != nil {
			r.Error = err.Error()
			return r
		}
		elf[k] = p
	}
	kvmlabRun := func(k uint32) (time.Duration, error) {
		start := time.Now()
		out, err := exec.Command(self, "run", "--quiet", "--kernel", elf[k], "--mem", "64M").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("kvmlab run loop%d: %w\n%s", k, err, out)
		}
		return time.Since(start), nil
	}
	floorRun := func(k uint32) (time.Duration, error) {
		out, err := exec.Command(floor, strconv.FormatUint(uint64(k), 10)).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("exitfloor %d: %w\n%s", k, err, out)
		}
		m := floorLine.FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("exitfloor %d printed %q", k, out)
		}
		if got, _ := strconv.ParseUint(string(m[1]), 10, 64); got != uint64(k) {
			return 0, fmt.Errorf("exitfloor %d counted %d exits", k, got)
		}
		ns, _ := strconv.ParseInt(string(m[2]), 10, 64)
		return time.Duration(ns), nil
	}
	var kv, fv []float64
	for i := 0; i < runs; i++ {
		var t [4]time.Duration
		for j, f := range []func() (time.Duration, error){
			func() (time.Duration, error) { return floorRun(n) },
			func() (time.Duration, error) { return kvmlabRun(n) },
			func() (time.Duration, error) { return floorRun(2 * n) },
			func() (time.Duration, error) { return kvmlabRun(2 * n) },
		} {
			if t[j], err = f(); err != nil {
				r.Error = err.Error()
				return r
			}
		}
		fv = append(fv, float64(t[2]-t[0])/float64(n))
		kv = append(kv, float64(t[3]-t[1])/float64(n))
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
