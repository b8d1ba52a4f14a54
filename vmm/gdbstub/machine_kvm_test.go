package gdbstub

import (
	"encoding/binary"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"time"

	"kvmlab/guest/tiny"
	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
)

// The stub on a real vCPU: a tiny long-mode guest on /dev/kvm (kvm_pvm runs
// it; no Linux needed) that counts in memory and writes each count to the
// POST port, forever:
//
//	0x100000: mov rax, 0x200000
//	0x100007: inc qword [rax]
//	0x10000a: out 0x80, al
//	0x10000c: jmp 0x100007
var counterCode = []byte{ // the counter lives at 0x200000
	0x48, 0xc7, 0xc0, 0x00, 0x00, 0x20, 0x00,
	0x48, 0xff, 0x00,
	0xe6, 0x80,
	0xeb, 0xf9,
}

func needKVM(t *testing.T) {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("no /dev/kvm to run a tiny guest on: %v", err)
	}
	defer sys.Close()
	if err := sys.CheckRequired(); err != nil {
		t.Skipf("/dev/kvm cannot run even a tiny guest: %v", err)
	}
}

func canRunLinux() bool {
	ok, _ := kvm.HostBackend().CanRunLinux()
	return ok
}

func le64(t *testing.T, s string) uint64 {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 8 {
		t.Fatalf("%q is not 8 bytes of hex", s)
	}
	return binary.LittleEndian.Uint64(b)
}

