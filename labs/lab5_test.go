package labs

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"kvmlab/emuhost"
	"kvmlab/guest/tiny"
)

// buildKvmlab builds kvmlab from this tree for a test.
func buildKvmlab(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go on PATH to build kvmlab")
	}
	bin := filepath.Join(t.TempDir(), "kvmlab")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/kvmlab")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestLab5Stats reads the counts lab 5 grades from real `kvmlab run
// --stats` output: a tiny guest that prints "ok\n" on COM1 (three OUTs)
// next to a virtio entropy device it never drives.
func TestLab5Stats(t *testing.T) {
	if !tinyGuestsRunHere() {
		t.Skip("no /dev/kvm that runs a tiny guest here")
	}
	bin := buildKvmlab(t)
	kernel := filepath.Join(t.TempDir(), "ok.elf")
	// 10 loads from an address in the PCI window where no BAR is.
	if err := os.WriteFile(kernel, tiny.ELF(tiny.MMIOLoadLoopCode(0xe000_1000, 0, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "run", "--any-kvm", "--quiet", "--stats", "--rng", "--mem", "64M", "--kernel", kernel).CombinedOutput()
	if err != nil {
		t.Fatalf("kvmlab run: %v\n%s", err, out)
	}
	c, err := parseLab5Stats(string(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%+v", c)
	// 10 MMIO loads, 3 COM1 writes, 1 poweroff.
	want := lab5Counts{userExits: 14, com1: 3, byDevice: []string{"pci-window 10", "COM1 3", "ACPI-PM 1"}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("counts %+v, want %+v\n%s", c, want, out)
	}
	if _, err := parseLab5Stats("kvmlab: 5 user-space exits\n"); err == nil || !strings.Contains(err.Error(), "COM1") {
		t.Errorf("output without a COM1 row: %v, want an error naming it", err)
	}
}

// TestLab5Grade grades answers against counts: the reference answer
// against the counts it was measured from and against counts a tenth
// off (boots vary), the wrong answer and broken ones against the same.
func TestLab5Grade(t *testing.T) {
	l, err := Get(5)
	if err != nil {
		t.Fatal(err)
	}
	sol := string(l.Solution()["answers.txt"])
	pairs, err := parseAnswers([]byte(sol))
	if err != nil {
		t.Fatal(err)
	}
	ans := map[string]int64{}
	for _, p := range pairs {
		for _, n := range lab5Numbers {
			if p.key == n.key {
				var v int64
				for _, ch := range p.value {
					v = v*10 + int64(ch-'0')
				}
				ans[n.key] = v
			}
		}
	}
	measured := func(scale float64) [3]lab5Counts {
		s := func(k string) int64 { return int64(float64(ans[k]) * scale) }
		return [3]lab5Counts{
			{userExits: s("exits_eventfds"), com1: s("com1_exits_quiet")},
			{userExits: s("exits_no_eventfds"), doorbells: s("doorbell_exits"), interrupts: s("interrupts")},
			{com1: s("com1_exits_loud")},
		}
	}
	replace := func(old, new string) string {
		if !strings.Contains(sol, old) {
			t.Fatalf("the reference answer has no %q", old)
		}
		return strings.Replace(sol, old, new, 1)
	}
	tests := []struct {
		name    string
		answers string
		scale   float64
		pass    bool
		hint    string
	}{
		{"reference, as measured", sol, 1, true, ""},
		{"reference, 5% more measured", sol, 1.05, true, ""},
		{"reference, a fifth more measured", sol, 1.2, false, "read doorbell_exits again"},
		{"runs 1 and 2 the same", strings.Replace(strings.Replace(sol, "exits_eventfds: 2150", "exits_eventfds: 2400", 1), "exits_no_eventfds: 2373", "exits_no_eventfds: 2300", 1), 1, false, "which run has more exits"},
		{"reference, twice as much measured", sol, 2, false, "read exits_eventfds again"},
		{"reference, a third more measured", sol, 1.3, false, "read doorbell_exits again"},
		{"wrong", string(l.Wrong()["answers.txt"]), 1, false, "read doorbell_exits again"},
		{"starting point", string(l.Files()["answers.txt"]), 1, false, "fill in every number"},
		{"not a number", replace("doorbell_exits: ", "doorbell_exits: many "), 1, false, "plain number"},
		{"no ioeventfd in the explanation", replace("With ioeventfd", "With the in-kernel trick"), 1, false, "KVM_IOEVENTFD"},
		{"no irqfd in the explanation", strings.ReplaceAll(replace("irqfd only saves", "it only saves"), "irqfd", "eventfd"), 1, false, "KVM_IRQFD"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseAnswers([]byte(tc.answers))
			if err != nil {
				t.Fatal(err)
			}
			res := gradeLab5(p, measured(tc.scale))
			t.Logf("passed %v, hint %q\n%s", res.Passed, res.Hint, strings.Join(res.Lines, "\n"))
			if res.Passed != tc.pass || !strings.Contains(res.Hint, tc.hint) {
				t.Errorf("passed %v, hint %q; want %v and a hint containing %q", res.Passed, res.Hint, tc.pass, tc.hint)
			}
		})
	}
}

// TestLab5Check runs the whole check (three boots of the default guest)
// where this machine's /dev/kvm boots Linux; elsewhere
// tests/labs456_test.go runs it inside the emulated host.
func TestLab5Check(t *testing.T) {
	if ok, why := emuhost.KVMUsable(); !ok {
		t.Skipf("lab 5 boots Linux guests (%s): tests/labs456_test.go runs this check in the emulated host", why)
	}
	bin := buildKvmlab(t)
	l, _ := Get(5)
	gradeReferenceAndWrong(t, l, bin)
}
