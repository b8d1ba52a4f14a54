// Package harness runs kvmlab's integration tests on machines that have no
// /dev/kvm, by booting an "emulated host" first.
//
// # The problem
//
// kvmlab is a hypervisor: it opens /dev/kvm and asks the Linux kernel to run
// guest code on the CPU's virtualization extensions (Intel VT-x or AMD SVM).
// The machines that run our tests (developer containers and CI) have no
// /dev/kvm at all, so the code that matters most could never be exercised.
//
// # The idea
//
// QEMU can run a whole PC in software, with no help from the hardware: its
// TCG ("tiny code generator") translates every guest instruction into host
// instructions. What TCG emulates is an x86 CPU, and with -cpu max that CPU
// advertises AMD's SVM extension (VMRUN, VMCB, nested page tables...). QEMU
// emulates those instructions too. So:
//
//	real machine (no KVM)
//	└── qemu-system-x86_64 -cpu max          (software emulation, TCG)
//	    └── Debian's Linux kernel, kvm_amd.ko loaded  ← the "emulated host"
//	        └── /dev/kvm works here!
//	            └── kvmlab, the test program, and the guest it boots
//
// Inside the emulated host, kvm_amd sees an AMD CPU with SVM, and when our
// code asks KVM to run a guest, KVM executes VMRUN, which QEMU emulates. That
// is real KVM with real VMCBs; only the CPU underneath is simulated. It is
// slow (everything runs interpreted-and-translated, maybe 10-50x slower than
// native), but it is faithful enough to test a hypervisor.
//
// # What this package does
//
//   - [KVMUsable] tells whether the current machine already has a working
//     /dev/kvm (then no emulated host is needed).
//   - [HostKernel] fetches Debian's stock kernel package with apt-get, unpacks
//     it and caches the kernel image plus the modules it loads (KVM's and tun)
//     (irqbypass, ccp, kvm, kvm-amd; loaded in that order). It also keeps
//     the kernel decompressed (vmlinux), which QEMU boots through the PVH
//     entry point: that skips the decompressor, which costs the emulated
//     CPU several seconds per boot.
//   - [CPIOWriter] writes the initramfs, a "newc" cpio archive, that becomes
//     the emulated host's root file system.
//   - The hostinit program (tests/harness/hostinit) is PID 1 of the emulated
//     host: it mounts /proc, /sys, /dev, loads the modules, runs the test
//     command with its output on the serial console, prints
//     "KVMLAB-HOST-EXIT <code>" and powers the emulated machine off.
//   - [Run] glues it together: it builds the initramfs, boots QEMU, streams
//     the serial console, parses the exit marker and retries once when the
//     emulated host hangs (about 1 boot in 16 hangs early under TCG) or
//     crashes before /init runs.
//
// On a 2-core machine, one boot of the emulated host up to a usable
// /dev/kvm takes about 4-6 s of emulated time; QEMU's wall time for booting,
// running a small probe and powering off is 5-30 s depending on the load.
//
// Example:
//
//	res, err := harness.Run(ctx, harness.Spec{
//		Files: []harness.File{{HostPath: "/tmp/mytest", Path: "/bin/mytest"}},
//		Argv:  []string{"/bin/mytest", "-v"},
//		Output: os.Stderr,
//	})
//	// err: the harness failed; res.ExitCode: the command's exit status.
package harness
