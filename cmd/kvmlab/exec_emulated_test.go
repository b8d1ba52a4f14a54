package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"kvmlab/guest"
	"kvmlab/guest/runexec"
)

// TestExecEmulatedHost runs the kvmlab binary as a CI job on a machine
// without a usable /dev/kvm would: `kvmlab run --emulated-host --exec CMD`
// boots the emulated host (QEMU TCG, nested SVM; or Bochs, nested VT-x,
// with --emulated-cpu intel), the default guest inside it, and CMD in the
// guest. It runs beside TestExecEmulatedIntelHost (t.Parallel): QEMU's
// host and Bochs's, one thread, share the two cores as in make integration. Standard output must be CMD's alone (nothing
// of the emulated host's or the guest kernel's), standard error CMD's own,
// and the exit status CMD's, or 124 when --timeout, which counts the
// emulated host's boot too, runs out. Three emulated hosts, about a minute
// and a half each on a 2-core machine; KVMLAB_SKIP_EMULATED=1 skips it, as
// emuhost's own emulated-host tests.
func TestExecEmulatedHost(t *testing.T) {
	t.Parallel()
	bin, kernel, initrd := emulatedExecSetup(t, "qemu-system-x86_64", "qemu-system-x86", "no emulated host here")
	// The host's console lines that must never reach CMD's streams.
	hostLines := []string{"hostinit:", "KVMLAB-HOST-EXIT", "kvm [", "Linux version"}
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    []string // one of these, exactly
		stderr    string   // contained in stderr
		notStderr string   // not in stderr
	}{
		{"status 0, stderr apart", []string{"--exec", "echo to-out; echo to-err >&2"}, 0, []string{"to-out\n"}, "to-err\n", "to-out"},
		{"status 3", []string{"--exec", "echo hi; exit 3"}, 3, []string{"hi\n"}, "", "hi"},
		// Whether the limit falls in the emulated host's boot, the
		// guest's or the sleep, the status is the timeout's; what
		// CMD printed before it is passed on.
		{"timeout", []string{"--exec", "echo started; sleep 600", "--timeout", "100s"}, runexec.StatusTimeout, []string{"", "started\n"}, "kvmlab: --timeout: 1m40s passed before CMD finished", "started"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "--emulated-host", "--kernel", kernel, "--initrd", initrd}, tc.args...)
			r := runBin(t, bin, nil, args...)
			t.Logf("status %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
			ok := false
			for _, want := range tc.stdout {
				ok = ok || r.stdout == want
			}
			if r.code != tc.code || !ok {
				t.Fatalf("status %d, stdout %q; want %d and one of %q", r.code, r.stdout, tc.code, tc.stdout)
			}
			if !strings.Contains(r.stderr, tc.stderr) || strings.Contains(r.stderr, tc.notStderr) {
				t.Errorf("stderr %q: want it to contain %q and not %q", r.stderr, tc.stderr, tc.notStderr)
			}
			for _, l := range hostLines {
				if strings.Contains(r.stdout, l) || strings.Contains(r.stderr, l) {
					t.Errorf("the emulated host's or the guest kernel's %q reached CMD's streams", l)
				}
			}
		})
	}
}

// TestExecEmulatedIntelHost is TestExecEmulatedHost's first case in the
// emulated Intel host (--emulated-cpu intel: Bochs, nested VT-x), whose
// COM2 and COM3 carry CMD's two streams as QEMU's do: CMD's stdout alone
// on stdout, its stderr on stderr, its status kvmlab's. One Bochs host,
// about two and a half minutes.
func TestExecEmulatedIntelHost(t *testing.T) {
	t.Parallel()
	bin, kernel, initrd := emulatedExecSetup(t, "bochs", "bochs bochsbios vgabios isolinux syslinux-common xorriso", "no emulated Intel host here")
	r := runBin(t, bin, nil, "run", "--emulated-host", "--emulated-cpu", "intel", "--kernel", kernel, "--initrd", initrd,
		"--exec", "echo to-out; uname -r >&2; exit 3")
	t.Logf("status %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	if r.code != 3 || r.stdout != "to-out\n" {
		t.Fatalf("status %d, stdout %q; want 3 and %q", r.code, r.stdout, "to-out\n")
	}
	// The guest's kernel release on stderr: CMD ran in the guest (kvmlab's
	// kernel, a plain release such as 6.1.192), not in the emulated host
	// (Debian's, 6.1.0-N-amd64).
	if !regexp.MustCompile(`(?m)^\d+\.\d+\.\d+\n`).MatchString(r.stderr) || strings.Contains(r.stderr, "amd64") || strings.Contains(r.stderr, "to-out") {
		t.Errorf("stderr %q: want the guest kernel's release, and not CMD's stdout", r.stderr)
	}
	for _, l := range []string{"hostinit:", "KVMLAB-HOST-EXIT", "kvm [", "Linux version", "Bochs"} {
		if strings.Contains(r.stdout, l) || strings.Contains(r.stderr, l) {
			t.Errorf("the emulated host's or the guest kernel's %q reached CMD's streams", l)
		}
	}
}

// emulatedExecSetup skips the test unless the emulator program (from the
// Debian packages install) and the built default guest are here, and
// returns the kvmlab binary built for it and the guest's kernel and
// initramfs.
func emulatedExecSetup(t *testing.T, program, install, without string) (bin, kernel, initrd string) {
	t.Helper()
	if os.Getenv("KVMLAB_SKIP_EMULATED") == "1" {
		t.Skip("KVMLAB_SKIP_EMULATED=1")
	}
	if _, err := exec.LookPath(program); err != nil {
		t.Skipf("%s is not installed (apt-get install %s): %s", program, install, without)
	}
	kernel, initrd = guest.Default()
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("the default guest is not built (%v): run 'make guest'", err)
		}
	}
	bin, _ = buildCLI(t, t.TempDir())
	return bin, kernel, initrd
}
