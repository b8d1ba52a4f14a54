package container

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// TopSyscalls lists the n most frequent system calls of a count by name
// (Result.SyscallsByName) as "read 300, write 100": the most frequent first,
// ties in name order so that the same counts always print the same line.
// Both `kvmlab container --count-syscalls` and `kvmlab compare` print it.
func TopSyscalls(counts map[string]uint64, n int) string {
	names := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}
