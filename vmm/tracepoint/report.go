package tracepoint

import (
	"fmt"
	"io"
)

// WriteCounts prints every exit of a run by hardware reason, largest first,
// as Collector.Stop counted them; err, from Start, is printed instead
// with what the tracepoint needs (`kvmlab run --stats
// --kvm-exit-tracepoint`).
func WriteCounts(w io.Writer, counts map[string]uint64, err error) {
	if err != nil {
		fmt.Fprintf(w, "\n(every exit by hardware reason: %v; run as root with tracefs mounted to see it)\n", err)
		return
	}
	var total uint64
	for _, n := range counts {
		total += n
	}
	fmt.Fprintf(w, "\n=== Every VM exit by hardware reason, from the kvm:kvm_exit tracepoint (%d events) ===\n", total)
	for _, e := range Sorted(counts) {
		fmt.Fprintf(w, "  %-28s %10d %6.1f%%\n", e.Reason, e.Count, 100*float64(e.Count)/float64(max(total, 1)))
	}
	fmt.Fprintf(w, "kvmlab: %d exits seen by the tracepoint\n", total)
}