// TestMachineKVM drives the counting guest through the protocol: stopped
// before its first instruction, a hardware breakpoint, a single step, a
// write watchpoint, the observatory's statistics, Ctrl-C, a client that
// vanishes while the guest runs (the guest runs on), a second attach, and
// kill; and a software breakpoint (INT3).
func TestMachineKVM(t *testing.T) {
	needKVM(t)
	cfg := vmm.Config{Kernel: tiny.ELF(counterCode), MemBytes: 64 << 20, CPUs: 1, Log: io.Discard}
	stub := Attach(&cfg, true)
	m, err := vmm.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	stub.Bind(m)
	outcome := make(chan vmm.Outcome, 1)
	ran := make(chan struct{})
	go func() {
		o := m.Run()
		stub.Ended()
		outcome <- o
		close(ran)
	}()
	defer func() { // before m.Close: no vCPU may run on unmapped pages
		m.Quit()
		<-ran
	}()
	srv := NewServer(stub, nil)
	c, done := dial(t, srv)

	rip := func() uint64 { return le64(t, c.ask("p10")) }
	if r := c.ask("?"); r != "T05thread:1;" {
		t.Errorf("?: %q", r)
	}
	if got := rip(); got != tiny.Base {
		t.Errorf("waiting before the first instruction at %#x, want %#x", got, tiny.Base)
	}
	if r := c.ask("m100000,e"); r != hex.EncodeToString(counterCode) {
		t.Errorf("code reads %q", r)
	}
	// A hardware breakpoint on the OUT.
	if r := c.ask("Z1,10000a,1"); r != "OK" {
		t.Fatalf("Z1: %q", r)
	}
	if r := c.ask("c"); r != "T05thread:1;hwbreak:;" {
		t.Errorf("c to the breakpoint: %q", r)
	}
	if got := rip(); got != 0x10000a {
		t.Errorf("stopped at %#x, want 0x10000a", got)
	}
	if got := le64(t, c.ask("m200000,8")); got != 1 {
		t.Errorf("counter %d at the first OUT, want 1", got)
	}
	c.ask("z1,10000a,1")
	// One step: over the jmp, from 0x10000c back to the inc.
	c.ask("Z1,10000c,1")
	c.ask("c")
	c.ask("z1,10000c,1")
	if r := c.ask("s"); r != "T05thread:1;" {
		t.Errorf("s: %q", r)
	}
	if got := rip(); got != 0x100007 {
		t.Errorf("stepped over the jmp to %#x, want 0x100007", got)
	}
	// A write watchpoint on the counter: the stop comes after the inc,
	// before the breakpoint on the jmp that follows it.
	if r := c.ask("Z2,200000,8"); r != "OK" {
		t.Fatalf("Z2: %q", r)
	}
	c.ask("Z1,10000c,1")
	before := le64(t, c.ask("m200000,8"))
	switch r := c.ask("c"); {
	case r == "T05thread:1;watch:200000;":
		if after := le64(t, c.ask("m200000,8")); after != before+1 {
			t.Errorf("the watchpoint stopped with the counter at %d, want %d", after, before+1)
		}
		if got := rip(); got != 0x10000a {
			t.Errorf("the watchpoint stopped at %#x, want after the inc, 0x10000a", got)
		}
	case r == "T05thread:1;hwbreak:;" && !canRunLinux():
		// kvm_pvm runs execution breakpoints but has not been seen to
		// raise data breakpoints; TestGDB watches jiffies on real
		// (nested) SVM.
		t.Logf("this /dev/kvm (%+v) did not raise the write watchpoint: watchpoints are tested by tests/TestGDB", kvm.HostBackend())
	default:
		t.Errorf("c to the watchpoint: %q", r)
	}
	c.ask("z2,200000,8")
	c.ask("z1,10000c,1")
	// The exit observatory.
	c.send("qRcmd," + hexString("stats"))
	var stats strings.Builder
	for r := c.reply(); r != "OK"; r = c.reply() {
		b, _ := hex.DecodeString(strings.TrimPrefix(r, "O"))
		stats.Write(b)
	}
	if !strings.Contains(stats.String(), "KVM_EXIT_IO") || !strings.Contains(stats.String(), "KVM_EXIT_DEBUG") {
		t.Errorf("monitor stats:\n%s", stats.String())
	}
	// Ctrl-C stops the running guest.
	c.send("c")
	c.raw("\x03")
	if r := c.reply(); r != "T02thread:1;" {
		t.Errorf("Ctrl-C: %q", r)
	}
	// The debugger vanishes while the guest runs (gdb's detach, D, is
	// TestGDB's): the stub removes its breakpoints and lets the guest
	// run on.
	c.ask("Z1,10000a,1")
	c.send("c")
	c.c.Close()
	if why := <-done; !strings.Contains(why, "went away") {
		t.Errorf("session ended: %s", why)
	}
	// The guest runs: a new debugger has to stop it (?: SIGINT, where a
	// machine left stopped would say SIGTRAP), and kills it.
	stub.mu.Lock()
	st := stub.state
	stub.mu.Unlock()
	if st != running {
		t.Errorf("after the client went away the machine is in state %d, want running", st)
	}
	c2, done2 := dial(t, srv)
	if r := c2.ask("?"); r != "T02thread:1;" {
		t.Errorf("? after attaching to a running guest: %q", r)
	}
	// A software breakpoint: INT3 planted over the jmp, lifted by z0.
	if r := c2.ask("Z0,10000c,1"); r != "OK" {
		t.Fatalf("Z0: %q", r)
	}
	if r := c2.ask("m10000c,1"); r != "cc" {
		t.Errorf("under Z0 the jmp reads %q, want the INT3 cc", r)
	}
	switch r := c2.ask("c"); {
	case r == "W00" && !canRunLinux():
		// kvm_pvm does not stop at the INT3 for the debugger (seen:
		// the machine ends with a KVM internal error): the #BP
		// intercept of KVM_GUESTDBG_USE_SW_BP is a VT-x and SVM
		// feature (TestStepDebug/sbreak runs it in the Intel host).
		o := <-outcome
		t.Logf("this /dev/kvm (%+v) did not intercept the INT3: the machine ended with %v", kvm.HostBackend(), o.Reason)
		return
	case r != "T05thread:1;swbreak:;":
		t.Fatalf("c to the INT3: %q", r)
	}
	if got := le64(t, c2.ask("p10")); got != 0x10000c {
		t.Errorf("the INT3 stopped at %#x, want 0x10000c", got)
	}
	if r := c2.ask("z0,10000c,1"); r != "OK" {
		t.Errorf("z0: %q", r)
	}
	if r := c2.ask("m10000c,2"); r != "ebf9" {
		t.Errorf("after z0 the jmp reads %q, want ebf9", r)
	}
	c2.send("k")
	if why := <-done2; !strings.Contains(why, "killed") {
		t.Errorf("session ended: %s", why)
	}
	select {
	case o := <-outcome:
		if o.Reason != vmm.StopQuit {
			t.Errorf("the machine stopped with %v, want quit", o.Reason)
		}
	case <-time.After(time.Minute): // a hang detector, not a speed test
		t.Fatal("the machine did not stop after k")
	}
}
