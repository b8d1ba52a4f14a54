package tracepoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Hist counts one KVM trace event per vCPU thread and per value of one of
// the event's fields, for any process: QEMU's vCPU threads as well as
// kvmlab's, which is what a benchmark comparing VMMs needs. Two are used:
//
//   - kvm:kvm_userspace_exit by reason ([StartUserExits]): KVM fires it each
//     time KVM_RUN returns to the VMM (virt/kvm/kvm_main.c), so it counts the
//     exits that cost a trip through user space, as opposed to the many more
//     that KVM handles inside the kernel;
//   - kvm:kvm_pio by port ([StartPortAccesses]): which I/O ports the guest's
//     port exits went to.
//
// It uses a histogram trigger (Documentation/trace/histogram.rst), not the
// ring buffer: the kernel keeps one counter per (thread, value) and updates
// it in place, so nothing is written out per event, nothing can be lost
// when a reader falls behind, and reading the counts is one read of the
// "hist" file. Each runs in a tracing instance of its own, like [Collector].
type Hist struct {
	key     string // the event's field the counts are kept by
	spec    string // the trigger
	trigger string // the trigger file
	dir     string // the instance directory
}

// StartUserExits counts exits to user space by KVM_EXIT_* reason.
func StartUserExits() (*Hist, error) { return startHist("kvm_userspace_exit", "reason") }

// StartPortAccesses counts the guest's port accesses (IN/OUT exits) by port.
func StartPortAccesses() (*Hist, error) { return startHist("kvm_pio", "port") }

// startHist sets up a histogram of a kvm event keyed on the thread and one
// field. It needs root, tracefs and a kernel with CONFIG_HIST_TRIGGERS
// (Debian's has it).
func startHist(event, key string) (*Hist, error) {
	root, err := tracingRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "instances", fmt.Sprintf("kvmlab-%s-%d", event, os.Getpid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	h := &Hist{key: key, spec: "hist:keys=common_pid," + key + ":vals=hitcount:size=4096",
		dir: dir, trigger: filepath.Join(dir, "events", "kvm", event, "trigger")}
	if err := os.WriteFile(h.trigger, []byte(h.spec), 0); err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("%w: a histogram on %s: %v (does the kernel have CONFIG_HIST_TRIGGERS?)", ErrUnavailable, event, err)
	}
	return h, nil
}

// Read returns the counts so far of the threads of process pid, by value
// of the key (a KVM_EXIT_* number as in struct kvm_run's exit_reason, a
// port number). Threads are matched by the tasks the process has now, so
// it must be read while the VMM runs.
func (h *Hist) Read(pid int) (map[uint64]uint64, error) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(h.trigger), "hist"))
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
	out := map[uint64]uint64{}
	for _, e := range ParseHist(string(b), h.key) {
		if mine[e.TID] {
			out[e.Key] += e.Hits
		}
	}
	return out, nil
}

// Close removes the trigger and the instance.
func (h *Hist) Close() error {
	err := os.WriteFile(h.trigger, []byte("!"+h.spec), 0)
	if rerr := os.Remove(h.dir); err == nil {
		err = rerr
	}
	return err
}

// HistEntry is one line of a histogram: a thread, a value of the key (an
// exit reason, a port) and how many times the event fired for that pair.
type HistEntry struct {
	TID  int
	Key  uint64
	Hits uint64
}

// ParseHist reads the "hist" file of a [Hist] keyed on key, whose entries
// look like
//
//	{ common_pid:        612, reason:          2 } hitcount:        340
//
// Comment lines (#) and the totals at the end are skipped, as is anything
// that does not parse.
func ParseHist(text, key string) []HistEntry {
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
		var haveTID, haveKey bool
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
			case key:
				e.Key, haveKey = n, true
			}
		}
		k, v, ok := strings.Cut(strings.TrimSpace(rest), ":")
		if !ok || strings.TrimSpace(k) != "hitcount" {
			continue
		}
		hits, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil || !haveTID || !haveKey {
			continue
		}
		e.Hits = hits
		out = append(out, e)
	}
	return out
}
