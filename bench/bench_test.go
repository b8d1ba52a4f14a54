package bench

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"
)

func TestParseSmaps(t *testing.T) {
	const mem = 512 << 20
	const exe = "/usr/bin/qemu"
	smaps := `55d4c0000000-55d4c0200000 r-xp 00000000 08:01 123 /usr/bin/qemu
Size:               2048 kB
Rss:                1024 kB
55d4c0200000-55d4c0300000 r--p 00200000 08:01 123 /usr/bin/qemu
Size:               1024 kB
Rss:                 512 kB
55d4c0300000-55d4c0310000 rw-p 00300000 08:01 123 /usr/bin/qemu
Size:                 64 kB
Rss:                  16 kB
7e0000000000-7e0000100000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1024 kB
Rss:                 800 kB
7f0000000000-7f0020000000 rw-p 00000000 00:00 0
Size:             524288 kB
Rss:              102400 kB
7f1000000000-7f1000021000 rw-p 00000000 00:00 0 [heap]
Size:                132 kB
Rss:                  60 kB
VmFlags: rd wr mr mw me ac
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Size:                  8 kB
Rss:                   4 kB
`
	want := memBreakdown{
		rss:   (1024 + 512 + 16 + 800 + 102400 + 60 + 4) << 10,
		guest: 102400 << 10,
		image: (1024 + 512) << 10,
		data:  16 << 10,
		libs:  800 << 10,
		anon:  (60 + 4) << 10,
	}
	got, ok := parseSmaps(strings.NewReader(smaps), mem, exe)
	if !ok || got != want {
		t.Errorf("parseSmaps = %+v, %v; want %+v, true", got, ok, want)
	}
	// Without the executable's path its mappings count as other files.
	got, ok = parseSmaps(strings.NewReader(smaps), mem, "")
	if want := (memBreakdown{rss: want.rss, guest: want.guest, libs: (1024 + 512 + 16 + 800) << 10, anon: want.anon}); !ok || got != want {
		t.Errorf("parseSmaps without exe = %+v, %v; want %+v, true", got, ok, want)
	}
	for _, bad := range []string{"", "zz-yy rw-p 0 0 0\nRss: 4 kB\n", "1000-2000 rw-p\nRss: x kB\n", "2000-1000 rw-p 0 0 0\nRss: 4 kB\n"} {
		if _, ok := parseSmaps(strings.NewReader(bad), mem, exe); ok {
			t.Errorf("parseSmaps(%q) ok, want not ok", bad)
		}
	}
}

