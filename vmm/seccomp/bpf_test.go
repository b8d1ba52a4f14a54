package seccomp

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/u-root/u-root/pkg/strace"
	"golang.org/x/sys/unix"

	"kvmlab/vmm/kvm"
)

// call is one system call as a filter sees it (struct seccomp_data).
type call struct {
	arch uint32
	nr   uint32
	args [6]uint64
}

func (c call) packet() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[offNr:], c.nr)
	binary.LittleEndian.PutUint32(b[offArch:], c.arch)
	for i, a := range c.args {
		binary.LittleEndian.PutUint64(b[offArgs+8*i:], a)
	}
	return b
}

// run interprets the instructions Assemble emits, as the kernel's classic
// BPF machine would (net/core/filter.c): A is the accumulator, the program
// counter only moves forward, and a load out of the packet is an error.
func run(prog []unix.SockFilter, pkt []byte) (uint32, error) {
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case ldAbs:
			if int(in.K)+4 > len(pkt) || in.K%4 != 0 {
				return 0, fmt.Errorf("pc %d: load at %d", pc, in.K)
			}
			a = binary.LittleEndian.Uint32(pkt[in.K:])
		case andK:
			a &= in.K
		case jeqK:
			if a == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case retK:
			return in.K, nil
		default:
			return 0, fmt.Errorf("pc %d: opcode %#x not interpreted", pc, in.Code)
		}
	}
	return 0, fmt.Errorf("fell off the end of the program")
}

func TestAssembleSmallFilter(t *testing.T) {
	f := Filter{Arch: unix.AUDIT_ARCH_X86_64, Default: Trap, BadArch: KillProcess, Rules: []Rule{
		{Name: "read", Nr: 0},
		{Name: "ioctl", Nr: 16, Arg: 1, Values: []uint32{0xAE80, 0x5401, 7}},
		{Name: "clone", Nr: 56, AllBits: 0x10100},
		{Name: "write", Nr: 1},
		{Name: "mprotect", Nr: 10, Arg: 2, NoBits: 4},
		{Name: "mmap", Nr: 9, Arg: 3, AllBits: 0x20, NoBits: 0x10},
		{Name: "clone3", Nr: 435, Errno: unix.ENOSYS},
	}}
	prog, err := f.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	for _, tc := range []struct {
		name string
		c    call
		want Action
	}{
		{"read", call{arch: x86, nr: 0}, Allow},
		{"write after the blocks", call{arch: x86, nr: 1}, Allow},
		{"unlisted", call{arch: x86, nr: 41}, Trap},
		{"ioctl first value", call{arch: x86, nr: 16, args: [6]uint64{3, 0xAE80}}, Allow},
		{"ioctl middle value", call{arch: x86, nr: 16, args: [6]uint64{3, 0x5401}}, Allow},
		{"ioctl last value", call{arch: x86, nr: 16, args: [6]uint64{3, 7}}, Allow},
		{"ioctl high bits ignored", call{arch: x86, nr: 16, args: [6]uint64{3, 1<<32 | 7}}, Allow},
		{"ioctl other request", call{arch: x86, nr: 16, args: [6]uint64{3, 8}}, Trap},
		{"ioctl value in the wrong argument", call{arch: x86, nr: 16, args: [6]uint64{0xAE80, 0}}, Trap},
		{"clone all bits", call{arch: x86, nr: 56, args: [6]uint64{0x10100 | 0x11}}, Allow},
		{"clone one bit missing", call{arch: x86, nr: 56, args: [6]uint64{0x10000}}, Trap},
		{"no bits: none set", call{arch: x86, nr: 10, args: [6]uint64{0, 0, 3}}, Allow},
		{"no bits: one set", call{arch: x86, nr: 10, args: [6]uint64{0, 0, 7}}, Trap},
		{"all and no bits: both hold", call{arch: x86, nr: 9, args: [6]uint64{0, 0, 0, 0x22}}, Allow},
		{"all and no bits: a no bit set", call{arch: x86, nr: 9, args: [6]uint64{0, 0, 0, 0x32}}, Trap},
		{"all and no bits: an all bit missing", call{arch: x86, nr: 9, args: [6]uint64{0, 0, 0, 0x2}}, Trap},
		{"errno rule", call{arch: x86, nr: 435}, Action(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))},
		{"i386 read", call{arch: unix.AUDIT_ARCH_I386, nr: 0}, KillProcess},
		{"i386 number of an allowed call", call{arch: unix.AUDIT_ARCH_I386, nr: 3}, KillProcess},
		{"x32 read", call{arch: x86, nr: 0x40000000}, Trap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := run(prog, tc.c.packet())
			if err != nil {
				t.Fatal(err)
			}
			if Action(got) != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, Action(got), tc.want)
			}
		})
	}
}

