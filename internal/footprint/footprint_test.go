package footprint

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseImageMappings(t *testing.T) {
	const exe = "/usr/bin/kvmlab"
	smaps := `00400000-00700000 r-xp 00000000 08:01 42 /usr/bin/kvmlab
Size:               3072 kB
Rss:                2800 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00700000-00a00000 r--p 00300000 08:01 42 /usr/bin/kvmlab
Rss:                3000 kB
Anonymous:             4 kB
00a00000-00a20000 rw-p 00600000 08:01 42 /usr/bin/kvmlab
Rss:                 100 kB
Anonymous:            60 kB
00b00000-00c00000 rw-p 00000000 00:00 0
Rss:                 900 kB
Anonymous:           900 kB
7f0000000000-7f0000001000 r-xp 00000000 08:01 43 /usr/bin/kvmlab-other
Rss:                   4 kB
`
	got, err := parseImageMappings(strings.NewReader(smaps), exe)
	if err != nil {
		t.Fatal(err)
	}
	want := []imageMapping{
		{0x400000, 0x700000, "r-xp", 2800, 0},
		{0x700000, 0xa00000, "r--p", 3000, 4},
		{0xa00000, 0xa20000, "rw-p", 100, 60},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"zz-00700000 r-xp 0 08:01 42 /usr/bin/kvmlab\n",
		"00700000-00400000 r-xp 0 08:01 42 /usr/bin/kvmlab\n",
		"00400000 r-xp 0 08:01 42 /usr/bin/kvmlab\n",
		"00400000-00700000 r-xp 0 08:01 42 /usr/bin/kvmlab\nRss: many kB\n",
	} {
		if _, err := parseImageMappings(strings.NewReader(bad), exe); err == nil {
			t.Errorf("parseImageMappings(%q): no error", bad)
		}
	}
}

// readOnlyResident is how many KiB of the test binary's read-only
// mappings are resident.
func readOnlyResident(t *testing.T) uint64 {
	t.Helper()
	maps, err := readImageMappings()
	if err != nil {
		t.Fatal(err)
	}
	var kib uint64
	for _, m := range maps {
		if !strings.Contains(m.perms, "w") {
			kib += m.rssKiB
		}
	}
	return kib
}

// TestTrimImage trims the test binary itself: its read-only mappings must
// hold fewer resident pages afterwards, and the code must go on running
// (it is running this test).
func TestTrimImage(t *testing.T) {
	resident := func() uint64 { return readOnlyResident(t) }
	before := resident()
	if before == 0 {
		t.Fatal("no resident read-only mapping of the test binary found in /proc/self/smaps")
	}
	ranges, err := imageRanges()
	if err != nil {
		t.Fatal(err)
	}
	reported, err := trimRanges(ranges)
	if err != nil {
		t.Fatal(err)
	}
	after := resident()
	t.Logf("read-only image resident: %d KiB before, %d KiB after (the trim saw %d KiB)", before, after, reported)
	if reported == 0 {
		t.Error("the trim reported nothing resident")
	}
	if after*2 > before {
		t.Errorf("after trimming %d KiB of %d KiB stay resident; want under half", after, before)
	}
}

// TestImageTrimmer runs the periodic trim on the test binary: code run
// once (here: template, JSON and regexp work) is mapped while in use and
// gone a couple of periods later, and Stop ends the loop.
func TestImageTrimmer(t *testing.T) {
	resident := func() uint64 { return readOnlyResident(t) }
	var report strings.Builder
	tr := StartImageTrimmer(100*time.Millisecond, &report)
	if len(tr.ranges) == 0 {
		t.Fatalf("no trimmable mapping found; report: %q", report.String())
	}
	// Work that touches code and tables all over the binary.
	tmpl := template.Must(template.New("x").Parse(`<p>{{.A}} {{range .B}}{{.}}{{end}}</p>`))
	if err := tmpl.Execute(io.Discard, map[string]any{"A": "a", "B": []int{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(map[string]any{"x": []float64{1.5}, "y": struct{ Z string }{"z"}}); err != nil {
		t.Fatal(err)
	}
	regexp.MustCompile(`^(a|b)+[0-9]{2,}$`).MatchString("abab12")
	busy := resident()
	time.Sleep(350 * time.Millisecond) // three periods
	idle := resident()
	t.Logf("read-only image resident: %d KiB after the work, %d KiB three periods later", busy, idle)
	if idle >= busy {
		t.Errorf("the trimmer did not drop the work's pages: %d KiB resident, %d before", idle, busy)
	}
	tr.Stop()
	tr.Stop() // a second Stop returns too
	if report.Len() != 0 {
		t.Errorf("trimmer reported: %s", report.String())
	}
}

// TestReexecWithoutHeapTHP runs this test binary as a child that calls
// ReexecWithoutHeapTHP: the child must exec itself exactly once and come
// back with disablethp=1,asyncpreemptoff=1 added to whatever GODEBUG it had, including an
// empty GODEBUG (where a careless append loops for ever).
func TestReexecWithoutHeapTHP(t *testing.T) {
	if os.Getenv("KVMLAB_TEST_REEXEC") != "" {
		ReexecWithoutHeapTHP()
		fmt.Printf("CHILD GODEBUG=%q\n", os.Getenv("GODEBUG"))
		return
	}
	cases := []struct {
		name, env, want string
	}{
		{"unset", "", heapTHPEnv},
		{"empty", "GODEBUG=", heapTHPEnv},
		{"other", "GODEBUG=madvdontneed=1", "madvdontneed=1," + heapTHPEnv},
		{"given", "GODEBUG=disablethp=0", "disablethp=0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReexecWithoutHeapTHP$", "-test.count=1")
			env := []string{"KVMLAB_TEST_REEXEC=1"}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					env = append(env, kv)
				}
			}
			if c.env != "" {
				env = append(env, c.env)
			}
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("child did not finish in 20 s (exec loop?); output:\n%s", out)
			}
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			lines := 0
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "CHILD ") {
					lines++
					if want := fmt.Sprintf("CHILD GODEBUG=%q", c.want); l != want {
						t.Errorf("got %s, want %s", l, want)
					}
				}
			}
			if lines != 1 {
				t.Errorf("child printed %d CHILD lines, want 1 (the pre-exec process must not print):\n%s", lines, out)
			}
		})
	}
}
