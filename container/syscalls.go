package container

// Counting the system calls a workload makes (Config.CountSyscalls).
//
// A container's processes run on the host's kernel: every system call they
// make crosses into it, and that crossing is the container's boundary, as a
// VM exit is a VM's. ptrace(2) lets init see each crossing. The workload is
// started with PTRACE_TRACEME (SysProcAttr.Ptrace), so init becomes its
// tracer; with PTRACE_SYSCALL the kernel then stops the tracee twice per
// system call, once on the way in (syscall-entry stop) and once on the way
// out (syscall-exit stop), and tells the tracer through wait4(2). Init counts
// the entry stops, reading the call's number from the saved registers, and
// lets the tracee go on.
//
// The kernel reports a stop, not its kind. The options init sets make the
// kinds tell apart (ptrace(2), "Stopped states"):
//
//   - PTRACE_O_TRACESYSGOOD marks syscall stops with SIGTRAP|0x80. Entry and
//     exit stops look the same; they alternate, so a per-thread flag says
//     which one is next.
//   - PTRACE_O_TRACEFORK, _TRACEVFORK and _TRACECLONE make the kernel trace
//     every new process and thread too, from its first instruction, and stop
//     the parent with an event stop (SIGTRAP | PTRACE_EVENT_x<<8). The new
//     task's first stop is a SIGSTOP the kernel queued for it, which init
//     swallows.
//   - PTRACE_O_TRACEEXEC turns the SIGTRAP that execve(2) would otherwise
//     send into an event stop.
//   - PTRACE_O_EXITKILL has the kernel SIGKILL the tracees if init dies
//     (init's death kills its PID namespace anyway; this says it twice).
//
// Every other stop is a signal on its way to the tracee (signal-delivery
// stop): ptrace holds it there, and init passes it on by naming it when it
// restarts the tracee. A stop signal passed on this way makes the tracee
// stop for a moment only: the kernel reports that group stop to init like a
// signal-delivery stop, and init restarts it (the PTRACE_SEIZE/LISTEN
// interface would keep it stopped; it is more than this needs).
//
// The kernel accepts ptrace requests for a tracee only from its tracer, and
// the tracer is a thread, not a process: the thread that forked the workload
// (PTRACE_TRACEME), and for everything the workload creates, that same
// thread. So the goroutine that starts the workload is locked to its OS
// thread and makes every ptrace call itself.
//
// The price is two stops per system call, each a switch to init and back,
// and a PTRACE_GETREGS per entry: a workload that makes many system calls
// runs several times slower. That is why this is off by default, and why
// tools that want only numbers use the kernel's own counters (perf trace,
// eBPF) or seccomp's user notification (seccomp_unotify(2)), which stops
// only the calls a filter selects.

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// traceOptions are the ptrace options set on the workload, and inherited
// by every task it creates.
const traceOptions = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
	unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_EXITKILL

// syscallStop is the stop signal of a syscall stop under
// PTRACE_O_TRACESYSGOOD.
const syscallStop = unix.SIGTRAP | 0x80

// traceResult is how a traced workload ended and what it called.
type traceResult struct {
	code, sig int
	counts    map[uint64]uint64 // system call number -> entries
	err       error             // tracing failed; the workload was killed
}

// startTraced starts the workload under ptrace on a goroutine locked to its
// thread, which then counts its system calls until it ends. It returns the
// workload's PID and a channel that receives the result.
func startTraced(cfg initConfig) (int, <-chan traceResult, error) {
	type started struct {
		pid int
		err error
	}
	st := make(chan started, 1)
	done := make(chan traceResult, 1)
	go func() {
		// Never unlocked: when this goroutine ends, so does its
		// thread, and with it the tracer of anything left.
		runtime.LockOSThread()
		pid, err := startWorkload(cfg, true)
		st <- started{pid, err}
		if err == nil {
			done <- traceWorkload(pid)
		}
	}()
	s := <-st
	return s.pid, done, s.err
}

