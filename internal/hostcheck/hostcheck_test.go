package hostcheck

import (
	"os"
	"strings"
	"testing"
)

// TestUses: which commands the report says work, from what was found. The
// container and compare lines depend on root, so they are checked for the
// user the test runs as.
func TestUses(t *testing.T) {
	root := os.Geteuid() == 0
	tests := []struct {
		name                         string
		direct, built, qemu, emu, bx bool
		want                         map[string]bool // What -> Works
		detail                       map[string]string
	}{
		{"bare metal with everything", true, true, true, true, true,
			map[string]bool{"kvmlab run, step": true, "  --emulated-cpu amd": true, "  --emulated-cpu intel": true, "kvmlab bench": true, "kvmlab compare": root},
			map[string]string{"kvmlab run, step": "on this /dev/kvm", "kvmlab bench": "the VMMs on this /dev/kvm"}},
		{"no KVM, QEMU emulated host", false, true, true, true, false,
			map[string]bool{"kvmlab run, step": false, "  --emulated-cpu amd": true, "  --emulated-cpu intel": false, "kvmlab bench": true},
			map[string]string{"kvmlab run, step": "kvmlab run --emulated-host", "kvmlab bench": "in the emulated host"}},
		{"no KVM, only Bochs", false, true, false, false, true,
			map[string]bool{"kvmlab run, step": false, "  --emulated-cpu amd": false, "  --emulated-cpu intel": true, "kvmlab bench": false},
			map[string]string{"kvmlab run, step": "--emulated-cpu amd|intel] does"}},
		{"nothing at all", false, false, false, false, false,
			map[string]bool{"kvmlab run, step": false, "kvmlab bench": false, "kvmlab container": true},
			map[string]string{"kvmlab run, step": "no emulated host either", "kvmlab bench": "needs QEMU 9.1+"}},
		{"guest not built", true, false, false, false, false,
			map[string]bool{"kvmlab run, step": true, "kvmlab bench": false},
			map[string]string{"kvmlab run, step": "build the default guest first: 'make guest'"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Report{Direct: tc.direct}
			r.uses(tc.built, tc.qemu, tc.emu, tc.bx)
			got := map[string]Use{}
			for _, u := range r.Uses {
				got[u.What] = u
			}
			for what, works := range tc.want {
				if u, ok := got[what]; !ok || u.Works != works {
					t.Errorf("%q: %+v (listed %v); want works %v", what, u, ok, works)
				}
			}
			for what, d := range tc.detail {
				if !strings.Contains(got[what].Detail, d) {
					t.Errorf("%q: detail %q lacks %q", what, got[what].Detail, d)
				}
			}
		})
	}
}

// TestPrint pins the report's layout, which people and tests read.
func TestPrint(t *testing.T) {
	r := Report{
		KVM:    []Line{{"ok", "CPU virtualisation", "AMD, AMD SVM (svm)"}, {"FAIL", "/dev/kvm", "missing"}},
		Direct: false,
		Tools:  []Line{{"no", "QEMU", "not installed"}},
		Uses:   []Use{{"kvmlab run, step", false, "see FAIL above"}, {"kvmlab container", true, "as root"}},
	}
	var b strings.Builder
	r.Print(&b)
	want := "[ok  ] CPU virtualisation     AMD, AMD SVM (svm)\n" +
		"[FAIL] /dev/kvm               missing\n" +
		"This host cannot run kvmlab guests directly; see the FAIL lines above.\n" +
		"\n" +
		"[no  ] QEMU                   not installed\n" +
		"\nWhat works on this host now:\n" +
		"  kvmlab run, step             no  see FAIL above\n" +
		"  kvmlab container             yes as root\n"
	if b.String() != want {
		t.Errorf("Print =\n%s\nwant\n%s", b.String(), want)
	}
}
