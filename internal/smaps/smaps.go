// Package smaps reads /proc/PID/smaps, the kernel's list of a process's
// memory mappings with the resident memory of each (proc(5), "/proc/pid/smaps";
// Documentation/filesystems/proc.rst, "smaps").
//
// Each mapping starts with the line /proc/PID/maps gives it,
//
//	start-end perms offset dev inode [path]
//
// followed by "Key: value kB" lines. Two of them say where a process's
// memory goes: Rss, the mapping's pages present in RAM, and Anonymous, the
// part of those that no file backs (heap, stacks, and the copy-on-write
// copies of a private file mapping). kvmlab reads it in two places: `kvmlab
// run` to find its own executable's mappings before it trims them (package
// footprint), and `kvmlab bench` to split a VMM's resident set into guest
// RAM, the VMM's code, its data, libraries and anonymous memory (package
// bench). This is the one reader both use.
package smaps

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mapping is one mapping of an smaps text: its address range, permissions
// ("r-xp"), Rss and Anonymous figures, and the file or kind it maps (""
// for anonymous memory, "[heap]", "[stack]"...).
type Mapping struct {
	Start, End uint64
	Perms      string
	RssKiB     uint64
	AnonKiB    uint64
	Path       string
}

// Parse reads every mapping of a /proc/PID/smaps text. A malformed header
// or figure is an error; keys other than Rss and Anonymous are skipped.
func Parse(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") {
			// A mapping header: "start-end perms offset dev inode [path]".
			lo, hi, ok := strings.Cut(f[0], "-")
			if !ok || len(f) < 2 {
				return nil, fmt.Errorf("bad mapping line %q", sc.Text())
			}
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil || end <= start {
				return nil, fmt.Errorf("bad mapping range %q", f[0])
			}
			m := Mapping{Start: start, End: end, Perms: f[1]}
			if len(f) >= 6 {
				// A path may hold spaces, and " (deleted)" follows
				// one whose file was replaced.
				m.Path = strings.Join(f[5:], " ")
			}
			out = append(out, m)
			continue
		}
		if len(out) == 0 || len(f) < 2 {
			continue
		}
		cur := &out[len(out)-1]
		switch f[0] {
		case "Rss:", "Anonymous:":
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad %s line %q", f[0], sc.Text())
			}
			if f[0] == "Rss:" {
				cur.RssKiB = v
			} else {
				cur.AnonKiB = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading smaps: %w", err)
	}
	return out, nil
}
