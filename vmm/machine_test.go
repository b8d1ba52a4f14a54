package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmlab/devices/bus"
	"kvmlab/vmm/exits"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/reportlimit"
	"kvmlab/vmm/x86"
)

// The dispatcher tests below drive Machine.handle the way vcpuLoop does,
// with a hand-made kvm_run page instead of KVM_RUN: no /dev/kvm needed.

// runSize is a typical KVM_GET_VCPU_MMAP_SIZE: the kvm_run page, then the
// page KVM puts port I/O data in (offset 0x1000), then the coalesced MMIO
// ring.
const (
	runSize = 3 * 4096
	pioData = 4096
)

// regDev is a device with a register file: reads return regs[offset:],
// writes land there; each call is recorded. With fifo set, every read
// returns the next byte of fifo instead, like a receive buffer.
type regDev struct {
	mu    sync.Mutex
	regs  []byte
	fifo  []byte
	calls []devCall
	err   error
}

type devCall struct {
	write  bool
	offset uint64
	data   string
}

func (c devCall) String() string {
	op := "read"
	if c.write {
		op = "write"
	}
	return fmt.Sprintf("%s %q at offset %#x", op, c.data, c.offset)
}

func newRegDev(size int) *regDev {
	d := &regDev{regs: make([]byte, size)}
	for i := range d.regs {
		d.regs[i] = byte(0x10 + i)
	}
	return d
}

func (d *regDev) Read(off uint64, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fifo != nil {
		n := copy(data, d.fifo)
		d.fifo = d.fifo[n:]
	} else {
		copy(data, d.regs[off:])
	}
	d.calls = append(d.calls, devCall{false, off, string(data)})
	return d.err
}

func (d *regDev) Write(off uint64, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.regs[off:], data)
	d.calls = append(d.calls, devCall{true, off, string(data)})
	return d.err
}

// testMachine is a Machine with only a bus: a UART-sized device at COM1, a
// 4-byte device at the PCI configuration address port, and a 256-byte MMIO
// device at 0xd000_0000.
type testMachine struct {
	*Machine
	com1, pciAddr, mmio *regDev
	v                   *vcpu
	run                 []byte
	logBuf              *bytes.Buffer
}

func newTestMachine(t *testing.T) *testMachine {
	t.Helper()
	tm := &testMachine{
		com1: newRegDev(8), pciAddr: newRegDev(4), mmio: newRegDev(256),
		run: make([]byte, runSize), logBuf: new(bytes.Buffer),
	}
	tm.Machine = &Machine{bus: bus.New(), log: tm.logBuf, stopC: make(chan struct{})}
	// The limiter's clock stands still: intervals end only at Flush, so
	// what the tests see does not depend on how fast they run.
	stopped := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	tm.reports = reportlimit.New(lockedWriter{w: tm.logBuf}, reportlimit.Options{Prefix: "kvmlab: ", Now: func() time.Time { return stopped }})
	t.Cleanup(func() { tm.reports.Close(time.Minute) })
	for _, r := range []struct {
		space      bus.Space
		base, size uint64
		name       string
		dev        bus.Device
	}{
		{bus.PIO, x86.COM1Port, 8, "COM1", tm.com1},
		{bus.PIO, 0xcf8, 4, "PCI-addr", tm.pciAddr},
		{bus.MMIO, 0xd000_0000, 256, "mmio-dev", tm.mmio},
	} {
		if err := tm.bus.Register(r.space, r.base, r.size, r.name, r.dev); err != nil {
			t.Fatal(err)
		}
	}
	tm.v = &vcpu{VCPU: &kvm.VCPU{ID: 0, Run: tm.run}}
	return tm
}

// exit decodes the run page and handles it, as one turn of vcpuLoop does.
func (tm *testMachine) exit(t *testing.T) {
	t.Helper()
	if err := exits.Decode(tm.v.Run, &tm.v.exit); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	tm.handle(tm.v)
}

func (tm *testMachine) isStopped() bool {
	select {
	case <-tm.stopC:
		return true
	default:
		return false
	}
}

