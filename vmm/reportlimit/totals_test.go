package reportlimit

import (
	"strings"
	"testing"
)

func TestWriteTotals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		totals  []Total
		dropped Dropped
		want    string
	}{
		{name: "no errors, no section"},
		{
			name: "one row per device, in the order they first failed",
			totals: []Total{
				{Source: "pci-window", Reports: 100000, Full: 5, Summarised: 99995},
				{Source: "COM1", Reports: 2, Full: 2},
			},
			want: `
=== Errors the guest caused, by device (rate-limited on stderr) ===
  device                           errors    in full   summarised
  pci-window                       100000          5        99995
  COM1                                  2          2            0
`,
		},
		{
			name:    "lines the limiter dropped are counted",
			totals:  []Total{{Source: "CMOS", Reports: 9, Full: 5, Summarised: 4}},
			dropped: Dropped{OverLimitLines: 3, OverLimitBytes: 300, StuckLines: 1, StuckBytes: 90},
			want: `
=== Errors the guest caused, by device (rate-limited on stderr) ===
  device                           errors    in full   summarised
  CMOS                                  9          5            4
  3 lines (300 bytes) not written: over the limit of bytes per second
  1 line (90 bytes) not written: stderr did not keep up
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			WriteTotals(&b, tc.totals, tc.dropped)
			if b.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), tc.want)
			}
		})
	}
}
