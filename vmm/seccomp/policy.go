package seccomp

import (
	"golang.org/x/sys/unix"

	"kvmlab/vmm/kvm"
)

// VMM is the filter `kvmlab run` and `kvmlab step` install once the
// machine is built: every thread of the process (vCPUs, the device and
// console goroutines' threads, the Go runtime's own) may make these calls
// and no other. The list was found by reading what each part does after
// set-up, checked against strace -f of kvmlab runs of tiny guests (with
// --stats, --trace, --rng, SIGUSR1 snapshots, SIGTERM), and by the
// integration suite's Linux boots, which all run under it: a call missing
// here shows up at once as the SIGSYS message, naming it.
//
// One filter for every thread, where Firecracker has one per thread kind:
// a Go program does not choose which OS thread runs a goroutine (only the
// vCPU goroutines are locked to theirs), so the device code, the console
// and the runtime may run on any thread, and a per-thread filter would
// have to allow the union anyway.
func VMM() Filter {
	return Filter{Arch: unix.AUDIT_ARCH_X86_64, Rules: VMMRules(), Default: Trap, BadArch: KillProcess}
}

// VMMRules is the allow-list of VMM, grouped by who needs each call.
func VMMRules() []Rule {
	var ioctls []uint32
	for _, i := range kvm.RunningIoctls() {
		ioctls = append(ioctls, i.Request)
	}
	// The console: x/term restores the terminal with TCSETS when the
	// guest stops (and IsTerminal is TCGETS), and waits with TCSBRK
	// (tcdrain) for its last output to leave a slow terminal before it
	// exits (rawterm.Drain). Every TUNSET* of the TAP devices happens
	// while the machine is built, so none is here.
	ioctls = append(ioctls, unix.TCGETS, unix.TCSETS, unix.TCSBRK)

	plain := func(name string, nr uintptr) Rule { return Rule{Name: name, Nr: uint32(nr)} }
	var libc []Rule
	if cgoBuild {
		// glibc's malloc, on a new thread's first free, may count the
		// CPUs by opening /sys/devices/system/cpu/online, with every
		// signal blocked: a trap there kills without a word. Refused
		// with EACCES instead, glibc asks sched_getaffinity. Only in a
		// cgo build: in a static one, openat traps like any other call.
		libc = append(libc, Rule{Name: "openat", Nr: unix.SYS_OPENAT, Errno: unix.EACCES})
	}
	return append(libc, []Rule{
		// The vCPU loop, the interrupt lines, MSI-X, snapshots, the
		// stepper: KVM ioctls by request (vmm/kvm RunningIoctls).
		{Name: "ioctl", Nr: unix.SYS_IOCTL, Arg: 1, Values: ioctls},

		// Files and descriptors opened before the filter: the console
		// (stdin, stdout, stderr), disk images (preadv, pwritev,
		// fdatasync), TAP devices, eventfds, the trace file, KVM's
		// statistics files and the /proc/self files read with pread.
		plain("read", unix.SYS_READ),
		plain("write", unix.SYS_WRITE),
		plain("pread64", unix.SYS_PREAD64),
		plain("preadv", unix.SYS_PREADV),
		plain("pwritev", unix.SYS_PWRITEV),
		plain("fdatasync", unix.SYS_FDATASYNC),
		plain("fsync", unix.SYS_FSYNC),
		plain("lseek", unix.SYS_LSEEK),
		plain("fstat", unix.SYS_FSTAT),
		plain("fcntl", unix.SYS_FCNTL),
		plain("close", unix.SYS_CLOSE),
		// A virtio queue's doorbell and interrupt eventfds are made
		// when the guest's driver enables the queue, long after set-up.
		plain("eventfd2", unix.SYS_EVENTFD2),
		// virtio-rng's entropy, and the Go runtime's.
		plain("getrandom", unix.SYS_GETRANDOM),
		// Guest RAM residency for --stats.
		plain("mincore", unix.SYS_MINCORE),

		// The Go runtime: memory, threads, scheduling, timers, the
		// network poller (which also waits on TAPs and eventfds).
		plain("mmap", unix.SYS_MMAP),
		plain("munmap", unix.SYS_MUNMAP),
		plain("madvise", unix.SYS_MADVISE), // also kvmlab's image trimmer
		plain("futex", unix.SYS_FUTEX),
		{Name: "clone", Nr: unix.SYS_CLONE, Arg: 0, AllBits: unix.CLONE_THREAD},
		// A kvmlab built with cgo (plain go build; make build sets
		// CGO_ENABLED=0) makes threads with glibc's pthread_create:
		// clone3 first, which the filter cannot judge (its flags are
		// behind a pointer), so it fails with ENOSYS and glibc falls
		// back to clone; the new thread registers itself with rseq and
		// set_robust_list; mprotect sets up its stack. These run with
		// every signal blocked, where a trap cannot be reported: the
		// kernel kills the process with a plain "Bad system call".
		{Name: "clone3", Nr: unix.SYS_CLONE3, Errno: unix.ENOSYS},
		plain("rseq", unix.SYS_RSEQ),
		plain("set_robust_list", unix.SYS_SET_ROBUST_LIST),
		{Name: "mprotect", Nr: unix.SYS_MPROTECT, Arg: 2, NoBits: unix.PROT_EXEC},
		plain("exit", unix.SYS_EXIT),
		plain("exit_group", unix.SYS_EXIT_GROUP),
		plain("gettid", unix.SYS_GETTID),
		plain("getpid", unix.SYS_GETPID),
		plain("tgkill", unix.SYS_TGKILL), // preemption; kvmlab's vCPU kicks
		plain("rt_sigaction", unix.SYS_RT_SIGACTION),
		plain("rt_sigprocmask", unix.SYS_RT_SIGPROCMASK),
		plain("rt_sigreturn", unix.SYS_RT_SIGRETURN),
		plain("sigaltstack", unix.SYS_SIGALTSTACK),
		plain("restart_syscall", unix.SYS_RESTART_SYSCALL),
		plain("sched_yield", unix.SYS_SCHED_YIELD),
		plain("sched_getaffinity", unix.SYS_SCHED_GETAFFINITY), // GOMAXPROCS updates, every second
		plain("nanosleep", unix.SYS_NANOSLEEP),
		plain("clock_gettime", unix.SYS_CLOCK_GETTIME), // when the vDSO cannot
		plain("epoll_pwait", unix.SYS_EPOLL_PWAIT),
		plain("epoll_ctl", unix.SYS_EPOLL_CTL),
	}...)
}

