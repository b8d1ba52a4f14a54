package labs

import (
	"bufio"
	"context"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"kvmlab/emuhost"
)

// Lab 4, a device of your own: the learner writes a port device in Go, the
// check compiles it into a kvmlab of its own through the devices/labdev
// plug-in point (`go build -overlay`, so the source tree is not touched),
// boots a hand-assembled guest that drives the device and says PASS or
// FAIL on COM1, and reads the exit trace to show what the device answered.

//go:embed files/lab4
var lab4Files embed.FS

func init() {
	register(&Lab{
		N:     4,
		Slug:  "your-device",
		Title: "A device of your own: an accumulator on I/O port 0x700",
		Summary: "Write a port device in Go against kvmlab's bus.Device interface; the check compiles it into " +
			"kvmlab and boots a tiny guest that talks to it with IN and OUT, each one a KVM_EXIT_IO.",
		Files: func() map[string][]byte {
			m := embedded(lab4Files, "files/lab4", "README.md", "device.go")
			m["guest.elf"] = lab4GuestELF()
			return m
		},
		Solution: func() map[string][]byte {
			return map[string][]byte{"device.go": mustRead(lab4Files, "files/lab4/solution/device.go")}
		},
		Wrong: func() map[string][]byte {
			return map[string][]byte{"device.go": mustRead(lab4Files, "files/lab4/wrong/device.go")}
		},
		Check: marked(checkLab4),
	})
}

// embedded returns the named files under root of fsys, keyed by name.
func embedded(fsys embed.FS, root string, names ...string) map[string][]byte {
	m := map[string][]byte{}
	for _, n := range names {
		m[n] = mustRead(fsys, root+"/"+n)
	}
	return m
}

// mustRead reads an embedded file; one missing is a bug in this package
// caught by its tests, never input.
func mustRead(fsys embed.FS, name string) []byte {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		panic(fmt.Sprintf("labs: embedded %s: %v", name, err))
	}
	return b
}

// lab4Package is the import path the learner's device.go gets in the
// overlaid build: a package of its own under devices/labdev.
const lab4Package = "kvmlab/devices/labdev/yours"

func checkLab4(ctx context.Context, env *Env, dir string) (Result, error) {
	src, bad := readLearnerFile(dir, "device.go", 4)
	if bad != nil {
		return *bad, nil
	}
	if r := lab4Vet(src); r != nil {
		return *r, nil
	}
	tmp, err := os.MkdirTemp("", "kvmlab-lab4-")
	if err != nil {
		return Result{}, fmt.Errorf("%w", err)
	}
	defer os.RemoveAll(tmp)
	var bin string
	switch {
	case insideEmulatedHost():
		// The check outside built kvmlab with device.go and carried it
		// in (there is no compiler in here); this check is the kvmlab
		// the learner ran, so the learner's code runs only in the
		// kvmlab that runs the guest, as outside.
		if bin = os.Getenv(lab4KvmlabEnv); bin == "" {
			return Result{}, fmt.Errorf("lab 4: inside the emulated host without %s: the kvmlab built with device.go did not come in", lab4KvmlabEnv)
		}
	default:
		if !tinyGuestsRunHere() {
			if err := emulatedHostUsable(ctx, 4); err != nil {
				return Result{}, err
			}
		}
		var bad *Result
		if bin, bad, err = buildLab4(ctx, env, src, tmp); err != nil || bad != nil {
			return derefResult(bad), err
		}
		if !tinyGuestsRunHere() {
			return checkInEmulatedHost(ctx, env, 4, map[string][]byte{"device.go": src},
				[]emuhost.File{{HostPath: bin, Path: lab4InnerKvmlab, Mode: 0o755}}, []string{lab4KvmlabEnv + "=" + lab4InnerKvmlab})
		}
	}

	// The guest is a few instructions: any /dev/kvm that runs such a
	// guest will do (kvm_pvm does).
	guest := filepath.Join(tmp, "guest.elf")
	if err := os.WriteFile(guest, lab4GuestELF(), 0o644); err != nil {
		return Result{}, fmt.Errorf("%w", err)
	}
	trace := filepath.Join(tmp, "trace.json")
	args := []string{"run", "--any-kvm", "--quiet", "--kernel", guest, "--mem", "64M", "--trace", trace}
	limit := 2 * time.Minute
	rctx, rcancel := context.WithTimeout(ctx, limit)
	defer rcancel()
	env.Logf("lab 4: running the lab's guest against your device")
	cmd := (&Env{Kvmlab: bin}).Command(rctx, args...)
	stdout, stderr := &boundedOutput{max: 1 << 20}, &boundedOutput{max: 1 << 20}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	runErr := cmd.Run()
	if rctx.Err() != nil && ctx.Err() == nil {
		return Result{Lines: []string{fmt.Sprintf("the guest did not finish in %v", limit)},
			Hint: "the vCPU is stuck inside your device: does Read or Write wait for something, or lock a mutex twice?"}, nil
	}
	ios, err := readLab4Trace(trace)
	if err != nil {
		return Result{}, fmt.Errorf("the run's trace: %w", err)
	}
	return gradeLab4(stdout.String(), stderr.String(), runErr, ios, true), nil
}