func TestHandlePortOut(t *testing.T) {
	tests := []struct {
		name      string
		size      uint8
		port      uint16
		count     uint32
		data      string
		dev       func(tm *testMachine) *regDev
		wantCalls []devCall
	}{
		{"OUTB to COM1 THR is a write at offset 0", 1, 0x3f8, 1, "H",
			func(tm *testMachine) *regDev { return tm.com1 }, []devCall{{true, 0, "H"}}},
		{"OUTB to COM1 LCR is a write at offset 3", 1, 0x3fb, 1, "\x83",
			func(tm *testMachine) *regDev { return tm.com1 }, []devCall{{true, 3, "\x83"}}},
		{"OUTW is one 2-byte write", 2, 0x3fe, 1, "\x34\x12",
			func(tm *testMachine) *regDev { return tm.com1 }, []devCall{{true, 6, "\x34\x12"}}},
		{"OUTL to CONFIG_ADDRESS is one 4-byte write", 4, 0xcf8, 1, "\x00\x00\x00\x80",
			func(tm *testMachine) *regDev { return tm.pciAddr }, []devCall{{true, 0, "\x00\x00\x00\x80"}}},
		{"REP OUTSB count 3 is three writes to the same port, in order", 1, 0x3f8, 3, "abc",
			func(tm *testMachine) *regDev { return tm.com1 }, []devCall{{true, 0, "a"}, {true, 0, "b"}, {true, 0, "c"}}},
		{"REP OUTSW count 2", 2, 0x3fc, 2, "\x01\x02\x03\x04",
			func(tm *testMachine) *regDev { return tm.com1 }, []devCall{{true, 4, "\x01\x02"}, {true, 4, "\x03\x04"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTestMachine(t)
			exits.EncodeIO(tm.run, exits.Out, tc.size, tc.port, tc.count, pioData, []byte(tc.data))
			tm.exit(t)
			if got := tc.dev(tm).calls; !slices.Equal(got, tc.wantCalls) {
				t.Errorf("device saw %v, want %v", got, tc.wantCalls)
			}
			if tm.isStopped() {
				t.Errorf("a port write stopped the machine: %+v", tm.outcome)
			}
		})
	}
}

func TestHandlePortIn(t *testing.T) {
	tests := []struct {
		name  string
		size  uint8
		port  uint16
		count uint32
		fifo  string // COM1 receive buffer, if any
		want  string // bytes in the run page's data area afterwards
	}{
		{"INB from COM1 LSR returns offset 5", 1, 0x3fd, 1, "", "\x15"},
		{"INW returns two bytes from the offset", 2, 0x3fa, 1, "", "\x12\x13"},
		{"INL from CONFIG_ADDRESS", 4, 0xcf8, 1, "", "\x10\x11\x12\x13"},
		{"REP INSB count 3 drains a FIFO in order", 1, 0x3f8, 3, "xyz", "xyz"},
		{"INB from an unclaimed port reads 0xff", 1, 0x2f8, 1, "", "\xff"},
		{"INL from an unclaimed port reads all ones", 4, 0xcfc, 1, "", "\xff\xff\xff\xff"},
		{"REP INSW from an unclaimed port fills every element", 2, 0x1f0, 3, "", strings.Repeat("\xff", 6)},
		{"INW running past the end of a device reads all ones", 2, 0x3ff, 1, "", "\xff\xff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTestMachine(t)
			if tc.fifo != "" {
				tm.com1.fifo = []byte(tc.fifo)
			}
			// Garbage where the data goes, and a canary after it.
			n := int(tc.size) * int(tc.count)
			for i := 0; i <= n; i++ {
				tm.run[pioData+i] = 0x5a
			}
			exits.EncodeIO(tm.run, exits.In, tc.size, tc.port, tc.count, pioData, nil)
			tm.exit(t)
			if got := string(tm.run[pioData : pioData+n]); got != tc.want {
				t.Errorf("data area holds %q, want %q", got, tc.want)
			}
			if tm.run[pioData+n] != 0x5a {
				t.Error("IN wrote past its data")
			}
		})
	}
}