// traceWorkload is the tracer's loop: it runs on the thread that started the
// workload, and, as PID 1 must, also reaps the orphans re-parented to init.
func traceWorkload(workload int) traceResult {
	counts := map[uint64]uint64{}
	inSyscall := map[int]bool{} // tid -> the next syscall stop is an exit
	seen := map[int]bool{}      // tids that have stopped before
	execTrap := true            // the workload's execve SIGTRAP is still to come
	var regs unix.PtraceRegs
	for {
		var ws unix.WaitStatus
		tid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// ECHILD: cannot happen while the workload is there.
			return traceResult{code: 255, counts: counts, err: fmt.Errorf("wait4: %w", err)}
		}
		if ws.Exited() || ws.Signaled() {
			delete(inSyscall, tid)
			delete(seen, tid)
			if tid != workload {
				continue // a thread, a child, or an orphan: gone
			}
			if ws.Signaled() {
				return traceResult{code: 128 + int(ws.Signal()), sig: int(ws.Signal()), counts: counts}
			}
			return traceResult{code: ws.ExitStatus(), counts: counts}
		}
		if !ws.Stopped() {
			continue
		}
		inject := 0
		sig := ws.StopSignal()
		switch {
		case tid == workload && !seen[tid]:
			// The workload's first stop: the SIGTRAP of its execve,
			// which PTRACE_TRACEME asks for. The execve itself ran
			// before tracing began; count it here.
			if err := unix.PtraceSetOptions(tid, traceOptions); err != nil {
				_ = unix.Kill(tid, unix.SIGKILL)
				return traceResult{code: 255, counts: counts, err: fmt.Errorf("PTRACE_SETOPTIONS: %w", err)}
			}
			counts[unix.SYS_EXECVE]++
			if sig == unix.SIGTRAP {
				execTrap = false
			} else {
				inject = int(sig) // a signal came first; the SIGTRAP follows
			}
		case tid == workload && execTrap && sig == unix.SIGTRAP && ws.TrapCause() == 0:
			execTrap = false
		case sig == syscallStop:
			if !inSyscall[tid] {
				if err := unix.PtraceGetRegs(tid, &regs); err == nil {
					counts[syscallNumber(&regs)]++
				}
			}
			inSyscall[tid] = !inSyscall[tid]
		case sig == unix.SIGTRAP && ws.TrapCause() > 0:
			// An event stop, inside fork, vfork, clone or execve. The
			// new task is already traced and reports its own stops.
			// An execve by a thread other than the leader hands the
			// caller the leader's tid: move its state across.
			if ws.TrapCause() == unix.PTRACE_EVENT_EXEC {
				if former, err := unix.PtraceGetEventMsg(tid); err == nil && int(former) != tid {
					inSyscall[tid] = inSyscall[int(former)]
					delete(inSyscall, int(former))
					delete(seen, int(former))
				}
			}
		case sig == unix.SIGSTOP && !seen[tid]:
			// A new task's first stop: the kernel's SIGSTOP, not
			// anybody's signal.
		default:
			// A signal on its way: let it through.
			inject = int(sig)
		}
		seen[tid] = true
		// ESRCH: the tracee was killed meanwhile (SIGKILL does not
		// wait for the tracer); its end comes from wait4.
		_ = unix.PtraceSyscall(tid, inject)
	}
}

// SyscallName is the name of x86-64 system call nr, or "syscall_N" for
// those this package has no name for.
func SyscallName(nr uint64) string {
	if n, ok := syscallNames[nr]; ok {
		return n
	}
	return fmt.Sprintf("syscall_%d", nr)
}

// namedCounts turns counts by number into counts by name, and their total.
func namedCounts(counts map[uint64]uint64) (map[string]uint64, uint64) {
	byName := make(map[string]uint64, len(counts))
	var total uint64
	for nr, n := range counts {
		byName[SyscallName(nr)] += n
		total += n
	}
	return byName, total
}
