package labs

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"kvmlab/emuhost"
	"kvmlab/vmm/kvm"
)

// Labs 1 to 4 on a machine whose /dev/kvm cannot run even their tiny
// guests, or that has none (a cloud VM without nested virtualisation, a
// laptop without the module): the check runs inside the emulated host
// (package emuhost: a Debian kernel under QEMU's TCG, whose emulated CPU
// offers AMD SVM, so that kvm_amd loads and gives it a /dev/kvm).
//
// The whole check goes in, not just the guest's run: what the checks
// grade from (lab 1's --trace file, the stepper's output for labs 2 and 3,
// lab 4's trace) is made and read inside, and only the grade comes back,
// as one line on the emulated host's serial console (resultMarker and the
// Result as JSON, as kvmlab compare hands out its report). What goes in
// is what the check needs there: this kvmlab, the lab's files with the
// learner's copy read here, and for labs 1 to 3 GNU as and ld with their
// libraries (emuhost.Programs). Lab 4 compiles the learner's device into
// a second kvmlab here, where the Go toolchain is (the emulated host has
// no compiler), and carries it in for the check there to run the guest
// with.
//
// Only kvm_pvm, among the /dev/kvm's seen so far, cannot boot Linux and
// still runs these guests; it and real VT-x or SVM check here, directly.

// innerEnv, set in the command's environment inside the emulated host to
// a token the check outside made up, makes a check print its grade as a
// marked line.
const innerEnv = "KVMLAB_LAB_CHECK_INNER"

// resultMarker starts the line that carries a grade out of the emulated
// host: the marker, the token, a space, then a labResult as JSON. The
// token is why a learner's guest or device cannot grade itself: what it
// prints may reach the console too (lab 4's grade quotes the guest's
// output), but it never sees the token, which lives in the environment of
// the kvmlab outside the guest.
const resultMarker = "KVMLAB-LAB-RESULT "

// labResult is a check's outcome as it crosses the serial console.
type labResult struct {
	Result
	// Error is the check's error, when it could not grade.
	Error string `json:"error,omitempty"`
}

// insideEmulatedHost tells whether this check runs inside the emulated
// host for a check outside it.
func insideEmulatedHost() bool { return os.Getenv(innerEnv) != "" }

// checkFunc is a Lab.Check.
type checkFunc = func(ctx context.Context, env *Env, dir string) (Result, error)

// marked wraps a check: inside the emulated host, its grade is also
// printed as the marked line the check outside reads.
func marked(check checkFunc) checkFunc {
	return func(ctx context.Context, env *Env, dir string) (Result, error) {
		res, err := check(ctx, env, dir)
		if insideEmulatedHost() {
			lr := labResult{Result: res}
			if err != nil {
				lr.Error = err.Error()
			}
			b, _ := json.Marshal(lr) // plain strings and bools: cannot fail
			fmt.Fprintf(os.Stdout, "\n%s%s %s\n", resultMarker, os.Getenv(innerEnv), b)
		}
		return res, err
	}
}

// tinyGuest wraps the check of lab n (1 to 3), whose guest is a boot
// sector built from the learner's file: here when this machine's /dev/kvm
// runs it, else inside the emulated host.
func tinyGuest(n int, file string, check checkFunc) checkFunc {
	check = marked(check)
	return func(ctx context.Context, env *Env, dir string) (Result, error) {
		if insideEmulatedHost() || tinyGuestsRunHere() {
			return check(ctx, env, dir)
		}
		src, bad := readLearnerFile(dir, file, n)
		if bad != nil {
			return *bad, nil
		}
		// as and ld run inside, but they are this machine's: missing
		// here, they are named here, before an emulated host boots.
		if _, _, err := binutils(n); err != nil {
			return Result{}, err
		}
		if err := emulatedHostUsable(ctx, n); err != nil {
			return Result{}, err
		}
		tools, err := emuhost.Programs("as", "ld")
		if err != nil {
			return Result{}, fmt.Errorf("lab %d: carrying as and ld into the emulated host: %w", n, err)
		}
		return checkInEmulatedHost(ctx, env, n, map[string][]byte{file: src}, tools, nil)
	}
}

// kvmlab is the kvmlab binary a check runs: Env.Kvmlab, else this one.
func (e *Env) kvmlab() string {
	if e.Kvmlab != "" {
		return e.Kvmlab
	}
	self, _ := os.Executable()
	return self
}

// noKVMHere says why this machine's /dev/kvm does not run a tiny guest.
func noKVMHere() string {
	sys, err := kvm.Open()
	if err != nil {
		var pe *fs.PathError // kvm.Open names the path, and so does its cause
		if errors.As(err, &pe) {
			return pe.Error()
		}
		return err.Error()
	}
	defer sys.Close()
	if err := sys.CheckRequired(); err != nil {
		return err.Error()
	}
	return "it runs one" // not reached: only asked when it does not
}

