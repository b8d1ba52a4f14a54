package compare

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"

	"kvmlab/guest/probe"
)

// fakeNested adds a container-in-VM side to rep, as nestedSide makes it:
// the guest's kernel, a boot id of its own that the helper read outside
// the container, and a guest panic.
func fakeNested(rep *Report) {
	n := &probe.Report{KernelRelease: "6.1.0-kvmlab", KernelVersion: "#1 SMP", BootID: "cccccccc-0000-4000-8000-000000000001", UptimeSec: 4.2,
		Hypervisor: true, CPUs: 1, MemTotalKB: 240 << 10, Processes: 2, PID1: "init", Mounts: 9, Interfaces: []string{"lo"}, Modules: -1, Devices: 7}
	rep.Nested = &Side{Name: NestedName, Probe: n, StartupMS: 4100, FootprintBytes: 120 << 20, ImageBytes: 45 << 20,
		BoundaryKind: "vm-exits", Boundary: 6000, BoundaryUser: 800, KernelBootID: n.BootID, HostSurvived: true,
		Blast: `guest kernel panicked under the running container ("Kernel panic - not syncing: sysrq triggered crash"); the VM ended (reset); the host kernel carried on`}
	rep.NestedInfo = &NestedInfo{ArchiveBytes: 13 << 20, ArchiveMS: 20, InitrdBytes: 46 << 20,
		Guest: &NestedGuestReport{UptimeSec: 3.1, BootID: n.BootID, Cgroup: "v2", MemoryPeak: 9 << 20, RootFiles: 240, RootMS: 12}}
	rep.Rows = rows(rep)
}

func TestNestedRows(t *testing.T) {
	rep := fakeCompare(false)
	fakeNested(rep)
	want := map[string][2]string{ // fact -> host, container in VM
		"kernel release": {"6.1.0-host", "6.1.0-kvmlab"},
		"same kernel instance as the host (boot id)":   {"aaaa-hos…", "no"},
		"boot id of the kernel under the workload":     {"aaaa-hos…", "cccccccc… (its VM's kernel)"},
		"start -> probe running":                       {"", "4100 ms"},
		"memory used":                                  {"", "120.0 MiB"},
		"processes visible (PID 1)":                    {"90 (systemd)", "2 (init)"},
		"kernel modules loaded":                        {"120", "none (no module support)"},
		"VM exits / system calls into the host kernel": {"", "6000 VM exits (800 to kvmlab)"},
		"host kernel still up afterwards":              {"", "yes"},
	}
	seen := 0
	for _, r := range rep.Rows {
		w, ok := want[r.Fact]
		if !ok {
			continue
		}
		seen++
		if got := [2]string{r.Host, r.Nested}; got != w {
			t.Errorf("row %q = %q, want %q", r.Fact, got, w)
		}
		if r.Fact == "boot id of the kernel under the workload" && (r.VM != "bbbb-gue…" || r.Container != "aaaa-hos…") {
			t.Errorf("boot id row: VM %q, container %q: want each side's own boot id", r.VM, r.Container)
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of the %d expected rows", seen, len(want))
	}
	// A helper that read another boot id than the probe's says so.
	rep.Nested.KernelBootID = "dddddddd-0000-4000-8000-000000000001"
	for _, r := range rows(rep) {
		if r.Fact == "boot id of the kernel under the workload" && r.Nested != "cccccccc… (not its VM's kernel dddddddd…)" {
			t.Errorf("mismatched boot ids shown as %q", r.Nested)
		}
	}
}

func TestNestedOutputs(t *testing.T) {
	rep := fakeCompare(true)
	fakeNested(rep)
	var txt bytes.Buffer
	rep.Print(&txt)
	for _, want := range []string{"container in VM", "cccccccc… (its VM's kernel)", "container in VM sysrq: guest kernel panicked under the running container",
		"a 13.0 MiB archive with the kvmlab binary", "reached the helper at 3.10 s of kernel uptime (the VM column's probe ran at 2.50 s)", "240 hard links"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, txt.String())
		}
	}
	// A helper that gave up before making the root says nothing of it.
	failed := *rep.NestedInfo.Guest
	failed.RootFiles, failed.Error = 0, "the guest kernel has no ipc namespace"
	if n := (&NestedInfo{Guest: &failed}).note(nil); strings.Contains(n, "hard links") {
		t.Errorf("note of a failed helper: %q", n)
	}
	var html bytes.Buffer
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<th>container in VM</th>", `<td colspan="6">`, "<td>cccccccc… (its VM&#39;s kernel)</td>", "4100 ms", "Container in VM: its VM got"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
}