func TestAssembleRefuses(t *testing.T) {
	many := make([]uint32, 253)
	for _, tc := range []struct {
		name string
		r    Rule
	}{
		{"argument 6", Rule{Name: "x", Arg: 6}},
		{"negative argument", Rule{Name: "x", Arg: -1}},
		{"values and bits", Rule{Name: "x", Values: []uint32{1}, AllBits: 1}},
		{"values and no bits", Rule{Name: "x", Values: []uint32{1}, NoBits: 1}},
		{"errno and a condition", Rule{Name: "x", Values: []uint32{1}, Errno: unix.EPERM}},
		{"too many values for a jump", Rule{Name: "x", Values: many}},
	} {
		if _, err := (Filter{Rules: []Rule{tc.r}}).Assemble(); err == nil {
			t.Errorf("%s: assembled", tc.name)
		}
	}
	rules := make([]Rule, 2100) // two instructions each
	if _, err := (Filter{Rules: rules}).Assemble(); err == nil {
		t.Error("a program over 4096 instructions assembled")
	}
}

// TestVMMFilter runs kvmlab's own filter over the calls that matter: what
// a running VMM does, and what a VMM taken over by its guest would try.
func TestVMMFilter(t *testing.T) {
	prog, err := VMM().Assemble()
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	type tcase struct {
		name string
		c    call
		want Action
	}
	cases := []tcase{
		{"read", call{arch: x86, nr: unix.SYS_READ}, Allow},
		{"futex", call{arch: x86, nr: unix.SYS_FUTEX}, Allow},
		{"pwritev (disk)", call{arch: x86, nr: unix.SYS_PWRITEV}, Allow},
		{"thread", call{arch: x86, nr: unix.SYS_CLONE, args: [6]uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD}}, Allow},
		{"fork", call{arch: x86, nr: unix.SYS_CLONE, args: [6]uint64{uint64(unix.SIGCHLD)}}, Trap},
		{"clone3 (fails: its flags are out of reach)", call{arch: x86, nr: unix.SYS_CLONE3}, Action(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))},
		{"vfork", call{arch: x86, nr: unix.SYS_VFORK}, Trap},
		{"execve", call{arch: x86, nr: unix.SYS_EXECVE}, Trap},
		{"execveat", call{arch: x86, nr: unix.SYS_EXECVEAT}, Trap},
		{"open", call{arch: x86, nr: unix.SYS_OPEN}, Trap},
		{"openat", call{arch: x86, nr: unix.SYS_OPENAT}, openatAction()},
		{"openat2", call{arch: x86, nr: unix.SYS_OPENAT2}, Trap},
		{"socket", call{arch: x86, nr: unix.SYS_SOCKET}, Trap},
		{"ptrace", call{arch: x86, nr: unix.SYS_PTRACE}, Trap},
		{"mprotect of a thread stack (cgo)", call{arch: x86, nr: unix.SYS_MPROTECT, args: [6]uint64{0, 0, unix.PROT_READ | unix.PROT_WRITE}}, Allow},
		{"mprotect to execute", call{arch: x86, nr: unix.SYS_MPROTECT, args: [6]uint64{0, 0, unix.PROT_READ | unix.PROT_EXEC}}, Trap},
		{"kill", call{arch: x86, nr: unix.SYS_KILL}, Trap},
		{"console TCSETS", call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{0, unix.TCSETS}}, Allow},
		{"console TCSBRK (tcdrain at exit)", call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{1, unix.TCSBRK, 1}}, Allow},
		{"TUNSETIFF", call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{5, unix.TUNSETIFF}}, Trap},
		{"TIOCSTI (type into the terminal)", call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{0, unix.TIOCSTI}}, Trap},
		{"i386 int 0x80 write", call{arch: unix.AUDIT_ARCH_I386, nr: 4}, KillProcess},
	}
	for _, i := range kvm.RunningIoctls() {
		cases = append(cases, tcase{i.Name, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{9, uint64(i.Request)}}, Allow})
	}
	for _, i := range kvm.SetupIoctls() {
		cases = append(cases, tcase{i.Name, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{9, uint64(i.Request)}}, Trap})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := run(prog, tc.c.packet())
			if err != nil {
				t.Fatal(err)
			}
			if Action(got) != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, Action(got), tc.want)
			}
		})
	}
}

// TestVMMRulesNamed checks the rule names against the call numbers, so the
// list in the documentation is the list in the filter.
func TestVMMRulesNamed(t *testing.T) {
	for _, r := range VMMRules() {
		got, err := strace.ByNumber(uintptr(r.Nr))
		if err != nil {
			continue // u-root's table lacks a few recent calls (getrandom)
		}
		if got != r.Name {
			t.Errorf("rule %q has number %d, which is %q (%v)", r.Name, r.Nr, got, err)
		}
	}
}

// openatAction is what the filter does with openat: trap, but in a cgo
// build fail with EACCES, for glibc's own opens (VMMRules).
func openatAction() Action {
	if cgoBuild {
		return Action(unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES))
	}
	return Trap
}
