package compare

import (
	"fmt"
	"html/template"
	"io"
	"strings"

	"kvmlab/internal/human"
)

// The HTML report is one self-contained file: inline CSS and SVG bar charts,
// no scripts, no external resources, so it opens anywhere and can be mailed
// or archived with the figures it shows.

type htmlBar struct {
	Label string
	Value float64
	Text  string
	Width float64 // of the bar, in SVG units
	Y     float64
	Color string
}

type htmlChart struct {
	Title  string
	Note   string
	Bars   []htmlBar
	Height float64
}

type htmlPage struct {
	Failures []string
	Rep      *Report
	Charts   []htmlChart
	// Plots are the density section's line plots against N.
	Plots   []htmlPlot
	HasRunc bool
	// HasRestored adds the column of the VM restored from a snapshot.
	HasRestored bool
	// HasNested adds the column of the container inside a VM.
	HasNested bool
	// Cols is the table's number of columns.
	Cols int
	// NestedNote says what the container in a VM cost to carry in.
	NestedNote string
}

// sideColors: one per side in the order WriteHTML lists them (VM,
// container, runc, restored VM, container in VM), so that no two bars of a
// chart share a colour.
var sideColors = []string{"#3b6fb6", "#d9822b", "#5a9e4b", "#8e5ea2", "#2a9d8f"}

// chart scales bars to the largest value (linear: the point is how far
// apart the sides are).
func chart(title, note, unit string, sides []*Side, get func(*Side) (float64, bool)) htmlChart {
	c := htmlChart{Title: title, Note: note}
	var maxV float64
	for _, s := range sides {
		if v, ok := get(s); ok {
			maxV = max(maxV, v)
		}
	}
	for i, s := range sides {
		v, ok := get(s)
		b := htmlBar{Label: s.Name, Value: v, Y: float64(i) * 34, Color: sideColors[i%len(sideColors)]}
		if !ok {
			b.Text = "n/a"
		} else {
			b.Text = fmt.Sprintf("%s %s", human.Num(v), unit)
			if maxV > 0 {
				b.Width = 1 + 480*v/maxV
			}
		}
		c.Bars = append(c.Bars, b)
	}
	c.Height = float64(len(sides)) * 34
	return c
}

// WriteHTML writes the report as one HTML page: the table, and bar charts of
// the figures that have a size (start-up, memory, image, crossings).
func (rep *Report) WriteHTML(w io.Writer) error {
	sides := []*Side{&rep.VM, &rep.Container}
	if rep.Runc != nil {
		sides = append(sides, rep.Runc)
	}
	if rep.Restored != nil {
		sides = append(sides, rep.Restored)
	}
	if rep.Nested != nil {
		sides = append(sides, rep.Nested)
	}
	ok := func(s *Side) bool { return s.Error == "" || s.StartupMS > 0 }
	page := htmlPage{Rep: rep, HasRunc: rep.hasRunc(), HasRestored: rep.Restored != nil, HasNested: rep.Nested != nil, Plots: densityPlots(rep.Density), Charts: []htmlChart{
		chart("Start -> probe running", "VM: kvmlab loads the kernel, the guest boots its own kernel and init. Container: unpacked root, namespaces, cgroup, exec. Restored VM: kvmlab reads a snapshot taken at the shell and the probe is typed there. Container in VM: the guest boots with the kvmlab binary carried in, and runs kvmlab container there.", "ms",
			sides, func(s *Side) (float64, bool) { return s.StartupMS, ok(s) && s.StartupMS > 0 }),
		chart("Memory used", "VM and container in VM: the VMM's resident memory, guest RAM it touched included. Container: the cgroup's peak.", "MiB",
			sides, func(s *Side) (float64, bool) { return human.MiB(s.FootprintBytes), s.FootprintBytes > 0 }),
		chart("Image on disk", "VM: kernel + initramfs. Container: the unpacked root file system. Restored VM: the snapshot file. Container in VM: kernel + initramfs + the kvmlab binary.", "MiB",
			sides, func(s *Side) (float64, bool) { return human.MiB(s.ImageBytes), s.ImageBytes > 0 }),
		chart("Crossings of the boundary during the workload", "VM: VM exits (to KVM or kvmlab). Container: system calls into the host kernel. Container in VM: VM exits while the probe ran in the container.", "",
			sides, func(s *Side) (float64, bool) { return float64(s.Boundary), s.BoundaryKind != "" }),
	}}
	page.Cols = 4
	page.NestedNote = rep.NestedInfo.note(&rep.VM)
	for _, has := range []bool{page.HasRunc, page.HasRestored, page.HasNested} {
		if has {
			page.Cols++
		}
	}
	if rep.NoBasic {
		page.Charts = nil
		sides = nil
	}
	for _, s := range sides {
		if s.Error != "" {
			page.Failures = append(page.Failures, s.Name+" failed: "+s.Error)
		}
	}
	for _, p := range rep.Density {
		for _, d := range []*DensitySide{&p.VM, &p.Container} {
			if d.Error != "" {
				page.Failures = append(page.Failures, fmt.Sprintf("density N=%d failed: %s", p.N, d.Error))
			}
		}
	}
	if w := rep.Workload; w != nil {
		for _, s := range w.Sides {
			if s.Error != "" {
				page.Failures = append(page.Failures, "workload, "+s.Name+" failed: "+s.Error)
			}
		}
	}
	for _, l := range rep.Leftovers {
		page.Failures = append(page.Failures, "left behind: "+l)
	}
	return compareTemplate.Execute(w, page)
}

