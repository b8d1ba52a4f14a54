// Package hostcheck says whether this host can run kvmlab's guests, and
// what to do when it cannot: the report of `kvmlab check`, and the one-line
// refusals `kvmlab run` and the other commands give on a host that lacks
// something.
//
// A KVM guest needs, from the bottom up: a CPU with a virtualisation
// extension (the vmx flag of Intel VT-x or the svm flag of AMD-V in
// /proc/cpuinfo, which a hypervisor below passes on only with nested
// virtualisation); the kvm_intel or kvm_amd module, which makes /dev/kvm; the
// right to open it (the kvm group, or root); KVM's API version 12 and the
// capabilities kvmlab needs, asked with KVM_CHECK_EXTENSION
// (Documentation/virt/kvm/api.rst). A /dev/kvm made by kvm_pvm answers the
// same API without VT-x or AMD-V beneath it, and cannot run an unmodified
// Linux guest (package kvm's Backend). Where any of this is missing, kvmlab
// runs its guests inside an emulated host (package emuhost), which needs
// QEMU 9.1 or Bochs 2.7, go and kvmlab's source: the report says which of
// these are here and, from all of it, which commands work now.
package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"kvmlab/emuhost"
	"kvmlab/guest"
	"kvmlab/internal/cli"
	"kvmlab/vmm"
	"kvmlab/vmm/boot"
	"kvmlab/vmm/kvm"
)

// About says what the report holds, for `kvmlab check --help`.
const About = `Report whether this host can run kvmlab guests, and what to do if it cannot:
the CPU's virtualisation extension, /dev/kvm and the KVM capabilities kvmlab
needs; then whether the default guest is built, which QEMU and Bochs are
installed, and which kvmlab commands work here right now.
Exit status 0 when this host can run guests directly.
`

// Line is one line of the report: a mark (ok, FAIL, info or no), what was
// checked, and what was found.
type Line struct{ Mark, What, Detail string }

// Use says whether one of kvmlab's commands works on this host now.
type Use struct {
	What   string
	Works  bool
	Detail string
}

// Report is what `kvmlab check` finds.
type Report struct {
	KVM    []Line // the CPU, /dev/kvm and KVM's capabilities
	Direct bool   // guests run on this host's /dev/kvm
	Tools  []Line // the default guest, QEMU, Bochs, go
	Uses   []Use  // which commands work here, from all of the above
}

// Check looks at this host. Nothing it finds is an error: a missing piece
// is a line of the report.
func Check(ctx context.Context) Report {
	var r Report
	r.Direct = r.checkKVM()
	r.checkTools(ctx)
	return r
}

// Print writes the report: the KVM lines, a sentence on whether guests run
// here, the other tools, and what works.
func (r Report) Print(w io.Writer) {
	line := func(l Line) { fmt.Fprintf(w, "[%-4s] %-22s %s\n", l.Mark, l.What, l.Detail) }
	for _, l := range r.KVM {
		line(l)
	}
	if r.Direct {
		fmt.Fprintln(w, "This host can run kvmlab guests: try 'kvmlab run'.")
	} else {
		fmt.Fprintln(w, "This host cannot run kvmlab guests directly; see the FAIL lines above.")
	}
	fmt.Fprintln(w)
	for _, l := range r.Tools {
		line(l)
	}
	fmt.Fprintln(w, "\nWhat works on this host now:")
	for _, u := range r.Uses {
		answer := "no "
		if u.Works {
			answer = "yes"
		}
		fmt.Fprintf(w, "  %-28s %s %s\n", u.What, answer, u.Detail)
	}
}

// nestedParam says whether this host's guests can run KVM themselves.
func nestedParam() string {
	m, v, on, ok := kvm.NestedParam()
	if !ok {
		return "no kvm_intel/kvm_amd module loaded"
	}
	return fmt.Sprintf("%s nested=%s (%s)", m, v, map[bool]string{true: "this host can run VMs inside its guests", false: "guests of this host cannot run KVM"}[on])
}

// checkKVM reports on the CPU, /dev/kvm and KVM's capabilities, and
// whether all that kvmlab needs is there.
func (r *Report) checkKVM() bool {
	ok := true
	report := func(good bool, what, detail string) {
		mark := "ok"
		if !good {
			mark = "FAIL"
			ok = false
		}
		r.KVM = append(r.KVM, Line{mark, what, detail})
	}
	info := func(what, detail string) { r.KVM = append(r.KVM, Line{"info", what, detail}) }

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
// None of it changes whether guests run here.
func (r *Report) checkTools(ctx context.Context) {
	have := func(good bool, what, detail string) {
		r.Tools = append(r.Tools, Line{map[bool]string{true: "ok", false: "no"}[good], what, detail})
	}

	kernel, initrd := guest.Default()
	var missing []string
	for _, p := range []string{kernel, initrd} {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			missing = append(missing, filepath.Base(p))
		}
	}
	built := len(missing) == 0
	if built {
		have(true, "default guest", "built: "+filepath.Dir(kernel)+" (bzImage, initramfs.cpio)")
	} else {
		have(false, "default guest", "not built ("+strings.Join(missing, ", ")+" missing in "+filepath.Dir(kernel)+"): run 'make guest' (about 15 minutes), or give --kernel/--initrd")
	}

	q := emuhost.CheckQEMU(ctx)
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

	bochsErr := emuhost.CheckBochs(ctx)
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
	r.uses(built, qemuOK, qemuOK && bt.OK(), bochsOK && bt.OK())
}

