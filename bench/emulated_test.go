package bench

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"kvmlab/emuhost"
	"kvmlab/vmm/x86"
)

// TestEmulatedSpecEmulator: the outer bench starts the emulated host the
// user chose (--emulated-cpu), and tells the inner bench which one it is
// in, so that its report names the host.
func TestEmulatedSpecEmulator(t *testing.T) {
	for _, c := range []struct {
		emu        emuhost.Emulator
		wantVendor string
	}{
		{"", "amd"},
		{emuhost.QEMUSVM, "amd"},
		{emuhost.BochsVMX, "intel"},
	} {
		f := &Config{Runs: 2, Warmup: 1, Mem: "512M", MemMiB: 512, VMMs: []string{"kvmlab"}, ConsoleVia: "tty",
			Timeout: time.Minute, Emulator: c.emu}
		spec, cleanup, err := EmulatedSpec(f, emuhost.KVMLabFiles("/k", "/bz", "/initrd"))
		cleanup()
		if err != nil {
			t.Fatalf("%q: %v", c.emu, err)
		}
		if spec.Emulator != c.emu {
			t.Errorf("%q: spec.Emulator = %q", c.emu, spec.Emulator)
		}
		i := slices.Index(spec.Argv, "--emulated-cpu")
		if i < 0 || i+1 >= len(spec.Argv) || spec.Argv[i+1] != c.wantVendor || !slices.Contains(spec.Argv, "--in-emulated-host") {
			t.Errorf("%q: inner argv %q, want --in-emulated-host --emulated-cpu %s", c.emu, spec.Argv, c.wantVendor)
		}
	}
}

// TestExitFloorVTxSetUp: the C floor's VM is kvmlab's, Intel-only set-up
// included, at kvmlab's addresses (the Go floor uses the constants).
func TestExitFloorVTxSetUp(t *testing.T) {
	src := string(exitFloorC)
	for _, want := range []string{
		fmt.Sprintf("idmap = %#x;", x86.IdentityMapAddr),
		"KVM_SET_IDENTITY_MAP_ADDR, &idmap",
		fmt.Sprintf("KVM_SET_TSS_ADDR, %#xUL", x86.TSSAddr),
	} {
		if !strings.Contains(src, want) {
			t.Errorf("exitfloor.c lacks %q", want)
		}
	}
	if strings.Index(src, "KVM_SET_IDENTITY_MAP_ADDR") > strings.Index(src, "KVM_CREATE_VCPU") {
		t.Error("exitfloor.c sets the identity map after creating the vCPU (KVM refuses it then)")
	}
}