// writeTinyELF writes a minimal x86-64 ELF executable with one program
// header of type progType: enough for debug/elf to read.
func writeTinyELF(t *testing.T, machine elf.Machine, progType elf.ProgType) string {
	t.Helper()
	var b bytes.Buffer
	hdr := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT),
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	prog := elf.Prog64{Type: uint32(progType), Off: 120, Filesz: 4, Memsz: 4}
	for _, v := range []any{hdr, prog, []byte("/ld\x00")} {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "kvmlab")
	if err := os.WriteFile(p, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckNestedBinary(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"static", writeTinyELF(t, elf.EM_X86_64, elf.PT_LOAD), ""},
		{"dynamic", writeTinyELF(t, elf.EM_X86_64, elf.PT_INTERP), "CGO_ENABLED=0"},
		{"arm64", writeTinyELF(t, elf.EM_AARCH64, elf.PT_LOAD), "the guest runs x86-64"},
		{"not ELF", notELF, "not an ELF program"},
		{"missing", filepath.Join(t.TempDir(), "none"), "not an ELF program"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckNestedBinary(tc.path)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("CheckNestedBinary: %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("CheckNestedBinary: %v, want an error with %q", err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("CheckNestedBinary: %q is more than one line", err)
			}
		})
	}
}

// TestNestedArchive reads the archive back with u-root's reader, as the
// kernel would: /nested, then /nested/kvmlab with the binary's bytes, mode
// 0755; and checks it is appended on a 4-byte boundary behind zeros.
func TestNestedArchive(t *testing.T) {
	self := filepath.Join(t.TempDir(), "kvmlab")
	content := []byte("\x7fELF pretend binary")
	if err := os.WriteFile(self, content, 0o700); err != nil {
		t.Fatal(err)
	}
	a, err := nestedArchive(self)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(a)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]cpio.Record{}
	for _, r := range recs {
		got[r.Name] = r
	}
	if d, ok := got["nested"]; !ok || d.Mode&cpio.S_IFMT != cpio.S_IFDIR {
		t.Errorf("no directory nested in %v", recs)
	}
	f, ok := got["nested/kvmlab"]
	if !ok || f.Mode&cpio.S_IFMT != cpio.S_IFREG || f.Mode&0o777 != 0o755 {
		t.Fatalf("nested/kvmlab missing or not a 0755 file: %v", recs)
	}
	data, err := io.ReadAll(io.NewSectionReader(f.ReaderAt, 0, int64(f.FileSize)))
	if err != nil || !bytes.Equal(data, content) {
		t.Errorf("nested/kvmlab holds %q (%v), want %q", data, err, content)
	}
	for n := range 6 {
		initrd := bytes.Repeat([]byte{'x'}, n)
		out := appendArchive(initrd, a)
		off := len(out) - len(a)
		if off%4 != 0 || !bytes.Equal(out[:n], initrd) || !bytes.Equal(out[off:], a) || strings.Trim(string(out[n:off]), "\x00") != "" {
			t.Errorf("initrd of %d bytes: archive at offset %d, padding %q", n, off, out[n:off])
		}
	}
}

func TestNestedCmdline(t *testing.T) {
	c := nestedCmdline(256 << 20)
	for _, want := range []string{"console=ttyS0", "panic=-1", "cgroup_no_v1=all", "kvmlab.run=/nested/kvmlab,compare-nested-guest,--mem=262144K"} {
		if !strings.Contains(c, want) {
			t.Errorf("%q lacks %q", c, want)
		}
	}
	// The helper recognises the command line it is booted with.
	if err := nestedGuestHere(c, "flags : fpu hypervisor lm", unix.RAMFS_MAGIC); err != nil {
		t.Errorf("nestedGuestHere(own command line): %v", err)
	}
}

