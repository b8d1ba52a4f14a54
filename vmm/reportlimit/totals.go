package reportlimit

import (
	"fmt"
	"io"
)

// WriteTotals prints the reports a run's Limiter counted, one row per
// source in the order they first reported, and the lines it had to drop:
// the end-of-run view of what stderr showed only in part (`kvmlab run
// --stats`). Nothing is written when there were no reports.
func WriteTotals(w io.Writer, totals []Total, dropped Dropped) {
	if len(totals) == 0 {
		return
	}
	fmt.Fprintln(w, "\n=== Errors the guest caused, by device (rate-limited on stderr) ===")
	fmt.Fprintf(w, "  %-28s %10s %10s %12s\n", "device", "errors", "in full", "summarised")
	for _, t := range totals {
		fmt.Fprintf(w, "  %-28s %10d %10d %12d\n", t.Source, t.Reports, t.Full, t.Summarised)
	}
	lines := func(n uint64) string {
		if n == 1 {
			return "1 line"
		}
		return fmt.Sprintf("%d lines", n)
	}
	if dropped.OverLimitLines > 0 {
		fmt.Fprintf(w, "  %s (%d bytes) not written: over the limit of bytes per second\n", lines(dropped.OverLimitLines), dropped.OverLimitBytes)
	}
	if dropped.StuckLines > 0 {
		fmt.Fprintf(w, "  %s (%d bytes) not written: stderr did not keep up\n", lines(dropped.StuckLines), dropped.StuckBytes)
	}
}
