// Package tests holds kvmlab's integration tests: they boot real guests with
// the kvmlab binary and talk to them over the serial console.
//
// They need a working /dev/kvm. When this machine has none (CI and the
// development machines do not), TestMain re-runs this very test binary inside
// an emulated host (package kvmlab/emuhost, which the kvmlab command's
// --emulated-host uses too): a Debian kernel under QEMU's software
// emulation, which emulates AMD SVM well enough for kvm_amd to load. The test
// output of the inner run streams out line by line, and its exit status is
// this binary's. So the same tests run on /dev/kvm directly wherever it
// exists (a laptop, a nested-virtualisation CI runner), and through the
// emulated host everywhere else, and never skip for lack of KVM.
//
// Beside the AMD host, a second emulated host runs small groups of the same
// tests (intelGroups) on Intel VT-x: Bochs emulating a Haswell Core i7, with
// kvm_intel loaded (emuhost.BochsVMX), on its defaults, with
// unrestricted_guest=0 and with ept=0. The two run at the same time; the
// Intel host's lines carry an "intel| " prefix, and once the AMD groups are
// done a second Intel host takes the Intel groups not yet started, its lines
// prefixed "intel2| ". KVMLAB_EMULATED_CPU=intel with -run sends a selection
// of tests to the Intel host; KVMLAB_HOST_APPEND adds words to the host
// kernel's command line (kvm_intel.ept=0, for instance).
//
// Inputs (set by 'make integration'):
//
//	KVMLAB_BIN        the kvmlab binary (statically linked)
//	KVMLAB_GUEST_DIR  the default guest: bzImage, initramfs.cpio
package tests
