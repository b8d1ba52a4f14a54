// Command kvmprobe is run inside the emulated host by package emuhost's own
// test: it checks that /dev/kvm works by asking for the API version and
// creating a VM, and prints the vendor module's paging parameters (kvm_intel's
// ept, unrestricted_guest and vpid; kvm_amd's npt). With -exit N it only exits
// with status N.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	kvmGetAPIVersion = 0xAE00 // KVM_GET_API_VERSION
	kvmCreateVM      = 0xAE01 // KVM_CREATE_VM
)

func main() {
	exit := flag.Int("exit", -1, "only exit with this status")
	flag.Parse()
	if *exit >= 0 {
		fmt.Printf("kvmprobe: exiting with status %d\n", *exit)
		os.Exit(*exit)
	}
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvmprobe: open /dev/kvm: %v\n", err)
		os.Exit(1)
	}
	api, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil || api != 12 {
		fmt.Fprintf(os.Stderr, "kvmprobe: KVM_GET_API_VERSION = %d, %v (want 12)\n", api, err)
		os.Exit(1)
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM) // machine type 0
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvmprobe: KVM_CREATE_VM: %v\n", err)
		os.Exit(1)
	}
	unix.Close(vm)
	fmt.Printf("kvm ok api=%d\n", api)
	for mod, params := range map[string][]string{
		"kvm_intel": {"ept", "unrestricted_guest", "vpid"},
		"kvm_amd":   {"npt"},
	} {
		if _, err := os.Stat("/sys/module/" + mod); err != nil {
			continue
		}
		line := "kvm vendor module " + mod
		for _, p := range params {
			b, err := os.ReadFile("/sys/module/" + mod + "/parameters/" + p)
			v := strings.TrimSpace(string(b))
			if err != nil {
				v = "?"
			}
			line += " " + p + "=" + v
		}
		fmt.Println(line)
	}
}
