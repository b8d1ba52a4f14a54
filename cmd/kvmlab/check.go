package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"kvmlab/emuhost"
	"kvmlab/vmm/kvm"
)

// nestedParam says whether this host's guests can run KVM themselves.
func nestedParam() string {
	m, v, on, ok := kvm.NestedParam()
	if !ok {
		return "no kvm_intel/kvm_amd module loaded"
	}
	return fmt.Sprintf("%s nested=%s (%s)", m, v, map[bool]string{true: "this host can run VMs inside its guests", false: "guests of this host cannot run KVM"}[on])
}

const checkUsage = `Usage: kvmlab check

Report whether this host can run kvmlab guests, and what to do if it cannot:
the CPU's virtualisation extension, /dev/kvm and the KVM capabilities kvmlab
needs; then whether the default guest is built, which QEMU and Bochs are
installed, and which kvmlab commands work here right now.
Exit status 0 when this host can run guests directly.
`

func cmdCheck(args []string) error {
	fset := flag.NewFlagSet("check", flag.ContinueOnError)
	setUsage(fset, checkUsage)
	if help, err := parseFlags(fset, args, false); help || err != nil {
		return err
	}
	direct := checkKVMHost()
	if direct {
		fmt.Println("This host can run kvmlab guests: try 'kvmlab run'.")
	} else {
		fmt.Println("This host cannot run kvmlab guests directly; see the FAIL lines above.")
	}
	checkTools(direct)
	if !direct {
		return exitError{1}
	}
	return nil
}

// checkLine prints one line of the report: a four-letter mark, what was
// checked, and what was found.
func checkLine(mark, what, detail string) { fmt.Printf("[%-4s] %-22s %s\n", mark, what, detail) }

// checkKVMHost reports on the CPU, /dev/kvm and KVM's capabilities, and
// whether all that kvmlab needs is there.
func checkKVMHost() bool {
	ok := true
	report := func(good bool, what, detail string) {
		mark := "ok"
		if !good {
			mark = "FAIL"
			ok = false
		}
		checkLine(mark, what, detail)
	}
	info := func(what, detail string) { checkLine("info", what, detail) }

	be := kvm.HostBackend()
	if be.Extension == "" {
		report(false, "CPU virtualisation", be.Vendor+": no vmx or svm flag: enable VT-x/AMD-V in the firmware, or nested virtualisation on the VM host")
	} else {
		report(true, "CPU virtualisation", be.Vendor+", "+be.Extension)
	}
	if be.PVM {
		info("kvm_pvm loaded", "a software KVM without VT-x/AMD-V: it answers the KVM API but cannot run an unmodified Linux guest; 'make run' and 'make test' use the emulated host instead")
	}
	if be.Hypervisor {
		info("running in a VM", "yes: kvmlab guests will be nested; "+nestedParam())
	} else {
		info("running in a VM", "no (bare metal); "+nestedParam())
	}
	st, err := os.Stat(kvm.DevicePath)
	if err != nil {
		report(false, kvm.DevicePath, "missing: load kvm_intel or kvm_amd (modprobe), or boot guests in the emulated host: 'make run' / 'make test' do that automatically")
		return false
	}
	report(true, kvm.DevicePath, fmt.Sprintf("present (%v)", st.Mode()))
	sys, err := kvm.Open()
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrPermission):
			report(false, "access", "permission denied: sudo usermod -aG kvm $USER (then log in again), or run as root")
		case errors.Is(err, kvm.ErrAPIVersion):
			report(false, "KVM API version", err.Error())
		default:
			report(false, "open", err.Error())
		}
		return false
	}
	defer sys.Close()
	report(true, "KVM API version", fmt.Sprintf("%d", kvm.APIVersion))
	for _, c := range kvm.Required {
		n := sys.Check(c)
		report(n > 0, c.String(), map[bool]string{true: "supported", false: "missing: kvmlab needs it; use a newer host kernel"}[n > 0])
	}
	for _, c := range []kvm.Cap{kvm.CapIRQFD, kvm.CapIOEventFD, kvm.CapSetGuestDebug, kvm.CapBinaryStatsFD, kvm.CapTSCDeadlineTimer} {
		info(c.String(), map[bool]string{true: "supported", false: "not supported (optional)"}[sys.Check(c) > 0])
	}
	info("max vCPUs per VM", fmt.Sprintf("%d", sys.MaxVCPUs()))
	if adv, found := sys.KVMClock(); found {
		info("kvm-clock for guests", map[bool]string{true: "advertised (KVM_FEATURE_CLOCKSOURCE2)", false: "not advertised"}[adv])
	}
	return ok
}