// uses says which commands work, from what the checks found: the default
// guest built, QEMU new enough, the emulated AMD and Intel hosts possible.
func (r *Report) uses(built, qemu, emulated, intel bool) {
	direct, root := r.Direct, os.Geteuid() == 0
	works := func(cmd string, yes bool, detail string) { r.Uses = append(r.Uses, Use{cmd, yes, detail}) }
	then := ""
	if !built {
		then = "; build the default guest first: 'make guest'"
	}
	where := "in the emulated host"
	if direct {
		where = "on this /dev/kvm"
	}
	switch {
	case direct:
		works("kvmlab run, step", true, "on this /dev/kvm"+then)
	case emulated || intel:
		works("kvmlab run, step", false, "not directly (see FAIL above): kvmlab run --emulated-host [--emulated-cpu amd|intel] does"+then)
	default:
		works("kvmlab run, step", false, "see FAIL above; and no emulated host either (QEMU 9.1+ or Bochs 2.7+, go, kvmlab's source)")
	}
	if emulated {
		works("  --emulated-cpu amd", true, "(the default) QEMU TCG, AMD SVM, nested KVM: slow, but boots anywhere"+then)
	} else {
		works("  --emulated-cpu amd", false, "needs QEMU 9.1+, go and kvmlab's source (above)")
	}
	if intel {
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
	if qemu && (direct || emulated) {
		works("kvmlab bench", true, "the VMMs "+where+then)
	} else {
		works("kvmlab bench", false, "needs QEMU 9.1+ and a way to run the VMs (above)")
	}
}

// KVMError turns a failure to open /dev/kvm (or to build a machine on it)
// into one line with the fix, a cli.UsageError; other errors pass as they
// are.
func KVMError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return cli.Usagef("%s does not exist: load the KVM module (modprobe kvm_intel or kvm_amd; enable virtualisation in the firmware or nested virtualisation on a VM host), or use the emulated host: 'make run'", kvm.DevicePath)
	case errors.Is(err, fs.ErrPermission):
		return cli.Usagef("%s: permission denied: add yourself to the kvm group (sudo usermod -aG kvm $USER, then log in again) or run as root", kvm.DevicePath)
	case errors.Is(err, vmm.ErrConfig):
		return cli.Usagef("%v", err)
	case errors.Is(err, kvm.ErrMissingCap):
		return cli.Usagef("this host's KVM lacks a capability kvmlab needs: %v: use a newer host kernel", err)
	}
	return err
}

// CanRunLinux refuses a /dev/kvm without VT-x or AMD SVM behind it (see
// kvm.Backend): a Linux boot there hangs or fails in ways that would only
// puzzle, so say so at once.
func CanRunLinux() error {
	if ok, why := kvm.HostBackend().CanRunLinux(); !ok {
		return cli.Usagef("%s: boot inside the emulated host instead (kvmlab run --emulated-host, as 'make run' does)", why)
	}
	return nil
}

// CanRunGuest is CanRunLinux for the guest kernel: a boot sector (the
// labs' guests, vmm/boot/bootsector.go), a few real-mode instructions, runs
// on a /dev/kvm that cannot boot Linux (kvm_pvm) too, and so does any guest
// with anyKVM (the exit loop of kvmlab bench --here).
func CanRunGuest(kernel []byte, anyKVM bool) error {
	if img, err := boot.Parse(kernel); anyKVM || err == nil && img.Format == boot.FormatBootSector {
		return nil
	}
	return CanRunLinux()
}

// CanRun refuses, in one line, a host whose /dev/kvm cannot run a machine
// of cpus vCPUs booting kernel: no /dev/kvm or no right to it (KVMError), a
// KVM that cannot boot it (CanRunGuest), or fewer vCPUs per VM than asked.
func CanRun(kernel []byte, cpus int, anyKVM bool) error {
	max, err := kvm.Probe()
	if err != nil {
		return KVMError(err)
	}
	if err := CanRunGuest(kernel, anyKVM); err != nil {
		return err
	}
	if cpus > max {
		return cli.Usagef("--cpus %d: KVM on this host allows at most %d vCPUs per VM: use fewer", cpus, max)
	}
	return nil
}
