package probe

// The application-speed programs (`kvmlab-probe --bench`, the workload
// section of `kvmlab compare --workload`). Each is a small program of one
// kind of work, chosen because it meets a different part of what stands
// between a program and the hardware:
//
//   - cpu: SHA-256 of a buffer. Pure user-space instructions: no system
//     call, no page fault once the buffer is touched, so neither a VM nor a
//     container should cost anything here (a vCPU runs guest instructions
//     natively; a namespace is not on the path of an add instruction).
//   - syscall: getpid(2) many times. Each one enters the kernel serving the
//     process and returns: the guest kernel's in a VM (no VM exit: a system
//     call is handled by the guest kernel), the host's in a container, so
//     this is the cost of that kernel's entry path, its mitigations included.
//   - spawn: fork and exec of a static binary (this program, with --noop),
//     waited for. Page tables built and torn down, the binary mapped and
//     faulted in: work of the memory manager, which in a VM runs under
//     nested paging.
//   - file: files written, read back and removed on the root file system.
//     In the VM the root is the guest kernel's initramfs (in its RAM); in a
//     container it is a directory on the host's disk, served from the host's
//     page cache. No fsync: the figure is the kernels' file-system paths,
//     not a disk.
//   - memory: fresh anonymous memory mapped and every page touched once,
//     then unmapped. Each first touch is a page fault; in a VM the first
//     touch of a guest-physical page the host has not backed yet is also a
//     nested-paging fault that exits to KVM (an EPT violation or NPT fault).
//
// The programs run Runs times, interleaved (cpu, syscall, spawn, file,
// memory, then again), so that a slow moment of the machine lands on all of
// them rather than on one; every run's time is reported, so the host can
// show the spread and not only a figure.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BenchMarker starts the line `kvmlab-probe --bench` prints: the marker and
// a BenchResult as JSON.
const BenchMarker = "KVMLAB-WORKLOAD "

// The programs' sizes: small, because inside the emulated host a VM runs
// under QEMU's emulation where every instruction is slow, yet each run
// takes milliseconds on real hardware, far above the clock's resolution.
const (
	BenchHashBytes  = 8 << 20  // bytes hashed by cpu
	BenchSyscalls   = 100_000  // getpid calls by syscall
	BenchSpawns     = 8        // fork+exec+wait by spawn
	BenchFiles      = 32       // files by file
	BenchFileBytes  = 64 << 10 // bytes in each
	BenchTouchBytes = 32 << 20 // fresh memory touched by memory
	// DefaultBenchRuns is how often each program runs by default, and
	// MaxBenchRuns the most a caller may ask for.
	DefaultBenchRuns = 5
	MaxBenchRuns     = 50
)

// BenchResult is what --bench reports: each program's run times.
type BenchResult struct {
	Runs     int            `json:"runs"`
	Programs []BenchProgram `json:"programs"`
	Errors   []string       `json:"errors,omitempty"`
}

// BenchProgram is one program and the wall time of each of its runs.
type BenchProgram struct {
	Name string  `json:"name"` // cpu, syscall, spawn, file, memory
	What string  `json:"what"` // what one run does, for a person
	NS   []int64 `json:"ns"`   // each run's wall time, in nanoseconds
}

// benchProgram is one program: its name, a description and the work.
type benchProgram struct {
	name, what string
	run        func(dir string) error
}

var benchPrograms = []benchProgram{
	{"cpu", fmt.Sprintf("SHA-256 of %d MiB", BenchHashBytes>>20), benchCPU},
	{"syscall", fmt.Sprintf("%d getpid(2) calls", BenchSyscalls), benchSyscalls},
	{"spawn", fmt.Sprintf("%d fork+exec+wait of a static binary", BenchSpawns), benchSpawn},
	{"file", fmt.Sprintf("%d files of %d KiB written, read, removed on /", BenchFiles, BenchFileBytes>>10), benchFiles},
	{"memory", fmt.Sprintf("%d MiB of fresh memory touched (%d page faults)", BenchTouchBytes>>20, BenchTouchBytes/4096), benchMemory},
}

// BenchNames lists the programs in the order they run and report.
func BenchNames() []string {
	var n []string
	for _, p := range benchPrograms {
		n = append(n, p.name)
	}
	return n
}

