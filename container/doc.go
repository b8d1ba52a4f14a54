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
//	unpack the initramfs into a temp dir
//	create the cgroup, write the limits
//	clone(NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET) --> blocks reading the sync pipe
//	write init's PID into cgroup.procs
//	send the config, close the pipe ---------> private mounts, bind the root,
//	                                           /proc /dev /sys /tmp, parts of /proc
//	                                           read-only, pivot_root,
//	                                           hostname, loopback up,
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
// the two can be compared.
//
// # What this is not
//
// This runtime is for learning and measuring, not a security boundary. Run as
// root it does not use a user namespace, so the container's root is the
// host's root: it keeps every capability (enough to undo the read-only
// mounts over /proc/sys and /proc/sysrq-trigger), no seccomp filter limits
// its system calls, and a kernel bug reachable from any system call reaches
// the host. Production runtimes add all of those layers; a VM replaces them
// with a much smaller interface, the virtual hardware.
//
// # Measuring the boundary
//
// With [Config.CountSyscalls], init traces the workload with ptrace(2) and
// counts every system call it and its descendants make into the host's
// kernel ([Result.Syscalls]): the container's counterpart of a VM's exits.
// [TrySysrqCrash] shows what stops a container from crashing the host's
// kernel through /proc/sysrq-trigger, without ever writing to it.
package container
