// Package footprint keeps the VMM process's own memory small: what `kvmlab
// run` costs its host beyond guest RAM.
//
// kvmlab run aims to cost its host little beyond guest RAM: what a VMM
// needs to decode exits and emulate a few devices is small, and the rest
// of its resident set is accidents of how a Go program is loaded and run.
// Three of them are large enough to matter and are handled here.
//
// Transparent huge pages. On a host with THP "always" (Debian's default),
// the kernel backs the Go heap's 2 MiB-aligned arena with huge pages: at
// fault time, and later through khugepaged, which collapses a 2 MiB range
// into one huge page even when only a few of its 4 KiB pages were in use.
// The Go heap of kvmlab run holds under 1 MiB of live data after set-up,
// yet was measured at 1.7, 3.6 and 5.8 MiB resident in three boots: one
// huge page more or less each time. The Go runtime marks its heap mappings
// MADV_NOHUGEPAGE when started with GODEBUG=disablethp=1, a setting it
// reads only at start-up and that no //go:debug line can set. So kvmlab
// run re-executes itself once with it (ReexecWithoutHeapTHP). Guest RAM is
// mapped by the VMM, not by the Go heap, and keeps whatever THP policy the
// host has.
//
// Asynchronous preemption. The runtime's monitor thread interrupts a
// goroutine that has held its processor for 10 ms with a signal (SIGURG),
// and the handler asks whether the interrupted instruction is a safe point:
// it looks the PC up in the function tables (.gopclntab: the function
// table, its pc-value tables, even the function's name, to spare the
// runtime's own code). In the emulated host, where a thread easily sits
// descheduled for 10 ms while counted as running, those look-ups landed
// all over the tables, and each pulled 64 KiB of them back in after
// the trim had dropped them: 1.7 MiB of .gopclntab resident at the end of
// a boot, 0.8 MiB with asyncpreemptoff=1 (kvmlab bench --smaps; VMM RSS
// outside guest RAM 6.2 -> 5.2 MiB). The VMM's goroutines do not need it:
// each of them makes a system call or blocks on a channel in every turn of
// its loop, and those are preemption points of their own. The same re-exec
// sets it, so it applies to kvmlab run only.
//
// The binary's pages. Trimming them, at start and then every few seconds,
// is the job of ImageTrimmer, below; Settle starts it once the machine is
// built, after handing the heap's free memory back to the host.
//
// The settings are the runtime's (GODEBUG, package runtime's
// documentation), the trim is madvise(2)'s MADV_DONTNEED, and the mappings
// come from /proc/self/smaps (package smaps).
package footprint

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/internal/smaps"
)

// heapTHPEnv is the setting the runtime must see at start-up: no huge
// pages for the heap, no asynchronous preemption.
const heapTHPEnv = "disablethp=1,asyncpreemptoff=1"

