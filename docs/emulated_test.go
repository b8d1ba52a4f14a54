package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kvmlab/guest"
)

// TestDocsEmulatedHost runs the "console emulated-host" blocks: commands
// that boot kvmlab's emulated host themselves (kvmlab run --emulated-host,
// QEMU's TCG emulating AMD SVM, or Bochs emulating Intel VT-x with
// --emulated-cpu intel), as a learner or a CI runner without a usable
// /dev/kvm would. They need no KVM here, so they run on this machine, with
// the kvmlab of KVMLAB_BIN (or one built from this tree) and the default
// guest (KVMLAB_GUEST_DIR, else the one make guest builds). Each command
// takes minutes of both cores, so the pages keep such blocks few; a block
// whose emulator is not installed is skipped saying which, and
// KVMLAB_SKIP_EMULATED=1 skips them all, as emuhost's own emulated-host
// tests.
func TestDocsEmulatedHost(t *testing.T) {
	if os.Getenv("KVMLAB_SKIP_EMULATED") == "1" {
		t.Skip("KVMLAB_SKIP_EMULATED=1")
	}
	blocks, err := All()
	if err != nil {
		t.Fatal(err)
	}
	blocks = slices.DeleteFunc(blocks, func(b Block) bool { return !b.EmulatedHost })
	if len(blocks) == 0 {
		t.Fatal("no console emulated-host block in docs/*.md: the --emulated-host examples are no longer checked")
	}
	guestDir := os.Getenv("KVMLAB_GUEST_DIR")
	if guestDir == "" {
		guestDir = filepath.Join(guest.CacheDir(), "default")
	}
	for _, f := range []string{"bzImage", "initramfs.cpio"} {
		if _, err := os.Stat(filepath.Join(guestDir, f)); err != nil {
			t.Skipf("the default guest is not built (%v): run 'make guest', or set KVMLAB_GUEST_DIR", err)
		}
	}
	bin := kvmlabBin(t)
	// The emulated host's kernel is downloaded once into this cache
	// (package emuhost); every block's fresh home links to it.
	hostKernels := filepath.Join(guest.CacheDir(), "hostkernel")
	if err := os.MkdirAll(hostKernels, 0o755); err != nil {
		t.Fatal(err)
	}
	environ := goCaches(t)
	for _, b := range blocks {
		t.Run(b.Name(), func(t *testing.T) {
			for _, need := range emulators(b) {
				if _, err := exec.LookPath(need.program); err != nil {
					t.Skipf("%s is not installed (apt-get install %s): no emulated host for this block here", need.program, need.packages)
				}
			}
			d := t.TempDir()
			e := Env{Bin: bin, GuestDir: guestDir, Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work"),
				HostKernels: hostKernels, Environ: environ}
			// 20 minutes bounds a hung emulator (the limit is a guard,
			// not a timed assertion): Bochs takes about three.
			if err := b.Check(e, "", 20*time.Minute, t.Logf); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// emulator is a program an emulated host needs and the Debian packages
// that install it.
type emulator struct{ program, packages string }

// emulators are what b's commands boot: Bochs for --emulated-cpu intel,
// QEMU otherwise (the default, AMD SVM).
func emulators(b Block) []emulator {
	qemu := emulator{"qemu-system-x86_64", "qemu-system-x86"}
	bochs := emulator{"bochs", "bochs bochsbios vgabios isolinux syslinux-common xorriso"}
	var need []emulator
	for _, s := range b.Steps {
		if !slices.Contains(s.Words, "--emulated-host") {
			continue
		}
		e := qemu
		for i, w := range s.Words {
			if w == "--emulated-cpu=intel" || (w == "--emulated-cpu" && i+1 < len(s.Words) && s.Words[i+1] == "intel") {
				e = bochs
			}
		}
		if !slices.Contains(need, e) {
			need = append(need, e)
		}
	}
	return need
}

// goCaches are the Go settings an emulated host's build of its /init
// (emuhost.GoBuild, run by kvmlab) would otherwise look for under the
// block's fresh home: the build and module caches, and the go env file
// (GOFLAGS and the like), all as this test's go has them.
func goCaches(t *testing.T) []string {
	t.Helper()
	vars := []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOENV"}
	out, err := exec.Command("go", append([]string{"env"}, vars...)...).Output()
	if err != nil {
		t.Fatalf("go env: %v (go builds the emulated host's /init)", err)
	}
	vals := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(vals) != len(vars) {
		t.Fatalf("go env %s: %q, want one line each", strings.Join(vars, " "), out)
	}
	env := make([]string, len(vars))
	for i, v := range vars {
		env[i] = v + "=" + vals[i]
	}
	return env
}

func TestEmulators(t *testing.T) {
	tests := []struct {
		page string
		want []string
	}{
		{"```console emulated-host\n$ kvmlab run --emulated-host --exec true\n```\n", []string{"qemu-system-x86_64"}},
		{"```console emulated-host\n$ kvmlab run --emulated-host --emulated-cpu intel --stats\n```\n", []string{"bochs"}},
		{"```console emulated-host\n$ kvmlab run --emulated-cpu=intel --emulated-host\n$ kvmlab run --emulated-host --emulated-cpu amd\n```\n", []string{"bochs", "qemu-system-x86_64"}},
		{"```console emulated-host\n$ kvmlab help\n```\n", nil},
	}
	for _, tt := range tests {
		blocks, err := Extract("p.md", tt.page)
		if err != nil || len(blocks) != 1 {
			t.Fatalf("Extract(%q): %v, %d blocks", tt.page, err, len(blocks))
		}
		var got []string
		for _, e := range emulators(blocks[0]) {
			got = append(got, e.program)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("emulators(%q) = %q, want %q", tt.page, got, tt.want)
		}
	}
}

// TestEnvHostKernelsEnviron: Prepare links the emulated host's kernel
// cache into the block's fresh home, and the block's commands get Environ,
// but never another HOME.
func TestEnvHostKernelsEnviron(t *testing.T) {
	d := t.TempDir()
	e := Env{Bin: "/bin/true", GuestDir: filepath.Join(d, "guest"), Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work"),
		HostKernels: filepath.Join(d, "hostkernel"), Environ: []string{"GOCACHE=/c", "HOME=/elsewhere"}}
	if err := e.Prepare(""); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(e.Home, ".cache", "kvmlab", "hostkernel")); err != nil || got != e.HostKernels {
		t.Errorf("hostkernel link: %q, %v; want %q", got, err, e.HostKernels)
	}
	cmd, done, err := e.command(t.Context(), Step{Words: []string{"kvmlab", "version"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done()
	if !slices.Contains(cmd.Env, "GOCACHE=/c") {
		t.Errorf("the command's environment has no GOCACHE=/c: %q", cmd.Env)
	}
	// exec.Cmd takes the last of duplicate keys: HOME must be the block's.
	home := ""
	for _, kv := range cmd.Env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			home = v
		}
	}
	if home != e.Home {
		t.Errorf("HOME=%q, want the block's %q", home, e.Home)
	}
}