// buildLab4 compiles kvmlab with the learner's device (src) into tmp and
// returns the binary; a compile error is the learner's, a failing Result.
func buildLab4(ctx context.Context, env *Env, src []byte, tmp string) (string, *Result, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", nil, errors.New("this lab compiles kvmlab with your device and the Go toolchain ('go') is not on PATH: install Go 1.26 or newer (https://go.dev/dl/) and check again")
	}
	tree, err := kvmlabSource(env)
	if err != nil {
		return "", nil, fmt.Errorf("%w", err)
	}
	// What is built is the copy read above, not whatever device.go
	// says by the time the compiler opens it.
	dev := filepath.Join(tmp, "device.go")
	imp := filepath.Join(tmp, "import.go")
	overlay := filepath.Join(tmp, "overlay.json")
	bin := filepath.Join(tmp, "kvmlab")
	ov, _ := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(tree, "devices", "labdev", "yours", "device.go"):     dev,
		filepath.Join(tree, "cmd", "kvmlab", "zz_lab4_device_of_yours.go"): imp,
	}})
	for _, f := range []struct {
		path string
		data []byte
	}{
		{dev, src},
		{imp, []byte("package main\n\n// Lab 4: the learner's device, added through devices/labdev.\nimport _ \"" + lab4Package + "\"\n")},
		{overlay, ov},
	} {
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			return "", nil, fmt.Errorf("%w", err)
		}
	}

	env.Logf("lab 4: building kvmlab with your device (go build -overlay, in %s)", tree)
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(bctx, goBin, "build", "-overlay", overlay, "-o", bin, "./cmd/kvmlab")
	build.Dir = tree
	// Static (no cgo), so that the same binary also runs inside the
	// emulated host, which has no C library.
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		if bctx.Err() != nil {
			return "", nil, fmt.Errorf("go build did not finish in 10 minutes: %w", bctx.Err())
		}
		lines := []string{"go build with your device.go failed:"}
		for _, l := range tail(string(out), 20) {
			lines = append(lines, "  "+strings.ReplaceAll(l, dev, "device.go"))
		}
		return "", &Result{Lines: lines, Hint: "fix the compile errors above in device.go (its import path in the build is " + lab4Package + ")"}, nil
	}
	return bin, nil, nil
}

// lab4KvmlabEnv names, inside the emulated host, the kvmlab built with
// the learner's device, which the check carries in to lab4InnerKvmlab.
const (
	lab4KvmlabEnv   = "KVMLAB_LAB4_KVMLAB"
	lab4InnerKvmlab = "/kvmlab/kvmlab-with-your-device"
)

// lab4Vet catches what would otherwise be a confusing compiler error: a
// file that is not Go, or a command (package main) instead of a package.
func lab4Vet(src []byte) *Result {
	f, err := parser.ParseFile(token.NewFileSet(), "device.go", src, parser.ImportsOnly)
	if err != nil {
		return &Result{Lines: []string{"device.go does not parse: " + err.Error()}, Hint: "device.go must be a Go source file"}
	}
	if f.Name.Name == "main" {
		return &Result{Lines: []string{"device.go is package main"},
			Hint: "device.go is a package of its own that kvmlab imports (package mydevice, as in the starting point), not a program"}
	}
	for _, i := range f.Imports {
		if p, _ := strconv.Unquote(i.Path.Value); p == "kvmlab/devices/labdev" {
			return nil
		}
	}
	return &Result{Lines: []string{"device.go does not import kvmlab/devices/labdev"},
		Hint: "add the device to kvmlab with labdev.Add in an init function, as the starting point does"}
}