// ReexecWithoutHeapTHP replaces the process with itself, same arguments,
// GODEBUG plus disablethp=1, unless GODEBUG already says something about
// disablethp (which includes the re-executed process). It returns only
// when it did not exec: the caller goes on as before, merely bigger.
func ReexecWithoutHeapTHP() {
	godebug := os.Getenv("GODEBUG")
	if strings.Contains(godebug, "disablethp=") {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	// Exactly one GODEBUG entry: with two, getenv in the new process
	// would read the first and exec again, for ever.
	env := []string{"GODEBUG=" + godebug + heapTHPEnv}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	// /proc/self/exe is this very binary even when argv[0] is a bare
	// name found through PATH or the file was replaced since.
	_ = syscall.Exec("/proc/self/exe", os.Args, env)
}

// Trimming kvmlab's own image.
//
// A Go binary is mapped from the page cache: its text (r-xp) and read-only
// data (r--p: the pclntab, type data, strings). Start-up runs every
// package's init and touches code and tables all over the file, and on
// each page fault the kernel maps not one page but the 64 KiB around it
// ("fault-around", mm/memory.c do_fault_around). By the time the VMM
// enters its exit loop, nearly the whole binary (about 6 MiB) is mapped
// and counted in the process's RSS, although the loop runs a few hundred
// KiB of it.
//
// A trim undoes that once the set-up is over: MADV_DONTNEED drops the
// mappings' page-table entries. The pages are clean copies of the file,
// still in the page cache, so nothing is lost: the next instruction fetch
// or load from one of them takes a minor fault and maps it again, with
// the 64 KiB around it. (MADV_RANDOM does not turn fault-around off: it
// was tried, and a probe of /proc/self/pagemap still showed 16 pages
// mapped per touch, on 6.1 and 6.18.)
//
// What stays resident afterwards is the working set of the running VMM,
// which is what "the VMM's memory" should mean; ImageTrimmer repeats the
// trim every few seconds so that it stays so. A private mapping with
// anonymous (copy-on-write) pages is left alone: MADV_DONTNEED would throw
// the written copies away. Go's static binaries have none in their
// read-only segments, but a dynamically linked build's relocated
// read-only data would.

// imageMapping is one mapping of the executable file that may be trimmed.
type imageMapping struct {
	start, end uint64
	perms      string
	rssKiB     uint64
	anonKiB    uint64
}

// ImageTrimPeriod is how often a running VMM drops its image's pages
// again. What stays resident is then the code and tables used in the last
// few seconds: the working set (Denning's W(t, T), with T this period),
// not everything the boot once ran. A boot runs code that the VMM never
// needs again (PCI enumeration, ACPI and RTC set-up, each device's first
// configuration); in the emulated host, where a boot to user space takes
// 15-20 s, it pulled 2.4 MiB of the image back in after the first trim.
// The price is a few dozen minor faults per period, each mapping 64 KiB of
// page cache again: well under a millisecond every few seconds.
const ImageTrimPeriod = 5 * time.Second

// Settle is for the moment a VMM's machine is built and what it read to
// build it (the kernel, the initrd: now in guest RAM) is garbage. It hands
// the Go heap's free memory back to the host, so that the VMM's own
// footprint is what it needs to run, not what it loaded; and it drops the
// pages of the binary that start-up mapped, now and every ImageTrimPeriod,
// so that only the code and tables the running VMM uses stay mapped
// (StartImageTrimmer). stop ends the trimming.
func Settle(report io.Writer) (stop func()) {
	debug.FreeOSMemory()
	return StartImageTrimmer(ImageTrimPeriod, report).Stop
}

// ImageTrimmer drops the resident pages of the executable's read-only
// mappings, now and every period, until stopped.
type ImageTrimmer struct {
	ranges []imageMapping // read once: a static binary's mappings never move
	stop   chan struct{}
	done   chan struct{}
}

// StartImageTrimmer trims now and then every period. Errors are reported
// on report and are not fatal: an untrimmed VMM works, merely bigger.
func StartImageTrimmer(period time.Duration, report io.Writer) *ImageTrimmer {
	t := &ImageTrimmer{stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	if t.ranges, err = imageRanges(); err == nil {
		_, err = trimRanges(t.ranges)
	}
	if err != nil {
		fmt.Fprintf(report, "kvmlab: trim: %v (going on untrimmed)\n", err)
		close(t.done)
		return t
	}
	go func() {
		defer close(t.done)
		// A ticker, not a timer re-armed by a callback: the loop then
		// allocates nothing per period, so it never brings on a garbage
		// collection (which would read the very tables just dropped).
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				if _, err := trimRanges(t.ranges); err != nil {
					fmt.Fprintf(report, "kvmlab: trim: %v (stopping the trims)\n", err)
					return
				}
			}
		}
	}()
	return t
}

// Stop ends the periodic trims and waits for the loop to finish.
func (t *ImageTrimmer) Stop() {
	select {
	case <-t.done:
	default:
		close(t.stop)
		<-t.done
	}
}

// imageRanges lists the running executable's mappings that may be
// trimmed.
func imageRanges() ([]imageMapping, error) {
	maps, err := readImageMappings()
	if err != nil {
		return nil, err
	}
	return trimmable(maps), nil
}

// trimmable keeps the mappings that MADV_DONTNEED may drop without losing
// anything: read-only and with no anonymous (copy-on-write) page.
func trimmable(maps []imageMapping) []imageMapping {
	var out []imageMapping
	for _, m := range maps {
		if m.anonKiB != 0 || strings.Contains(m.perms, "w") {
			continue
		}
		out = append(out, m)
	}
	return out
}

// trimRanges drops the page-table entries of each mapping and returns the
// sum of their Rss figures as read (for a cached list, as first read).
func trimRanges(maps []imageMapping) (uint64, error) {
	var before uint64
	for _, m := range maps {
		n := m.end - m.start
		// madvise takes the address as a number: no Go pointer is formed,
		// so this needs no unsafe.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(n), unix.MADV_DONTNEED); e != 0 {
			return before, fmt.Errorf("madvise(MADV_DONTNEED, %#x+%#x): %w", m.start, n, e)
		}
		before += m.rssKiB
	}
	return before, nil
}

// readImageMappings lists this process's mappings of its own executable,
// from /proc/self/smaps.
func readImageMappings() ([]imageMapping, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	maps, err := parseImageMappings(f, exe)
	if err != nil {
		return nil, fmt.Errorf("/proc/self/smaps: %w", err)
	}
	return maps, nil
}

// parseImageMappings returns the mappings of file exe listed in an smaps
// text, with their Rss and Anonymous figures.
func parseImageMappings(r io.Reader, exe string) ([]imageMapping, error) {
	all, err := smaps.Parse(r)
	if err != nil {
		return nil, err
	}
	var out []imageMapping
	for _, m := range all {
		if m.Path == exe {
			out = append(out, imageMapping{start: m.Start, end: m.End, perms: m.Perms, rssKiB: m.RssKiB, anonKiB: m.AnonKiB})
		}
	}
	return out, nil
}