func TestHandleUnclaimedPortCounted(t *testing.T) {
	tm := newTestMachine(t)
	tm.cfg.Stats = true
	exits.EncodeIO(tm.run, exits.In, 1, 0x2f8, 2, pioData, nil)
	tm.exit(t)
	exits.EncodeIO(tm.run, exits.Out, 1, 0x2f8, 1, pioData, []byte{0})
	tm.exit(t)
	exits.EncodeIO(tm.run, exits.Out, 1, 0x3f8, 1, pioData, []byte{'A'})
	tm.exit(t)
	if r, w := tm.bus.Unhandled(); r != 2 || w != 1 {
		t.Errorf("bus Unhandled() = %d, %d; want 2 reads (one per REP element), 1 write", r, w)
	}
	got := tm.DeviceCounts()
	if got["unhandled port 0x2f8"] != 3 || got["COM1"] != 1 || len(got) != 2 {
		t.Errorf("DeviceCounts() = %v, want 3 for unhandled port 0x2f8 and 1 for COM1", got)
	}
}

// log returns what the machine logged, once the report limiter has
// written it out.
func (tm *testMachine) log(t *testing.T) string {
	t.Helper()
	if !tm.reports.Flush(time.Minute) {
		t.Fatal("the report limiter did not drain")
	}
	return tm.logBuf.String()
}

func TestHandleDeviceErrorIsLogged(t *testing.T) {
	tm := newTestMachine(t)
	tm.com1.err = errors.New("bad width")
	exits.EncodeIO(tm.run, exits.Out, 4, 0x3f8, 1, pioData, []byte{1, 2, 3, 4})
	tm.exit(t)
	if want := "kvmlab: vCPU 0: port 0x3f8 out: bad width\n"; tm.log(t) != want {
		t.Errorf("log = %q, want %q", tm.log(t), want)
	}
	if tm.isStopped() {
		t.Error("a device error stopped the machine; the guest should carry on")
	}
}

func TestHandleMMIO(t *testing.T) {
	t.Run("read result lands in the run page for KVM to complete the load", func(t *testing.T) {
		tm := newTestMachine(t)
		exits.EncodeMMIO(tm.run, 0xd000_0020, make([]byte, 4), false)
		tm.exit(t)
		if want := []devCall{{false, 0x20, "\x30\x31\x32\x33"}}; !slices.Equal(tm.mmio.calls, want) {
			t.Errorf("device saw %v, want %v", tm.mmio.calls, want)
		}
		var e exits.Exit
		if err := exits.Decode(tm.run, &e); err != nil {
			t.Fatal(err)
		}
		if got := e.MMIO.Data; got != [8]byte{0x30, 0x31, 0x32, 0x33} {
			t.Errorf("run page MMIO data = %x, want 30313233 then zeros", got)
		}
		if e.MMIO.Len != 4 || e.MMIO.IsWrite || e.MMIO.PhysAddr != 0xd000_0020 {
			t.Errorf("completing the read disturbed the exit: %+v", e.MMIO)
		}
	})
	t.Run("write reaches the device at the offset from its base", func(t *testing.T) {
		tm := newTestMachine(t)
		exits.EncodeMMIO(tm.run, 0xd000_00f8, []byte{1, 2, 3, 4, 5, 6, 7, 8}, true)
		tm.exit(t)
		if want := []devCall{{true, 0xf8, "\x01\x02\x03\x04\x05\x06\x07\x08"}}; !slices.Equal(tm.mmio.calls, want) {
			t.Errorf("device saw %v, want %v", tm.mmio.calls, want)
		}
	})
	t.Run("unclaimed read returns all ones", func(t *testing.T) {
		tm := newTestMachine(t)
		exits.EncodeMMIO(tm.run, 0xfed0_0000, make([]byte, 8), false)
		tm.exit(t)
		var e exits.Exit
		if err := exits.Decode(tm.run, &e); err != nil {
			t.Fatal(err)
		}
		if e.MMIO.Data != [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
			t.Errorf("unclaimed MMIO read = %x, want all ones", e.MMIO.Data)
		}
		if tm.isStopped() {
			t.Error("an unclaimed MMIO read stopped the machine")
		}
	})
	t.Run("unclaimed write is dropped", func(t *testing.T) {
		tm := newTestMachine(t)
		exits.EncodeMMIO(tm.run, 0xfee0_00b0, []byte{0, 0, 0, 0}, true)
		tm.exit(t)
		if _, w := tm.bus.Unhandled(); w != 1 {
			t.Errorf("unhandled writes = %d, want 1", w)
		}
	})
}

