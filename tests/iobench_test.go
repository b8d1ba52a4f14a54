package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestVirtioIOWorkload runs the guest half of `kvmlab bench --io`
// (/bin/kvmlab-io, guest/iobench) under kvmlab on a raw virtio disk, with
// O_DIRECT as in the benchmark: every phase must report the bytes and
// requests it was asked for, and the image must hold the pattern the guest
// wrote, where it wrote it and nowhere else.
func TestVirtioIOWorkload(t *testing.T) {
	img := filepath.Join(t.TempDir(), "io.img")
	if err := os.WriteFile(img, make([]byte, 5<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runKvmlab(t, 4*time.Minute, "run", "--quiet", "--kernel", guestFile(t, "bzImage"),
		"--initrd", guestFile(t, "initramfs.cpio"), "--mem", "256M", "--disk", img,
		"--append", quietCmdline+" quiet kvmlab.run=kvmlab-io,-mib,4,-ops,64,-iface,")
	if code != 0 {
		t.Fatalf("kvmlab exited %d\nstdout: %s\nstderr: %s", code, tailStr(out, 2000), stderr)
	}
	end := regexp.MustCompile(`KVMLAB-IO end (\w+) bytes=(\d+) ops=(\d+) ns=(\d+)`)
	got := map[string][3]int64{}
	for _, m := range end.FindAllStringSubmatch(out, -1) {
		var v [3]int64
		for i := range v {
			v[i], _ = strconv.ParseInt(m[i+2], 10, 64)
		}
		got[m[1]] = v
	}
	for phase, want := range map[string][2]int64{
		"seqwrite": {4 << 20, 4}, "seqread": {4 << 20, 4}, "randread": {64 << 12, 64}, "randwrite": {64 << 12, 64},
	} {
		g, ok := got[phase]
		if !ok {
			t.Errorf("no end marker for %s in:\n%s", phase, tailStr(out, 2000))
			continue
		}
		if g[0] != want[0] || g[1] != want[1] || g[2] <= 0 {
			t.Errorf("%s: bytes=%d ops=%d ns=%d, want bytes=%d ops=%d and a time", phase, g[0], g[1], g[2], want[0], want[1])
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// guest/iobench fills its buffer with byte(i*7 + i>>12).
	for _, i := range []int{0, 4097, 1<<20 - 1} {
		if w := byte(i*7 + i>>12); b[i] != w || b[3<<20+i] != w {
			t.Errorf("image bytes at %d and 3 MiB+%d = %#x, %#x; want the guest's pattern %#x", i, i, b[i], b[3<<20+i], w)
		}
	}
	for _, i := range []int{4 << 20, 5<<20 - 1} {
		if b[i] != 0 {
			t.Errorf("image byte %d = %#x past the 4 MiB the guest wrote; want 0", i, b[i])
		}
	}
}
