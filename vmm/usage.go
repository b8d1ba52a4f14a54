package vmm

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"kvmlab/internal/human"
)

// WriteUsage prints what a run used, at its end (`kvmlab run --stats`):
// each virtio device's counters, the process's resident memory split into
// the guest RAM the guest touched and the VMM's own, what the Go runtime
// holds of the latter, and the port and MMIO accesses each device served.
func (m *Machine) WriteUsage(w io.Writer) {
	if lines := m.VirtioStats(); len(lines) > 0 {
		fmt.Fprintln(w, "\n=== Virtio devices ===")
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	st := m.Stats()
	fmt.Fprintf(w, "\n=== Memory ===\n  RSS %.1f MiB = guest RAM touched %.1f MiB (of %.0f MiB) + VMM %.1f MiB\n",
		human.MiB(st.RSS), human.MiB(st.GuestResident), human.MiB(st.GuestRAM), human.MiB(st.VMMResident()))
	fmt.Fprintf(w, "  %s\n", RuntimeSummary())
	if len(st.AccessesByDevice) > 0 {
		// Most accesses first, then by name, for a stable order.
		devs := make([]string, 0, len(st.AccessesByDevice))
		for d := range st.AccessesByDevice {
			devs = append(devs, d)
		}
		slices.SortFunc(devs, func(a, b string) int {
			return cmp.Or(cmp.Compare(st.AccessesByDevice[b], st.AccessesByDevice[a]), cmp.Compare(a, b))
		})
		fmt.Fprintln(w, "\n=== Port/MMIO accesses by device ===")
		for _, d := range devs {
			fmt.Fprintf(w, "  %-28s %10d\n", d, st.AccessesByDevice[d])
		}
	}
}

// RuntimeSummary is one line on what the Go runtime holds of the VMM's own
// memory, in its view: memory obtained from the kernel, whether or not all
// of it is resident. kvmlab run prints it at exit with --stats, or when
// KVMLAB_RUNTIME_REPORT is set (kvmlab bench --smaps sets it). The thread
// count comes from SelfStatus, which must be open before a seccomp filter.
func RuntimeSummary() string {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	threads := "?"
	if b, err := SelfStatus.ReadAll(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Threads:"); ok {
				threads = strings.TrimSpace(v)
			}
		}
	}
	return fmt.Sprintf("Go runtime: heap live %.2f MiB (in spans %.2f, free but not returned %.2f), goroutine stacks %.2f MiB, runtime metadata %.2f MiB; %d goroutines on %s threads; %d GC cycles",
		human.MiB(ms.HeapAlloc), human.MiB(ms.HeapInuse), human.MiB(ms.HeapIdle-ms.HeapReleased), human.MiB(ms.StackInuse),
		human.MiB(ms.MSpanInuse+ms.MCacheInuse+ms.BuckHashSys+ms.GCSys+ms.OtherSys), runtime.NumGoroutine(), threads, ms.NumGC)
}
