package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"kvmlab/vmm/kvm"
)

func nestedParam() string {
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		b, err := os.ReadFile("/sys/module/" + m + "/parameters/nested")
		if err == nil {
			v := strings.TrimSpace(string(b))
			on := v == "1" || v == "Y"
			return fmt.Sprintf("%s nested=%s (%s)", m, v, map[bool]string{true: "this host can run VMs inside its guests", false: "guests of this host cannot run KVM"}[on])
		}
	}
	return "no kvm_intel/kvm_amd module loaded"
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
	if cpuid, err := sys.SupportedCPUID(); err == nil {
		for _, e := range cpuid {
			if e.Function == 0x4000_0001 {
				info("kvm-clock for guests", map[bool]string{true: "advertised (KVM_FEATURE_CLOCKSOURCE2)", false: "not advertised"}[e.EAX&(1<<3) != 0])
			}
		}
	}
	return ok
}

// minQEMU is the oldest QEMU the emulated host works with: older ones
// emulate AMD SVM's debug intercepts wrongly and lock the emulated host up
// at the first single-step (tests/deps.sh, which installs a newer one, says
// more).
var minQEMU = [2]int{9, 1}

// qemuVersionLine matches the first line of qemu-system-x86_64 --version.
var qemuVersionLine = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(\.\d+)?`)

// parseQEMUVersion reads "QEMU emulator version 10.0.2 (Debian ...)" into
// its major and minor numbers and the version as printed.
func parseQEMUVersion(out string) (major, minor int, version string, ok bool) {
	m := qemuVersionLine.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, "", false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return 0, 0, "", false
	}
	return major, minor, m[1] + "." + m[2] + m[3], true
}

// toolOutput runs a tool for what it says about itself, with stdin closed
// and a time limit: an emulator must not take the check over.
func toolOutput(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out)
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

	qemuOK := false
	if path, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		have(false, "QEMU", "qemu-system-x86_64 not installed: 'make deps' installs it (the emulated host and 'kvmlab bench' need it)")
	} else if major, minor, v, ok := parseQEMUVersion(toolOutput(path, "--version")); !ok {
		have(false, "QEMU", path+": cannot read its version (qemu-system-x86_64 --version)")
	} else if qemuOK = major > minQEMU[0] || major == minQEMU[0] && minor >= minQEMU[1]; qemuOK {
		have(true, "QEMU", fmt.Sprintf("%s %s (%d.%d or newer, as the emulated host needs)", path, v, minQEMU[0], minQEMU[1]))
	} else {
		have(false, "QEMU", fmt.Sprintf("%s %s: the emulated host needs %d.%d or newer: 'make deps' installs it (from bookworm-backports on Debian 12)", path, v, minQEMU[0], minQEMU[1]))
	}

	bochsOK, bochsDetail := intelHostCheck() // emulated.go
	have(bochsOK, "Bochs", bochsDetail)

	// The emulated host builds its /init from kvmlab's source with go
	// (package emuhost): both must be on this machine.
	goPath, goErr := exec.LookPath("go")
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "..", "emuhost", "hostinit")
	_, srcErr := os.Stat(src)
	switch {
	case goErr != nil:
		have(false, "go", "not in PATH: the emulated host builds its /init with it")
	case srcErr != nil:
		have(false, "kvmlab source", "not at "+filepath.Clean(filepath.Join(src, "..", ".."))+", where this binary was built: the emulated host builds its /init from it")
	default:
		have(true, "go", goPath+" (the emulated host builds its /init with it)")
	}
	emulated := qemuOK && goErr == nil && srcErr == nil
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
	case emulated || bochsOK && goErr == nil && srcErr == nil:
		works("kvmlab run, step", false, "not directly (see FAIL above): kvmlab run --emulated-host [--emulated-cpu amd|intel] does"+then)
	default:
		works("kvmlab run, step", false, "see FAIL above; and no emulated host either (QEMU 9.1+ or Bochs 2.7+, go, kvmlab's source)")
	}
	if emulated {
		works("  --emulated-cpu amd", true, "(the default) QEMU TCG, AMD SVM, nested KVM: slow, but boots anywhere"+then)
	} else {
		works("  --emulated-cpu amd", false, "needs QEMU 9.1+, go and kvmlab's source (above)")
	}
	if bochsOK && goErr == nil && srcErr == nil {
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
