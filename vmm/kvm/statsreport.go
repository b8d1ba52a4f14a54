package kvm

import (
	"fmt"
	"io"
)

// WriteExitDeltas prints KVM's binary statistics (StatsReader.Read, one
// map per vCPU) as deltas over a run, one row per exit counter with its
// meaning: these count every exit, including the many KVM handles in the
// kernel that the VMM never sees (`kvmlab run --stats`). before and after
// hold the same vCPUs, in order.
func WriteExitDeltas(w io.Writer, before, after []map[string]uint64) {
	fmt.Fprintln(w, "\n=== All VM exits, from KVM's statistics (KVM_GET_STATS_FD), per vCPU ===")
	total := map[string]uint64{}
	for i := range after {
		for k, v := range Delta(before[i], after[i]) {
			total[k] += v
		}
	}
	keys := []string{"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "signal_exits", "irq_window_exits",
		"nmi_window_exits", "request_irq_exits", "insn_emulation", "hypercalls", "pf_taken", "halt_wakeup"}
	fmt.Fprintf(w, "  %-20s", "counter")
	for i := range after {
		fmt.Fprintf(w, " %10s", fmt.Sprintf("vCPU%d", i))
	}
	fmt.Fprintf(w, " %10s  %s\n", "total", "meaning")
	for _, k := range keys {
		if _, ok := after[0][k]; !ok {
			continue
		}
		fmt.Fprintf(w, "  %-20s", k)
		for i := range after {
			fmt.Fprintf(w, " %10d", after[i][k]-before[i][k])
		}
		fmt.Fprintf(w, " %10d  %s\n", total[k], StatMeaning(k))
	}
	if all := total["exits"]; all > 0 {
		user := total["io_exits"] + total["mmio_exits"]
		fmt.Fprintf(w, "kvmlab: %d exits in all (KVM statistics); about %d (%.1f%%) were port or MMIO accesses that needed kvmlab; the rest KVM handled in the kernel.\n",
			all, user, 100*float64(user)/float64(all))
	}
}
