package labs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"kvmlab/vmm/boot"
)

// How labs 1 to 3 build and run the learner's guest.
//
// The learner writes 16-bit real-mode assembly, as every x86 machine
// starts in, and GNU as and ld (binutils, on every Debian machine that
// builds anything) turn it into a flat binary linked at 0x7C00 with the
// boot signature at offset 510: a boot sector. kvmlab runs such a file as
// it runs a kernel, `kvmlab run --kernel guest.bin`, by copying it to
// 0x7C00 and starting the CPU in real mode there, as a BIOS would
// (vmm/boot/bootsector.go). A flat binary rather than an ELF, because ELF
// has no way to say "this entry point is 16-bit code", and because a boot
// sector is what a learner will meet again in every OS tutorial.
//
// The check runs the built guest with the very kvmlab binary the learner
// ran (Env.Kvmlab) and grades what it recorded: the --trace of every exit
// (lab 1), the stepper's quiz score (lab 2), the registers the stepper
// read at each exit (lab 3). The guests are a few instructions, which any
// /dev/kvm runs, kvm_pvm included (hence --any-kvm); on a machine without
// one, the whole check runs inside the emulated host (emulated.go).

// ErrNoAssembler is wrapped by the error a check returns when GNU as or
// ld is missing.
var ErrNoAssembler = errors.New("GNU as and ld are not installed")

// binutils finds as and ld, or says in one line how to get them.
func binutils(lab int) (as, ld string, err error) {
	as, aerr := exec.LookPath("as")
	ld, lerr := exec.LookPath("ld")
	if aerr != nil || lerr != nil {
		return "", "", fmt.Errorf("lab %d builds guest.S and %w: install the binutils package (apt-get install binutils), then check again", lab, ErrNoAssembler)
	}
	return as, ld, nil
}

// buildBootSector assembles src (guest.S) in the scratch directory tmp and
// links it into a boot sector. A learner's mistake (an assembler error, a
// missing signature) is a failing Result; the error is for a check that
// could not run.
func buildBootSector(ctx context.Context, env *Env, lab int, src []byte, tmp string) (string, *Result, error) {
	as, ld, err := binutils(lab)
	if err != nil {
		return "", nil, err
	}
	srcPath := filepath.Join(tmp, "guest.S")
	obj := filepath.Join(tmp, "guest.o")
	bin := filepath.Join(tmp, "guest.bin")
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		return "", nil, fmt.Errorf("lab %d: %w", lab, err)
	}
	env.Logf("lab %d: building guest.S (as, ld -Ttext 0x7c00 --oformat binary)", lab)
	bctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, step := range [][]string{
		{as, "--64", "-o", obj, srcPath},
		{ld, "-m", "elf_x86_64", "-Ttext", "0x7c00", "--oformat", "binary", "-e", "_start", "-o", bin, obj},
	} {
		cmd := exec.CommandContext(bctx, step[0], step[1:]...)
		cmd.Dir = tmp
		out, err := cmd.CombinedOutput()
		if err != nil {
			if bctx.Err() != nil {
				return "", nil, fmt.Errorf("lab %d: %s did not finish in a minute: %w", lab, filepath.Base(step[0]), bctx.Err())
			}
			lines := []string{filepath.Base(step[0]) + " failed on guest.S:"}
			for _, l := range tail(string(out), 20) {
				lines = append(lines, "  "+strings.ReplaceAll(l, srcPath, "guest.S"))
			}
			return "", &Result{Lines: lines, Hint: "fix the errors above in guest.S (the line numbers are guest.S's)"}, nil
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", nil, fmt.Errorf("lab %d: %w", lab, err)
	}
	if img, err := boot.Parse(b); err != nil || img.Format != boot.FormatBootSector {
		return "", &Result{Lines: []string{fmt.Sprintf("guest.bin: %d bytes, without the boot signature 0x55 0xAA at offset 510", len(b))},
			Hint: "keep '.org 510' and '.byte 0x55, 0xaa' as the last lines of guest.S: kvmlab knows a boot sector by them (and the code must fit before them)"}, nil
	}
	return bin, nil, nil
}

// guestRun is what one kvmlab run of a lab's guest left.
type guestRun struct {
	stdout, stderr string
	status         int  // exit status (-1: killed)
	timedOut       bool // ran past its time
	flooded        bool // the watched file grew past floodLimit
	limit          time.Duration
}

// guestTimeout bounds one run of a lab's guest. The guests are a few
// instructions that end in milliseconds on any KVM; one that is still
// running after this is stuck (a HLT with interrupts off sleeps in KVM
// for ever) or looping without exits.
var guestTimeout = 30 * time.Second

// floodLimit bounds the trace a learner's guest may write: an exit loop
// writes tens of MiB a second, the labs' guests a few KiB in all.
const floodLimit = 16 << 20

// runLabGuest runs kvmlab with args on this machine's /dev/kvm, bounded in
// time and in what it may write: its output is capped, and when watch (a
// --trace file) grows past floodLimit the run is stopped.
func runLabGuest(ctx context.Context, env *Env, lab int, watch string, args ...string) (guestRun, error) {
	if !tinyGuestsRunHere() {
		return guestRun{}, fmt.Errorf("lab %d runs your guest on this machine's /dev/kvm (any KVM will do, kvm_pvm too) and there is none usable here: load kvm_intel, kvm_amd or kvm_pvm, or run the check inside a VM with nested virtualisation", lab)
	}
	r := guestRun{limit: guestTimeout}
	rctx, cancel := context.WithTimeout(ctx, r.limit)
	defer cancel()
	run := &Env{Kvmlab: env.Kvmlab, Log: env.Log}
	cmd := run.Command(rctx, args...)
	var stdout, stderr cappedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("lab %d: starting kvmlab: %w", lab, err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	if watch != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if st, err := os.Stat(watch); err == nil && st.Size() > floodLimit {
						r.flooded = true
						cmd.Process.Kill()
						return
					}
				}
			}
		}()
	}
	err := cmd.Wait()
	close(done)
	wg.Wait()
	r.stdout, r.stderr = stdout.String(), stderr.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.status = ee.ExitCode()
	default:
		return r, fmt.Errorf("lab %d: running kvmlab: %w", lab, err)
	}
	if rctx.Err() != nil && ctx.Err() == nil {
		r.timedOut = true
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	return r, nil
}

// cappedBuffer keeps the first 1 MiB written to it: a guest printing in a
// loop must not fill the checker's memory.
type cappedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := 1<<20 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}
