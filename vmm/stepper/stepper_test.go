package stepper

import (
	"bytes"
	"strings"
	"testing"

	"kvmlab/vmm/trace"
)

var (
	evCOM1 = trace.Event{Seq: 7, VCPU: 0, Reason: "KVM_EXIT_IO", RIP: 0x1000,
		IO:     &trace.IO{Port: 0x3f8, Dir: "out", Size: 1},
		HW:     &trace.HW{Vendor: "svm", Name: "VMEXIT_IOIO", Code: 0x7b},
		Device: "COM1", Action: "COM1 THR write 'H'"}
	evMMIO = trace.Event{Seq: 8, VCPU: 1, Reason: "KVM_EXIT_MMIO", RIP: 0x2000,
		MMIO: &trace.MMIO{Addr: 0xfebf0000, Write: true, Len: 4}, Device: "virtio-blk"}
)

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		ev   trace.Event
		want string
	}{
		{evCOM1, "#7 vCPU0 KVM_EXIT_IO [svm VMEXIT_IOIO 0x7b] rip=0x1000 port=0x3f8 out size=1 : COM1 THR write 'H'"},
		{evMMIO, "#8 vCPU1 KVM_EXIT_MMIO rip=0x2000 mmio=0xfebf0000 write len=4"},
	} {
		if got := summary(&tc.ev, nil); got != tc.want {
			t.Errorf("summary =\n %q\nwant\n %q", got, tc.want)
		}
	}
}

func TestUntil(t *testing.T) {
	for _, tc := range []struct {
		args       string
		com1, mmio bool   // does it stop at evCOM1, evMMIO
		err        string // or refuse, saying this
	}{
		{args: "io", com1: true},
		{args: "KVM_EXIT_MMIO", mmio: true},
		{args: "port 0x3f8", com1: true},
		{args: "port 3f9"},
		{args: "addr febf0000", mmio: true},
		{args: "device com1", com1: true},
		{args: "device virtio-blk", mmio: true},
		{args: "", err: "until REASON"},
		{args: "port", err: "until port P"},
		{args: "port 10000", err: "not a port"},
		{args: "addr zz", err: "not an address"},
		{args: "nonsense", err: "not an exit reason"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			pred, err := untilPredicate(strings.Fields(tc.args))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := pred(&evCOM1); got != tc.com1 {
				t.Errorf("stops at the COM1 exit: %v, want %v", got, tc.com1)
			}
			if got := pred(&evMMIO); got != tc.mmio {
				t.Errorf("stops at the MMIO exit: %v, want %v", got, tc.mmio)
			}
		})
	}
}

// TestScript drives Stop with a script, as `kvmlab step --script` does,
// through exits that need no vCPU (no registers, memory or breakpoints):
// which exits stop, what each stop shows, and that the guest runs free
// once the script ends.
func TestScript(t *testing.T) {
	var out bytes.Buffer
	script := "bogus\nnext 2\nuntil device virtio-blk\nstats\n"
	s := New(Lines(strings.NewReader(script)), &out, nil)
	ev := func(e trace.Event, seq uint64) *trace.Event { e.Seq = seq; return &e }

	s.Stop(nil, ev(evCOM1, 1)) // stops: bogus, then next 2
	s.Stop(nil, ev(evCOM1, 2)) // skipped
	s.cons.Write([]byte("Hello\r\nworld\n"))
	s.Stop(nil, ev(evCOM1, 3)) // the second exit on: stops, until device virtio-blk
	s.Stop(nil, ev(evCOM1, 4)) // not the device: runs on
	s.Stop(nil, ev(evMMIO, 5)) // stops: stats, then the script ends
	s.Stop(nil, ev(evMMIO, 6)) // runs free

	got := out.String()
	for _, want := range []string{
		"#1 vCPU0 KVM_EXIT_IO",
		`error: unknown command "bogus": type help`,
		"[console] Hello\n[console] world\n#3 vCPU0",
		"#5 vCPU1 KVM_EXIT_MMIO",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, never := range []string{"#2 ", "#4 ", "#6 "} {
		if strings.Contains(got, never) {
			t.Errorf("stopped at exit %s, which it should have run past:\n%s", never, got)
		}
	}
	if !s.done {
		t.Error("the script ended but the stepper still stops")
	}
	if n := s.stats.Total(); n != 6 {
		t.Errorf("stats counted %d exits, want all 6", n)
	}
}
