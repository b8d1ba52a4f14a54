// Package hostile is /bin/kvmlab-hostile in the kvmlab guest: a driver that
// breaks every rule it can, to show that the VMM survives a hostile guest.
//
// A VMM's devices are its attack surface: everything a device reads (its
// registers, the rings and descriptors in guest RAM, the MSI-X table) is
// written by the guest, and a guest kernel is just a program that may be
// buggy or malicious. kvmlab's rule (the house standard, after Firecracker's
// threat model) is that nothing a guest does may panic, hang or flood the
// VMM, or make it use host memory beyond what it was given. This program is
// the guest side of that claim; tests/hostile_test.go is the host side,
// which watches the VMM's exit status, its resident memory and its standard
// error while the attacks run.
//
// # How a user program drives a PCI device
//
// Linux lets root reach a PCI function without a kernel driver
// (Documentation/PCI/sysfs-pci.rst): /sys/bus/pci/devices/D/config is the
// configuration space (reads and writes go out through configuration
// mechanism #1, exits at ports 0xcf8/0xcfc), and resource0 maps BAR0, so a
// load or store on the mapping is an MMIO access to the device. Writing D to
// its driver's unbind file first takes the device away from virtio-pci so
// that the kernel does not fight us for it. A virtqueue needs memory whose
// guest-physical address the device is told: locked pages, whose addresses
// /proc/self/pagemap gives to root.
//
// # The attacks
//
// Each attack is a subcommand on the entropy device (virtio-rng: it needs no
// host file and answers any writable buffer), and prints for each of its
// steps one line
//
//	KVMLAB-HOSTILE <attack>/<step> status=0x.. served=0|1|- works=0|1 [note]
//
// with the device_status after the step (0x40 is DEVICE_NEEDS_RESET,
// virtio 1.2 §2.1.2), whether the live queue still answered a request
// without a reset ("-" where the step leaves no live queue), and whether
// the device answered a request after a reset and a fresh start. It judges
// nothing: the expectations, with the spec sections behind them, are in the
// host test. The attacks:
//
//   - flood: MMIO accesses the VMM must refuse, N of each: loads from the
//     PCI window with the BAR's memory decoding off (nothing claims them),
//     1-byte writes into the MSI-X table, 8-byte writes running past the
//     common configuration;
//   - doorbells: doorbells of queues that do not exist, of every width, a
//     doorbell before DRIVER_OK, N doorbells with nothing posted, N on a
//     reset device;
//   - reconfig: queue size, addresses, enable, vector and features
//     rewritten after DRIVER_OK (the device must ignore them), status
//     games, and queues enabled with rings outside RAM or a bad size;
//   - chains: descriptor loops (direct, self, indirect), chains of
//     4 GiB - 1 bytes (allowed) and past 4 GiB (refused), direct and
//     indirect, a head beyond the queue, an avail idx far ahead;
//   - msix: garbage MSI-X messages (addresses outside the APIC range,
//     every delivery mode, vectors below 16, all aimed at APIC IDs no vCPU
//     has, so that the guest itself survives them), interrupts sent through
//     them, masks flapped N times with messages pending, a vector number
//     beyond the table;
//   - bar: BAR0 moved over RAM, the local APIC, the I/O APIC, another
//     device's BAR, the top of 4 GiB and 0, then back; and moved N/100
//     times (each move re-registers the doorbell ioeventfds);
//   - rebind: hands the device back to Linux's virtio-pci driver.
package hostile

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"kvmlab/devices/virtio"
)

// Name is the program's name in the guest image (/bin/kvmlab-hostile).
const Name = "kvmlab-hostile"

// Marker starts every line of the report; MarkEnd ATTACK ends an attack.
const (
	Marker   = "KVMLAB-HOSTILE "
	MarkEnd  = "KVMLAB-HOSTILE end "
	MarkFail = "KVMLAB-HOSTILE fail "
)

// Attacks lists the subcommands in the order "all" runs them.
var Attacks = []string{"flood", "doorbells", "reconfig", "chains", "msix", "bar"}

