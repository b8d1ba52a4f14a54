// Package probe is the isolation probe: a small program that reports what a
// process can see of the machine it runs on, so the same binary can be run
// as a virtual machine's guest program and as a container's workload and the
// two reports laid side by side (kvmlab compare, docs/isolation.md).
//
// Every fact in a Report is chosen because it answers one question: whose
// kernel is serving me, and how much of the rest of the system can I see?
//
// # Which kernel?
//
// A VM runs its own kernel; a container's processes make their system calls
// to the host's kernel. So the facts that belong to a kernel instance tell
// the two apart at once:
//
//   - uname(2)'s release and version are compiled into the kernel. A VM
//     reports the guest kernel's, which need not even be one the host could
//     run; a container reports the host's, because there is no other kernel
//     to ask. (A UTS namespace changes only the hostname and domain name, not
//     the release.)
//   - /proc/sys/kernel/random/boot_id is a random UUID each kernel makes up
//     when it boots. Equal boot ids mean the same running kernel.
//   - /proc/uptime counts from that kernel's boot: seconds in a fresh VM,
//     the host's days in a container. CLOCK_MONOTONIC, which the probe also
//     records, counts from the same origin.
//
// # Which hardware?
//
// A hypervisor sets bit 31 of ECX in CPUID leaf 1, which Linux shows as the
// "hypervisor" flag in /proc/cpuinfo (no real CPU sets it). A guest also sees
// only the vCPUs and RAM its VMM gave it. A container sees the host's CPUs
// and all of its RAM in /proc/meminfo: a cgroup limits what it may use, not
// what it can see. The probe counts the CPUs in its affinity mask
// (sched_getaffinity(2)), the CPUs it may actually run on.
//
// # What does a namespace hide?
//
// Namespaces are the kernel's way of giving one process a private view of a
// shared resource:
//
//   - a PID namespace: /proc lists only the namespace's processes, and the
//     first one started in it is its PID 1 (the probe reads /proc/1/comm to
//     see who that is);
//   - a mount namespace: /proc/self/mountinfo lists only the namespace's
//     mounts, which, after pivot_root and detaching the old root, are just
//     the container's own;
//   - a network namespace: /sys/class/net shows only the namespace's
//     interfaces, at first just lo;
//   - a cgroup namespace: /proc/self/cgroup shows paths relative to the
//     namespace's root, so "0::/" whatever the real path is on the host.
//
// In a VM all of these are naturally private, because the host's processes,
// mounts and interfaces live in another kernel altogether.
//
// # What do they not hide?
//
// Much of the kernel is shared by every namespace, and these facts show it:
//
//   - /proc/modules lists the kernel's loaded modules to anyone; a container
//     lists the host's. (The kvmlab guest kernel is built without module
//     support, so it has no /proc/modules at all: Modules is -1.)
//   - syslog(2) reads the kernel's log ring, the same one dmesg prints. From
//     a container that is the host's log, readable unless the process lacks
//     CAP_SYSLOG or kernel.dmesg_restrict forbids it. The probe reports
//     whether the read was allowed and how many lines came back.
//   - /proc/sysrq-trigger makes the kernel act at once on one letter: "c"
//     crashes it, "b" reboots it. From a container that is the host's kernel
//     and every container on it. The probe only opens the file for writing,
//     to learn whether it could, and closes it again: it never writes to it.
//     Container runtimes mount it read-only for exactly this reason.
//   - /dev: a container gets a handful of the host's device nodes; a VM's
//     /dev lists the virtual devices of its own kernel.
//
// # The workload
//
// After the facts, the probe runs a small fixed job so that both sides do
// the same work: it writes, reads back and removes 32 files of 16 KiB and
// starts 8 short-lived copies of itself. On the host kvmlab counts what
// that costs: system calls into the host kernel for a container, VM exits
// for a VM.
//
// # Reading hostile input
//
// The probe parses text that whoever controls the machine can shape: a
// container's /proc may be a bind-mounted file, a guest may be compromised.
// The parsers read line by line with bounded buffers, clip every string they
// keep, ignore what they cannot parse and report it, and never panic; they
// are fuzzed (go test -fuzz).
package probe
