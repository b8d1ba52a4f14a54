package gdbstub

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"kvmlab/vmm"
)

// fakeTarget is a machine of two vCPUs with 64 KiB of memory at address 0,
// for the protocol tests: every Resume stops again at once on vCPU 0 with
// the stop set in next (a single step by default).
type fakeTarget struct {
	mu      sync.Mutex
	mem     []byte
	regs    [2]Registers
	running bool
	stops   chan Stop
	done    chan struct{}
	next    Stop
	hold    bool // Resume does not stop by itself: Halt does
	resumes []string
	killed  bool
}

func newFake() *fakeTarget {
	f := &fakeTarget{mem: make([]byte, 64<<10), stops: make(chan Stop, 1), done: make(chan struct{}),
		next: Stop{CPU: 0, Signal: 5, Vector: 1, DR6: 1 << 14}}
	for i := range f.mem {
		f.mem[i] = byte(i)
	}
	f.regs[0].Regs.RIP = 0x1000
	f.regs[0].Regs.RAX = 0x1122334455667788
	f.regs[0].Sregs.CS.Selector = 0x10
	f.regs[0].Sregs.CR0 = 0x80050033
	f.regs[1].Regs.RIP = 0x2000
	return f
}

func (f *fakeTarget) CPUs() int { return 2 }

func (f *fakeTarget) Halt() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return false, nil
	}
	f.running = false
	f.stops <- Stop{CPU: 0, Signal: 2}
	return true, nil
}

func (f *fakeTarget) Resume(step int, hw []vmm.HWBreakpoint, sw bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running {
		return errors.New("running")
	}
	f.resumes = append(f.resumes, fmt.Sprintf("step=%d hw=%v sw=%v", step, hw, sw))
	if f.hold {
		f.running = true
		return nil
	}
	f.stops <- f.next
	return nil
}

func (f *fakeTarget) Stops() <-chan Stop    { return f.stops }
func (f *fakeTarget) Done() <-chan struct{} { return f.done }

func (f *fakeTarget) cpu(cpu int) (*Registers, error) {
	if cpu < 0 || cpu > 1 {
		return nil, fmt.Errorf("no vCPU %d", cpu)
	}
	return &f.regs[cpu], nil
}

func (f *fakeTarget) Regs(cpu int) (Registers, error) {
	r, err := f.cpu(cpu)
	if err != nil {
		return Registers{}, err
	}
	return *r, nil
}

func (f *fakeTarget) SetRegs(cpu int, r Registers) error {
	p, err := f.cpu(cpu)
	if err != nil {
		return err
	}
	*p = r
	return nil
}

func (f *fakeTarget) ReadMem(cpu int, addr uint64, n int, phys bool) ([]byte, error) {
	if addr >= uint64(len(f.mem)) {
		return nil, errors.New("not mapped")
	}
	end := min(addr+uint64(n), uint64(len(f.mem)))
	b := append([]byte{}, f.mem[addr:end]...)
	if len(b) < n {
		return b, errors.New("not mapped")
	}
	return b, nil
}

func (f *fakeTarget) WriteMem(cpu int, addr uint64, p []byte) error {
	if addr >= uint64(len(f.mem)) || uint64(len(p)) > uint64(len(f.mem))-addr {
		return errors.New("not mapped")
	}
	copy(f.mem[addr:], p)
	return nil
}

func (f *fakeTarget) PlantINT3(cpu int, addr uint64) (vmm.INT3, error) {
	if addr >= uint64(len(f.mem)) {
		return vmm.INT3{}, errors.New("not mapped")
	}
	b := vmm.INT3{GVA: addr, GPA: addr, Orig: f.mem[addr]}
	f.mem[addr] = 0xCC
	return b, nil
}

func (f *fakeTarget) LiftINT3(b vmm.INT3) error {
	f.mem[b.GPA] = b.Orig
	return nil
}

func (f *fakeTarget) Monitor(cpu int, args []string) (string, error) {
	if args[0] == "stats" {
		return "1 exit\n", nil
	}
	return "", fmt.Errorf("unknown monitor command %q", args[0])
}

func (f *fakeTarget) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.killed {
		f.killed = true
		close(f.done)
	}
}

func (f *fakeTarget) resumeLog() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.resumes, "\n")
}