// ControlSocketRules are the calls kvmlab run --control adds to VMM: the
// control socket (package vmm/control) is created and listening before
// the filter, so the running VMM only accepts clients (accept4, and
// getsockname, which Go's net package calls on every accepted
// connection), reads them with recvmsg and writes them (write, close and the poller's
// epoll calls are in VMM already) and, when it stops, removes the socket
// file: unlinkat on dirfd, the socket's directory opened beforehand,
// and on no other directory. A compromised VMM could unlink other names
// in that one directory, not anywhere else.
func ControlSocketRules(dirfd int) []Rule {
	return []Rule{
		{Name: "accept4", Nr: unix.SYS_ACCEPT4},
		{Name: "getsockname", Nr: unix.SYS_GETSOCKNAME},
		// Requests are read with recvmsg: a snapshot request brings the
		// descriptor of the file to write (SCM_RIGHTS), which the
		// client created, since the VMM may open none.
		{Name: "recvmsg", Nr: unix.SYS_RECVMSG},
		{Name: "unlinkat", Nr: unix.SYS_UNLINKAT, Arg: 0, Values: []uint32{uint32(dirfd)}},
	}
}

// GDBSocketRules are the calls kvmlab run --gdb adds to VMM: the running
// VMM serves a debugger (package vmm/gdbstub) on a socket that was
// listening before the filter, so it needs accept4, getsockname (Go's net
// package calls it on each accepted connection), setsockopt (TCP_NODELAY
// on it) and getpeername.
func GDBSocketRules() []Rule {
	return []Rule{
		{Name: "accept4", Nr: unix.SYS_ACCEPT4},
		{Name: "getsockname", Nr: unix.SYS_GETSOCKNAME},
		{Name: "setsockopt", Nr: unix.SYS_SETSOCKOPT},
		{Name: "getpeername", Nr: unix.SYS_GETPEERNAME},
	}
}