// traceIO is what lab 4 reads of one exit in a `kvmlab run --trace` file
// (vmm/trace's JSON lines).
type traceIO struct {
	Reason string `json:"reason"`
	IO     *struct {
		Port uint16 `json:"port"`
		Size int    `json:"size"`
		Dir  string `json:"dir"`
		Data string `json:"data"`
	} `json:"io"`
	Device string `json:"device"`
	Action string `json:"action"`
}

// value is the access's data as a little-endian number.
func (t traceIO) value() (uint32, bool) {
	b, err := hex.DecodeString(t.IO.Data)
	if err != nil || len(b) == 0 || len(b) > 4 {
		return 0, false
	}
	var v uint32
	for i, c := range b {
		v |= uint32(c) << (8 * i)
	}
	return v, true
}

// readLab4Trace returns the port exits at the device's range. The trace
// is the VMM's own output, but it is still read with bounds: a line at
// most 64 KiB, a million lines at most.
func readLab4Trace(path string) ([]traceIO, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []traceIO
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 0; sc.Scan(); n++ {
		if n > 1_000_000 {
			return nil, errors.New("more than a million exits: not the lab's guest")
		}
		var t traceIO
		if err := json.Unmarshal(sc.Bytes(), &t); err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		if t.IO != nil && t.IO.Port >= lab4Port && t.IO.Port < lab4Port+lab4Size {
			out = append(out, t)
		}
	}
	return out, sc.Err()
}

var lab4Verdict = regexp.MustCompile(`lab4: (PASS|FAIL (\d))`)

// gradeLab4 grades from the guest's own verdict on COM1 and, with a
// trace, shows the learner each access their device saw and what it
// answered to the read that failed.
func gradeLab4(console, stderr string, runErr error, ios []traceIO, traced bool) Result {
	var r Result
	var ins []uint32 // the values the guest read, one per check
	if traced {
		names := map[string]bool{}
		for _, t := range ios {
			names[t.Device] = true
			if t.IO.Dir == "in" {
				v, _ := t.value()
				ins = append(ins, v)
			}
		}
		r.Lines = append(r.Lines, fmt.Sprintf("exits at ports %#x-%#x: %d (KVM_EXIT_IO, %d of them IN)", lab4Port, lab4Port+lab4Size-1, len(ios), len(ins)))
		for _, t := range ios {
			v, _ := t.value()
			who := t.Device
			if who == "" {
				who = "no device"
			}
			line := fmt.Sprintf("  %-3s port %#x, %d byte(s), value %#x -> %s", t.IO.Dir, t.IO.Port, t.IO.Size, v, who)
			if t.Action != "" {
				line += ": " + t.Action
			}
			r.Lines = append(r.Lines, line)
		}
		if len(ios) > 0 && (names[""] || names["unclaimed"]) && len(names) == 1 {
			r.Lines = append(r.Lines, "guest console: "+strings.TrimSpace(console))
			r.Hint = fmt.Sprintf("no device answered at port %#x: give labdev.Add Port: %#x and Size: %d", lab4Port, lab4Port, lab4Size)
			return r
		}
	}
	m := lab4Verdict.FindStringSubmatch(console)
	switch {
	case m == nil:
		r.Lines = append(r.Lines, "the guest printed no verdict; kvmlab said:")
		for _, l := range tail(strings.TrimSpace(console+"\n"+stderr), 15) {
			r.Lines = append(r.Lines, "  "+l)
		}
		if runErr != nil {
			r.Lines = append(r.Lines, "  ("+runErr.Error()+")")
		}
		r.Hint = "the machine stopped before the guest finished: look for a panic or an error naming your device above"
	case m[1] == "PASS":
		r.Lines = append(r.Lines, "guest console: "+m[0])
		r.Passed = true
		// The verdict is the guest's; the trace is the VMM's record of
		// what the device really answered, and must agree (a device
		// that prints "lab4: PASS" itself has not passed).
		if traced {
			for i, s := range lab4Steps {
				if i >= len(ins) || ins[i] != s.want {
					r.Passed = false
					r.Hint = "the guest's verdict and the exit trace disagree: check " + strconv.Itoa(i+1) + ": " + s.what
					break
				}
			}
		}
	default:
		n, _ := strconv.Atoi(m[2])
		r.Lines = append(r.Lines, "guest console: "+m[0])
		r.Hint = "check " + strconv.Itoa(n) + " failed: " + lab4Steps[n-1].what
		if n <= len(ins) {
			r.Lines = append(r.Lines, fmt.Sprintf("check %d read %#x from your device; it should read %#x", n, ins[n-1], lab4Steps[n-1].want))
		}
	}
	return r
}