// RunBench runs every program runs times, interleaved, with the file
// program's files in a new directory under dir (removed afterwards). A
// program that fails keeps the runs it made and adds an error.
func RunBench(dir string, runs int) BenchResult {
	res := BenchResult{Runs: runs}
	for _, p := range benchPrograms {
		res.Programs = append(res.Programs, BenchProgram{Name: p.name, What: p.what})
	}
	work, err := os.MkdirTemp(dir, "kvmlab-bench-")
	if err != nil {
		res.Errors = append(res.Errors, "file: "+err.Error())
	} else {
		defer os.RemoveAll(work)
	}
	failed := make([]bool, len(benchPrograms))
	for range runs {
		for i, p := range benchPrograms {
			if failed[i] || (p.name == "file" && work == "") {
				continue
			}
			start := time.Now()
			if err := p.run(work); err != nil {
				failed[i] = true
				res.Errors = append(res.Errors, p.name+": "+err.Error())
				continue
			}
			res.Programs[i].NS = append(res.Programs[i].NS, int64(time.Since(start)))
		}
	}
	return res
}

// cpuSum is the first run's hash: every later run must agree, which both
// checks the work and keeps the compiler from discarding it.
var cpuSum []byte

func benchCPU(string) error {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 31)
	}
	h := sha256.New()
	for range BenchHashBytes / len(buf) {
		h.Write(buf)
	}
	sum := h.Sum(nil)
	if cpuSum == nil {
		cpuSum = sum
	} else if !bytes.Equal(sum, cpuSum) {
		return fmt.Errorf("the hash of the same buffer changed: %x, then %x", cpuSum, sum)
	}
	return nil
}

func benchSyscalls(string) error {
	var pid int
	for range BenchSyscalls {
		// syscall.Getpid is the system call itself, every time: Go
		// does not cache it, and Linux has no vDSO for getpid.
		pid = syscall.Getpid()
	}
	if pid <= 0 {
		return fmt.Errorf("getpid returned %d", pid)
	}
	return nil
}

func benchSpawn(string) error {
	_, err := startN(BenchSpawns)
	return err
}

func benchFiles(dir string) error {
	want := make([]byte, BenchFileBytes)
	for i := range want {
		want[i] = byte(i*13 + i>>9)
	}
	for i := range BenchFiles {
		p := filepath.Join(dir, fmt.Sprintf("b%02d", i))
		if err := os.WriteFile(p, want, 0o600); err != nil {
			return err
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(got) != len(want) || got[len(got)-1] != want[len(want)-1] {
			return fmt.Errorf("%s: read back %d bytes, wrote %d", p, len(got), len(want))
		}
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

func benchMemory(string) error {
	// A fresh private anonymous mapping each run: every page starts
	// unbacked, so every first write faults, whatever earlier runs did.
	// (Go's heap would hand back memory it already faulted in.)
	m, err := unix.Mmap(-1, 0, BenchTouchBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	for i := 0; i < len(m); i += 4096 {
		m[i] = byte(i >> 12)
	}
	if got := m[len(m)-4096]; got != byte((len(m)-4096)>>12) {
		_ = unix.Munmap(m)
		return fmt.Errorf("read back %d from fresh memory, wrote %d", got, byte((len(m)-4096)>>12))
	}
	return unix.Munmap(m)
}

// parseBenchArgs reads --bench-runs=N and --bench-dir=DIR.
func parseBenchArg(a string, runs *int, dir *string) (bool, error) {
	switch {
	case strings.HasPrefix(a, "--bench-runs="):
		var n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(a, "--bench-runs="), "%d", &n); err != nil || n < 1 || n > MaxBenchRuns ||
			fmt.Sprint(n) != strings.TrimPrefix(a, "--bench-runs=") {
			return true, fmt.Errorf("%s: give a whole number from 1 to %d", a, MaxBenchRuns)
		}
		*runs = n
		return true, nil
	case strings.HasPrefix(a, "--bench-dir="):
		*dir = strings.TrimPrefix(a, "--bench-dir=")
		if *dir == "" {
			return true, fmt.Errorf("%s: give a directory", a)
		}
		return true, nil
	}
	return false, nil
}
