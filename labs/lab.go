// Package labs holds kvmlab's guided exercises: small, ordered tasks a
// learner does in an evening each, from the first VM exit of a real-mode
// guest to telling a VM from a container with the probe. Each lab writes a
// task and a starting point into a directory (`kvmlab lab start N DIR`)
// and grades the learner's work there (`kvmlab lab check N DIR`) from what
// really happens: the exit trace of the learner's guest, the counts of a
// real run, the probe's report. A hint says where to look when the work is
// not right yet.
//
// Every lab ships a reference solution and a wrong one; the tests grade
// the first as passing and the second as failing, so a lab cannot pass
// anything.
package labs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Lab is one exercise.
type Lab struct {
	N       int    // its place on the path, from 1
	Slug    string // a short name: "first-exit"
	Title   string // one line
	Summary string // two or three sentences for `kvmlab lab list`

	// Files returns the starting point `lab start` writes: the task
	// (README.md) and whatever the learner begins from. Paths are
	// relative and slash-separated.
	Files func() map[string][]byte
	// Solution returns files that, written over the starting point,
	// make a passing answer; Wrong, files that make a plausible but
	// failing one. The tests grade both.
	Solution, Wrong func() map[string][]byte
	// Check grades the work in dir. An error means the check could not
	// be run (a tool missing, the machine unusable); a wrong answer is a
	// Result with Passed false and a Hint.
	Check func(ctx context.Context, env *Env, dir string) (Result, error)
}

// Result is a lab's grade.
type Result struct {
	Passed bool
	// Lines are what the check measured and compared, shown to the
	// learner whether the work passed or not.
	Lines []string
	// Hint says where to look when the work did not pass.
	Hint string
}

// Env is what a check may use.
type Env struct {
	// Kvmlab is the kvmlab binary that runs the learner's guests.
	Kvmlab string
	// Emulated makes every kvmlab run that needs KVM go through the
	// emulated host (--emulated-host), for machines whose /dev/kvm
	// cannot boot Linux: labs 5 and 6. Labs 1 to 4, whose guests are a
	// few instructions, ask the machine themselves and run the whole
	// check inside the emulated host only without a /dev/kvm that runs
	// such a guest (emulated.go).
	Emulated bool
	// Log receives progress lines ("building ...", "running ...").
	Log io.Writer
}

// Command returns a kvmlab command with args, the emulated host added for
// subcommands that run guests when e.Emulated is set.
func (e *Env) Command(ctx context.Context, args ...string) *exec.Cmd {
	bin := e.Kvmlab
	if bin == "" {
		bin, _ = os.Executable()
	}
	if e.Emulated && len(args) > 0 && (args[0] == "run" || args[0] == "step") {
		args = append([]string{args[0], "--emulated-host"}, args[1:]...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	// The token a check inside the emulated host marks its grade with
	// stays with the check: the kvmlab that runs the learner's guest
	// (lab 4: with the learner's device in it) never sees it.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, innerEnv+"=") })
	return cmd
}

// Logf writes a progress line.
func (e *Env) Logf(format string, args ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", args...)
	}
}

// ErrNoLab is returned for a lab number that does not exist.
var ErrNoLab = errors.New("no such lab")

var (
	mu  sync.Mutex
	all []*Lab
)

// register adds a lab; each lab's file calls it from init.
func register(l *Lab) {
	mu.Lock()
	defer mu.Unlock()
	for _, o := range all {
		if o.N == l.N {
			panic(fmt.Sprintf("labs: two labs numbered %d (%s, %s)", l.N, o.Slug, l.Slug))
		}
	}
	all = append(all, l)
	sort.Slice(all, func(i, j int) bool { return all[i].N < all[j].N })
}

// List returns the labs in order.
func List() []*Lab {
	mu.Lock()
	defer mu.Unlock()
	return append([]*Lab(nil), all...)
}

// Get returns lab n.
func Get(n int) (*Lab, error) {
	for _, l := range List() {
		if l.N == n {
			return l, nil
		}
	}
	ls := List()
	if len(ls) == 0 {
		return nil, fmt.Errorf("%w %d", ErrNoLab, n)
	}
	return nil, fmt.Errorf("%w %d: the labs are numbered %d to %d ('kvmlab lab list')", ErrNoLab, n, ls[0].N, ls[len(ls)-1].N)
}
