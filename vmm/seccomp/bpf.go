package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Action is what a filter tells the kernel to do with a system call: the
// high 16 bits of the filter's return value (seccomp(2), "Filter return
// values"). The kernel runs every filter a thread has and acts on the most
// restrictive answer.
type Action uint32

// The actions kvmlab's filters use.
const (
	// Allow runs the call as if there were no filter.
	Allow Action = unix.SECCOMP_RET_ALLOW
	// Trap skips the call and sends the thread a SIGSYS whose siginfo
	// names the call (si_syscall, si_arch, si_call_addr): the VMM's
	// handler says which call it was and ends the process (sigsys_amd64.s).
	Trap Action = unix.SECCOMP_RET_TRAP
	// KillProcess ends the whole process at once, as if by SIGSYS that
	// cannot be caught, and writes an audit record (type=1326, SECCOMP).
	KillProcess Action = unix.SECCOMP_RET_KILL_PROCESS
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Trap:
		return "trap"
	case KillProcess:
		return "kill-process"
	}
	return fmt.Sprintf("action(%#x)", uint32(a))
}

// Rule allows one system call, with an optional condition on one of its
// arguments. A filter sees the arguments as numbers: it can compare them
// but cannot follow a pointer (a path, a buffer), which is why a filter
// cannot allow "open, but only /proc/self/statm": it must refuse open.
type Rule struct {
	Name string // for people: error messages, the allow-list in the docs
	Nr   uint32 // the system call number on the filter's architecture
	// Arg is the argument (0-5) the condition reads; its low 32 bits
	// are compared. That suffices for ioctl's request (the kernel takes
	// it as an unsigned int and drops the high bits itself) and clone's
	// flags (every CLONE_* bit this filter tests is in the low half).
	Arg int
	// Values, when not empty: the call is allowed only when Arg equals
	// one of them (ioctl requests).
	Values []uint32
	// AllBits, when not zero: the call is allowed only when Arg has all
	// of these bits set (clone with CLONE_THREAD: a new thread of this
	// process, never a new process).
	AllBits uint32
	// NoBits, when not zero: the call is allowed only when Arg has none
	// of these bits set (mprotect without PROT_EXEC). With AllBits too,
	// both must hold.
	NoBits uint32
	// Errno, when not zero, makes the call fail with this error instead
	// of running (clone3 with ENOSYS: its flags sit behind a pointer the
	// filter cannot read, and a C library that sees ENOSYS falls back to
	// clone, whose flags it can).
	Errno unix.Errno
}

// Filter is an allow-list for one architecture: the calls its rules name
// are allowed, every other call gets Default, and a call made through
// another architecture's entry (a 32-bit int 0x80 from a 64-bit process,
// whose numbers mean other calls) gets BadArch.
type Filter struct {
	Arch    uint32 // AUDIT_ARCH_* (include/uapi/linux/audit.h)
	Rules   []Rule
	Default Action
	BadArch Action
}

// Offsets in struct seccomp_data (include/uapi/linux/seccomp.h), the
// packet a seccomp filter reads: the call number, the architecture, the
// instruction pointer, and the six arguments as 64-bit numbers. x86-64 is
// little-endian, so an argument's low 32 bits come first.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// Classic BPF instructions (Documentation/networking/filter.rst): a load
// of a 32-bit word of the packet into the accumulator A, a compare that
// skips jt or jf instructions, an AND on A, and a return.
const (
	ldAbs  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	andK   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	retK   = unix.BPF_RET | unix.BPF_K
	maxLen = 4096 // BPF_MAXINSNS: the kernel refuses longer programs
)

// Assemble writes the filter as a classic BPF program:
//
//	ld  [arch]              ; A = seccomp_data.arch
//	jeq #Arch, +1           ; the architecture the numbers are for?
//	ret #BadArch
//	ld  [nr]                ; A = seccomp_data.nr
//	jeq #read, 0, +1        ; one pair per plain rule
//	ret #ALLOW
//	jeq #ioctl, 0, +n+3     ; a rule with Values: skip its block unless ioctl
//	ld  [args[1]]           ;   A = the request
//	jeq #KVM_RUN, +n-1, 0   ;   one compare per value, each to the ALLOW below
//	...
//	ret #Default            ;   ioctl, but not a request on the list
//	ret #ALLOW
//	...
//	ret #Default            ; a call no rule named
//
// Each rule is a short block that either returns or jumps past itself with
// A still holding the call number, so jumps stay short (classic BPF jumps
// only forward, at most 255 instructions) and the program reads as the list
// it came from. A linear list costs one compare per rule before a match;
// for the few dozen rules of a VMM that is well under a microsecond per
// call, and the kernel caches the answer for calls whose verdict depends on
// the number alone (its seccomp action cache, since Linux 5.11).
func (f Filter) Assemble() ([]unix.SockFilter, error) {
	prog := []unix.SockFilter{
		stmt(ldAbs, offArch),
		jump(jeqK, f.Arch, 1, 0),
		stmt(retK, uint32(f.BadArch)),
		stmt(ldAbs, offNr),
	}
	for _, r := range f.Rules {
		if r.Arg < 0 || r.Arg > 5 {
			return nil, fmt.Errorf("seccomp: rule %s: argument %d: a call has arguments 0-5", r.Name, r.Arg)
		}
		argLo := uint32(offArgs + 8*r.Arg)
		mask := r.AllBits | r.NoBits
		switch {
		case r.Errno != 0 && (len(r.Values) > 0 || mask != 0):
			return nil, fmt.Errorf("seccomp: rule %s: an errno with a condition", r.Name)
		case r.Errno != 0:
			prog = append(prog, jump(jeqK, r.Nr, 0, 1), stmt(retK, unix.SECCOMP_RET_ERRNO|uint32(r.Errno)&unix.SECCOMP_RET_DATA))
		case len(r.Values) > 0 && mask != 0:
			return nil, fmt.Errorf("seccomp: rule %s: Values and bits together", r.Name)
		case len(r.Values) > 0:
			n := len(r.Values)
			if n+3 > 255 {
				return nil, fmt.Errorf("seccomp: rule %s: %d values, at most 252", r.Name, n)
			}
			prog = append(prog, jump(jeqK, r.Nr, 0, uint8(n+3)), stmt(ldAbs, argLo))
			for i, v := range r.Values {
				prog = append(prog, jump(jeqK, v, uint8(n-i), 0))
			}
			prog = append(prog, stmt(retK, uint32(f.Default)), stmt(retK, uint32(Allow)))
		case mask != 0:
			prog = append(prog,
				jump(jeqK, r.Nr, 0, 5),
				stmt(ldAbs, argLo),
				stmt(andK, mask),
				jump(jeqK, r.AllBits, 1, 0),
				stmt(retK, uint32(f.Default)),
				stmt(retK, uint32(Allow)))
		default:
			prog = append(prog, jump(jeqK, r.Nr, 0, 1), stmt(retK, uint32(Allow)))
		}
	}
	prog = append(prog, stmt(retK, uint32(f.Default)))
	if len(prog) > maxLen {
		return nil, fmt.Errorf("seccomp: %d instructions, the kernel takes at most %d", len(prog), maxLen)
	}
	return prog, nil
}
