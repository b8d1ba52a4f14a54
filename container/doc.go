// Package container runs a command the way a container runtime does: as an
// ordinary process on the host's own kernel, made to see less and to use less.
//
// A virtual machine (package vmm) gives its guest a kernel of its own on
// emulated hardware. A container gives its process nothing new: the kernel is
// the host's, every system call goes straight to it, and the isolation comes
// from three kernel features applied to one tree of processes:
//
//   - namespaces (namespaces(7)) change what the processes can name: their own
//     PID numbers, mount table, hostname, System V IPC objects, network
//     devices and view of the cgroup tree;
//   - a different root directory (pivot_root(2)) changes which files "/"
//     means: here the same u-root file system the kvmlab guest boots;
//   - control groups (cgroups(7), and the kernel's
//     Documentation/admin-guide/cgroup-v2.rst) limit how much memory, CPU
//     time and how many tasks the processes may use, and count what they did
//     use.
//
// # Two programs in one binary
//
// The parent ([Start]) prepares what must exist before the container does,
// then re-executes its own binary with the argument [InitCommand] and clone
// flags asking for new namespaces. That second process runs [Init]: it is PID 1
// of the new PID namespace, builds the container's mount table, moves into the
// new root, sets the hostname, starts the workload and reaps processes until
// the workload ends.
//
//	parent, on the host                     init, PID 1 in the container
//	-------------------                     ----------------------------
//	sweep what dead kvmlab processes left
//	unpack the initramfs into a temp dir
//	create the cgroup, write the limits
//	clone(NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET
//	      [|NEWUSER, uid_map, gid_map]) ---> blocks reading the sync pipe
//	write init's PID into cgroup.procs
//	send the config, close the pipe ---------> private mounts, bind the root,
//	                                           /proc /dev /sys /tmp, parts of /proc
//	                                           read-only, pivot_root,
//	                                           hostname, loopback up; on one
//	                                           thread: new cgroup namespace,
//	                                           drop capabilities, no_new_privs,
//	                                           start the workload (under ptrace
//	                                           with Config.CountSyscalls)
//	                                <--------- "started"
//	                                           reap children, forward signals
//	                                <--------- "syscalls {...}" if counted,
//	                                           "exit CODE SIGNAL", init exits
//	read memory peak and OOM kills,
//	kill leftovers, remove the cgroup
//	and the temp dir
//
// A program using this package must call [Init] when its first argument is
// [InitCommand]: kvmlab's main does, and so does this package's TestMain.
//
// [RunRunc] runs the same workload through runc, the reference OCI runtime,
// from a bundle whose config.json this package writes ([WriteBundle]), so that
// the two can be compared. [Foreground] and [ForegroundRunc] run either as a
// shell runs its foreground job.
//
// [Options] is a container as a user asks for it (`kvmlab container`'s
// flags, [About]): its Config method refuses, in one line, limits the
// container's init could not live under, a hostname sethostname(2) would
// refuse, or an ID range that maps host root.
//
// # Confinement
//
// Beyond the namespaces and the new root, the workload runs with eight
// capabilities of root's forty-odd (caps.go: Docker's default set less
// those that reach past this runtime's other layers) and no_new_privs, so
// that no set-user-ID program gives more back; under a memory and a task
// limit by default (Limits, DefaultMemory, DefaultPids), so that a fork
// bomb or a runaway allocation stays in its cgroup; optionally in a user
// namespace (Config.UserNS, userns.go), where its root is an unprivileged
// host user, which is also how the runtime works without root. Each start
// sweeps the temporary roots and cgroups of kvmlab processes that died
// without cleaning up ([Sweep]).
//
// # What this is not
//
// This runtime is for learning and measuring, not a hardened security
// boundary. Without --userns, run as root, the container's root is the
// host's user 0: the capabilities it keeps (CAP_DAC_OVERRIDE, CAP_SETUID,
// CAP_CHOWN...) apply to every host file it can reach, and a mistake in
// what it can reach is the host's. No seccomp filter limits its system
// calls, so a kernel bug reachable from any of the ~350 system calls
// reaches the host; no LSM (AppArmor, SELinux) profile confines it; many
// host-wide files in /proc and /sys stay readable (only /proc/sys,
// /proc/sysrq-trigger, /proc/irq and /proc/bus are covered, read-only);
// no rlimits, no device cgroup rules, no I/O limits. Init, PID 1 in the
// container, keeps its own capabilities (on its other threads) for its
// short life. docs/container.md lists what runc does beyond this. A VM
// replaces all of those layers with a much smaller interface, the virtual
// hardware.
//
// # Measuring the boundary
//
// With [Config.CountSyscalls], init traces the workload with ptrace(2) and
// counts every system call it and its descendants make into the host's
// kernel ([Result.Syscalls]): the container's counterpart of a VM's exits.
// [TrySysrqCrash] shows what stops a container from crashing the host's
// kernel through /proc/sysrq-trigger, without ever writing to it.
package container
