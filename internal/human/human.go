// Package human formats measurements for people: sizes in MiB, figures with
// as many digits as a reader can compare at a glance, and the tail of a
// program's output folded into one line for an error message. The run
// statistics, the benchmark's tables and the VM-next-to-a-container report
// all print figures, and print them the same way. Likewise the set bits of
// a hardware register, named as the manual names them (Bits): the devices'
// descriptions of guest accesses and the stepper's register dumps share one
// format.
package human

import (
	"strconv"
	"strings"
)

// MiB is a byte count in mebibytes (2^20 bytes, as /proc and free(1) count).
func MiB(b uint64) float64 { return float64(b) / (1 << 20) }

// Num prints a figure with three or four significant digits: enough to
// compare two of them, few enough to read at a glance (1234, 56.7, 8.90).
func Num(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// TailLines joins the last n lines of s with " | ", for a one-line error
// that quotes what a program printed before it failed.
func TailLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}
