package probe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Parsers for the /proc files the probe reads (proc(5)). Each takes a
// reader, so the fuzzers can feed it bytes and Collect a file.

const (
	// maxList is the most entries a list in the report holds: enough to
	// show what a container or a small VM sees, small enough that a host
	// with thousands of processes still prints one readable line.
	maxList = 64
	// maxLine is the longest line a parser looks at; the rest of a longer
	// line is skipped. The longest real lines are cpuinfo's flags (about
	// 1.5 KiB on current x86) and mountinfo's with long options.
	maxLine = 64 << 10
	// maxString is the longest string the report keeps from a file.
	maxString = 256
)

// eachLine calls fn with every line of r, without its newline. A line
// longer than maxLine is cut to its first maxLine bytes and the rest
// skipped, so a file of one endless line costs bounded memory. fn's slice
// is only valid during the call.
func eachLine(r io.Reader, fn func(line []byte)) error {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			fn(line)
			// Skip the rest of this overlong line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			continue
		}
		if len(line) > 0 && (err == nil || err == io.EOF) {
			fn(bytes.TrimSuffix(line, []byte{'\n'}))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// clip returns s with surrounding white space removed, invalid UTF-8
// replaced and cut to at most maxString bytes: what the report keeps of a
// string it read.
func clip(s string) string { return clipTo(s, maxString) }

// clipTo is clip with a bound of n bytes. (encoding/json would replace
// invalid UTF-8 anyway; doing it before cutting, and cutting on a rune
// boundary, keeps the bound exact.)
func clipTo(s string, n int) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
	if len(s) > n {
		i := n
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

// sortedCapped sorts list and keeps its first maxList entries.
func sortedCapped(list []string) []string {
	sort.Strings(list)
	if len(list) > maxList {
		list = list[:maxList:maxList]
	}
	return list
}

// cpuInfo is what the probe takes from /proc/cpuinfo.
type cpuInfo struct {
	Model      string // the first "model name"
	Processors int    // "processor" lines: the CPUs online
	Hypervisor bool   // some "flags" line has "hypervisor"
}

// parseCPUInfo reads /proc/cpuinfo: one block of "key<TAB>: value" lines per
// logical CPU (arch/x86/kernel/cpu/proc.c). The "hypervisor" flag is CPUID
// leaf 1 ECX bit 31, X86_FEATURE_HYPERVISOR; the kernel shows the flags it
// detected, so the bit appears exactly when a hypervisor set it.
func parseCPUInfo(r io.Reader) (cpuInfo, error) {
	var c cpuInfo
	err := eachLine(r, func(line []byte) {
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return
		}
		switch string(bytes.TrimSpace(k)) {
		case "processor":
			c.Processors++
		case "model name":
			if c.Model == "" {
				c.Model = clip(string(v))
			}
		case "flags":
			if !c.Hypervisor {
				for _, f := range bytes.Fields(v) {
					if string(f) == "hypervisor" {
						c.Hypervisor = true
						break
					}
				}
			}
		}
	})
	return c, err
}

// parseMemInfo returns MemTotal from /proc/meminfo ("MemTotal:  1234 kB"),
// in KiB.
func parseMemInfo(r io.Reader) (uint64, error) {
	var total uint64
	var found bool
	var bad error
	err := eachLine(r, func(line []byte) {
		rest, ok := bytes.CutPrefix(line, []byte("MemTotal:"))
		if !ok || found {
			return
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			bad = fmt.Errorf("MemTotal line %q: want a number and kB", clip(string(line)))
			return
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			bad = fmt.Errorf("MemTotal: %w", err)
			return
		}
		total, found = n, true
	})
	switch {
	case err != nil:
		return 0, err
	case found:
		return total, nil
	case bad != nil:
		return 0, bad
	}
	return 0, errors.New("no MemTotal line")
}

// parseUptime returns the first figure of /proc/uptime ("12345.67 890.12":
// seconds since boot, then idle seconds summed over the CPUs). It refuses
// what is not a finite, non-negative number: NaN or infinity would make the
// report impossible to encode as JSON.
func parseUptime(b []byte) (float64, error) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, errors.New("empty")
	}
	v, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("%q is not a time since boot", clip(string(f[0])))
	}
	return v, nil
}

// parseMountInfo counts the lines of /proc/self/mountinfo and lists the
// mounts as "mountpoint fstype", sorted, at most maxList. A line reads
// (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//
// The mount point is field 5; the optional fields (7) end at a lone "-",
// after which comes the file system type. The mount point stays escaped as
// the kernel wrote it (a space is \040), which keeps "mountpoint fstype"
// unambiguous. Lines that do not have this shape still count as mounts and
// are reported in the error.
func parseMountInfo(r io.Reader) (count int, list []string, err error) {
	var malformed int
	err = eachLine(r, func(line []byte) {
		if len(bytes.TrimSpace(line)) == 0 {
			return
		}
		count++
		f := bytes.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if string(f[i]) == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			malformed++
			return
		}
		list = append(list, clip(string(f[4])+" "+string(f[sep+1])))
	})
	if err == nil && malformed > 0 {
		err = fmt.Errorf("%d of %d lines malformed", malformed, count)
	}
	return count, sortedCapped(list), err
}

// countLines counts the lines of b, a last line without a newline included.
func countLines(b []byte) int {
	n := bytes.Count(b, []byte{'\n'})
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n
}
