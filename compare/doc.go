// Package compare runs one userland two ways, as a virtual machine and as a
// container, and measures the claims people read about the two.
//
// The claims (docs/isolation.md explains each row of the report):
//
//   - a VM runs its own kernel, a container shares the host's: the probe
//     reads uname(2), the boot id (/proc/sys/kernel/random/boot_id, made up
//     afresh by every kernel as it boots) and the kernel's uptime, and
//     compares them with the host's;
//   - a VM sees virtual hardware: the CPUID hypervisor bit, and only the vCPUs
//     and RAM the VMM gave it;
//   - VMs boot in minutes, containers in seconds: the time from starting a
//     side to the probe's first line;
//   - VMs are gigabytes, containers megabytes: the memory each side used (the
//     VMM's resident set, or the cgroup's peak) and what had to be on disk;
//   - isolation: how many processes, mounts, interfaces, devices and kernel
//     modules the workload can see, and whether it can read the kernel log;
//   - the boundary: how often the workload crossed it, counted as VM exits
//     (KVM's statistics, and the part kvmlab handled in user space) or as
//     system calls into the host kernel (ptrace);
//   - more instances per server (--density, density.go): N VMs, each a
//     `kvmlab run` process of its own, and N containers started at once,
//     the time until all N are up and their memory as PSS (shared pages
//     split among the processes that map them);
//   - application speed (--workload, workload.go): the same small programs
//     (CPU, system calls, fork+exec, file I/O, page faults) timed on the
//     host, in the VM and in the containers, as ratios to the host;
//   - a container inside a VM (--nested, nested.go and nested_guest.go):
//     the guest, booted with this kvmlab binary appended to its initramfs
//     as a second cpio archive, runs `kvmlab container` with the probe on
//     its own kernel; the probe sees the guest's kernel and boot id, and
//     the guest kernel then panics under the running container while the
//     host carries on;
//   - the blast radius: the VM's guest panics its own kernel through sysrq
//     and the host's boot id does not change; the container cannot even open
//     /proc/sysrq-trigger for writing, because its runtime mounted it
//     read-only (without that mount, a container's root could crash the host).
//
// # The same userland, the same probe
//
// The VM is the kvmlab guest booted in this process (package vmm) with
// kvmlab.run=kvmlab-probe on its command line; its init (guest/uinit) prints
// [ProbeStart], runs /bin/kvmlab-probe (package guest/probe) and the probe
// prints one line starting with [ProbeMarker]. The container is the same
// initramfs unpacked into a directory and run by package container (and by
// runc, when installed, as an OCI bundle) with /bin/kvmlab-probe as its
// workload. Only the kernel under the userland differs, so the differences
// the report shows come from the isolation, not from the programs.
//
// # Where it runs
//
// [Here] runs both sides on this machine's KVM and kernel; it needs root
// (namespaces, cgroups). A Linux guest needs hardware virtualisation (VT-x or
// AMD SVM) behind /dev/kvm; without it, [InEmulatedHost] carries this kvmlab
// binary and the guest into the emulated host (QEMU TCG emulating AMD SVM,
// nested KVM inside) and runs `kvmlab compare --in-emulated-host` there
// ([Where] chooses, and [CheckDensityWhere] counts the memory of where the
// VMs will run). That
// inner run prints its [Report] as one line after [ReportMarker]
// ([Report.WriteMarked]); the outer run reads it back and renders it, as a
// table ([Report.Print]), JSON, or a self-contained HTML page with bar charts
// ([Report.WriteHTML]).
//
// # Nothing left behind
//
// Options.Ctx ends a comparison early (the command cancels it on Ctrl-C and
// SIGTERM): every VM and container it started is stopped and waited for,
// and its temporary directories are removed, before Here returns
// ErrInterrupted. After the density and workload runs, Here looks for
// anything of them still there (processes below it, cgroups and temporary
// roots named after it, new network interfaces) and reports what it finds.
//
// The package measures and renders; the command (cmd/kvmlab) parses flags,
// checks the user's files and privileges, and prints.
package compare
