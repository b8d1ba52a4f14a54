// Package tracepoint reads the kernel's kvm:kvm_exit tracepoint, which KVM
// fires on every VM exit, including the many it handles without returning to
// user space. It names the hardware reason of each one (an SVM exit code such
// as "npf" or "io", or a VT-x basic exit reason such as "EPT_VIOLATION"), so
// it shows the whole picture that `perf kvm stat` shows
// (Documentation/trace/events.rst; the event is defined in
// arch/x86/kvm/trace.h).
//
// It needs root and tracefs. To disturb nobody else's tracing, kvmlab makes
// its own tracing instance (a private ring buffer under
// /sys/kernel/tracing/instances/), enables kvm_exit there, and keeps the lines
// written by threads of its own process: the vCPU threads.
//
// In the same instance it enables kvm:kvm_userspace_exit, which fires each
// time KVM_RUN returns to the VMM (virt/kvm/kvm_main.c). On one vCPU thread
// the last kvm_exit before it is the VM exit that led to that return, so the
// collector pairs the two ([UserExit]) and package observatory checks the
// hardware reason kvmlab derived for each of its exits against it. The
// lines are the kernel's text, but they are parsed as untrusted input all
// the same: bounded in length, every number range-checked, anything odd
// counted and dropped (FuzzParseLine).
//
// It also keeps counts for other processes without reading any events
// ([Hist], hist.go): histogram triggers on kvm:kvm_userspace_exit (each
// return of KVM_RUN to the VMM) and kvm:kvm_pio (each port access), which
// `kvmlab bench` reads for every VMM it compares.
package tracepoint

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Roots are where tracefs is usually mounted.
var Roots = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// ErrUnavailable means tracing cannot be used here (not root, no tracefs, no
// kvm events).
var ErrUnavailable = errors.New("kvm:kvm_exit tracepoint unavailable")

// Collector counts kvm_exit events of this process's threads, and pairs
// each return of KVM_RUN to this process with the VM exit that led to it.
type Collector struct {
	dir  string // the instance directory
	fd   int
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	counts    map[string]uint64 // by reason name
	lines     uint64
	ours      map[int]bool // thread id -> belongs to this process
	names     map[string]string
	threads   map[int]*threadState
	exits     []UserExit
	dropped   uint64
	lost      uint64
	malformed uint64
	// userExits is true when kvm_userspace_exit is enabled too
	// (userExitsWhy says why not otherwise).
	userExits    bool
	userExitsWhy string
}

