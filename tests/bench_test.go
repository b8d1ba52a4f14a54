package tests

import (
	"bufio"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkBoot boots the default guest and reports, per boot: time from
// kvmlab's process start to the first line printed by guest user space (the
// first console line that is not a kernel message), user-space VM exits during
// the boot by reason, and the VMM's own memory (RSS outside guest RAM).
//
//	make bench-go   (or: go test -run '^$' -bench Boot -benchtime 3x ./tests/)
func BenchmarkBoot(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r := bootOnce(b)
		b.ReportMetric(r.firstUser.Seconds()*1000, "ms-to-userspace")
		b.ReportMetric(float64(r.exits), "user-exits")
		b.ReportMetric(float64(r.allExits), "all-exits")
		b.ReportMetric(r.vmmMiB, "VMM-MiB")
		b.Logf("boot %d: user space after %v; %d user-space exits; VMM RSS outside guest RAM %.1f MiB\n%s",
			i+1, r.firstUser.Round(time.Millisecond), r.exits, r.vmmMiB, r.statsText)
	}
}

type bootResult struct {
	firstUser time.Duration
	exits     int
	allExits  int
	vmmMiB    float64
	statsText string
}

var (
	kernelLine = regexp.MustCompile(`^\s*\[\s*\d+\.\d+\]`)
	exitsLine  = regexp.MustCompile(`kvmlab: (\d+) user-space exits`)
	allLine    = regexp.MustCompile(`kvmlab: (\d+) exits in all`)
	vmmLine    = regexp.MustCompile(`VMM ([\d.]+) MiB`)
)

func bootOnce(b *testing.B) bootResult {
	b.Helper()
	// kvmlab.run makes the guest's uinit (guest/uinit) run one command
	// and power off, so a boot is start -> user space -> poweroff.
	cmd := exec.Command(kvmlabBin(b), "run", "--stats", "--quiet",
		"--kernel", guestFile(b, "bzImage"), "--initrd", guestFile(b, "initramfs.cpio"), "--mem", "512M",
		"--append", "console=ttyS0 panic=-1 quiet kvmlab.run=echo,userspace-up")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var first time.Duration
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if first == 0 && line != "" && !kernelLine.MatchString(line) {
			first = time.Since(start)
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Fatalf("kvmlab: %v\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		b.Fatal("boot did not finish in 5 minutes")
	}
	if first == 0 {
		b.Fatalf("guest user space printed nothing\n%s", stderr.String())
	}
	r := bootResult{firstUser: first, statsText: stderr.String()}
	if m := exitsLine.FindStringSubmatch(r.statsText); m != nil {
		r.exits, _ = strconv.Atoi(m[1])
	}
	if m := allLine.FindStringSubmatch(r.statsText); m != nil {
		r.allExits, _ = strconv.Atoi(m[1])
	}
	if m := vmmLine.FindStringSubmatch(r.statsText); m != nil {
		r.vmmMiB, _ = strconv.ParseFloat(m[1], 64)
	}
	if r.exits == 0 {
		b.Fatalf("no exit statistics in kvmlab's output:\n%s", r.statsText)
	}
	return r
}