func TestNestedGuestHere(t *testing.T) {
	good := nestedCmdline(128 << 20)
	tests := []struct {
		name, cmdline, cpuinfo string
		fs                     int64
		wantErr                string
	}{
		{"the nested VM", good, "flags\t\t: fpu vme hypervisor lm", unix.TMPFS_MAGIC, ""},
		{"a host", "BOOT_IMAGE=/vmlinuz root=/dev/sda1", "flags : fpu vme lm", 0xef53, "kernel command line"},
		{"an ordinary kvmlab guest", "console=ttyS0 kvmlab.run=kvmlab-probe", "flags : hypervisor", unix.RAMFS_MAGIC, "kernel command line"},
		{"no hypervisor flag", good, "flags : fpu vme lm", unix.RAMFS_MAGIC, "not a VM"},
		{"hypervisor only as a substring", good, "flags : nothypervisor", unix.RAMFS_MAGIC, "not a VM"},
		{"root on a disk", good, "flags : hypervisor", 0xef53, "not an initramfs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := nestedGuestHere(tc.cmdline, tc.cpuinfo, tc.fs)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("nestedGuestHere: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestNestedGuestReportCheck(t *testing.T) {
	ok := NestedGuestReport{UptimeSec: 3, BootID: "0f1e2d3c-4b5a-4697-8877-665544332211", Cgroup: "v2", MemoryPeak: 1 << 20, RootFiles: 10, RootMS: 2}
	tests := []struct {
		name    string
		edit    func(g *NestedGuestReport)
		wantErr bool
	}{
		{"as the helper writes it", func(g *NestedGuestReport) {}, false},
		{"an error line", func(g *NestedGuestReport) { g.Error = "mount cgroup2: no such device" }, false},
		{"boot id not a UUID", func(g *NestedGuestReport) { g.BootID = "\x1b[2J" }, true},
		{"unknown cgroup", func(g *NestedGuestReport) { g.Cgroup = "v3" }, true},
		{"negative uptime", func(g *NestedGuestReport) { g.UptimeSec = -1 }, true},
		{"escape in the error", func(g *NestedGuestReport) { g.Error = "x\x1b]0;owned\x07" }, true},
		{"huge error", func(g *NestedGuestReport) { g.Error = strings.Repeat("e", 600) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := ok
			tc.edit(&g)
			if err := g.check(); (err != nil) != tc.wantErr {
				t.Fatalf("check: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzNestedLine: whatever a guest prints after the marker, decoding and
// checking it returns an error or a report that passes its own check.
func FuzzNestedLine(f *testing.F) {
	f.Add(nestedLine(&NestedGuestReport{UptimeSec: 2.5, BootID: "0f1e2d3c-4b5a-4697-8877-665544332211", Cgroup: "v2", MemoryPeak: 4096}))
	f.Add(NestedMarker + `{"error":"no memory controller"}[ 3.1] printk`)
	f.Add(NestedMarker + `{"uptime_s":1e999}`)
	f.Fuzz(func(t *testing.T, line string) {
		var g NestedGuestReport
		if decodeMarked(line, NestedMarker, &g) != nil || g.check() != nil {
			return
		}
		if len(g.Error) > 500 || g.UptimeSec < 0 {
			t.Fatalf("accepted %+v", g)
		}
	})
}

func TestContainerPeak(t *testing.T) {
	root := t.TempDir()
	if got := containerPeak(root); got != 0 {
		t.Errorf("no group: %d, want 0", got)
	}
	dir := filepath.Join(root, "kvmlab-1-2-3-abcd")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.peak"), []byte("9437184\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := containerPeak(root); got != 9437184 {
		t.Errorf("one group: %d, want 9437184", got)
	}
	if err := os.Mkdir(filepath.Join(root, "kvmlab-other"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "kvmlab-other", "memory.peak"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := containerPeak(root); got != 0 {
		t.Errorf("two groups: %d, want 0 (which one would be a guess)", got)
	}
}

// TestRootLinker builds a small root and links it: files on the root's
// file system become hard links (the same inode), directories are made
// anew with their permissions, symbolic links are linked as links, the
// destination's own directory is left out, a directory on another file
// system is left empty unless it is to be copied, and then its files are
// copies.
func TestRootLinker(t *testing.T) {
	src := t.TempDir()
	mk := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("bbin/bb", "busybox")
	mk("bin/kvmlab-probe", "probe")
	mk("proc/cpuinfo", "host's")
	mk("etc/hostname", "guest")
	mk("nested/kvmlab", "runtime")
	if err := os.Symlink("/bbin/bb", filepath.Join(src, "bbin/ls")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hostname", filepath.Join(src, "etc/name")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "tmp"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "tmp"), 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(src, "nested", "root")
	// proc and etc stand for mounts: another file system.
	other := func(p string, fi fs.FileInfo) uint64 {
		rel, _ := filepath.Rel(src, p)
		if rel == "proc" || strings.HasPrefix(rel, "proc/") || rel == "etc" || strings.HasPrefix(rel, "etc/") {
			return 2
		}
		return 1
	}
	l := rootLinker{src: src, dst: dst, skip: []string{filepath.Join(src, "nested")}, copyDirs: []string{"etc"}, dev: other}
	n, err := l.link()
	if err != nil {
		t.Fatal(err)
	}
	// bbin bbin/bb bbin/ls bin bin/kvmlab-probe proc etc etc/hostname etc/name tmp
	if n != 10 {
		t.Errorf("made %d entries, want 10", n)
	}
	same := func(rel string) bool {
		a, err1 := os.Lstat(filepath.Join(src, rel))
		b, err2 := os.Lstat(filepath.Join(dst, rel))
		return err1 == nil && err2 == nil && os.SameFile(a, b)
	}
	for _, rel := range []string{"bbin/bb", "bin/kvmlab-probe", "bbin/ls"} {
		if !same(rel) {
			t.Errorf("%s is not a hard link to the guest's", rel)
		}
	}
	if target, err := os.Readlink(filepath.Join(dst, "bbin/ls")); err != nil || target != "/bbin/bb" {
		t.Errorf("bbin/ls: %q, %v: want the symbolic link itself", target, err)
	}
	if same("etc/hostname") {
		t.Error("etc/hostname is on another file system: want a copy, not a link")
	}
	if b, err := os.ReadFile(filepath.Join(dst, "etc/hostname")); err != nil || string(b) != "guest" {
		t.Errorf("etc/hostname copied as %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "etc/name")); err != nil || target != "hostname" {
		t.Errorf("etc/name: %q, %v: want a copy of the symbolic link", target, err)
	}
	if ents, err := os.ReadDir(filepath.Join(dst, "proc")); err != nil || len(ents) != 0 {
		t.Errorf("proc: %v, %v: want an empty directory (the container mounts its own)", ents, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "tmp")); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&fs.ModeSticky == 0 {
		t.Errorf("tmp: %v, %v: want drwxrwxrwt", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(dst, "nested")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the skipped nested directory was linked: %v", err)
	}
	// A second run finds its own leftovers and says so.
	if _, err := l.link(); !errors.Is(err, fs.ErrExist) {
		t.Errorf("linking over an existing tree: %v, want an error", err)
	}
}

func TestCheckNested(t *testing.T) {
	static := writeTinyELF(t, elf.EM_X86_64, elf.PT_LOAD)
	initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := os.WriteFile(initrd, make([]byte, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, self string
		mem        uint64
		wantErr    string
	}{
		{"fits", static, 256 << 20, ""},
		{"too little RAM", static, 128 << 20, "give --mem 145M or more"},
		{"dynamic binary", writeTinyELF(t, elf.EM_X86_64, elf.PT_INTERP), 256 << 20, "CGO_ENABLED=0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckNested(tc.self, initrd, tc.mem)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("CheckNested: %v, want %q", err, tc.wantErr)
			}
		})
	}
}