// emulatedHostUsable says in one line what is missing for lab n's check
// to run inside the emulated host, before anything is built or booted.
func emulatedHostUsable(ctx context.Context, n int) error {
	why := noKVMHere()
	if q := emuhost.CheckQEMU(ctx); !q.OK {
		have := "it is not installed"
		if q.Path != "" {
			have = "this one is " + cmp.Or(q.Version, "of unknown version")
		}
		return fmt.Errorf("lab %d: this machine has no /dev/kvm that runs even a tiny guest (%s), so the check runs inside the emulated host, which needs QEMU %d.%d or newer (%s): apt-get install qemu-system-x86",
			n, why, emuhost.MinQEMU[0], emuhost.MinQEMU[1], have)
	}
	if b := emuhost.CheckBuildTools(); !b.OK() {
		return fmt.Errorf("lab %d: this machine has no /dev/kvm that runs even a tiny guest (%s), so the check runs inside the emulated host, which needs the Go toolchain and kvmlab's source tree to build its /init: %w",
			n, why, errors.Join(b.GoErr, b.SourceErr))
	}
	return nil
}

// innerDir is where the learner's directory is in the emulated host.
const innerDir = "/work/lab"

// checkInEmulatedHost runs `kvmlab lab check n` inside the emulated host
// with this kvmlab (Env.Kvmlab), on the lab's files with over (the
// learner's files as read here) written over them, and returns the grade
// it prints. extra are more files the check needs there (as and ld, lab
// 4's kvmlab), extraEnv more of its environment.
func checkInEmulatedHost(ctx context.Context, env *Env, n int, over map[string][]byte, extra []emuhost.File, extraEnv []string) (Result, error) {
	why := noKVMHere()
	l, err := Get(n)
	if err != nil {
		return Result{}, err
	}
	files := append([]emuhost.File{{HostPath: env.kvmlab(), Path: "/kvmlab/kvmlab", Mode: 0o755}}, extra...)
	for _, name := range names(l.Files()) {
		data, ok := over[name]
		if !ok {
			data = l.Files()[name]
		}
		files = append(files, emuhost.File{Data: data, Path: path.Join(innerDir, name), Mode: 0o644})
	}
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return Result{}, fmt.Errorf("lab %d: %w", n, err)
	}
	token := hex.EncodeToString(nonce[:])
	env.Logf("lab %d: this machine has no /dev/kvm that runs even a tiny guest (%s): checking inside the emulated host (QEMU emulating an AMD CPU with SVM, kvm_amd inside; a minute or two)", n, why)
	var out bytes.Buffer
	progress := &progressLines{lab: n, env: env}
	spec := emuhost.Spec{
		Emulator: emuhost.QEMUSVM,
		Files:    files,
		Argv:     []string{"/kvmlab/kvmlab", "lab", "check", strconv.Itoa(n), innerDir},
		Env:      append([]string{innerEnv + "=" + token}, extraEnv...),
		// The lab's guests have 64 MiB; the emulated host's own
		// kernel, the files carried in and a kvmlab fit beside them.
		MemMB: 1024, CPUs: 2, Timeout: 10 * time.Minute,
		Output: &consoleTee{keep: &out, progress: progress},
	}
	res, err := emuhost.Run(ctx, spec)
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if err != nil {
		return Result{}, fmt.Errorf("lab %d: the emulated host: %w", n, err)
	}
	lr, ok := readMarkedResult(out.String(), token)
	if !ok {
		return Result{}, fmt.Errorf("lab %d: the check inside the emulated host printed no grade (exit status %d); its last lines: %s",
			n, res.ExitCode, strings.Join(tail(strings.ReplaceAll(out.String(), "\r", ""), 5), " / "))
	}
	if lr.Error != "" {
		return Result{}, fmt.Errorf("inside the emulated host: %s", lr.Error)
	}
	return lr.Result, nil
}

// readMarkedResult finds the grade line with token in console output and
// decodes it. The console is the emulated host's, which the check outside
// trusts no more than it must: the first line with the token is the
// grade (the inner check prints it before anything else of its own
// output), and one that does not decode is no grade.
func readMarkedResult(console, token string) (labResult, bool) {
	mark := resultMarker + token + " "
	for _, l := range strings.Split(strings.ReplaceAll(console, "\r", ""), "\n") {
		j := strings.Index(l, mark)
		if j < 0 {
			continue
		}
		var lr labResult
		if json.Unmarshal([]byte(l[j+len(mark):]), &lr) != nil {
			return labResult{}, false
		}
		return lr, true
	}
	return labResult{}, false
}

// consoleTee keeps the emulated host's console, up to 4 MiB (the grade
// is a few KiB, a flooding guest's console is not kept), and passes it on
// to the progress lines. emuhost.Run serialises its writes.
type consoleTee struct {
	keep     *bytes.Buffer
	progress *progressLines
}

func (w *consoleTee) Write(p []byte) (int, error) {
	if room := 4<<20 - w.keep.Len(); room > 0 {
		w.keep.Write(p[:min(len(p), room)])
	}
	return w.progress.Write(p)
}

// progressLines passes on to the learner the check's own progress lines
// from the emulated host's console ("lab 1: building guest.S ...") and
// the harness's retries, not the host's boot or the inner grade (the
// grade is printed here, once).
type progressLines struct {
	lab     int
	env     *Env
	partial []byte
}

func (p *progressLines) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			if len(p.partial) > 64<<10 { // a line without end: not a progress line
				p.partial = p.partial[:0]
			}
			return len(b), nil
		}
		line := strings.TrimRight(string(p.partial[:i]), "\r")
		p.partial = p.partial[i+1:]
		if strings.HasPrefix(line, fmt.Sprintf("lab %d: ", p.lab)) || strings.HasPrefix(line, "harness: ") {
			p.env.Logf("  (emulated host) %s", line)
		}
	}
}
