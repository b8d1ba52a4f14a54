package emuhost

import (
	"fmt"

	"golang.org/x/sys/unix"

	"kvmlab/vmm/kvm"
)

const (
	// kvmGetAPIVersion is KVM_GET_API_VERSION, _IO(KVMIO=0xAE, 0x00).
	kvmGetAPIVersion = 0xAE00
	// kvmAPIVersion is the only API version Linux has ever reported.
	kvmAPIVersion = 12
)

// KVMUsable reports whether this machine has a working /dev/kvm: the device
// opens read-write, KVM_GET_API_VERSION returns 12, and the CPU has VT-x or
// AMD SVM behind it. When it does not, the string says why (and tests should
// fall back to the emulated host, [Run]). The last check matters: a kvm_pvm
// host passes the first two and hangs or fails a Linux boot (see
// kvm.Backend).
func KVMUsable() (bool, string) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Sprintf("cannot open /dev/kvm read-write: %v", err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return false, fmt.Sprintf("KVM_GET_API_VERSION on /dev/kvm failed: %v", err)
	}
	if v != kvmAPIVersion {
		return false, fmt.Sprintf("KVM_GET_API_VERSION returned %d, want %d", v, kvmAPIVersion)
	}
	be := kvm.HostBackend()
	if ok, why := be.CanRunLinux(); !ok {
		return false, why
	}
	return true, fmt.Sprintf("/dev/kvm works (API version %d, %s)", v, be.Extension)
}