// checkTools reports what else kvmlab's commands use (the default guest,
// QEMU, Bochs, go, root) and, from all of it, which commands work here now.
// None of it changes the exit status, which is about running guests.
func checkTools(direct bool) {
	fmt.Println()
	have := func(good bool, what, detail string) {
		checkLine(map[bool]string{true: "ok", false: "no"}[good], what, detail)
	}

	kernel, initrd := defaultGuest()
	var missing []string
	for _, p := range []string{kernel, initrd} {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			missing = append(missing, filepath.Base(p))
		}
	}
	guest := len(missing) == 0
	if guest {
		have(true, "default guest", "built: "+filepath.Dir(kernel)+" (bzImage, initramfs.cpio)")
	} else {
		have(false, "default guest", "not built ("+strings.Join(missing, ", ")+" missing in "+filepath.Dir(kernel)+"): run 'make guest' (about 15 minutes), or give --kernel/--initrd")
	}

	q := emuhost.CheckQEMU(context.Background())
	qemuOK, minQ := q.OK, fmt.Sprintf("%d.%d", emuhost.MinQEMU[0], emuhost.MinQEMU[1])
	switch {
	case q.Path == "":
		have(false, "QEMU", "qemu-system-x86_64 not installed: 'make deps' installs it (the emulated host and 'kvmlab bench' need it)")
	case q.Version == "":
		have(false, "QEMU", q.Path+": cannot read its version (qemu-system-x86_64 --version)")
	case qemuOK:
		have(true, "QEMU", fmt.Sprintf("%s %s (%s or newer, as the emulated host needs)", q.Path, q.Version, minQ))
	default:
		have(false, "QEMU", fmt.Sprintf("%s %s: the emulated host needs %s or newer: 'make deps' installs it (from bookworm-backports on Debian 12)", q.Path, q.Version, minQ))
	}

	bochsErr := emuhost.CheckBochs(context.Background())
	bochsOK, bochsDetail := bochsErr == nil, "Bochs 2.7+ with VT-x and EPT, ISOLINUX and xorriso (the emulated Intel host)"
	if !bochsOK {
		bochsDetail = bochsErr.Error()
	}
	have(bochsOK, "Bochs", bochsDetail)

	// The emulated host builds its /init from kvmlab's source with go
	// (package emuhost): both must be on this machine.
	bt := emuhost.CheckBuildTools()
	switch {
	case bt.GoErr != nil:
		have(false, "go", "not in PATH: the emulated host builds its /init with it")
	case bt.SourceErr != nil:
		have(false, "kvmlab source", "not at "+filepath.Clean(filepath.Join(bt.Source, "..", ".."))+", where this binary was built: the emulated host builds its /init from it")
	default:
		have(true, "go", bt.Go+" (the emulated host builds its /init with it)")
	}
	emulated := qemuOK && bt.OK()
	root := os.Geteuid() == 0

	fmt.Println("\nWhat works on this host now:")
	works := func(cmd string, yes bool, detail string) {
		answer := "no "
		if yes {
			answer = "yes"
		}
		fmt.Printf("  %-28s %s %s\n", cmd, answer, detail)
	}
	then := ""
	if !guest {
		then = "; build the default guest first: 'make guest'"
	}
	where := "in the emulated host"
	if direct {
		where = "on this /dev/kvm"
	}
	switch {
	case direct:
		works("kvmlab run, step", true, "on this /dev/kvm"+then)
	case emulated || bochsOK && bt.OK():
		works("kvmlab run, step", false, "not directly (see FAIL above): kvmlab run --emulated-host [--emulated-cpu amd|intel] does"+then)
	default:
		works("kvmlab run, step", false, "see FAIL above; and no emulated host either (QEMU 9.1+ or Bochs 2.7+, go, kvmlab's source)")
	}
	if emulated {
		works("  --emulated-cpu amd", true, "(the default) QEMU TCG, AMD SVM, nested KVM: slow, but boots anywhere"+then)
	} else {
		works("  --emulated-cpu amd", false, "needs QEMU 9.1+, go and kvmlab's source (above)")
	}
	if bochsOK && bt.OK() {
		works("  --emulated-cpu intel", true, "Bochs, Intel VT-x, nested KVM: slower still (one CPU, 2 GiB), the VT-x paths"+then)
	} else {
		works("  --emulated-cpu intel", false, "needs Bochs 2.7+, ISOLINUX, xorriso, go and kvmlab's source (above)")
	}
	if root {
		works("kvmlab container", true, "as root: namespaces and cgroup limits"+then)
	} else {
		works("kvmlab container", true, "without root: in a user namespace, without limits (--mem, --cpus, --pids need root)"+then)
	}
	switch {
	case !root:
		works("kvmlab compare", false, "needs root (its container side): run it with sudo")
	case direct || emulated:
		works("kvmlab compare", true, "the VM side "+where+then)
	default:
		works("kvmlab compare", false, "needs a way to run the VM (above)")
	}
	if qemuOK && (direct || emulated) {
		works("kvmlab bench", true, "the VMMs "+where+then)
	} else {
		works("kvmlab bench", false, "needs QEMU 9.1+ and a way to run the VMs (above)")
	}
}