// tracingRoot finds where tracefs is mounted.
func tracingRoot() (string, error) {
	for _, r := range Roots {
		if _, err := os.Stat(filepath.Join(r, "instances")); err == nil {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w: tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)", ErrUnavailable)
}

// Start creates a tracing instance and starts reading kvm_exit and
// kvm_userspace_exit events.
func Start() (*Collector, error) {
	root, err := tracingRoot()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "events", "kvm", "kvm_exit")); err != nil {
		return nil, fmt.Errorf("%w: no kvm:kvm_exit event in %s (is the kvm module loaded?)", ErrUnavailable, root)
	}
	dir := filepath.Join(root, "instances", fmt.Sprintf("kvmlab-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	c := &Collector{dir: dir, fd: -1, stop: make(chan struct{}), done: make(chan struct{}),
		counts: map[string]uint64{}, ours: map[int]bool{}, names: map[string]string{}, threads: map[int]*threadState{}}
	// The hardware-layer check pairs each return of KVM_RUN with the last
	// VM exit of the same thread, so the order of one thread's events
	// must survive its moving between CPUs: the default "local" clock is
	// per CPU, "global" is one clock for all (Documentation/trace/
	// ftrace.rst, trace_clock). A larger buffer makes an overflow, which
	// the check reports, less likely. Both best effort.
	_ = os.WriteFile(filepath.Join(dir, "trace_clock"), []byte("global"), 0)
	_ = os.WriteFile(filepath.Join(dir, "buffer_size_kb"), []byte("4096"), 0)
	if err := os.WriteFile(filepath.Join(dir, "events", "kvm", "kvm_exit", "enable"), []byte("1"), 0); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("%w: enabling kvm_exit: %v", ErrUnavailable, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "events", "kvm", "kvm_userspace_exit", "enable"), []byte("1"), 0); err != nil {
		c.userExitsWhy = fmt.Sprintf("kvm:kvm_userspace_exit could not be enabled: %v", err)
	} else {
		c.userExits = true
	}
	fd, err := unix.Open(filepath.Join(dir, "trace_pipe"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		c.cleanup()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	c.fd = fd
	go c.read()
	return c, nil
}

func (c *Collector) read() {
	defer close(c.done)
	buf := make([]byte, 64<<10)
	var partial []byte
	drain := false
	for {
		n, err := unix.Read(c.fd, buf)
		if n > 0 {
			partial = append(partial, buf[:n]...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				c.line(string(partial[:i]))
				partial = partial[i+1:]
			}
			if len(partial) > MaxLine {
				// No line is this long: drop it rather than grow.
				c.line(string(partial[:MaxLine+1]))
				partial = nil
			}
			partial = append([]byte(nil), partial...) // let the consumed bytes go
			continue
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return
		}
		if drain {
			return
		}
		select {
		case <-c.stop:
			drain = true // one more pass to empty the buffer
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kind says which line ParseLine read.
type Kind uint8

// The lines the collector reads from its instance's trace_pipe.
const (
	KindExit     Kind = iota + 1 // kvm:kvm_exit: the CPU left the guest
	KindUserExit                 // kvm:kvm_userspace_exit: KVM_RUN returned to the VMM
	KindLost                     // "CPU:N [LOST M EVENTS]": the ring buffer overflowed
)

// Event is one parsed trace_pipe line.
type Event struct {
	Kind Kind
	TID  int
	// kvm_exit: the vCPU (KVM's vcpu_id), the hardware reason as the kernel
	// names it ("io", "EPT_VIOLATION", "DB excp") and the guest RIP.
	VCPU   int
	Reason string
	RIP    uint64
	// kvm_userspace_exit: the KVM_EXIT_* number KVM_RUN returned with, or
	// Errno set when it failed instead ("restart" for EINTR, "error").
	KVMReason uint32
	Errno     bool
	// KindLost: how many events the kernel dropped.
	Lost uint64
}

// MaxLine bounds what ParseLine reads: a kvm_exit line is about 200 bytes.
// The text is the kernel's, but a parser of it must still not be the
// thing that falls over when it is odd.
const MaxLine = 1024

// maxReason bounds the hardware reason's text (the longest Linux name,
// "avic_unaccelerated_access", and a VT-x name with its flag, fit well).
const maxReason = 64

// ParseLine parses a trace_pipe line of one of three kinds:
//
//	kvmlab-93 [000] d.... 123.456789: kvm_exit: vcpu 0 reason io rip 0xffffffff81000000 info1 ...
//	kvmlab-93 [000] ..... 123.456790: kvm_userspace_exit: reason KVM_EXIT_IO (2)
//	CPU:1 [LOST 42 EVENTS]
//
// (arch/x86/kvm/trace.h, include/trace/events/kvm.h, and the ring
// buffer's own notice). The reason of kvm_exit is the text between
// "reason " and " rip": on SVM it may hold a space ("DB excp").
func ParseLine(line string) (Event, bool) {
	if len(line) > MaxLine {
		return Event{}, false
	}
	if ev, ok := parseLost(line); ok {
		return ev, true
	}
	if i := strings.Index(line, " kvm_exit: "); i >= 0 {
		return parseExit(line, i)
	}
	if i := strings.Index(line, " kvm_userspace_exit: "); i >= 0 {
		return parseUserExit(line, i)
	}
	return Event{}, false
}

// parseTID reads the thread id from the "comm-TID [cpu] ..." head of a line.
func parseTID(head string) (int, bool) {
	head = strings.TrimSpace(head)
	if j := strings.Index(head, " ["); j > 0 {
		head = strings.TrimSpace(head[:j])
	}
	k := strings.LastIndexByte(head, '-')
	if k < 0 {
		return 0, false
	}
	tid, err := strconv.ParseUint(head[k+1:], 10, 31)
	if err != nil {
		return 0, false
	}
	return int(tid), true
}

func parseExit(line string, i int) (Event, bool) {
	tid, ok := parseTID(line[:i])
	if !ok {
		return Event{}, false
	}
	ev := Event{Kind: KindExit, TID: tid, VCPU: -1}
	body := line[i+len(" kvm_exit: "):]
	if v, ok := strings.CutPrefix(body, "vcpu "); ok {
		f, _, _ := strings.Cut(v, " ")
		if n, err := strconv.ParseUint(f, 10, 31); err == nil {
			ev.VCPU = int(n)
		}
	}
	_, after, ok := strings.Cut(body, " reason ")
	if !ok {
		if after, ok = strings.CutPrefix(body, "reason "); !ok {
			return Event{}, false
		}
	}
	reason, rest, hasRIP := strings.Cut(after, " rip ")
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > maxReason {
		return Event{}, false
	}
	ev.Reason = reason
	if hasRIP {
		f, _, _ := strings.Cut(rest, " ")
		if v, err := strconv.ParseUint(strings.TrimPrefix(f, "0x"), 16, 64); err == nil {
			ev.RIP = v
		}
	}
	return ev, true
}

func parseUserExit(line string, i int) (Event, bool) {
	tid, ok := parseTID(line[:i])
	if !ok {
		return Event{}, false
	}
	body, ok := strings.CutPrefix(strings.TrimSpace(line[i+len(" kvm_userspace_exit: "):]), "reason ")
	if !ok {
		return Event{}, false
	}
	// "KVM_EXIT_IO (2)", "restart (4)", "error (14)": the number in
	// parentheses is the exit reason, or the errno when KVM_RUN failed.
	name, num, ok := strings.Cut(body, " (")
	num, closed := strings.CutSuffix(num, ")")
	if !ok || !closed || name == "" {
		return Event{}, false
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return Event{}, false
	}
	ev := Event{Kind: KindUserExit, TID: tid, VCPU: -1}
	if name == "restart" || name == "error" {
		ev.Errno = true
	} else {
		ev.KVMReason = uint32(n)
	}
	return ev, true
}

// parseLost reads the ring buffer's "CPU:1 [LOST 42 EVENTS]", or "CPU:1
// [LOST EVENTS]" when it could not count them (kernel/trace/trace.c),
// which is taken as one.
func parseLost(line string) (Event, bool) {
	if !strings.HasPrefix(strings.TrimSpace(line), "CPU:") {
		return Event{}, false
	}
	if strings.HasSuffix(line, "[LOST EVENTS]") {
		return Event{Kind: KindLost, Lost: 1}, true
	}
	_, rest, ok := strings.Cut(line, "[LOST ")
	if !ok {
		return Event{}, false
	}
	num, _, ok := strings.Cut(rest, " EVENTS]")
	if !ok {
		return Event{}, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return Event{}, false
	}
	return Event{Kind: KindLost, Lost: n}, true
}

// UserExit is one return of KVM_RUN to kvmlab, with the VM exit that led to
// it: the last kvm_exit of the same thread before kvm_userspace_exit.
type UserExit struct {
	TID       int
	VCPU      int    // KVM's vcpu_id, from that kvm_exit (-1: none seen yet)
	KVMReason uint32 // KVM_EXIT_*
	HW        string // the kvm_exit reason text ("" when none was seen)
	RIP       uint64 // the guest RIP kvm_exit recorded
	// Fresh is false when no VM exit happened since the previous return
	// of KVM_RUN on this thread: KVM went on with the same instruction
	// after the VMM answered (a string I/O instruction's next element)
	// and came back without entering the guest.
	Fresh bool
}

// Check is what the collector can say about exits to user space.
type Check struct {
	// Available is false when kvm:kvm_userspace_exit could not be
	// enabled: then no exit can be matched (Why says so).
	Available bool
	Why       string
	Exits     []UserExit // in order per thread
	Dropped   uint64     // returns not kept: over MaxUserExits
	Lost      uint64     // events the kernel's ring buffer dropped
	Malformed uint64     // lines that parsed as nothing
}

// MaxUserExits bounds the returns a Collector keeps for the check (a boot
// makes a few thousand); beyond it they are counted, not kept.
const MaxUserExits = 1 << 19

// maxThreads bounds the per-thread state: threads of other processes are
// remembered as "not ours" up to this many, then looked up each time.
const maxThreads = 4096

// threadState is the last kvm_exit of one of our threads.
type threadState struct {
	vcpu   int
	reason string
	rip    uint64
	fresh  bool
	seen   bool
}

func (c *Collector) line(l string) {
	ev, ok := ParseLine(l)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ok {
		if strings.TrimSpace(l) != "" {
			c.malformed++
		}
		return
	}
	if ev.Kind == KindLost {
		c.lost += ev.Lost
		return
	}
	mine, known := c.ours[ev.TID]
	if !known {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", ev.TID))
		mine = err == nil
		if mine || len(c.ours) < maxThreads {
			c.ours[ev.TID] = mine
		}
	}
	if !mine {
		return
	}
	st := c.threads[ev.TID]
	if st == nil {
		st = &threadState{vcpu: -1}
		c.threads[ev.TID] = st
	}
	switch ev.Kind {
	case KindExit:
		c.lines++
		c.counts[c.intern(ev.Reason)]++
		*st = threadState{vcpu: ev.VCPU, reason: c.intern(ev.Reason), rip: ev.RIP, fresh: true, seen: true}
	case KindUserExit:
		if ev.Errno {
			// KVM_RUN failed (EINTR: a signal; kvmlab re-enters without
			// an exit to handle). The VM exit before it, if any, led to
			// no exit of its own.
			st.fresh = false
			return
		}
		if len(c.exits) >= MaxUserExits {
			c.dropped++
			return
		}
		u := UserExit{TID: ev.TID, VCPU: st.vcpu, KVMReason: ev.KVMReason, Fresh: st.fresh}
		if st.seen {
			u.HW, u.RIP = st.reason, st.rip
		}
		c.exits = append(c.exits, u)
		st.fresh = false
	}
}

// intern keeps one copy of each reason name: the set is small, and a
// substring would keep its whole line alive.
func (c *Collector) intern(s string) string {
	if v, ok := c.names[s]; ok {
		return v
	}
	v := strings.Clone(s)
	if len(c.names) < 512 {
		c.names[v] = v
	}
	return v
}

// Check returns the returns to user space seen, each with the VM exit that
// led to it. Call it after Stop.
func (c *Collector) Check() Check {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Check{Available: c.userExits, Why: c.userExitsWhy, Exits: c.exits, Dropped: c.dropped,
		Lost: c.lost, Malformed: c.malformed}
}

// Stop ends collection, removes the tracing instance, and returns the counts
// by hardware exit reason.
func (c *Collector) Stop() map[string]uint64 {
	close(c.stop)
	<-c.done
	c.cleanup()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

func (c *Collector) cleanup() {
	if c.fd >= 0 {
		_ = unix.Close(c.fd)
		c.fd = -1
	}
	_ = os.WriteFile(filepath.Join(c.dir, "events", "kvm", "kvm_exit", "enable"), []byte("0"), 0)
	_ = os.WriteFile(filepath.Join(c.dir, "events", "kvm", "kvm_userspace_exit", "enable"), []byte("0"), 0)
	_ = os.Remove(c.dir)
}

// Sorted returns counts as name/count pairs, largest first.
func Sorted(m map[string]uint64) []struct {
	Reason string
	Count  uint64
} {
	out := make([]struct {
		Reason string
		Count  uint64
	}, 0, len(m))
	for k, v := range m {
		out = append(out, struct {
			Reason string
			Count  uint64
		}{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}
