package tracepoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UserExits counts the kvm:kvm_userspace_exit event, which KVM fires every
// time KVM_RUN returns to the VMM (virt/kvm/kvm_main.c): the exits that cost
// a trip through user space, as opposed to the many more that KVM handles
// inside the kernel. It counts them for any process, QEMU's vCPU threads as
// well as kvmlab's, which is what a benchmark comparing VMMs needs.
//
// It uses a histogram trigger (Documentation/trace/histogram.rst), not the
// ring buffer: the kernel keeps one counter per (thread, exit reason) and
// updates it in place, so nothing is written out per event, nothing can be
// lost when a reader falls behind, and reading the counts is one read of the
// "hist" file. It runs in a tracing instance of its own, like [Collector].
type UserExits struct {
	trigger string // the trigger file
	dir     string // the instance directory
}

// userExitsHist is the trigger: one entry per vCPU thread and KVM_EXIT_*
// reason, counting hits.
const userExitsHist = "hist:keys=common_pid,reason:vals=hitcount:size=4096"

// StartUserExits sets up the histogram. It needs root, tracefs and a
// kernel with CONFIG_HIST_TRIGGERS (Debian's has it).
func StartUserExits() (*UserExits, error) {
	root, err := tracingRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "instances", fmt.Sprintf("kvmlab-uexits-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	u := &UserExits{dir: dir, trigger: filepath.Join(dir, "events", "kvm", "kvm_userspace_exit", "trigger")}
	if err := os.WriteFile(u.trigger, []byte(userExitsHist), 0); err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("%w: a histogram on kvm_userspace_exit: %v (does the kernel have CONFIG_HIST_TRIGGERS?)", ErrUnavailable, err)
	}
	return u, nil
}

// Read returns the exits to user space so far of the threads of process
// pid, by KVM_EXIT_* reason (numbers as in struct kvm_run's exit_reason).
// Threads are matched by the tasks the process has now, so it must be read
// while the VMM runs.
func (u *UserExits) Read(pid int) (map[uint32]uint64, error) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(u.trigger), "hist"))
	if err != nil {
		return nil, err
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	mine := map[int]bool{}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			mine[tid] = true
		}
	}
	out := map[uint32]uint64{}
	for _, e := range ParseHist(string(b)) {
		if mine[e.TID] {
			out[e.Reason] += e.Hits
		}
	}
	return out, nil
}

// Close removes the trigger and the instance.
func (u *UserExits) Close() error {
	err := os.WriteFile(u.trigger, []byte("!"+userExitsHist), 0)
	if rerr := os.Remove(u.dir); err == nil {
		err = rerr
	}
	return err
}

// HistEntry is one line of the histogram: a thread, an exit reason and how
// many times that thread returned to user space for it.
type HistEntry struct {
	TID    int
	Reason uint32
	Hits   uint64
}

// ParseHist reads the "hist" file of the trigger above, whose entries look
// like
//
//	{ common_pid:        612, reason:          2 } hitcount:        340
//
// Comment lines (#) and the totals at the end are skipped, as is anything
// that does not parse.
func ParseHist(text string) []HistEntry {
	var out []HistEntry
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "{") {
			continue
		}
		keys, rest, ok := strings.Cut(l[1:], "}")
		if !ok {
			continue
		}
		var e HistEntry
		var haveTID, haveReason bool
		for _, kv := range strings.Split(keys, ",") {
			k, v, ok := strings.Cut(kv, ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				continue
			}
			switch strings.TrimSpace(k) {
			case "common_pid":
				e.TID, haveTID = int(n), true
			case "reason":
				e.Reason, haveReason = uint32(n), true
			}
		}
		k, v, ok := strings.Cut(strings.TrimSpace(rest), ":")
		if !ok || strings.TrimSpace(k) != "hitcount" {
			continue
		}
		hits, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil || !haveTID || !haveReason {
			continue
		}
		e.Hits = hits
		out = append(out, e)
	}
	return out
}
