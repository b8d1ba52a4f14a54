package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"kvmlab/vmm"
)

// printStats prints what `run --stats` promises: user-space exits by KVM
// reason and by device, and the VMM's memory split into guest RAM the guest
// touched and everything else (the VMM's own cost).
func printStats(w io.Writer, m *vmm.Machine) {
	st := m.Stats()
	fmt.Fprintf(w, "kvmlab: ran %v\n", st.Ran.Round(time.Millisecond))
	fmt.Fprintf(w, "kvmlab: %d user-space exits\n", st.TotalExits)
	type kv struct {
		k string
		v uint64
	}
	sorted := func(m map[string]uint64) []kv {
		var out []kv
		for k, v := range m {
			out = append(out, kv{k, v})
		}
		sort.Slice(out, func(i, j int) bool {
			if out[i].v != out[j].v {
				return out[i].v > out[j].v
			}
			return out[i].k < out[j].k
		})
		return out
	}
	pct := func(n uint64) float64 {
		if st.TotalExits == 0 {
			return 0
		}
		return 100 * float64(n) / float64(st.TotalExits)
	}
	fmt.Fprintf(w, "  %-26s %10s %7s\n", "exit reason", "count", "share")
	for _, e := range sorted(st.ExitsByReason) {
		fmt.Fprintf(w, "  %-26s %10d %6.1f%%\n", e.k, e.v, pct(e.v))
	}
	if len(st.AccessesByDevice) > 0 {
		fmt.Fprintf(w, "  %-26s %10s\n", "device (port/MMIO access)", "count")
		for _, e := range sorted(st.AccessesByDevice) {
			fmt.Fprintf(w, "  %-26s %10d\n", e.k, e.v)
		}
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "kvmlab: memory: RSS %.1f MiB = guest RAM touched %.1f MiB + VMM %.1f MiB (guest RAM size %.0f MiB)\n",
		mib(st.RSS), mib(st.GuestResident), mib(st.VMMResident()), mib(st.GuestRAM))
}
