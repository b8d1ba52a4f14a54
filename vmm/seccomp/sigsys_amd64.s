// The SIGSYS handler of a VMM under its seccomp filter (sigsys_unsafe.go
// says why it is written here and not in Go). The kernel calls it with the
// C calling convention: DI = signal number, SI = *siginfo_t, DX =
// *ucontext_t, on the thread's alternate signal stack (SA_ONSTACK: every
// thread the Go runtime makes has one). It makes only calls the filter
// allows, and never returns.

#include "go_asm.h"
#include "textflag.h"

#define SYS_write      1
#define SYS_ioctl      16
#define SYS_exit_group 231
#define TCSETS         0x5402
#define NAME_SLOTS     512

// Offsets in siginfo_t for SIGSYS (include/uapi/asm-generic/siginfo.h,
// _sigsys) and in the x86-64 ucontext_t (uc_mcontext.gregs at 40, REG_RDI
// = 8, REG_RSI = 9): the filtered call's first two arguments are still in
// the registers it was made with.
#define SI_SYSCALL 24
#define UC_RDI     104
#define UC_RSI     112

// write(2, s.ptr, s.len) for the string field at offset off of trap
// (R14 holds its address): a Go string is a pointer and a length.
#define WRITESTR(off) \
	MOVQ $SYS_write, AX; \
	MOVQ $2, DI; \
	MOVQ off(R14), SI; \
	MOVQ off+8(R14), DX; \
	SYSCALL

// func handlerAddr() uintptr
TEXT ·handlerAddr(SB), NOSPLIT, $0-8
	// The address of the assembly function itself: a Go func value for
	// it would point at a wrapper that expects a Go stack and g.
	LEAQ ·sigsysHandler(SB), AX
	MOVQ AX, ret+0(FP)
	RET

// func sigsysHandler()
TEXT ·sigsysHandler(SB), NOSPLIT|NOFRAME, $0-0
	MOVQ SI, R12 // siginfo
	MOVQ DX, R13 // ucontext
	LEAQ ·trap(SB), R14

	// Give the terminal back first, so the message reads as lines.
	MOVQ handlerData_termFD(R14), DI
	CMPQ DI, $0
	JLT  message
	MOVQ $SYS_ioctl, AX
	MOVQ $TCSETS, SI
	LEAQ handlerData_termState(R14), DX
	SYSCALL

message:
	WRITESTR(handlerData_prefix)
	MOVLQZX SI_SYSCALL(R12), BX
	CMPQ BX, $NAME_SLOTS
	JAE  unnamed
	SHLQ $4, BX // a Go string is 16 bytes: pointer, length
	LEAQ handlerData_names(R14)(BX*1), BX
	MOVQ 8(BX), DX
	CMPQ DX, $0
	JEQ  unnamed
	MOVQ 0(BX), SI
	MOVQ $SYS_write, AX
	MOVQ $2, DI
	SYSCALL
	JMP  args

unnamed:
	WRITESTR(handlerData_unnamed)
	MOVLQZX SI_SYSCALL(R12), R15
	CALL ·writeHex(SB)

args:
	WRITESTR(handlerData_args)
	MOVQ UC_RDI(R13), R15
	CALL ·writeHex(SB)
	WRITESTR(handlerData_sep)
	MOVQ UC_RSI(R13), R15
	CALL ·writeHex(SB)
	WRITESTR(handlerData_suffix)

	MOVQ handlerData_exitStatus(R14), DI
	MOVQ $SYS_exit_group, AX
	SYSCALL
	// Not reached; should exit_group ever return, fault rather than
	// run on.
	MOVQ $0, AX
	MOVQ AX, 0(AX)

// writeHex writes R15 in hexadecimal, without leading zeros, to fd 2.
// Called only from sigsysHandler; clobbers AX, DX, DI, SI, R8-R11 (the
// SYSCALL instruction itself clobbers CX and R11), keeps R12-R15.
TEXT ·writeHex(SB), NOSPLIT|NOFRAME, $0-0
	SUBQ $32, SP
	LEAQ 32(SP), R9 // one past the last digit
	MOVQ R15, R8
digit:
	MOVQ R8, R10
	ANDQ $15, R10
	CMPQ R10, $10
	JLT  decimal
	ADDQ $('a'-10), R10
	JMP  store
decimal:
	ADDQ $'0', R10
store:
	DECQ R9
	MOVB R10, 0(R9)
	SHRQ $4, R8
	JNE  digit
	LEAQ 32(SP), DX
	SUBQ R9, DX
	MOVQ R9, SI
	MOVQ $2, DI
	MOVQ $SYS_write, AX
	SYSCALL
	ADDQ $32, SP
	RET