func TestHandleStops(t *testing.T) {
	tests := []struct {
		name        string
		build       func(run []byte)
		want        StopReason
		detail      string // substring of Outcome.Detail
		wantDump    bool
		wantStopped bool
	}{
		{"KVM_EXIT_SHUTDOWN is a triple fault", func(run []byte) { exits.EncodeReason(run, exits.Shutdown) },
			StopTripleFault, "vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)", true, true},
		{"system event shutdown is a poweroff", func(run []byte) { systemEvent(run, exits.SystemEventShutdown) },
			StopPoweroff, "KVM system event: shutdown", false, true},
		{"system event reset is a reboot", func(run []byte) { systemEvent(run, exits.SystemEventReset) },
			StopReboot, "KVM system event: reset", false, true},
		{"system event crash is an error", func(run []byte) { systemEvent(run, exits.SystemEventCrash) },
			StopError, "KVM system event 3", true, true},
		{"internal error: emulation failure carries a hint", func(run []byte) { internalError(run, exits.InternalErrorEmulation) },
			StopInternalError, "vCPU 0: KVM internal error, suberror 1 (KVM could not emulate an instruction)", true, true},
		{"internal error: exception while delivering an exception", func(run []byte) { internalError(run, exits.InternalErrorSimulEx) },
			StopInternalError, "suberror 2 (exception while delivering an exception)", true, true},
		{"internal error: event delivery", func(run []byte) { internalError(run, exits.InternalErrorDeliveryEv) },
			StopInternalError, "suberror 3 (event delivery failed)", true, true},
		{"internal error without a hint", func(run []byte) { internalError(run, 42) },
			StopInternalError, "KVM internal error, suberror 42", true, true},
		{"failed VM entry", func(run []byte) {
			exits.EncodeFailEntry(run, 0x80000021, 0)
		}, StopFailEntry, "VM entry failed, hardware reason 0x80000021", true, true},
		{"an exit the VMM does not handle is an error", func(run []byte) { exits.EncodeReason(run, exits.Hypercall) },
			StopError, "vCPU 0: unhandled exit KVM_EXIT_HYPERCALL", true, true},
		{"an exit number from a newer kernel is an error", func(run []byte) { exits.EncodeReason(run, 99) },
			StopError, "unhandled exit KVM_EXIT_99", true, true},
		{"HLT keeps running", func(run []byte) { exits.EncodeReason(run, exits.HLT) }, 0, "", false, false},
		{"INTR keeps running", func(run []byte) { exits.EncodeReason(run, exits.Intr) }, 0, "", false, false},
		{"IRQ window open keeps running", func(run []byte) { exits.EncodeReason(run, exits.IRQWindowOpen) }, 0, "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTestMachine(t)
			tc.build(tm.run)
			tm.exit(t)
			if tm.isStopped() != tc.wantStopped || tm.stopped.Load() != tc.wantStopped {
				t.Fatalf("stopped = %v (stopC closed %v), want %v; outcome %+v", tm.stopped.Load(), tm.isStopped(), tc.wantStopped, tm.outcome)
			}
			if !tc.wantStopped {
				return
			}
			o := tm.outcome
			if o.Reason != tc.want || o.VCPU != 0 || !strings.Contains(o.Detail, tc.detail) {
				t.Errorf("outcome = %v on vCPU %d %q; want %v on vCPU 0 containing %q", o.Reason, o.VCPU, o.Detail, tc.want, tc.detail)
			}
			// Without a vCPU file descriptor the register dump must
			// degrade to a note, not panic.
			if tc.wantDump != (o.Dump != "") {
				t.Errorf("Dump = %q, want a dump: %v", o.Dump, tc.wantDump)
			}
			if tc.wantDump && !strings.HasPrefix(o.Dump, "registers unavailable: ") {
				t.Errorf("Dump = %q, want \"registers unavailable: ...\"", o.Dump)
			}
		})
	}
}

