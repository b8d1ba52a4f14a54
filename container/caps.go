package container

// Capabilities (capabilities(7)) split what "root" may do into about 40
// separate privileges: CAP_SYS_ADMIN to mount, CAP_SYS_MODULE to load kernel
// modules, CAP_MKNOD to create device nodes, and so on. Without a user
// namespace the container's root is the host's root, and the kernel checks
// these bits, not the user ID, before it lets a process reach past the
// namespaces. So a runtime keeps only the few that ordinary programs need.
//
// Every thread has five sets (capabilities(7), "Thread capability sets"):
//
//   - effective: what the kernel checks now;
//   - permitted: the most the thread can make effective again;
//   - inheritable: what may pass to a program through execve(2) when the
//     file also carries it as an inheritable file capability;
//   - bounding: the most any program run from now on can ever get, file
//     capabilities or set-user-ID root included; bits can only be dropped
//     (prctl(2) PR_CAPBSET_DROP, which needs CAP_SETPCAP);
//   - ambient: capabilities kept across execve(2) of a program that has no
//     file capabilities.
//
// For root, execve(2) gives the new program permitted = inheritable |
// bounding (a root program is treated as if its file had every
// capability), so shrinking the bounding set is what really limits the
// workload; the other sets are cleared or shrunk so nothing is left over.
// PR_SET_NO_NEW_PRIVS (prctl(2), and the kernel's
// Documentation/userspace-api/no_new_privs.rst) then makes execve(2) unable
// to grant anything more: set-user-ID and set-group-ID bits and file
// capabilities are ignored from then on, for the workload and everything
// it starts. It cannot be unset.
//
// All five sets and no_new_privs belong to a thread, not to a process. Init
// is a Go program with several threads, so it drops them on one thread,
// locked to its goroutine, and starts the workload from that thread (the
// child is a copy of the calling thread): init's other threads keep theirs,
// and need none of them once the workload runs (they wait, reap and forward
// signals). The workload cannot borrow them: ptrace(2) on a process with
// capabilities the tracer lacks needs CAP_SYS_PTRACE.

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// workloadCaps are the capabilities the workload keeps, in its effective
// and permitted sets and in the bounding set: what a root user's everyday
// programs use, and nothing that reaches past the container.
//
// This is Docker's default set (the 14 of moby's oci/caps/defaults.go)
// minus six; `runc spec` writes a smaller one still (CAP_AUDIT_WRITE,
// CAP_KILL, CAP_NET_BIND_SERVICE), meant for a workload that never needs
// to act as root on files. The six left out of Docker's:
//
//   - CAP_MKNOD: this runtime sets no device cgroup rules and /dev is a
//     tmpfs without nodev, so a device node made there would open the
//     host's disks. The runtime creates the devices the container gets.
//   - CAP_NET_RAW: raw and packet sockets (forged packets, and a long list
//     of kernel bugs); the network namespace has only lo anyway.
//   - CAP_SYS_CHROOT: where pivot_root(2) cannot be used (a host running
//     from an initramfs, see changeRoot) the old root is still mounted
//     under the new one, and chroot(2) is the classic way back to it.
//   - CAP_SETPCAP, CAP_SETFCAP: change capability sets and set file
//     capabilities; nothing in the container needs them, and with
//     no_new_privs file capabilities do nothing anyway.
//   - CAP_AUDIT_WRITE: write to the host's audit log.
//
// The inheritable and ambient sets are left empty, as runc does since
// CVE-2022-29162 (an inheritable set handed to non-root programs with
// inheritable file capabilities gave them capabilities they should not
// have had).
var workloadCaps = []int{
	unix.CAP_CHOWN,            // chown files in the container's root
	unix.CAP_DAC_OVERRIDE,     // root reads and writes files regardless of mode
	unix.CAP_FOWNER,           // chmod, utime on files root does not own
	unix.CAP_FSETID,           // keep set-ID bits when writing (cp -p, tar)
	unix.CAP_KILL,             // signal the container's processes of any user
	unix.CAP_SETGID,           // become another group (su, login, daemons)
	unix.CAP_SETUID,           // become another user
	unix.CAP_NET_BIND_SERVICE, // listen on ports below 1024
}

// capNames names the capabilities of workloadCaps, for the docs, tests and
// OCI config ("CAP_CHOWN", ...).
var capNames = map[int]string{
	unix.CAP_CHOWN: "CAP_CHOWN", unix.CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE", unix.CAP_FOWNER: "CAP_FOWNER",
	unix.CAP_FSETID: "CAP_FSETID", unix.CAP_KILL: "CAP_KILL", unix.CAP_SETGID: "CAP_SETGID",
	unix.CAP_SETUID: "CAP_SETUID", unix.CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
}

// WorkloadCapabilities names the capabilities the workload keeps
// ("CAP_CHOWN", ...), in the order of capabilities(7).
func WorkloadCapabilities() []string {
	var names []string
	for _, c := range workloadCaps {
		names = append(names, capNames[c])
	}
	return names
}

// workloadCapMask is workloadCaps as a bit mask, bit N for capability N:
// the form of /proc/PID/status's CapEff and CapBnd lines.
func workloadCapMask() uint64 {
	var m uint64
	for _, c := range workloadCaps {
		m |= 1 << c
	}
	return m
}

// restrictThread reduces the calling thread's privileges to what the
// workload gets: bounding set, ambient set, then effective, permitted and
// inheritable sets, then no_new_privs. The order matters: dropping from the
// bounding set needs CAP_SETPCAP, which the capset(2) call removes. The
// caller must have locked its goroutine to the thread and must start the
// workload from it.
func restrictThread() error {
	keep := workloadCapMask()
	// The kernel knows capabilities 0 to cap_last_cap; PR_CAPBSET_READ
	// fails with EINVAL past the last, which is how we find it without
	// reading /proc/sys/kernel/cap_last_cap.
	for c := 0; c < 64; c++ {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break
			}
			return fmt.Errorf("capabilities: read bounding set: %w", err)
		}
		if keep&(1<<c) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("capabilities: drop capability %d from the bounding set: %w", c, err)
		}
	}
	// Ambient capabilities exist since Linux 4.3; before, there are none
	// to clear (EINVAL).
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("capabilities: clear the ambient set: %w", err)
	}
	// Version 3 of the capget/capset interface takes two 32-bit halves
	// of each 64-bit set; Pid 0 means the calling thread.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		half := uint32(keep >> (32 * i))
		data[i] = unix.CapUserData{Effective: half, Permitted: half, Inheritable: 0}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capabilities: capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}

// formatCaps writes a mask as capability names, "CAP_CHOWN,CAP_KILL".
func formatCaps(m uint64) string {
	var names []string
	for c := 0; c < 64; c++ {
		if m&(1<<c) == 0 {
			continue
		}
		if n, ok := capNames[c]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("cap_%d", c))
		}
	}
	return strings.Join(names, ",")
}
