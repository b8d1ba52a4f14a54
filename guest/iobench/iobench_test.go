package iobench

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDiskPhases runs the four disk phases on a file standing in for the
// block device (without O_DIRECT, which not every test filesystem has) and
// checks each phase's markers and counts, and that the data written is the
// pattern.
func TestDiskPhases(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	c := Config{Disk: img, MiB: 2, Ops: 50}
	if err := Run(c, &out); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	end := regexp.MustCompile(`(?m)^KVMLAB-IO end (\w+) bytes=(\d+) ops=(\d+) ns=(\d+)$`)
	got := map[string][2]int{}
	for _, m := range end.FindAllStringSubmatch(out.String(), -1) {
		b, _ := strconv.Atoi(m[2])
		o, _ := strconv.Atoi(m[3])
		got[m[1]] = [2]int{b, o}
	}
	want := map[string][2]int{"seqwrite": {2 << 20, 2}, "seqread": {2 << 20, 2}, "randread": {50 * 4096, 50}, "randwrite": {50 * 4096, 50}}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: bytes, ops = %v, want %v", k, got[k], v)
		}
		if !strings.Contains(out.String(), MarkStart+k+"\n") {
			t.Errorf("no start marker for %s", k)
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if b[4097] != byte((4097*7+1)&0xff) || b[3<<20-1] != 0 {
		t.Errorf("image bytes %#x %#x: want the pattern in the area and zeros after it", b[4097], b[3<<20-1])
	}
}

func TestDiskTooSmall(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Run(Config{Disk: img, MiB: 2}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "smaller than -mib 2") {
		t.Errorf("Run on a 1 MiB disk = %v, want a size error", err)
	}
}

// TestSendToSink checks the network phase's two halves against each other
// over loopback: the sink counts what the sender sent and says so.
func TestSendToSink(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { _ = Sink(l) }()
	ap := netip.MustParseAddrPort(l.Addr().String())
	n, ops, err := sendTo(ap, 3<<20+5)
	if err != nil || n != 3<<20+5 || ops != 1 {
		t.Fatalf("sendTo = %d, %d, %v; want %d, 1, nil", n, ops, err, 3<<20+5)
	}
}

func TestMainBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-addr", "nonsense"}, {"-sink", "10.0.0.1"}, {"-mib", "0"}, {"-bogus"}} {
		r, w, _ := os.Pipe()
		code := Main(args, w, w)
		w.Close()
		b := make([]byte, 4096)
		k, _ := r.Read(b)
		r.Close()
		if code != 2 || k == 0 {
			t.Errorf("Main(%q) = %d with %q, want 2 and a message", args, code, b[:k])
		}
	}
}
