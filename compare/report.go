package compare

import (
	"fmt"
	"io"
	"strings"

	"kvmlab/container"
	"kvmlab/guest/probe"
	"kvmlab/internal/human"
)

// rowSpec is one row of the comparison: a claim, the fact measured, and how
// to read it from a side (host is nil for the host column, which shows only
// probe facts).
type rowSpec struct {
	claim, fact string
	probe       func(h, r *probe.Report) string // from the probe's report; h is the host's
	side        func(s *Side) string            // from the side's measurements; nil: use probe
	host        func(h *probe.Report) string    // the host column; nil: probe(h, h) or ""
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

var rowSpecs = []rowSpec{
	{claim: "A VM runs its own kernel; a container shares the host's", fact: "kernel release",
		probe: func(h, r *probe.Report) string { return r.KernelRelease }},
	{claim: "", fact: "kernel build",
		probe: func(h, r *probe.Report) string { return r.KernelVersion }},
	{claim: "", fact: "same kernel instance as the host (boot id)",
		probe: func(h, r *probe.Report) string {
			return yesNo(r.BootID != "" && r.BootID == h.BootID)
		},
		host: func(h *probe.Report) string { return shortID(h.BootID) }},
	// The boot id itself: the container in a VM shares a kernel again,
	// its guest's, and its helper read that kernel's boot id outside
	// the container (Side.KernelBootID).
	{claim: "", fact: "boot id of the kernel under the workload",
		side: func(s *Side) string {
			if s.Probe == nil {
				return "n/a"
			}
			id := shortID(s.Probe.BootID)
			switch {
			case s.KernelBootID == "":
				return id
			case s.KernelBootID == s.Probe.BootID:
				return id + " (its VM's kernel)"
			}
			return id + " (not its VM's kernel " + shortID(s.KernelBootID) + ")"
		},
		host: func(h *probe.Report) string { return shortID(h.BootID) }},
	{claim: "", fact: "kernel uptime when the probe ran",
		probe: func(h, r *probe.Report) string { return fmt.Sprintf("%.1f s", r.UptimeSec) }},
	{claim: "A VM sees virtual hardware", fact: "CPUID hypervisor bit / CPUs / memory",
		probe: func(h, r *probe.Report) string {
			return fmt.Sprintf("%s / %d / %d MiB", yesNo(r.Hypervisor), r.CPUs, r.MemTotalKB>>10)
		}},
	{claim: "VMs boot in minutes, containers in seconds", fact: "start -> probe running",
		side: func(s *Side) string { return fmt.Sprintf("%.0f ms", s.StartupMS) }},
	{claim: "VMs are GBs, containers MBs", fact: "memory used",
		side: func(s *Side) string {
			if s.FootprintBytes == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.1f MiB", human.MiB(s.FootprintBytes))
		}},
	{claim: "", fact: "image on disk",
		side: func(s *Side) string { return fmt.Sprintf("%.1f MiB", human.MiB(s.ImageBytes)) }},
	{claim: "Isolation: what the workload sees of the host", fact: "processes visible (PID 1)",
		probe: func(h, r *probe.Report) string { return fmt.Sprintf("%d (%s)", r.Processes, r.PID1) }},
	{claim: "", fact: "mounts visible",
		probe: func(h, r *probe.Report) string { return fmt.Sprint(r.Mounts) }},
	{claim: "", fact: "network interfaces",
		probe: func(h, r *probe.Report) string { return strings.Join(r.Interfaces, " ") }},
	{claim: "", fact: "entries in /dev",
		probe: func(h, r *probe.Report) string { return fmt.Sprint(r.Devices) }},
	{claim: "", fact: "kernel modules loaded",
		probe: func(h, r *probe.Report) string {
			if r.Modules < 0 {
				return "none (no module support)"
			}
			return fmt.Sprint(r.Modules)
		}},
	{claim: "", fact: "kernel log (dmesg) readable",
		probe: func(h, r *probe.Report) string {
			if !r.DmesgReadable {
				return "no"
			}
			return fmt.Sprintf("yes, %d lines", r.DmesgLines)
		}},
	{claim: "The boundary the workload crosses", fact: "VM exits / system calls into the host kernel",
		side: func(s *Side) string {
			switch s.BoundaryKind {
			case "vm-exits":
				return fmt.Sprintf("%d VM exits (%d to kvmlab)", s.Boundary, s.BoundaryUser)
			case "syscalls":
				return fmt.Sprintf("%d system calls", s.Boundary)
			}
			return "n/a"
		}},
	{claim: "Blast radius of a kernel crash", fact: "sysrq c (crash the kernel)",
		side: func(s *Side) string { return s.Blast }},
	{claim: "", fact: "host kernel still up afterwards",
		side: func(s *Side) string { return yesNo(s.HostSurvived) }},
}

func shortID(s string) string {
	if len(s) > 8 {
		return s[:8] + "…"
	}
	return s
}

// rows turns the sides into the table's rows.
func rows(rep *Report) []Row {
	h := rep.HostProbe
	if h == nil {
		h = &probe.Report{}
	}
	cell := func(rs rowSpec, s *Side) string {
		if s == nil {
			return ""
		}
		if rs.side != nil {
			if s.Error != "" && s.StartupMS == 0 {
				return "failed (see below)"
			}
			return rs.side(s)
		}
		r, err := s.pr()
		if err != nil {
			if s.Error != "" {
				return "failed (see below)"
			}
			return "n/a"
		}
		return rs.probe(h, r)
	}
	var out []Row
	specs := rowSpecs
	if rep.NoBasic {
		specs = nil
	}
	for _, rs := range specs {
		row := Row{Claim: rs.claim, Fact: rs.fact, VM: cell(rs, &rep.VM), Container: cell(rs, &rep.Container)}
		switch {
		case rs.host != nil:
			row.Host = rs.host(h)
		case rs.probe != nil:
			row.Host = rs.probe(h, h)
		}
		if rep.Runc != nil {
			row.Runc = cell(rs, rep.Runc)
		}
		if rep.Restored != nil {
			row.Restored = cell(rs, rep.Restored)
		}
		if rep.Nested != nil {
			row.Nested = cell(rs, rep.Nested)
		}
		out = append(out, row)
	}
	out = append(out, workloadRows(rep.Workload)...)
	out = append(out, densityRows(rep)...)
	return out
}

// densityRows are the density section's rows: three per N, and what the
// check afterwards found.
func densityRows(rep *Report) []Row {
	if len(rep.Density) == 0 {
		return nil
	}
	var out []Row
	cell := func(d *DensitySide, f func(d *DensitySide) string) string {
		if d.Error != "" {
			return "failed (see below)"
		}
		return f(d)
	}
	add := func(p *DensityPoint, fact string, f func(d *DensitySide) string) {
		out = append(out, Row{Fact: fmt.Sprintf("N=%d: %s", p.N, fact), VM: cell(&p.VM, f), Container: cell(&p.Container, f)})
	}
	for i := range rep.Density {
		p := &rep.Density[i]
		add(p, "all N ready (start -> last probe report)", func(d *DensitySide) string { return fmt.Sprintf("%.0f ms", d.ReadyMS) })
		add(p, "memory per instance / all N (PSS)", func(d *DensitySide) string {
			return fmt.Sprintf("%.1f / %.1f MiB", human.MiB(d.PerInstance()), human.MiB(d.PSSTotal))
		})
		add(p, "host memory available before -> during", func(d *DensitySide) string {
			return fmt.Sprintf("%d -> %d MiB", d.AvailBefore>>20, d.AvailDuring>>20)
		})
	}
	out[0].Claim = "More instances per server: N started at once on each side (memory as PSS: shared pages split among the N)"
	out = append(out, leftoverRow(rep))
	return out
}

// leftoverRow says what the check after the runs found left behind.
func leftoverRow(rep *Report) Row {
	r := Row{Fact: "left behind afterwards (processes, cgroups, temporary roots, TAP devices)"}
	switch {
	case !rep.LeftoversChecked:
		r.Host = "not checked"
	case len(rep.Leftovers) == 0:
		r.Host = "nothing"
	default:
		r.Host = fmt.Sprintf("%d things (see below)", len(rep.Leftovers))
	}
	return r
}

// hasRunc says whether a runc column is shown.
func (rep *Report) hasRunc() bool {
	if rep.Runc != nil {
		return true
	}
	if rep.Workload != nil {
		for _, s := range rep.Workload.Sides {
			if s.Name == "container (runc)" {
				return true
			}
		}
	}
	return false
}

// Print writes the report as a table for a terminal: a column per side, the
// claims as headings, and the notes that did not fit in a cell below.
func (rep *Report) Print(w io.Writer) {
	w0 := w
	fmt.Fprintf(w, "=== kvmlab compare: the same userland as a VM and as a container, on %s ===\n\n", rep.Where)
	cols := []string{"fact", "host", "VM (kvmlab)", "container (kvmlab)"}
	if rep.hasRunc() {
		cols = append(cols, "container (runc)")
	}
	if rep.Restored != nil {
		cols = append(cols, "VM (restored)")
	}
	if rep.Nested != nil {
		cols = append(cols, NestedName)
	}
	width := make([]int, len(cols))
	cells := func(r Row) []string {
		c := []string{r.Fact, r.Host, r.VM, r.Container}
		if rep.hasRunc() {
			c = append(c, r.Runc)
		}
		if rep.Restored != nil {
			c = append(c, r.Restored)
		}
		if rep.Nested != nil {
			c = append(c, r.Nested)
		}
		return c
	}
	for i, c := range cols {
		width[i] = len(c)
	}
	for _, r := range rep.Rows {
		for i, c := range cells(r) {
			width[i] = max(width[i], min(len([]rune(c)), 48))
		}
	}
	line := func(c []string) {
		for i, s := range c {
			if r := []rune(s); len(r) > 48 {
				s = string(r[:47]) + "…"
			}
			fmt.Fprintf(w, "%-*s  ", width[i], s)
		}
		fmt.Fprintln(w)
	}
	line(cols)
	for _, r := range rep.Rows {
		if r.Claim != "" {
			fmt.Fprintf(w, "\n-- %s\n", r.Claim)
		}
		line(cells(r))
	}
	fmt.Fprintln(w)
	for _, s := range []*Side{&rep.VM, &rep.Container, rep.Runc, rep.Restored, rep.Nested} {
		if s == nil || rep.NoBasic {
			continue
		}
		if s.FootprintNote != "" {
			fmt.Fprintf(w, "%s memory: %s\n", s.Name, s.FootprintNote)
		}
		if s.Blast != "" && len([]rune(s.Blast)) > 48 {
			fmt.Fprintf(w, "%s sysrq: %s\n", s.Name, s.Blast)
		}
		if s.Error != "" {
			fmt.Fprintf(w, "%s FAILED: %s\n", s.Name, s.Error)
		}
	}
	if top := container.TopSyscalls(rep.Container.BoundaryDetail, 8); top != "" {
		fmt.Fprintf(w, "container system calls, most frequent: %s\n", top)
	}
	if w := rep.Workload; w != nil {
		for _, s := range w.Sides {
			if s.Error != "" {
				fmt.Fprintf(w0, "workload, %s FAILED: %s\n", s.Name, s.Error)
			}
			if s.Result != nil {
				for _, e := range s.Result.Errors {
					fmt.Fprintf(w0, "workload, %s: %s\n", s.Name, e)
				}
			}
		}
	}
	for _, p := range rep.Density {
		for _, d := range []struct {
			name string
			s    *DensitySide
		}{{"VMs", &p.VM}, {"containers", &p.Container}} {
			if d.s.Error != "" {
				fmt.Fprintf(w0, "density N=%d, %s FAILED: %s\n", p.N, d.name, d.s.Error)
			}
		}
	}
	for _, l := range rep.Leftovers {
		fmt.Fprintf(w0, "LEFT BEHIND: %s\n", l)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w0, "note: %s\n", n)
	}
	if rep.SnapshotNote != "" {
		fmt.Fprintf(w, "VM (restored): %s\n", rep.SnapshotNote)
	}
	if n := rep.NestedInfo.note(&rep.VM); n != "" {
		fmt.Fprintf(w, "%s: %s\n", NestedName, n)
	}
	if r := rep.Restored; r != nil && r.StartupMS > 0 && rep.VM.StartupMS > 0 && rep.Container.StartupMS > 0 {
		fmt.Fprintf(w, "start -> probe running, restored VM against the others: %.2fx the cold boot, %.2fx the container's start\n",
			r.StartupMS/rep.VM.StartupMS, r.StartupMS/rep.Container.StartupMS)
	}
	fmt.Fprintln(w, "\nWhat each row means: docs/isolation.md; snapshots: docs/snapshot.md")
}