func TestSpreadOf(t *testing.T) {
	tests := []struct {
		in   []float64
		want spread
	}{
		{nil, spread{}},
		{[]float64{3}, spread{1, 3, 3, 3}},
		{[]float64{5, 1, 3}, spread{3, 3, 1, 5}},
		{[]float64{4, 1, 2, 8}, spread{4, 3, 1, 8}},
	}
	for _, tc := range tests {
		if got := spreadOf(tc.in); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// TestGokvmVersionPinned: the gokvm the bench builds is named by a module
// version `go install` accepts (a pseudo-version: gokvm's commit), and
// kvmlab's go.mod does not list gokvm, a peer that is never linked in.
func TestGokvmVersionPinned(t *testing.T) {
	if err := module.Check("github.com/bobuhiro11/gokvm", gokvmVersion); err != nil {
		t.Errorf("gokvmVersion %q: %v", gokvmVersion, err)
	}
	if !module.IsPseudoVersion(gokvmVersion) {
		t.Errorf("gokvmVersion %q is not a pseudo-version naming a commit", gokvmVersion)
	}
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "github.com/bobuhiro11/gokvm") {
		t.Errorf("go.mod lists gokvm: the bench builds it at gokvmVersion, kvmlab does not depend on it")
	}
}

func TestSummarizeRatios(t *testing.T) {
	s := func(p string, user time.Duration, fail string) sample {
		return sample{peer: p, toUser: user, failure: fail}
	}
	all := []sample{
		s("kvmlab", 2*time.Second, ""), s("gokvm", 6*time.Second, ""),
		s("kvmlab", 4*time.Second, ""), s("gokvm", 0, "timed out"),
	}
	rep := summarize(all, []string{"kvmlab", "gokvm"}, &Config{Runs: 2}, "test", 512, "x")
	var k, g figure
	for _, f := range rep.Figures {
		if f.Figure == "start -> user space" {
			if f.VMM == "kvmlab" {
				k = f
			} else {
				g = f
			}
		}
	}
	if k.N != 2 || k.Median != 3 || g.N != 1 || g.Median != 6 || g.Ratio != 2 {
		t.Errorf("kvmlab %+v, gokvm %+v; want medians 3 and 6, ratio 2", k, g)
	}
	if rep.Failures["gokvm"] != 1 || rep.Failures["kvmlab"] != 0 {
		t.Errorf("failures %v, want gokvm:1", rep.Failures)
	}
	var out strings.Builder
	rep.Print(&out)
	for _, want := range []string{"start -> user space (s)", "gokvm: 1 of 2 boot(s) failed; the last: timed out", "2.00"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestIOFigures(t *testing.T) {
	seq := ioPhase{bytes: 32 << 20, ops: 32, ns: 2e9, exits: kvmCounters{exits: 6400, mmio: 320}, haveExits: true}
	if got := ioFigure(seq, "MB/s"); got < 16.77 || got > 16.78 {
		t.Errorf("32 MiB in 2 s = %.3f MB/s, want 16.777 (10^6 bytes per MB)", got)
	}
	rnd := ioPhase{bytes: 1000 * 4096, ops: 1000, ns: 5e8}
	if got := ioFigure(rnd, "IOPS"); got != 2000 {
		t.Errorf("1000 requests in 0.5 s = %v IOPS, want 2000", got)
	}
	if got := ioFigure(ioPhase{}, "MB/s"); got != 0 {
		t.Errorf("an empty phase = %v, want 0", got)
	}
	all := []ioSample{
		{peer: "kvmlab", phases: map[string]ioPhase{"seqwrite": seq}},
		{peer: "qemu-q35", phases: map[string]ioPhase{"seqwrite": {bytes: 32 << 20, ops: 32, ns: 1e9, exits: kvmCounters{exits: 3200}, haveExits: true}}},
		{peer: "qemu-q35", failure: "timed out"},
	}
	rep := summarizeIO(all, []string{"kvmlab", "qemu-q35"}, &Config{Runs: 2}, "test", 512, "x")
	find := func(vmm, fig string) figure {
		for _, f := range rep.Figures {
			if f.VMM == vmm && f.Figure == fig {
				return f
			}
		}
		t.Fatalf("no figure %q for %s", fig, vmm)
		return figure{}
	}
	if f := find("qemu-q35", "seqwrite"); f.N != 1 || f.Ratio < 1.99 || f.Ratio > 2.01 {
		t.Errorf("qemu seqwrite = %+v, want one sample at twice kvmlab's MB/s", f)
	}
	if f := find("kvmlab", "seqwrite: exits per MiB"); f.Median != 200 {
		t.Errorf("kvmlab exits per MiB = %v, want 6400/32 = 200", f.Median)
	}
	if f := find("kvmlab", "seqwrite: user MMIO exits per MiB"); f.Median != 10 {
		t.Errorf("kvmlab MMIO exits per MiB = %v, want 10", f.Median)
	}
	if f := find("kvmlab", "net"); f.Missing == "" {
		t.Errorf("a phase no run measured = %+v, want n/a", f)
	}
	if rep.Failures["qemu-q35"] != 1 {
		t.Errorf("failures = %v, want one for qemu-q35", rep.Failures)
	}
}

func TestSelectPeersIO(t *testing.T) {
	if p, err := SelectPeers("none", false); err != nil || len(p) != 0 {
		t.Errorf(`SelectPeers("none") = %v, %v; want no peers`, p, err)
	}
	if _, err := SelectPeers("none", true); err == nil {
		t.Error(`SelectPeers("none") with --io: no error`)
	}
	if _, err := SelectPeers("kvmlab,gokvm", true); err == nil || !strings.Contains(err.Error(), "with --io") {
		t.Errorf("gokvm with --io: %v, want a usage error naming the choices", err)
	}
	if p, err := SelectPeers("kvmlab-no-eventfds,qemu-q35", true); err != nil || len(p) != 2 {
		t.Errorf("selectPeers = %v, %v", p, err)
	}
	if _, err := SelectPeers("kvmlab-no-eventfds", false); err == nil {
		t.Error("kvmlab-no-eventfds without --io was accepted")
	}
}

// TestReadKVMCountersIn: the VM's debugfs directory is named after the
// thread that created it, which need not be the process's main thread.
func TestReadKVMCountersIn(t *testing.T) {
	root := t.TempDir()
	mk := func(dir string, exits, io, mmio string) {
		d := filepath.Join(root, dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, v := range map[string]string{"exits": exits, "io_exits": io, "mmio_exits": mmio} {
			if v == "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(d, f), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("500-9", "1", "1", "1")          // another process's VM
	mk("104-6", "35409", "1200", "300") // created on thread 104 of process 98
	mk("77-3", "5", "", "1")            // a VM with a missing counter
	cases := []struct {
		name string
		tids []string
		want kvmCounters
		ok   bool
	}{
		{"creating thread is not the main thread", []string{"98", "99", "104"}, kvmCounters{exits: 35409, io: 1200, mmio: 300}, true},
		{"no thread of ours made a VM", []string{"98", "99"}, kvmCounters{}, false},
		{"missing file", []string{"77"}, kvmCounters{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tids := map[string]bool{}
			for _, id := range c.tids {
				tids[id] = true
			}
			got, ok := readKVMCountersIn(root, tids)
			if got != c.want || ok != c.ok {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestFormatResident(t *testing.T) {
	smaps := `00400000-00710000 r-xp 00000000 08:01 7 /kvmlab/kvmlab
Size:               3136 kB
Rss:                1536 kB
Anonymous:             0 kB
c000000000-c000400000 rw-p 00000000 00:00 0
Size:               4096 kB
Rss:                 940 kB
Anonymous:           940 kB
7f0000000000-7f0000001000 ---p 00000000 00:00 0
Size:                  4 kB
Rss:                   0 kB
Anonymous:             0 kB
`
	want := "      1536 rss        0 anon  r-xp      3136 KiB  /kvmlab/kvmlab\n" +
		"       940 rss      940 anon  rw-p      4096 KiB  \n"
	if got := formatResident(strings.NewReader(smaps)); got != want {
		t.Errorf("formatResident:\n%q\nwant\n%q", got, want)
	}
}

// fakePagemap answers pagemap reads: present pages are those listed.
type fakePagemap map[uint64]bool

func (f fakePagemap) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		p[i] = 0
	}
	if f[uint64(off)/8] {
		p[7] = 0x80 // bit 63
	}
	return len(p), nil
}

func TestSectionsResident(t *testing.T) {
	const ps = 4096
	secs := []*elf.Section{
		{SectionHeader: elf.SectionHeader{Name: ".text", Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Addr: 0x401000, Size: 3 * ps}},
		// Shares its first page with the end of .text's last page in a
		// real binary; here it starts mid-page.
		{SectionHeader: elf.SectionHeader{Name: ".rodata", Flags: elf.SHF_ALLOC, Addr: 0x404800, Size: 2 * ps}},
		{SectionHeader: elf.SectionHeader{Name: ".debug_info", Flags: 0, Addr: 0, Size: 10 * ps}},
	}
	pm := fakePagemap{0x401: true, 0x403: true, 0x404: true, 0x406: true}
	got, err := sectionsResident(secs, pm, ps)
	if err != nil {
		t.Fatal(err)
	}
	want := []sectionResident{
		{".text", 3 * ps, 2 * ps},            // pages 0x401 and 0x403
		{".rodata", 2 * ps, ps/2 + ps/2 + 0}, // half of 0x404, none of 0x405, half of 0x406
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("section %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := formatSections(got); !strings.Contains(s, "8 KiB of       12 KiB  .text") {
		t.Errorf("formatSections:\n%s", s)
	}
}

func TestSplitPclntab(t *testing.T) {
	h := make([]byte, 0x200)
	binary.LittleEndian.PutUint32(h, 0xfffffff1)
	h[7] = 8 // pointer size
	for i, off := range []uint64{0x48, 0x60, 0x70, 0x80, 0x100} {
		binary.LittleEndian.PutUint64(h[32+8*i:], off)
	}
	pcln := &elf.Section{SectionHeader: elf.SectionHeader{Name: ".gopclntab", Flags: elf.SHF_ALLOC, Addr: 0x1000, Size: 0x200}, ReaderAt: bytes.NewReader(h)}
	text := &elf.Section{SectionHeader: elf.SectionHeader{Name: ".text", Addr: 0x400}}
	got := splitPclntab([]*elf.Section{text, pcln})
	want := []struct {
		name       string
		addr, size uint64
	}{
		{".text", 0x400, 0},
		{".gopclntab header", 0x1000, 0x48},
		{".gopclntab funcnames", 0x1048, 0x18},
		{".gopclntab cutab", 0x1060, 0x10},
		{".gopclntab filetab", 0x1070, 0x10},
		{".gopclntab pctab", 0x1080, 0x80},
		{".gopclntab functab+funcdata", 0x1100, 0x100},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sections, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Name != w.name || got[i].Addr != w.addr || got[i].Size != w.size {
			t.Errorf("section %d = %s %#x+%#x, want %s %#x+%#x", i, got[i].Name, got[i].Addr, got[i].Size, w.name, w.addr, w.size)
		}
	}
	// A header that is not Go's is left alone.
	bad := &elf.Section{SectionHeader: pcln.SectionHeader, ReaderAt: bytes.NewReader(make([]byte, 0x200))}
	if got := splitPclntab([]*elf.Section{bad}); len(got) != 1 || got[0] != bad {
		t.Errorf("an unknown header was split: %v", got)
	}
}

func TestGoPackage(t *testing.T) {
	for _, tc := range []struct{ sym, want string }{
		{"runtime.mallocgc", "runtime"},
		{"kvmlab/vmm.(*Machine).Run", "kvmlab/vmm"},
		{"golang.org/x/sys/unix.Syscall", "golang.org/x/sys/unix"},
		{"kvmlab/devices/serial.(*UART).Write.func1", "kvmlab/devices/serial"},
		{"type:.eq.[2]interface {}", "type:"},
		{"_rt0_amd64_linux", "_rt0_amd64_linux"},
	} {
		if got := goPackage(tc.sym); got != tc.want {
			t.Errorf("goPackage(%q) = %q, want %q", tc.sym, got, tc.want)
		}
	}
}

func TestTextByPackage(t *testing.T) {
	const ps = 4096
	fn := func(name string, addr, size uint64) elf.Symbol {
		return elf.Symbol{Name: name, Info: elf.ST_INFO(elf.STB_GLOBAL, elf.STT_FUNC), Value: addr, Size: size}
	}
	syms := []elf.Symbol{
		fn("runtime.a", 0x401000, 0x800),  // page 0x401, resident
		fn("runtime.b", 0x401800, 0x1000), // half on 0x401, half on 0x402 (absent)
		fn("kvmlab/vmm.c", 0x403000, 0x2000),
		fn("kvmlab/vmm.d", 0x405000, 0x100),
		{Name: "runtime.data", Info: elf.ST_INFO(elf.STB_GLOBAL, elf.STT_OBJECT), Value: 0x401000, Size: 0x1000},
	}
	pm := fakePagemap{0x401: true, 0x404: true, 0x405: true}
	got, err := textByPackage(syms, pm, ps)
	if err != nil {
		t.Fatal(err)
	}
	want := []packageResident{{"kvmlab/vmm", 0x1000 + 0x100}, {"runtime", 0x800 + 0x800}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("package %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := formatPackages(got, 1); !strings.Contains(s, "kvmlab/vmm") || !strings.Contains(s, "1 other packages") {
		t.Errorf("formatPackages:\n%s", s)
	}
}

func TestGokvmTSCHint(t *testing.T) {
	for _, tc := range []struct{ cpuinfo, want string }{
		{"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu MHz\t\t: 2445.438\ncache size\t: 512 KB\n", "tsc_early_khz=2445438"},
		{"processor\t: 0\ncpu MHz\t\t: 1000.000\nprocessor\t: 1\ncpu MHz\t\t: 3000.000\n", "tsc_early_khz=1000000"},
		{"processor\t: 0\n", "notsc tsc_early_khz=2000"},
		{"cpu MHz\t\t: unknown\n", "notsc tsc_early_khz=2000"},
		{"", "notsc tsc_early_khz=2000"},
	} {
		if got := gokvmTSCHint(tc.cpuinfo); got != tc.want {
			t.Errorf("gokvmTSCHint(%q) = %q, want %q", tc.cpuinfo, got, tc.want)
		}
	}
}

// fakeVMM is a shell script standing in for a VMM: it prints what a guest
// running kvmlab-console prints, the kernel command line it was given
// included, then either exits or (like gokvm) waits to be killed.
func fakeVMM(t *testing.T, prefix string, exits bool) peer {
	t.Helper()
	// A VMM that cannot exit gets stuck after the console-end marker,
	// as gokvm's guest does (its clock stops).
	tail := `echo "${P}KVMLAB-BENCH poweroff"; exit 0`
	if !exits {
		tail = "exec sleep 60"
	}
	script := `echo "cmdline: $1"
echo "${P}KVMLAB-BENCH userspace"
echo "${P}KVMLAB-BENCH console-start"
i=0; while [ $i -lt 16 ]; do echo "${P}0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ."; i=$((i+1)); done
sleep 0.2
echo "${P}KVMLAB-BENCH console-end"
` + tail + "\n"
	return peer{name: "fake", exits: exits, argv: func(k, i, c string, m int) []string {
		return []string{"/bin/sh", "-c", "P='" + prefix + "'; " + script, "fake", c}
	}}
}

// runPeer must find the markers whatever the console path puts before them
// (printk's timestamp through /dev/kmsg), hand a kmsg peer the switch and
// printk.devkmsg=on on its command line, and kill a VMM that cannot exit
// once the figures at the console-end marker are taken.
func TestRunPeerConsolePaths(t *testing.T) {
	for _, c := range []struct {
		name   string
		prefix string
		kmsg   bool
		exits  bool
	}{
		{"tty, VMM exits", "", false, true},
		{"kmsg, VMM exits", "[    3.141592] ", true, true},
		{"kmsg, VMM killed at the console-end marker", "[    3.141592] ", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := fakeVMM(t, c.prefix, c.exits)
			p.kmsg = c.kmsg
			var got []string
			argv := p.argv
			p.argv = func(k, i, cl string, m int) []string {
				got = append(got, cl)
				return argv(k, i, cl, m)
			}
			start := time.Now()
			s := runPeer(context.Background(), p, "k", "i", "quiet kvmlab.run=kvmlab-console,1024", 64, 20*time.Second, false, histograms{})
			if s.failure != "" {
				t.Fatalf("failure: %s", s.failure)
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("runPeer took %v: the fake VMM was not killed at the console-end marker", time.Since(start))
			}
			if len(got) != 1 || strings.Contains(got[0], kmsgCmdline) != c.kmsg {
				t.Errorf("command line %q; kmsg %v", got, c.kmsg)
			}
			if s.toUser <= 0 || s.console < 150*time.Millisecond {
				t.Errorf("user space at %v, console %v: markers not seen (console must span the 0.2 s sleep)", s.toUser, s.console)
			}
			if c.exits != (s.toExit > 0) {
				t.Errorf("toExit %v for a VMM that exits=%v", s.toExit, c.exits)
			}
			if want := c.prefix != ""; s.kernelLog != want {
				t.Errorf("markers after %q counted as kernel log: %v", c.prefix, s.kernelLog)
			}
		})
	}
}

func TestReportNamesKmsgPath(t *testing.T) {
	rep := newReport(&Config{Runs: 1}, "test", 512, "x")
	rep.ViaKmsg = []string{"gokvm"}
	var b bytes.Buffer
	rep.Print(&b)
	if !strings.Contains(b.String(), "console path: gokvm wrote the markers and the payload through /dev/kmsg") {
		t.Errorf("report does not say which VMM used /dev/kmsg:\n%s", b.String())
	}
}

func TestFormatCounts(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{formatUserExits(map[uint64]uint64{2: 1600, 6: 62, 10: 1, 17: 0}), "1663 (IO 1600, MMIO 62, INTR 1)"},
		{formatPorts(map[uint64]uint64{0x3f8: 50, 0x3fd: 50, 0xcf8: 40, 0xcfc: 30, 0x70: 20, 0x61: 10, 0x1234: 5, 0x80: 1}),
			"206 (0x3f8 COM1 50, 0x3fd COM1 50, 0xcf8 PCI config address 40, 0xcfc PCI config data 30, 0x70 CMOS/RTC 20, 0x61 port B 10, 2 more)"},
		{formatPorts(map[uint64]uint64{0x1234: 3}), "3 (0x1234 3)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
