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

// Collector counts kvm_exit events of this process's threads.
type Collector struct {
	dir  string // the instance directory
	fd   int
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	counts map[string]uint64 // by reason name
	lines  uint64
	ours   map[int]bool // thread id -> belongs to this process
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

// Start creates a tracing instance and starts reading kvm_exit events.
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
		counts: map[string]uint64{}, ours: map[int]bool{}}
	if err := os.WriteFile(filepath.Join(dir, "events", "kvm", "kvm_exit", "enable"), []byte("1"), 0); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("%w: enabling kvm_exit: %v", ErrUnavailable, err)
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

// Event is one parsed kvm_exit line.
type Event struct {
	TID    int
	VCPU   int
	Reason string
	RIP    uint64
}

// ParseLine parses a trace_pipe line such as
//
//	kvmlab-93 [000] d.... 123.456789: kvm_exit: vcpu 0 reason io rip 0xffffffff81000000 info1 ...
func ParseLine(line string) (Event, bool) {
	i := strings.Index(line, " kvm_exit: ")
	if i < 0 {
		return Event{}, false
	}
	head := strings.TrimSpace(line[:i])
	if j := strings.Index(head, " ["); j > 0 {
		head = strings.TrimSpace(head[:j])
	}
	k := strings.LastIndexByte(head, '-')
	if k < 0 {
		return Event{}, false
	}
	tid, err := strconv.Atoi(head[k+1:])
	if err != nil {
		return Event{}, false
	}
	ev := Event{TID: tid, VCPU: -1}
	f := strings.Fields(line[i+len(" kvm_exit: "):])
	for j := 0; j+1 < len(f); j++ {
		switch f[j] {
		case "vcpu":
			if v, err := strconv.Atoi(f[j+1]); err == nil {
				ev.VCPU = v
			}
		case "reason":
			ev.Reason = f[j+1]
		case "rip":
			if v, err := strconv.ParseUint(strings.TrimPrefix(f[j+1], "0x"), 16, 64); err == nil {
				ev.RIP = v
			}
		}
	}
	if ev.Reason == "" {
		return Event{}, false
	}
	return ev, true
}

func (c *Collector) line(l string) {
	ev, ok := ParseLine(l)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	mine, known := c.ours[ev.TID]
	if !known {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", ev.TID))
		mine = err == nil
		c.ours[ev.TID] = mine
	}
	if !mine {
		return
	}
	c.lines++
	c.counts[ev.Reason]++
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