// htmlPlot is a line plot of a figure against N, one line per side.
type htmlPlot struct {
	ID, Title, Note string
	Series          []htmlSeries
	XTicks, YTicks  []htmlTick
}

type htmlSeries struct {
	Name, Color string
	Points      string // the polyline's "x,y x,y ..."
	Dots        []htmlDot
	LegendY     float64
}

type htmlDot struct {
	X, Y float64
	Text string // the tooltip: N and the value
}

type htmlTick struct {
	X, Y float64
	Text string
}

// The plot area inside each 720x320 SVG.
const (
	plotLeft, plotRight = 70.0, 500.0
	plotTop, plotBottom = 20.0, 280.0
)

// plotColors are darker than the bar colours of the same sides, so the
// lines and dots stand out from the bars.
var plotColors = []string{"#1f4e8c", "#a85a12"}

// densityPlots makes the two plots of the density section: memory per
// instance and the time until all N are ready, against N, for the VMs and
// the containers. N is spaced by rank (1, 2, 4, 8 evenly), the values
// linearly from 0.
func densityPlots(pts []DensityPoint) []htmlPlot {
	if len(pts) == 0 {
		return nil
	}
	mk := func(id, title, note, unit string, get func(d *DensitySide) float64) htmlPlot {
		p := htmlPlot{ID: id, Title: title, Note: note}
		var maxV float64
		for _, pt := range pts {
			maxV = max(maxV, get(&pt.VM), get(&pt.Container))
		}
		if maxV <= 0 {
			maxV = 1
		}
		maxV *= 1.1
		x := func(i int) float64 {
			if len(pts) == 1 {
				return (plotLeft + plotRight) / 2
			}
			return plotLeft + float64(i)*(plotRight-plotLeft)/float64(len(pts)-1)
		}
		y := func(v float64) float64 { return plotBottom - v/maxV*(plotBottom-plotTop) }
		for i, pt := range pts {
			p.XTicks = append(p.XTicks, htmlTick{X: x(i), Y: plotBottom + 18, Text: fmt.Sprintf("N=%d", pt.N)})
		}
		for k := range 5 {
			v := maxV * float64(k) / 4
			p.YTicks = append(p.YTicks, htmlTick{X: plotLeft - 8, Y: y(v) + 4, Text: human.Num(v)})
		}
		for si, side := range []struct {
			name string
			get  func(pt *DensityPoint) *DensitySide
		}{{"VM (kvmlab)", func(pt *DensityPoint) *DensitySide { return &pt.VM }},
			{"container (kvmlab)", func(pt *DensityPoint) *DensitySide { return &pt.Container }}} {
			sr := htmlSeries{Name: side.name, Color: plotColors[si], LegendY: plotTop + 10 + float64(si)*22}
			var coords []string
			for i := range pts {
				d := side.get(&pts[i])
				if d.Error != "" || d.Ready == 0 {
					continue
				}
				v := get(d)
				dot := htmlDot{X: x(i), Y: y(v), Text: fmt.Sprintf("%s, N=%d: %s %s", side.name, pts[i].N, human.Num(v), unit)}
				sr.Dots = append(sr.Dots, dot)
				coords = append(coords, fmt.Sprintf("%.1f,%.1f", dot.X, dot.Y))
			}
			sr.Points = strings.Join(coords, " ")
			p.Series = append(p.Series, sr)
		}
		return p
	}
	return []htmlPlot{
		mk("density-memory", "Memory per instance (PSS, MiB) against N",
			"PSS splits each shared page among the processes that map it: the N VMMs share the kvmlab binary, the N containers the probe binary in the host's page cache. A guest's RAM is its own.", "MiB",
			func(d *DensitySide) float64 { return human.MiB(d.PerInstance()) }),
		mk("density-start", "Time until all N are ready (ms) against N",
			"From starting the first instance to the last probe report, all N started at once.", "ms",
			func(d *DensitySide) float64 { return d.ReadyMS }),
	}
}

