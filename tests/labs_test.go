package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kvmlab/labs"
)

// TestLabs grades labs 1 to 3 through the command a learner types, on a
// KVM that stands on real VT-x or SVM (the emulated host's kvm_intel or
// kvm_amd, where this machine's /dev/kvm is kvm_pvm): `kvmlab lab start`,
// the reference or the wrong answer written over the starting point, and
// `kvmlab lab check`, which assembles the guest with GNU as and ld (copied
// into the emulated host, hostTools), runs it, and grades its real exits.
// The reference solution must pass (status 0, PASS) and the wrong one
// must not (status 1, NOT YET and a hint), on both vendors: lab 2's
// answers name the VT-x and the SVM reason, and only the host's is graded.
func TestLabs(t *testing.T) {
	for n := 1; n <= 3; n++ {
		l, err := labs.Get(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []struct {
			name  string
			files map[string][]byte
			pass  bool
		}{{"reference", l.Solution(), true}, {"wrong", l.Wrong(), false}} {
			t.Run(l.Slug+"/"+v.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "work")
				num := strconv.Itoa(n)
				if out, errOut, code := runKvmlab(t, time.Minute, "lab", "start", num, dir); code != 0 {
					t.Fatalf("lab start %d: status %d\n%s%s", n, code, out, errOut)
				}
				for name, b := range v.files {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				out, errOut, code := runKvmlab(t, 5*time.Minute, "lab", "check", num, dir)
				t.Logf("lab check %d (%s): status %d\n%s%s", n, v.name, code, out, errOut)
				switch {
				case v.pass && (code != 0 || !strings.Contains(out, "PASS: lab "+num)):
					t.Errorf("the reference solution did not pass")
				case !v.pass && (code != 1 || !strings.Contains(out, "NOT YET: lab "+num) || !strings.Contains(out, "\nhint: ")):
					t.Errorf("the wrong solution was not graded as failing with a hint")
				}
			})
		}
	}
}