func systemEvent(run []byte, typ uint32) { exits.EncodeSystemEvent(run, typ) }

func internalError(run []byte, sub uint32) { exits.EncodeInternalError(run, sub) }

func TestFirstStopWins(t *testing.T) {
	tm := newTestMachine(t)
	exits.EncodeReason(tm.run, exits.Shutdown)
	tm.exit(t)
	systemEvent(tm.run, exits.SystemEventReset)
	tm.exit(t) // a second vCPU exit after the stop: must not panic on close
	tm.stop(Outcome{Reason: StopQuit, VCPU: -1, Detail: "quit"})
	if tm.outcome.Reason != StopTripleFault || !strings.Contains(tm.outcome.Detail, "triple fault") {
		t.Errorf("outcome = %v %q, want the first stop (triple fault) kept", tm.outcome.Reason, tm.outcome.Detail)
	}
}

func TestConcurrentStopsKeepOneOutcome(t *testing.T) {
	m := &Machine{stopC: make(chan struct{})}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.stop(Outcome{Reason: StopReason(i % 3), VCPU: i})
		}()
	}
	wg.Wait()
	<-m.stopC
	if o := m.outcome; o.Reason != StopReason(o.VCPU%3) {
		t.Errorf("outcome %+v mixes two stops", o)
	}
}

func TestStopReason(t *testing.T) {
	tests := []struct {
		r       StopReason
		name    string
		success bool
	}{
		{StopPoweroff, "poweroff", true},
		{StopReboot, "reboot", true},
		{StopQuit, "quit", true},
		{StopTripleFault, "triple fault", false},
		{StopInternalError, "KVM internal error", false},
		{StopFailEntry, "VM entry failed", false},
		{StopError, "error", false},
	}
	for _, tc := range tests {
		if tc.r.String() != tc.name || tc.r.Success() != tc.success {
			t.Errorf("StopReason(%d) = %q success %v, want %q %v", int(tc.r), tc.r.String(), tc.r.Success(), tc.name, tc.success)
		}
	}
}