const usage = `usage: kvmlab-hostile [-n N] [-dev 0000:00:02.0] ATTACK...

Attacks the virtio entropy device (or -dev) as a hostile driver and prints
one KVMLAB-HOSTILE line per step. ATTACK is one of flood, doorbells,
reconfig, chains, msix, bar, rebind, or all (every attack but rebind).
N sets the size of the floods (default 20000).
`

// Main is the kvmlab-hostile command: args are its arguments (without the
// program name). It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	n := fs.Int("n", 20000, "accesses per flood")
	devName := fs.String("dev", "", "PCI function to attack (default: the first virtio-rng)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	attacks, err := expand(fs.Args())
	if err == nil && *n < 1 {
		err = fmt.Errorf("-n %d: want a positive count", *n)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n%s", Name, err, usage)
		return 2
	}
	name := *devName
	if name == "" {
		if name, err = findDevice(sysfsPCI, virtio.PCIDeviceBase+uint16(virtio.TypeRNG)); err != nil {
			fmt.Fprintf(stdout, "%sall %v\n", MarkFail, err)
			return 1
		}
	}
	if len(attacks) == 1 && attacks[0] == "rebind" {
		return rebind(name, stdout)
	}
	d, err := openDevice(name)
	if err != nil {
		fmt.Fprintf(stdout, "%sopen %v\n", MarkFail, err)
		return 1
	}
	status := 0
	for _, a := range attacks {
		r := &reporter{w: stdout, attack: a, d: d}
		if a == "rebind" {
			status |= rebind(name, stdout)
			continue
		}
		if err := run(a, d, *n, r); err != nil {
			fmt.Fprintf(stdout, "%s%s %v\n", MarkFail, a, err)
			status = 1
		}
		fmt.Fprintf(stdout, "%s%s\n", MarkEnd, a)
	}
	return status
}

// expand checks the attack names and replaces "all".
func expand(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("no attack named")
	}
	var out []string
	for _, a := range args {
		switch {
		case a == "all":
			out = append(out, Attacks...)
		case a == "rebind" || contains(Attacks, a):
			out = append(out, a)
		default:
			return nil, fmt.Errorf("unknown attack %q (want one of %s, rebind, all)", a, strings.Join(Attacks, ", "))
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func run(attack string, d *device, n int, r *reporter) error {
	switch attack {
	case "flood":
		return flood(d, n, r)
	case "doorbells":
		return doorbells(d, n, r)
	case "reconfig":
		return reconfig(d, r)
	case "chains":
		return chains(d, r)
	case "msix":
		return msix(d, n, r)
	case "bar":
		return bar(d, n, r)
	}
	return fmt.Errorf("unknown attack %q", attack)
}

// reporter prints the step lines.
type reporter struct {
	w      io.Writer
	attack string
	d      *device
}

// step reports a step: the status now, whether the live queue answers
// (served is asked only when live), then whether the device recovers.
func (r *reporter) step(name string, live bool, note string) {
	st := r.d.status()
	served := "-"
	if live {
		served = bit(r.d.request())
	}
	works := bit(r.d.works())
	line := fmt.Sprintf("%s%s/%s status=%#02x served=%s works=%s", Marker, r.attack, name, st, served, works)
	if note != "" {
		line += " " + note
	}
	fmt.Fprintln(r.w, line)
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// rebind gives the device back to Linux's virtio-pci driver.
func rebind(name string, w io.Writer) int {
	err := os.WriteFile("/sys/bus/pci/drivers/virtio-pci/bind", []byte(name), 0)
	if err != nil {
		fmt.Fprintf(w, "%srebind %v\n", MarkFail, err)
		fmt.Fprintf(w, "%srebind\n", MarkEnd)
		return 1
	}
	fmt.Fprintf(w, "%srebind/bound driver=virtio-pci\n", Marker)
	fmt.Fprintf(w, "%srebind\n", MarkEnd)
	return 0
}
