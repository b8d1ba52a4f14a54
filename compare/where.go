package compare

// Where the comparison runs: here, on this machine's /dev/kvm, when it can
// boot Linux, and inside the emulated host otherwise (package emuhost), or
// when the user asks for it. The VMs' memory then comes from where they
// run, which bounds how many --density may start.

import (
	"fmt"
	"os"

	"kvmlab/emuhost"
	"kvmlab/internal/cli"
)

// NeedsRoot refuses a comparison run without root: containers need it.
const NeedsRoot = "compare: the container side needs root (namespaces, cgroups): run it with sudo"

// Where runs the comparison o here (Here) or, when this host's KVM cannot
// boot Linux or emulated is set, inside the emulated host (InEmulatedHost),
// saying why on o.Progress. o.Inner is the run inside: always here.
func Where(o Options, emulated bool) (*Report, error) {
	ok, why := emuhost.KVMUsable()
	if o.Inner || (ok && !emulated) {
		if os.Geteuid() != 0 {
			return nil, cli.Usagef(NeedsRoot)
		}
		return Here(o)
	}
	if !emulated && o.Progress != nil {
		fmt.Fprintf(o.Progress, "kvmlab compare: %s: running inside the emulated host (QEMU TCG, nested SVM)\n", why)
	}
	return InEmulatedHost(o, emuhost.KVMLabFiles(o.Self, o.Kernel, o.Initrd))
}

// CheckDensityWhere refuses a --density that is not a count, or more VMs
// of mem bytes than the memory where they will run can hold, saying how
// many fit (CheckDensity), in one line. Inside the emulated host (inner),
// or here, that is MemAvailable now; from outside (emulated, or no usable
// KVM here), it is this machine's, which backs the emulated host's RAM.
func CheckDensityWhere(n int, mem uint64, inner, emulated bool) error {
	where, avail := "this machine", MemAvailable()
	if ok, _ := emuhost.KVMUsable(); inner {
		where = "the emulated host"
	} else if !ok || emulated {
		// The emulated host's own kernel and files take their part
		// of this machine's memory first (InEmulatedHost).
		where = "this machine (less 1.5 GiB for the emulated host)"
		avail -= min(avail, 1536<<20)
	}
	if err := CheckDensity(n, mem, avail, where); err != nil {
		return cli.Usagef("compare: %v", err)
	}
	return nil
}
