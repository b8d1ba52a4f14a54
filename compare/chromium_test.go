package compare

import (
	"bytes"
	"context"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCompareHTMLInChromium opens the HTML report in headless Chromium (a real
// browser engine, as a learner would) and checks the rendered page: the
// screenshot is not blank, the bar charts' colours are on it, and the DOM has
// the comparison table with every row. The density section's plots are
// drawn: their line colours are on the screenshot, and the DOM has a line
// per side and a dot per N. The container-in-a-VM column is in the table
// and its bars in the charts.
func TestCompareHTMLInChromium(t *testing.T) {
	browser := ""
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Fatal("chromium is not installed: run 'bash tests/deps.sh' (apt-get install --no-install-recommends chromium)")
	}
	rep := fakeCompare(true)
	fakeNested(rep)
	rep.Density, rep.Workload, rep.LeftoversChecked = fakeDensity(), fakeWorkload(), true
	rep.Rows = rows(rep)
	dir := t.TempDir()
	page := filepath.Join(dir, "compare.html")
	var b bytes.Buffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
			"--user-data-dir=" + filepath.Join(dir, "profile")}
		cmd := exec.CommandContext(ctx, browser, append(base, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", browser, args, err, stderr.String())
		}
		return out
	}
	shot := filepath.Join(dir, "shot.png")
	run("--screenshot="+shot, "--window-size=1200,4200", "file://"+page)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	colours, nonWhite := map[color.RGBA]int{}, 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			colours[c]++
			if c.R < 240 || c.G < 240 || c.B < 240 {
				nonWhite++
			}
		}
	}
	total := (bounds.Dx() / 2) * (bounds.Dy() / 2)
	if nonWhite < total/100 || len(colours) < 20 {
		t.Errorf("the screenshot looks blank: %d of %d sampled pixels not white, %d colours", nonWhite, total, len(colours))
	}
	// VM, container, runc and, fourth in the charts, the container in a VM.
	for _, want := range []color.RGBA{{0x3b, 0x6f, 0xb6, 0xff}, {0xd9, 0x82, 0x2b, 0xff}, {0x5a, 0x9e, 0x4b, 0xff}, {0x8e, 0x5e, 0xa2, 0xff}} {
		if colours[want] < 50 {
			t.Errorf("bar colour %v covers %d sampled pixels, want a bar", want, colours[want])
		}
	}
	// The plots' lines, dots and legend boxes (plotColors), drawn
	// nowhere else on the page.
	for _, want := range []color.RGBA{{0x1f, 0x4e, 0x8c, 0xff}, {0xa8, 0x5a, 0x12, 0xff}} {
		if colours[want] < 40 {
			t.Errorf("plot colour %v covers %d sampled pixels, want the density plots' lines and dots", want, colours[want])
		}
	}
	dom := string(run("--dump-dom", "file://"+page))
	if !strings.Contains(dom, `<table id="compare">`) {
		t.Fatalf("the rendered DOM has no comparison table:\n%.2000s", dom)
	}
	if got := strings.Count(dom, "<tr>") + strings.Count(dom, `<tr class="claim">`); got < len(rep.Rows)+1 {
		t.Errorf("the rendered table has %d rows, want at least %d", got, len(rep.Rows)+1)
	}
	for _, id := range []string{`<svg id="density-memory"`, `<svg id="density-start"`} {
		if !strings.Contains(dom, id) {
			t.Errorf("the rendered DOM has no %s plot", id)
		}
	}
	if lines, dots := strings.Count(dom, "<polyline"), strings.Count(dom, "<circle"); lines != 4 || dots != 16 {
		t.Errorf("the rendered plots have %d lines and %d dots, want 4 and 16 (2 plots x 2 sides x 4 N)", lines, dots)
	}
	for _, want := range []string{"N=8: memory per instance / all N (PSS)", "memory: does memory", "3.00x ±0%",
		"<th>container in VM</th>", "cccccccc… (its VM's kernel)", "Container in VM: its VM got"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered table lacks %q", want)
		}
	}
}
