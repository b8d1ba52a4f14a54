// Package stepper stops a guest at every VM exit and lets a learner look
// before the vCPU goes back in: `kvmlab step` is a thin front end to it.
//
// A VM exit is the moment the processor leaves the guest and KVM_RUN returns
// to the VMM with a reason (docs/exits.md). The stepper is a vmm.Debugger:
// the vCPU loop calls Stop on the vCPU's own goroutine after kvmlab has
// handled the exit and before the vCPU re-enters the guest, so at each stop
// the guest is frozen exactly where the exit left it. What a learner sees at
// a stop is one line naming the exit on both layers, the KVM_EXIT_* reason
// kvmlab got and the VT-x or SVM reason beneath it, with RIP, the kernel
// symbol it falls in and the port or MMIO address touched:
//
//	#12 vCPU0 KVM_EXIT_IO [svm VMEXIT_IOIO 0x7b] rip=0xffffffff8171a2c6 <io_serial_out+0x16> port=0x3f8 out size=1 : COM1 THR write 'H'
//
// and then a prompt. regs shows the registers with the CPU mode and the
// control registers decoded (what changed since the last look is starred),
// code disassembles at RIP, mem dumps guest memory (virtual through the
// guest's page tables, or physical), explain says why this exit happened,
// stats counts the exits so far. next, continue and until choose which exit
// to stop at next. The guest's own serial output is held back and shown,
// marked [console], at the next stop, so that the two never interleave.
// Commands come from a terminal, a pipe or a script (one per line); when
// they run out the guest runs free to its end.
//
// Most exits come on their own. Stopping between exits needs the CPU's
// debug facilities (Intel SDM Vol. 3B, chapter 18, "Debug, branch profile,
// TSC, and intel resource director technology features"; AMD APM Vol. 2,
// chapter 13), which a VMM drives through KVM_SET_GUEST_DEBUG
// (Documentation/virt/kvm/api.rst, "KVM_SET_GUEST_DEBUG" and
// "KVM_EXIT_DEBUG"):
//
//   - stepi sets KVM_GUESTDBG_SINGLESTEP: KVM runs the guest with the trap
//     flag (RFLAGS.TF, SDM §18.3.1.4) on its behalf, so the CPU raises a
//     debug exception (#DB) after one instruction, and KVM, intercepting
//     #DB, returns KVM_EXIT_DEBUG instead of delivering it to the guest.
//   - break loads a debug register: DR0-DR3 hold linear addresses, DR7
//     enables each for instruction execution (SDM §18.2), and
//     KVM_GUESTDBG_USE_HW_BP makes the resulting #DB an exit. Four at
//     most, and guest memory is untouched.
//   - sbreak plants INT3 (0xCC) over an instruction's first byte, as
//     debuggers do for any number of breakpoints; KVM_GUESTDBG_USE_SW_BP
//     makes the #BP it raises an exit (breakpoint.go says how the byte is
//     lifted and planted again).
//
// With EnableQuiz (kvmlab step --quiz) every exit stops and the learner
// predicts the next one on both layers before the guest goes on; quiz.go
// grades the guesses and keeps the score.
//
// Breakpoints take kernel symbols as well as addresses (a System.map or an
// ELF vmlinux, package inspect); the kernel must then run without KASLR,
// which Attach asks for on the command line.
package stepper
