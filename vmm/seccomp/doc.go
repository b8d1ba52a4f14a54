// Package seccomp confines a running VMM to the system calls it needs,
// with a seccomp-bpf filter (seccomp(2); the kernel's
// Documentation/userspace-api/seccomp_filter.rst).
//
// # Why a VMM confines itself
//
// A VMM runs code it does not trust from the moment the first vCPU enters
// the guest, and it parses what that code writes: every port and MMIO
// access, every virtio descriptor. A bug in that parsing is the guest's way
// into the VMM process, and from there into everything the process may do
// on the host: open files, make sockets, run programs, create more VMs.
// Most of that is needed only while the machine is built (open /dev/kvm and
// the disk images, create the VM and its vCPUs, map guest RAM, set up the
// TAPs); once the guest runs, a VMM reads and writes descriptors it already
// holds, enters KVM_RUN, and raises interrupts. A seccomp filter installed
// at that point makes the rest impossible for the life of the process.
// Firecracker ships one filter per thread kind (VMM, API, vCPU) and its
// tests check that a forbidden call is fatal; crosvm and Cloud Hypervisor
// do the same. kvmlab has one filter for every thread, because a Go program
// does not choose which thread runs which goroutine (see VMM).
//
// # How seccomp-bpf works
//
// A filter is a classic BPF program (the packet-filter language of
// tcpdump, Documentation/networking/filter.rst) that the kernel runs on
// every system call the thread makes, before the call. Its "packet" is a
// struct seccomp_data: the call number, the architecture (AUDIT_ARCH_*),
// the instruction pointer and the six arguments as numbers. The program
// returns an action: allow, fail with an errno, send SIGSYS (trap), notify
// a supervisor, or kill the thread or the process. It cannot dereference
// pointers, so it can allow ioctl with request KVM_RUN, but cannot allow
// "open, only of this path" (a path is a pointer, and the memory behind it
// could change after the check anyway).
//
// The architecture must be checked first: an x86-64 process can still make
// 32-bit calls through int 0x80, with a different numbering (number 5 is
// open there, fstat here), and x32 calls, numbered from 0x40000000. A
// filter that compared numbers without the architecture could be walked
// around. VMM kills the process on any architecture but x86-64, and its
// exact-number list never matches an x32 number.
//
// A filter is installed with seccomp(SECCOMP_SET_MODE_FILTER) and stays
// for the life of the thread and of everything it creates; more filters
// can be added, none removed. Two details matter for a Go program:
//
//   - no_new_privs (prctl PR_SET_NO_NEW_PRIVS) must be set first unless the
//     process has CAP_SYS_ADMIN, so that a filter can never make a set-uid
//     program misbehave with its raised privileges.
//   - A filter applies to the calling thread, but a Go program has many
//     threads, made by the runtime before the filter goes on. The flag
//     SECCOMP_FILTER_FLAG_TSYNC (Linux 3.17) installs it on every thread of
//     the process at once, and copies no_new_privs to them too. Threads
//     made later inherit it.
//
// # What a forbidden call does
//
// VMM's default action is SECCOMP_RET_TRAP: the call is not made and the
// thread gets SIGSYS, whose siginfo names the call. kvmlab's handler
// (sigsys_unsafe.go, sigsys_amd64.s) restores the terminal, prints one
// line, "kvmlab: seccomp: the VMM made a system call its filter forbids:
// socket (41) (arguments 0x2, 0x1, ...); stopped. Rerun with
// --seccomp=false ...", and ends the process with status 159 (128 +
// SIGSYS). Only the VMM process stops: the guest with it, nothing else on
// the host. The alternative, SECCOMP_RET_KILL_PROCESS, kills at once and
// leaves only an audit record (dmesg: "audit: type=1326 ... syscall=41"),
// a raw terminal and a shell's "Bad system call": right for a production
// VMM, too silent for a learner's. A call from the wrong architecture gets
// it, since there is nothing useful to report about it.
//
// A trap needs the signal to be deliverable. A call made while the thread
// blocks SIGSYS (a new thread's first instructions, run with every signal
// blocked; a signal handler) is killed by the kernel's default action
// instead, with no message: such calls must be on the list, and the tests
// start threads under the filter to catch them.
//
// # Why the program is written here
//
// A filter library earns its keep when a policy compares many arguments,
// spans architectures, or needs a binary search over hundreds of rules
// (libseccomp; elastic/go-seccomp-bpf in pure Go). Neither is among
// kvmlab's allowed dependencies (libseccomp also needs cgo), and kvmlab's
// program is one architecture check and a list: Filter.Assemble writes it
// in a few dozen lines over x/sys/unix's SockFilter and BPF_* constants,
// and the tests run the program through a small BPF interpreter and
// through the kernel. The names of the calls in the messages come from a
// maintained table, u-root's strace package.
//
// # What a running kvmlab may call
//
// VMMRules is the list, grouped by who needs each call. It was found by
// reading what runs after set-up (the vCPU loop, devices, the console,
// snapshots, --stats, the trace writers, the memory trimmer), checked with
// strace -f of runs, and is exercised by every boot of the integration
// suite, where a missing call would stop the VMM with its name. Files a running VMM reads are opened
// before the filter: the kernel's System.map for SIGUSR1 snapshots and
// /proc/self/statm and /proc/self/status for --stats stay open and are
// read again with pread; /proc/self/smaps is read once, by the trimmer,
// before. open and openat are refused, as are socket, execve, fork (clone
// without CLONE_THREAD), and every KVM ioctl that builds a machine
// (KVM_CREATE_VM, KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION...). Two
// exceptions: a kvmlab built with cgo refuses openat with EACCES rather
// than a trap, because glibc opens a file of its own where a trap cannot
// be reported (VMMRules); and --kvm-exit-tracepoint, which reads tracefs
// while the guest runs, goes without the filter (cmd/kvmlab confine). The
// sockets of --control and --gdb, listening before the filter, add the few
// calls that serve them (ControlSocketRules, GDBSocketRules).
package seccomp