var compareTemplate = template.Must(template.New("compare").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>kvmlab compare: a VM next to a container</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
p.where { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 1em 0 2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef2f8; }
tr.claim td { background: #f6f6f6; font-weight: 600; }
.chart, .plot { margin: 1.2em 0 2em; }
.plot h2 { font-size: 1.1em; margin-bottom: 0.1em; }
.plot p { color: #555; margin: 0 0 0.4em; font-size: 0.9em; }
.chart h2 { font-size: 1.1em; margin-bottom: 0.1em; }
.chart p { color: #555; margin: 0 0 0.4em; font-size: 0.9em; }
svg text { font-size: 13px; font-family: system-ui, sans-serif; }
</style></head>
<body>
<h1>A VM next to a container</h1>
<p class="where">The same u-root userland and the same probe, run as a virtual machine under kvmlab and as a container{{if .HasRunc}} (kvmlab's runtime and runc){{end}}, on {{.Rep.Where}}.</p>
<table id="compare">
<thead><tr><th>fact</th><th>host</th><th>VM (kvmlab)</th><th>container (kvmlab)</th>{{if .HasRunc}}<th>container (runc)</th>{{end}}{{if .HasRestored}}<th>VM (restored)</th>{{end}}{{if .HasNested}}<th>container in VM</th>{{end}}</tr></thead>
<tbody>
{{range .Rep.Rows}}{{if .Claim}}<tr class="claim"><td colspan="{{$.Cols}}">{{.Claim}}</td></tr>
{{end}}<tr><td>{{.Fact}}</td><td>{{.Host}}</td><td>{{.VM}}</td><td>{{.Container}}</td>{{if $.HasRunc}}<td>{{.Runc}}</td>{{end}}{{if $.HasRestored}}<td>{{.Restored}}</td>{{end}}{{if $.HasNested}}<td>{{.Nested}}</td>{{end}}</tr>
{{end}}</tbody></table>
{{if .NestedNote}}<p class="note">Container in VM: {{.NestedNote}}.</p>
{{end}}{{range .Charts}}<div class="chart"><h2>{{.Title}}</h2><p>{{.Note}}</p>
<svg width="900" height="{{.Height}}" viewBox="0 0 900 {{.Height}}" role="img" aria-label="{{.Title}}">
{{range .Bars}}<text x="0" y="{{.Y}}" dy="20">{{.Label}}</text>
<rect x="170" y="{{.Y}}" width="{{.Width}}" height="26" fill="{{.Color}}"></rect>
<text x="{{printf "%.0f" .Width}}" dx="180" y="{{.Y}}" dy="20">{{.Text}}</text>
{{end}}</svg></div>
{{end}}
{{range .Plots}}<div class="plot"><h2>{{.Title}}</h2><p>{{.Note}}</p>
<svg id="{{.ID}}" width="720" height="320" viewBox="0 0 720 320" role="img" aria-label="{{.Title}}">
<line x1="70" y1="280" x2="500" y2="280" stroke="#888"></line><line x1="70" y1="20" x2="70" y2="280" stroke="#888"></line>
{{range .XTicks}}<text x="{{.X}}" y="{{.Y}}" text-anchor="middle">{{.Text}}</text>
{{end}}{{range .YTicks}}<text x="{{.X}}" y="{{.Y}}" text-anchor="end">{{.Text}}</text>
{{end}}{{range .Series}}<polyline class="series" points="{{.Points}}" fill="none" stroke="{{.Color}}" stroke-width="3"></polyline>
{{$c := .Color}}{{range .Dots}}<circle cx="{{.X}}" cy="{{.Y}}" r="6" fill="{{$c}}"><title>{{.Text}}</title></circle>
{{end}}<rect x="515" y="{{.LegendY}}" width="14" height="14" fill="{{.Color}}"></rect><text x="535" y="{{.LegendY}}" dy="12">{{.Name}}</text>
{{end}}</svg></div>
{{end}}
{{range .Failures}}<p class="failed">{{.}}</p>
{{end}}<p>What each row means: docs/isolation.md in the kvmlab repository.</p>
</body></html>
`))
