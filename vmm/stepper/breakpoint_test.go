package stepper

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"kvmlab/vmm/kvm"
)

// fakeVCPU is a stopped vCPU for the breakpoint code: 64 KiB of guest RAM
// at guest-physical 0x100000, mapped at kernelBase with paging on.
type fakeVCPU struct {
	vcpus int
	mem   []byte
	regs  kvm.Regs
	swBP  bool
}

const (
	fakeKernel = 0xffffffff81000000
	fakePhys   = 0x100000
)

func newFakeVCPU() *fakeVCPU {
	f := &fakeVCPU{vcpus: 1, mem: make([]byte, 64<<10)}
	for i := range f.mem {
		f.mem[i] = byte(i % 251) // never 0xCC below 251
	}
	return f
}

func (f *fakeVCPU) VCPUs() int                     { return f.vcpus }
func (f *fakeVCPU) Regs() (kvm.Regs, error)        { return f.regs, nil }
func (f *fakeVCPU) SetRegs(r kvm.Regs) error       { f.regs = r; return nil }
func (f *fakeVCPU) Sregs() (kvm.Sregs, error)      { return kvm.Sregs{CR0: 1<<31 | 1}, nil }
func (f *fakeVCPU) SetSWBreakpoints(on bool) error { f.swBP = on; return nil }
func (f *fakeVCPU) Translate(gva uint64) (kvm.Translation, error) {
	if gva < fakeKernel || gva >= fakeKernel+uint64(len(f.mem)) {
		return kvm.Translation{LinearAddress: gva}, nil
	}
	return kvm.Translation{LinearAddress: gva, PhysicalAddress: gva - fakeKernel + fakePhys, Valid: 1}, nil
}
func (f *fakeVCPU) ReadPhys(gpa uint64, n int) ([]byte, error) {
	if gpa < fakePhys || gpa+uint64(n) > fakePhys+uint64(len(f.mem)) {
		return nil, errors.New("outside guest RAM")
	}
	return append([]byte(nil), f.mem[gpa-fakePhys:gpa-fakePhys+uint64(n)]...), nil
}
func (f *fakeVCPU) WritePhys(gpa uint64, p []byte) error {
	if gpa < fakePhys || gpa+uint64(len(p)) > fakePhys+uint64(len(f.mem)) {
		return errors.New("outside guest RAM")
	}
	copy(f.mem[gpa-fakePhys:], p)
	return nil
}
func (f *fakeVCPU) at(gva uint64) byte { return f.mem[gva-fakeKernel] }

// TestSoftwareBreakpoint walks one INT3 through its life: planted over the
// right byte, lifted when hit so the instruction can run, left lifted while
// RIP is still on it, planted again once RIP has moved on, and removed
// when the stepper lets the guest run free.
func TestSoftwareBreakpoint(t *testing.T) {
	f := newFakeVCPU()
	var out bytes.Buffer
	s := &Stepper{out: &out}
	bp := uint64(fakeKernel + 0x1234)
	orig := f.at(bp)

	if err := s.addSoftware(f, bp); err != nil {
		t.Fatal(err)
	}
	if f.at(bp) != int3 || !f.swBP {
		t.Fatalf("after sbreak: byte %#x, #BP intercept %v; want 0xcc and on", f.at(bp), f.swBP)
	}
	if !strings.Contains(out.String(), "software: INT3 at guest-physical 0x101234") {
		t.Errorf("sbreak said %q", out.String())
	}
	// Another exit elsewhere: nothing to do.
	if n, ok := s.swHit(f, bp+7); ok {
		t.Fatalf("swHit at another address = %d", n)
	}
	// The hit: the original byte goes back for the instruction to run.
	f.regs.RIP = bp
	if n, ok := s.swHit(f, bp); !ok || n != 1 {
		t.Fatalf("swHit = %d, %v; want breakpoint 1", n, ok)
	}
	if f.at(bp) != orig {
		t.Fatalf("after the hit the byte is %#x, want the original %#x", f.at(bp), orig)
	}
	// An exit before the instruction ran (RIP still on it): stay lifted,
	// or the same hit would be reported again.
	s.rearm(f, bp)
	if f.at(bp) != orig {
		t.Fatal("re-armed while RIP is still on the instruction")
	}
	// The guest moved on: the INT3 is back.
	s.rearm(f, bp+3)
	if f.at(bp) != int3 {
		t.Fatalf("not re-armed after RIP left: byte %#x", f.at(bp))
	}
	// A host that reports RIP past the INT3 gets RIP moved back.
	f.regs.RIP = bp + 1
	if _, ok := s.swHit(f, bp+1); !ok || f.regs.RIP != bp {
		t.Fatalf("hit reported past the INT3: ok %v, RIP %#x, want %#x", ok, f.regs.RIP, bp)
	}
	s.rearm(f, bp+3)
	// The script ends: no INT3 may stay behind.
	s.clearSoftware(f)
	if f.at(bp) != orig || f.swBP {
		t.Fatalf("after clearSoftware: byte %#x (want %#x), intercept %v", f.at(bp), orig, f.swBP)
	}
}

func TestSoftwareBreakpointRefused(t *testing.T) {
	cases := []struct {
		name  string
		setup func(f *fakeVCPU, s *Stepper)
		addr  uint64
		want  string
	}{
		{"two vCPUs", func(f *fakeVCPU, s *Stepper) { f.vcpus = 2 }, fakeKernel + 16, "--cpus 1"},
		{"not mapped", func(f *fakeVCPU, s *Stepper) {}, fakeKernel + 1<<20, "not mapped"},
		{"guest's own INT3", func(f *fakeVCPU, s *Stepper) { f.mem[32] = int3 }, fakeKernel + 32, "INT3 at"},
		{"twice", func(f *fakeVCPU, s *Stepper) { _ = s.addSoftware(f, fakeKernel+48) }, fakeKernel + 48, "already"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeVCPU()
			s := &Stepper{out: &bytes.Buffer{}}
			c.setup(f, s)
			before := append([]byte(nil), f.mem...)
			err := s.addSoftware(f, c.addr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("addSoftware error %v, want one saying %q", err, c.want)
			}
			if c.name != "twice" && !bytes.Equal(before, f.mem) {
				t.Error("a refused breakpoint changed guest memory")
			}
		})
	}
}
