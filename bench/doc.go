// Package bench measures a VMM against its peers: kvmlab beside QEMU with
// KVM (-machine q35, the PC, and -machine microvm, the minimal machine) and
// gokvm (another VMM in Go), each booting the same kernel, initramfs and
// command line with the same RAM and one vCPU, interleaved so that the
// host's drift spreads over all of them. It is `kvmlab bench`
// (cmd/kvmlab parses the flags into a Config, Config.Check bounds them, and
// About is what --help tells); BENCHMARKS.md holds the figures and what was
// learned from them.
//
// Each peer is a separate program, started and watched from outside: its
// standard output is the guest's serial console, on which the guest
// (kvmlab-console in the kvmlab initramfs, guest/uinit) prints markers
// around what it does, so the host times each phase as it leaves the
// emulated UART, whichever VMM runs. At the markers the bench reads what
// the kernel knows of the VMM process: its resident set by kind of mapping
// (/proc/PID/smaps, package smaps; and, with --smaps, which ELF sections
// and Go packages of the executable are resident, from /proc/PID/pagemap),
// KVM's per-VM exit counters (debugfs), and the exits that reached the
// VMM's user space and the guest's port accesses (histograms on the
// kvm:kvm_userspace_exit and kvm:kvm_pio tracepoints, package tracepoint).
//
// Then the price of one exit, the exit loop: a guest of a few instructions
// (guest/tiny's PortLoopCode) writes a port N and 2N times under three
// loops that each time themselves: the floor the KVM API allows, a C
// program that is ioctl(KVM_RUN) and a switch (cfloor/exitfloor.c); the
// same loop in Go on kvmlab's KVM bindings (gofloor.go), which separates
// what any Go program pays for a system call from what kvmlab adds; and
// kvmlab's own vCPU loop. The difference between N and 2N divides out
// what is not the loop.
//
// With Config.IO it measures virtio instead (io.go): disk throughput and
// IOPS and network throughput under kvmlab, kvmlab without ioeventfd and
// irqfd, and QEMU, each with KVM's exits per MiB moved.
//
// Peers are never linked into kvmlab: QEMU comes from the host, and gokvm
// is built with `go install` at the version this package names
// (gokvmVersion) into kvmlab's cache. Where this host has no KVM that can
// boot Linux, EmulatedSpec carries the whole benchmark, peers included,
// into the emulated host (package emuhost) and runs it there: QEMU's,
// emulating AMD SVM, or with Config.Emulator = emuhost.BochsVMX Bochs's,
// emulating Intel VT-x. Bochs is an interpreter whose clock counts the
// instructions it executes, so times taken there are instruction counts:
// steady, comparable as ratios, and no measure of VT-x hardware's speed.
package bench

// runtimeReportEnv asks `kvmlab run` to print, at exit, how long its
// machine ran and its Go runtime's memory (cmd/kvmlab/observe.go, whose
// name for it this is): the exit loop reads the first, --smaps the second.
const runtimeReportEnv = "KVMLAB_RUNTIME_REPORT"