func TestFormatRegs(t *testing.T) {
	s := FormatRegs(kvm.Regs{RIP: 0xffffffff81000000, RFLAGS: 0x2, RAX: 0xdead}, kvm.Sregs{
		CS: kvm.Segment{Selector: 0x10, L: 1}, CR0: 0x80050033, EFER: 0x500,
	})
	for _, want := range []string{"RIP=ffffffff81000000", "RFLAGS=00000002", "RAX=000000000000dead", "CS=0010 base=0 L=1 DB=0", "CR0=80050033", "EFER=500"} {
		if !strings.Contains(s, want) {
			t.Errorf("FormatRegs output lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n"); n != 7 {
		t.Errorf("FormatRegs has %d lines, want 8", n+1)
	}
}

// gate is a writer that records chunks and can hold the writer goroutine
// inside Write until released.
type gate struct {
	mu      sync.Mutex
	chunks  []string
	entered chan struct{} // receives once per Write, if not nil
	release chan struct{} // Write waits on it, if not nil
}

func (g *gate) Write(p []byte) (int, error) {
	if g.entered != nil {
		g.entered <- struct{}{}
	}
	if g.release != nil {
		<-g.release
	}
	g.mu.Lock()
	g.chunks = append(g.chunks, string(p))
	g.mu.Unlock()
	return len(p), nil
}

func TestAsyncWriter(t *testing.T) {
	t.Run("output keeps the order of writes and Close flushes it", func(t *testing.T) {
		g := &gate{}
		a := newAsyncWriter(g)
		var want strings.Builder
		for i := 0; i < 1000; i++ {
			s := string(rune('a'+i%26)) + "\n"
			if n, err := a.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			want.WriteString(s)
		}
		a.Close()
		if got := strings.Join(g.chunks, ""); got != want.String() {
			t.Errorf("wrote %d bytes, want %d in order", len(got), want.Len())
		}
	})
	t.Run("a burst of one-byte writes reaches the output in a few chunks", func(t *testing.T) {
		g := &gate{}
		a := newAsyncWriter(g)
		for i := 0; i < 200; i++ {
			a.Write([]byte{'0' + byte(i%10)})
		}
		a.Close()
		// 200 writes within microseconds, against a 2 ms window: a
		// writer that woke per byte would write about 200 chunks.
		if n := len(g.chunks); n == 0 || n > 50 {
			t.Errorf("200 one-byte writes came out in %d chunks, want a few", n)
		}
		if got := strings.Join(g.chunks, ""); len(got) != 200 {
			t.Errorf("wrote %d bytes, want 200", len(got))
		}
	})
	t.Run("Close with nothing written returns", func(t *testing.T) {
		g := &gate{}
		newAsyncWriter(g).Close()
		if len(g.chunks) != 0 {
			t.Errorf("wrote %q", g.chunks)
		}
	})
	t.Run("a caller's buffer may be reused after Write returns", func(t *testing.T) {
		g := &gate{entered: make(chan struct{}, 16), release: make(chan struct{})}
		a := newAsyncWriter(g)
		buf := []byte("first")
		a.Write(buf)
		<-g.entered // the writer goroutine holds "first"
		copy(buf, "XXXXX")
		a.Write([]byte("second"))
		close(g.release)
		a.Close()
		if got := strings.Join(g.chunks, ""); got != "firstsecond" {
			t.Errorf("wrote %q, want \"firstsecond\"", got)
		}
	})
	t.Run("a stuck reader makes the writer drop, not block or grow", func(t *testing.T) {
		g := &gate{entered: make(chan struct{}, 16), release: make(chan struct{})}
		a := newAsyncWriter(g)
		a.Write([]byte("x"))
		<-g.entered // the writer goroutine is now stuck in Write
		big := bytes.Repeat([]byte("y"), maxPending)
		a.Write(big)          // exactly fills the buffer: kept
		a.Write([]byte("zz")) // over the limit: dropped
		a.mu.Lock()
		dropped, pending := a.dropped, len(a.buf)
		a.mu.Unlock()
		if dropped != 2 || pending != maxPending {
			t.Errorf("dropped %d, pending %d; want 2, %d", dropped, pending, maxPending)
		}
		close(g.release)
		a.Close()
		if got := strings.Join(g.chunks, ""); got != "x"+string(big) {
			t.Errorf("wrote %d bytes, want %d", len(got), 1+maxPending)
		}
	})
}

var _ io.Writer = (*asyncWriter)(nil)

// lockedWriter serialises writes to w and reads of it (the report
// limiter writes from its own goroutine).
type lockedWriter struct{ w *bytes.Buffer }

var logMu sync.Mutex

func (l lockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return l.w.Write(p)
}

// TestDeviceErrorFloodIsSummarised: a guest that makes a device fail on
// every exit (a load from the empty part of the PCI window, 100,000 times)
// gets its first errors printed in full and the rest counted in a summary,
// not 100,000 lines; the totals per device are there for --stats.
func TestDeviceErrorFloodIsSummarised(t *testing.T) {
	const n = 100_000
	tm := newTestMachine(t)
	tm.mmio.err = errors.New("pci: read at 0xd0000010: no enabled BAR at this address")
	for range n {
		exits.EncodeMMIO(tm.run, 0xd000_0010, make([]byte, 4), false)
		tm.exit(t)
	}
	exits.EncodeIO(tm.run, exits.Out, 1, 0x3f8, 1, pioData, []byte{'A'})
	tm.com1.err = errors.New("COM1: offset 0: bad")
	tm.exit(t)
	log := tm.log(t)
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	full := "kvmlab: vCPU 0: MMIO read 0xd0000010: pci: read at 0xd0000010: no enabled BAR at this address"
	want := []string{full, full, full, full, full,
		"kvmlab: vCPU 0: port 0x3f8 out: COM1: offset 0: bad",
		"kvmlab: mmio-dev: 99,995 more errors in the last 0 s, like: vCPU 0: MMIO read 0xd0000010: pci: read at 0xd0000010: no enabled BAR at this address"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("log (%d bytes):\n%s\nwant:\n%s", len(log), strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	totals, dropped := tm.Reports()
	got := fmt.Sprint(totals)
	if wantTotals := "[{mmio-dev 100000 5 99995} {COM1 1 1 0}]"; got != wantTotals {
		t.Errorf("Reports() = %s, want %s", got, wantTotals)
	}
	if dropped != (reportlimit.Dropped{}) {
		t.Errorf("dropped %+v", dropped)
	}
}

// failingDev refuses every access with the same error, and allocates
// nothing doing so.
type failingDev struct{ err error }

func (d failingDev) Read(_ uint64, data []byte) error  { return d.err }
func (d failingDev) Write(_ uint64, data []byte) error { return d.err }

// TestDeviceErrorAllocatesNothing: once a device's errors are being
// summarised, the exit path that reports one allocates nothing.
func TestDeviceErrorAllocatesNothing(t *testing.T) {
	tm := newTestMachine(t)
	if err := tm.bus.Register(bus.MMIO, 0xd000_1000, 0x1000, "failing", failingDev{errors.New("refused")}); err != nil {
		t.Fatal(err)
	}
	for _, write := range []bool{false, true} {
		exits.EncodeMMIO(tm.run, 0xd000_1010, []byte{1, 2, 3, 4}, write)
		for range reportlimit.DefaultFull + 1 {
			tm.exit(t)
		}
		if n := testing.AllocsPerRun(1000, func() { tm.exit(t) }); n != 0 {
			t.Errorf("write %v: a summarised device error costs %v allocations per exit", write, n)
		}
	}
	if totals, _ := tm.Reports(); len(totals) != 1 || totals[0].Reports < 2000 {
		t.Errorf("Reports() = %v, want the failing device's errors counted", totals)
	}
}

// TestVirtioLogIsLimited: what a virtio transport logs, its driver (the
// guest) causes, so it goes through the same limiter, one source per
// function.
func TestVirtioLogIsLimited(t *testing.T) {
	tm := newTestMachine(t)
	logf := tm.guestLogf("virtio-blk 00:01.0")
	for i := range 1000 {
		logf("%s: device needs reset: avail index %d", "virtio-blk", i)
	}
	lines := strings.Split(strings.TrimSuffix(tm.log(t), "\n"), "\n")
	want := []string{
		"kvmlab: virtio-blk: device needs reset: avail index 0",
		"kvmlab: virtio-blk: device needs reset: avail index 1",
		"kvmlab: virtio-blk: device needs reset: avail index 2",
		"kvmlab: virtio-blk: device needs reset: avail index 3",
		"kvmlab: virtio-blk: device needs reset: avail index 4",
		"kvmlab: virtio-blk 00:01.0: 995 more errors in the last 0 s, like: virtio-blk: device needs reset: avail index 5",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestUnclaimedNamesAreBounded: with --stats, a guest that scans
// unclaimed ports or MMIO cannot add a counter per address.
func TestUnclaimedNamesAreBounded(t *testing.T) {
	tm := newTestMachine(t)
	tm.cfg.Stats = true
	for i := range 1000 {
		exits.EncodeMMIO(tm.run, 0xfed0_0000+uint64(i)*8, make([]byte, 4), false)
		tm.exit(t)
		exits.EncodeIO(tm.run, exits.In, 1, uint16(0x1000+i), 1, pioData, nil)
		tm.exit(t)
	}
	got := tm.DeviceCounts()
	if len(got) > maxUnclaimedNames+2 {
		t.Errorf("%d counters after 2000 unclaimed accesses at distinct addresses, want at most %d", len(got), maxUnclaimedNames+2)
	}
	var total uint64
	for _, n := range got {
		total += n
	}
	if total != 2000 {
		t.Errorf("counted %d accesses, want 2000", total)
	}
	if got["unhandled MMIO 0xfed00000"] != 1 || got["unhandled port 0x1000"] != 1 {
		t.Errorf("the first unclaimed addresses are not named: %v", got)
	}
	if got["unhandled MMIO (other addresses)"]+got["unhandled port (other ports)"] != 2000-maxUnclaimedNames {
		t.Errorf("the rest are not counted together: %v", got)
	}
}
