// Package gdbstub lets GDB debug a kvmlab guest: `kvmlab run --gdb ADDR`
// listens for one debugger at a time speaking the GDB Remote Serial
// Protocol (the GDB manual, Appendix E "GDB Remote Serial Protocol":
// E.1 Overview for the framing, E.2 Packets, E.3 Stop Reply Packets,
// E.4 General Query Packets, E.8 Interrupts, E.11 Packet Acknowledgment,
// and G.2 "Target Description Format" for the register description).
//
// The protocol is old and small. Every message is a packet,
//
//	$<data>#<checksum>
//
// where the checksum is the sum of the data bytes modulo 256 in two hex
// digits, and the receiver answers + (received) or - (send it again). In
// the data, the bytes $ # } and * are escaped as } followed by the byte
// XOR 0x20 (E.1). The client asks, the stub answers: g reads the
// registers of the current thread, m addr,len reads memory, Z1,addr,kind
// sets a hardware breakpoint, c continues, s steps one instruction. While
// the guest runs the only thing the client may send is a lone byte 0x03,
// Ctrl-C, and the stub answers the resume with a stop reply (T05thread:1;
// for a trap) once the guest stops. A stub that does not know a packet
// answers with an empty packet, and GDB falls back to something older.
//
// How the stub maps that onto a virtual machine:
//
//   - Threads are vCPUs: thread N is vCPU N-1 (GDB thread ids start at 1).
//   - All-stop: when one vCPU stops (a breakpoint, a step, Ctrl-C) every
//     vCPU is taken out of the guest (vmm.Machine.Pause, as a snapshot
//     does), and every vCPU goes back in on the next continue or step.
//     Only the stepped vCPU has single-step on; the others run meanwhile.
//   - Registers: the target description (target.xml, written here) names
//     the x86-64 general registers, the segment selectors, fs_base and
//     gs_base, and the control registers cr0, cr2, cr3, cr4, cr8 and efer.
//     GDB's amd64 code also insists on the x87 registers; the stub reports
//     them as unavailable, as the protocol allows ("xx" bytes).
//   - Memory is guest-virtual, translated through the guest's own page
//     tables by KVM (KVM_TRANSLATE, whatever paging mode the vCPU is in),
//     or guest-physical when paging is off. `monitor phys ADDR [LEN]`
//     reads guest-physical memory whatever the mode.
//   - Breakpoints and single-step are KVM_SET_GUEST_DEBUG, shared with
//     `kvmlab step` (vmm/debugregs.go): Z0 plants INT3 in guest memory, Z1
//     and the watchpoints Z2 (write) and Z4 (access) use DR0-DR3 and DR7.
//     x86 has no read-only data breakpoint, so Z3 gets the empty answer
//     and GDB says it cannot set a read watchpoint.
//   - monitor commands (qRcmd) reach the exit observatory: the statistics
//     of the exits so far and the last exit explained on both layers.
//
// The client is untrusted input: packets are bounded (PacketSize), memory
// reads are cut to what a reply can carry, every number is parsed with a
// bound, and nothing a client sends may panic the VMM. One client at a
// time: a second is answered with an error message and closed. A client
// that vanishes, or stops reading its replies for writeTimeout, is treated
// as a detach: breakpoints are removed and the guest runs on, so a crashed
// debugger never leaves a machine frozen. The port listens on the loopback
// interface unless the user names a host (ListenAddr): whoever reaches it
// owns the guest.
package gdbstub
