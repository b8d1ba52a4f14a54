// Package emuhost runs a command inside an emulated host: a whole machine
// emulated in software whose CPU offers a virtualization extension (Intel
// VT-x or AMD SVM), so that Linux's KVM loads inside it and gives the
// command a real /dev/kvm on a machine that has none.
//
// # The problem
//
// kvmlab is a hypervisor: it opens /dev/kvm and asks the Linux kernel to run
// guest code on the CPU's virtualization extensions (Intel VT-x or AMD SVM).
// Many machines have no /dev/kvm at all (developer containers, CI runners,
// cloud VMs without nested virtualization), or one that cannot boot Linux
// (kvm_pvm), so the code that matters most could not run there.
//
// # The idea
//
// An emulator can run a whole PC in software, with no help from the
// hardware, and an emulated CPU can offer the virtualization instructions
// too. Today that emulator is QEMU ([QEMUSVM]): its TCG ("tiny code
// generator") translates every guest instruction into host instructions,
// and with -cpu max the CPU it emulates advertises AMD's SVM extension
// (VMRUN, VMCB, nested page tables...), which QEMU emulates as well. So:
//
//	real machine (no KVM)
//	└── qemu-system-x86_64 -cpu max          (software emulation, TCG)
//	    └── Debian's Linux kernel, kvm_amd.ko loaded  ← the emulated host
//	        └── /dev/kvm works here!
//	            └── kvmlab, a test program, and the guest it boots
//
// Inside the emulated host, kvm_amd sees an AMD CPU with SVM, and when our
// code asks KVM to run a guest, KVM executes VMRUN, which QEMU emulates. That
// is real KVM with real VMCBs; only the CPU underneath is simulated. It is
// slow (everything runs interpreted-and-translated, maybe 10-50x slower than
// native), but it is faithful enough to test a hypervisor.
//
// QEMU's TCG does not emulate Intel's VMX, so the Intel host is a second
// [Emulator], [BochsVMX]: Bochs, an x86 interpreter, emulating a Haswell
// Core i7 with VT-x and EPT, in which kvm_intel loads. It boots the same
// kernel and the same initramfs (from a CD image, see bochs.go) and reports
// through the same console marker, with the same retry and diagnosis rules;
// it is several times slower than QEMU (one thread; about two minutes to
// boot, most of it decompressing the kernel). It has one CPU: Bochs's SMP
// (cpu: count=2) boots the host and runs 2-vCPU guests too, but costs about
// twice the time for the same work (see bochsConfig.bochsrc).
//
// Two users share this package: the integration tests in kvmlab/tests
// (TestMain re-runs the test binary inside the emulated host when this
// machine has no usable KVM), and the kvmlab command (run --emulated-host,
// bench and compare carry the kvmlab binary in and run it there).
//
// # What this package does
//
//   - [KVMUsable] tells whether the current machine already has a working
//     /dev/kvm (then no emulated host is needed).
//   - [HostKernel] fetches Debian's stock kernel package with apt-get, unpacks
//     it and caches the kernel image plus the modules the hosts load
//     ([KVMModules]: KVM's for both vendors, and tun). It also keeps
//     the kernel decompressed (vmlinux), which QEMU boots through the PVH
//     entry point: that skips the decompressor, which costs the emulated
//     CPU several seconds per boot.
//   - [CPIOWriter] writes the initramfs, a "newc" cpio archive, that becomes
//     the emulated host's root file system. u-root's pkg/cpio encodes the
//     records; CPIOWriter adds the parent directories, inode numbers and
//     reproducible metadata an initramfs built by a program needs.
//   - [Programs] lists the files that carry a host program (and the shared
//     libraries it loads) into the emulated host.
//   - The hostinit program (kvmlab/emuhost/hostinit) is PID 1 of the
//     emulated host: it mounts /proc, /sys, /dev, loads the modules, runs
//     the command with its output on the serial console, prints
//     "KVMLAB-HOST-EXIT <code>" and powers the emulated machine off.
//   - [Run] glues it together: it builds the initramfs, boots QEMU (or
//     Bochs), streams the serial console, parses the exit marker and
//     retries when the emulated host hangs (about 1 boot in 16 hangs early
//     under TCG) or its kernel crashes. With [Spec].Stdout and Stderr, the
//     command's two output streams leave the host on serial ports of their
//     own, apart from the console.
//   - [Exec] is `kvmlab run --emulated-host --exec CMD` (exec.go): the
//     inner kvmlab's --exec, with CMD's output and exit status passed on,
//     and the emulated host's own failures mapped to kvmlab's statuses.
//
// On a 2-core machine, one boot of the emulated host up to a usable
// /dev/kvm takes about 4-6 s of emulated time; QEMU's wall time for booting,
// running a small probe and powering off is 5-30 s depending on the load.
//
// Example:
//
//	res, err := emuhost.Run(ctx, emuhost.Spec{
//		Files: []emuhost.File{{HostPath: "/tmp/mytest", Path: "/bin/mytest"}},
//		Argv:  []string{"/bin/mytest", "-v"},
//		Output: os.Stderr,
//	})
//	// err: the emulated host could not run the command;
//	// res.ExitCode: the command's exit status.
package emuhost
