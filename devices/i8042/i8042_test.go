package i8042

import (
	"strings"
	"sync"
	"testing"

	"kvmlab/devices/bus"
	"kvmlab/devices/irq"
)

// rig is a controller with its two ports and a reset counter.
type rig struct {
	c      *Controller
	data   bus.Device
	cmd    bus.Device
	resets int
}

func newRig() *rig {
	r := &rig{}
	r.c = New(func() { r.resets++ })
	r.data, r.cmd = r.c.DataPort(), r.c.CommandPort()
	return r
}

func (r *rig) out(t *testing.T, dev bus.Device, v byte) {
	t.Helper()
	if err := dev.Write(0, []byte{v}); err != nil {
		t.Fatalf("write %#02x: %v", v, err)
	}
}

func (r *rig) in(t *testing.T, dev bus.Device) byte {
	t.Helper()
	b := []byte{0}
	if err := dev.Read(0, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b[0]
}

func (r *rig) status(t *testing.T) byte { t.Helper(); return r.in(t, r.cmd) }

func TestPowerOnStatus(t *testing.T) {
	r := newRig()
	// SYS (POST passed, CTR bit 2) and UNLOCKED; no OBF, no IBF.
	if got, want := r.status(t), byte(StatusSYS|StatusUnlocked); got != want {
		t.Fatalf("status = %#02x, want %#02x", got, want)
	}
	// Nothing pending: data port reads the last value, initially 0.
	if got := r.in(t, r.data); got != 0 {
		t.Fatalf("data = %#02x, want 0", got)
	}
}

// TestCommandsAnswer checks every command that answers through the output
// buffer: the status shows OBF until port 0x60 is read, then the last value
// keeps being returned.
func TestCommandsAnswer(t *testing.T) {
	tests := []struct {
		name string
		cmd  byte
		want byte
	}{
		{"read CTR", CmdReadCTR, DefaultCTR},
		{"self test", CmdSelfTest, SelfTestOK},
		{"keyboard interface test", CmdKbdTest, InterfaceOK},
		{"aux interface test", CmdAuxTest, InterfaceOK},
		// The port is sampled before its own answer fills the buffer,
		// so the IRQ1 output bit is still low.
		{"read output port", CmdReadOutPort, DefaultOutputPort},
		{"read RAM byte 5", 0x25, 0x00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			r.out(t, r.cmd, tt.cmd)
			st := r.status(t)
			if st&StatusOBF == 0 || st&StatusAuxData != 0 || st&StatusIBF != 0 {
				t.Fatalf("status after command = %#02x, want OBF, no AUXDATA, no IBF", st)
			}
			if st&StatusCmd == 0 {
				t.Errorf("status %#02x lacks CMD after a command write", st)
			}
			if got := r.in(t, r.data); got != tt.want {
				t.Fatalf("answer = %#02x, want %#02x", got, tt.want)
			}
			if st := r.status(t); st&StatusOBF != 0 {
				t.Fatalf("status after read = %#02x, OBF still set", st)
			}
			if got := r.in(t, r.data); got != tt.want {
				t.Fatalf("re-read = %#02x, want last value %#02x", got, tt.want)
			}
			if r.resets != 0 {
				t.Fatalf("reset called %d times", r.resets)
			}
		})
	}
}

func TestCTRRoundTrip(t *testing.T) {
	for _, v := range []byte{0x00, 0x01, 0x20, 0x45, 0x47, 0x65, 0xff} {
		r := newRig()
		r.out(t, r.cmd, CmdWriteCTR)
		if st := r.status(t); st&StatusCmd == 0 {
			t.Fatalf("status %#02x lacks CMD", st)
		}
		r.out(t, r.data, v)
		if st := r.status(t); st&StatusCmd != 0 {
			t.Fatalf("status %#02x has CMD after a data write", st)
		}
		// The system flag in the status register follows CTR bit 2.
		if st := r.status(t); (st&StatusSYS != 0) != (v&CTRSys != 0) {
			t.Errorf("CTR %#02x: status %#02x SYS disagrees", v, st)
		}
		r.out(t, r.cmd, CmdReadCTR)
		if got := r.in(t, r.data); got != v {
			t.Errorf("CTR wrote %#02x, read %#02x", v, got)
		}
		// The data byte went to the CTR, not the keyboard: no ACK queued.
		if st := r.status(t); st&StatusOBF != 0 {
			t.Errorf("CTR %#02x: stray output byte, status %#02x", v, st)
		}
	}
}

func TestInternalRAM(t *testing.T) {
	r := newRig()
	r.out(t, r.cmd, 0x7f) // write RAM byte 31
	r.out(t, r.data, 0xa5)
	r.out(t, r.cmd, 0x3f)
	if got := r.in(t, r.data); got != 0xa5 {
		t.Fatalf("RAM[31] = %#02x, want 0xa5", got)
	}
	r.out(t, r.cmd, CmdReadCTR)
	if got := r.in(t, r.data); got != DefaultCTR {
		t.Fatalf("CTR = %#02x, changed by a RAM write", got)
	}
}

func TestEnableDisableFlipCTR(t *testing.T) {
	tests := []struct {
		cmd      byte
		set, clr byte
	}{
		{CmdKbdDisable, CTRKbdDis, 0},
		{CmdKbdEnable, 0, CTRKbdDis},
		{CmdAuxDisable, CTRAuxDis, 0},
		{CmdAuxEnable, 0, CTRAuxDis},
	}
	for _, tt := range tests {
		for _, start := range []byte{0x00, 0x30, DefaultCTR} {
			r := newRig()
			r.out(t, r.cmd, CmdWriteCTR)
			r.out(t, r.data, start)
			r.out(t, r.cmd, tt.cmd)
			r.out(t, r.cmd, CmdReadCTR)
			want := (start | tt.set) &^ tt.clr
			if got := r.in(t, r.data); got != want {
				t.Errorf("cmd %#02x on CTR %#02x: CTR %#02x, want %#02x", tt.cmd, start, got, want)
			}
		}
	}
}

// TestResetPaths: each request to pulse the reset line calls the callback
// exactly once, and nothing else does.
func TestResetPaths(t *testing.T) {
	type access struct {
		cmd bool
		v   byte
	}
	c := func(v byte) access { return access{true, v} }
	d := func(v byte) access { return access{false, v} }
	tests := []struct {
		name   string
		seq    []access
		resets int
	}{
		{"0xFE", []access{c(0xfe)}, 1},
		{"0xFE twice (Linux sends up to ten)", []access{c(0xfe), c(0xfe)}, 2},
		{"0xF0 pulses all four lines", []access{c(0xf0)}, 1},
		{"0xFA pulses reset and A20", []access{c(0xfa)}, 1},
		{"0xFF pulses nothing", []access{c(0xff)}, 0},
		{"0xF1 leaves reset alone", []access{c(0xf1)}, 0},
		{"0xFD leaves reset alone", []access{c(0xfd)}, 0},
		{"output port bit 0 clear", []access{c(CmdWriteOutPort), d(0xfe)}, 1},
		{"output port 0x00", []access{c(CmdWriteOutPort), d(0x00)}, 1},
		{"output port bit 0 set (A20 only)", []access{c(CmdWriteOutPort), d(0xdf)}, 0},
		{"output port twice", []access{c(CmdWriteOutPort), d(0x00), c(CmdWriteOutPort), d(0x03)}, 1},
		{"0xFE as keyboard data is not a reset", []access{d(0xfe)}, 0},
		{"0xFE as CTR value is not a reset", []access{c(CmdWriteCTR), d(0xfe)}, 0},
		{"D1 abandoned by another command", []access{c(CmdWriteOutPort), c(CmdSelfTest), d(0x00)}, 0},
		{"0xFE after a pending D1 is a command", []access{c(CmdWriteOutPort), c(0xfe)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			for _, a := range tt.seq {
				if a.cmd {
					r.out(t, r.cmd, a.v)
				} else {
					r.out(t, r.data, a.v)
				}
			}
			if r.resets != tt.resets {
				t.Fatalf("reset called %d times, want %d", r.resets, tt.resets)
			}
		})
	}
}

func TestOutputPortAndA20(t *testing.T) {
	r := newRig()
	r.out(t, r.cmd, CmdA20Off)
	r.out(t, r.cmd, CmdSelfTest) // leave a byte waiting: IRQ1 output high
	r.out(t, r.cmd, CmdReadOutPort)
	r.in(t, r.data) // the self-test answer
	// Reset released, A20 off, IRQ1 output high (the self-test answer was
	// waiting with keyboard interrupts enabled when the port was sampled).
	if got, want := r.in(t, r.data), byte(OutReset|OutKbdIRQ); got != want {
		t.Fatalf("output port = %#02x, want %#02x", got, want)
	}
	r.out(t, r.cmd, CmdWriteOutPort)
	r.out(t, r.data, 0x03|OutAuxIRQ) // IRQ bits are not latched
	r.out(t, r.cmd, CmdWriteCTR)
	r.out(t, r.data, 0) // no interrupts: the IRQ outputs stay low
	r.out(t, r.cmd, CmdReadOutPort)
	if got, want := r.in(t, r.data), byte(OutReset|OutA20); got != want {
		t.Fatalf("output port = %#02x, want %#02x", got, want)
	}
	// After a reset through the output port the line is released again.
	r.out(t, r.cmd, CmdWriteOutPort)
	r.out(t, r.data, 0x00)
	r.out(t, r.cmd, CmdReadOutPort)
	if got := r.in(t, r.data); got&OutReset == 0 {
		t.Fatalf("output port = %#02x, reset still asserted", got)
	}
}

func TestLoopback(t *testing.T) {
	r := newRig()
	// Linux's aux detection: 0xD3 then 0x5A must come back with AUXDATA.
	r.out(t, r.cmd, CmdWriteAuxOBF)
	r.out(t, r.data, 0x5a)
	if st := r.status(t); st&(StatusOBF|StatusAuxData) != StatusOBF|StatusAuxData {
		t.Fatalf("status = %#02x, want OBF and AUXDATA", st)
	}
	if got := r.in(t, r.data); got != 0x5a {
		t.Fatalf("aux loopback = %#02x", got)
	}
	r.out(t, r.cmd, CmdWriteKbdOBF)
	r.out(t, r.data, 0x1c)
	if st := r.status(t); st&(StatusOBF|StatusAuxData) != StatusOBF {
		t.Fatalf("status = %#02x, want OBF without AUXDATA", st)
	}
	if got := r.in(t, r.data); got != 0x1c {
		t.Fatalf("kbd loopback = %#02x", got)
	}
	// Bytes for the absent mouse vanish.
	r.out(t, r.cmd, CmdWriteAux)
	r.out(t, r.data, 0xff)
	if st := r.status(t); st&StatusOBF != 0 {
		t.Fatalf("status = %#02x after a byte to the absent mouse", st)
	}
}

func TestKeyboardReplies(t *testing.T) {
	tests := []struct {
		name string
		ctr  byte
		send []byte
		want []byte
	}{
		{"reset", DefaultCTR, []byte{0xff}, []byte{0xfa, 0xaa}},
		{"identify translated", DefaultCTR, []byte{0xf2}, []byte{0xfa, 0xab, 0x41}},
		{"identify raw", DefaultCTR &^ CTRXlate, []byte{0xf2}, []byte{0xfa, 0xab, 0x83}},
		{"echo", DefaultCTR, []byte{0xee}, []byte{0xee}},
		{"set LEDs", DefaultCTR, []byte{0xed, 0x07}, []byte{0xfa, 0xfa}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			r.out(t, r.cmd, CmdWriteCTR)
			r.out(t, r.data, tt.ctr)
			for _, v := range tt.send {
				r.out(t, r.data, v)
			}
			for i, w := range tt.want {
				if st := r.status(t); st&StatusOBF == 0 {
					t.Fatalf("byte %d: OBF clear", i)
				}
				if got := r.in(t, r.data); got != w {
					t.Fatalf("byte %d = %#02x, want %#02x", i, got, w)
				}
			}
			if st := r.status(t); st&StatusOBF != 0 {
				t.Fatalf("extra bytes: status %#02x", st)
			}
		})
	}
}

func TestQueueBounded(t *testing.T) {
	r := newRig()
	for i := 0; i < 100; i++ {
		r.out(t, r.cmd, CmdSelfTest)
	}
	n := 0
	for r.status(t)&StatusOBF != 0 {
		r.in(t, r.data)
		n++
		if n > 100 {
			t.Fatal("output buffer never drains")
		}
	}
	if n != maxQueue {
		t.Fatalf("drained %d bytes, want %d", n, maxQueue)
	}
}

func TestIRQ(t *testing.T) {
	r := newRig()
	kbd, aux := &irq.Fake{}, &irq.Fake{}
	r.c.SetIRQs(kbd, aux)
	// Two keyboard bytes: one rising edge each, line low once drained.
	r.out(t, r.data, 0xff)
	if kbd.Edges() != 1 || !kbd.High() {
		t.Fatalf("after reply: %d edges, high=%v", kbd.Edges(), kbd.High())
	}
	r.in(t, r.data)
	if kbd.Edges() != 2 || !kbd.High() {
		t.Fatalf("after first read: %d edges, high=%v", kbd.Edges(), kbd.High())
	}
	r.in(t, r.data)
	if kbd.High() {
		t.Fatal("IRQ1 still high with the buffer empty")
	}
	// Aux loopback raises IRQ12 only.
	r.out(t, r.cmd, CmdWriteAuxOBF)
	r.out(t, r.data, 0xa5)
	if aux.Edges() != 1 || kbd.Edges() != 2 {
		t.Fatalf("aux edges %d, kbd edges %d", aux.Edges(), kbd.Edges())
	}
	r.in(t, r.data)
	if aux.High() {
		t.Fatal("IRQ12 still high")
	}
	// With the CTR interrupt bits clear nothing is raised.
	r.out(t, r.cmd, CmdWriteCTR)
	r.out(t, r.data, CTRSys)
	r.out(t, r.cmd, CmdSelfTest)
	if kbd.Edges() != 2 || kbd.High() {
		t.Fatalf("IRQ1 raised with KBDINT clear")
	}
	// Enabling the interrupt while the byte waits raises the line.
	r.out(t, r.cmd, CmdWriteCTR)
	r.out(t, r.data, CTRSys|CTRKbdInt)
	// Command 0x60 has no answer, so the self-test answer still waits.
	if kbd.Edges() != 3 {
		t.Fatalf("enabling KBDINT with OBF set: %d edges, want 3", kbd.Edges())
	}
}

func TestBadWidths(t *testing.T) {
	r := newRig()
	for _, dev := range []bus.Device{r.data, r.cmd} {
		for _, n := range []int{0, 2, 4, 8} {
			b := make([]byte, n)
			if err := dev.Read(0, b); err == nil && n != 1 {
				t.Errorf("%d-byte read: no error", n)
			}
			for i, v := range b {
				if v != 0xff {
					t.Errorf("%d-byte read: byte %d = %#02x, want 0xff", n, i, v)
				}
			}
			if err := dev.Write(0, make([]byte, n)); err == nil {
				t.Errorf("%d-byte write: no error", n)
			}
		}
		b := []byte{0}
		if err := dev.Read(1, b); err == nil || b[0] != 0xff {
			t.Errorf("read at offset 1: err=%v, %#02x", err, b[0])
		}
	}
	// A 2-byte write of 0xFE 0xFE must not reboot.
	_ = r.cmd.Write(0, []byte{0xfe, 0xfe})
	if r.resets != 0 {
		t.Fatal("bad-width write reached the controller")
	}
}

func TestUnknownCommand(t *testing.T) {
	r := newRig()
	if err := r.cmd.Write(0, []byte{0x10}); err == nil {
		t.Fatal("unsupported command 0x10: no error")
	}
	if st := r.status(t); st&StatusOBF != 0 {
		t.Fatalf("status %#02x after unsupported command", st)
	}
}

func TestDescribe(t *testing.T) {
	r := newRig()
	desc := func(dev bus.Device, write bool, v byte) string {
		return dev.(bus.Describer).Describe(0, write, []byte{v})
	}
	tests := []struct {
		got, want string
	}{
		{desc(r.cmd, true, 0xfe), "i8042 command 0xfe (pulse reset line: reboot)"},
		{desc(r.cmd, true, 0xaa), "i8042 command 0xaa (controller self test)"},
		{desc(r.cmd, true, 0xf0), "i8042 command 0xf0 (pulse output lines 1111: reboot)"},
		{desc(r.cmd, true, 0xfd), "i8042 command 0xfd (pulse output lines 0010)"},
		{desc(r.cmd, false, 0x1d), "i8042 status read 0x1d (OBF SYS CMD UNLOCKED)"},
		{desc(r.data, false, 0x55), "i8042 data read 0x55"},
		{desc(r.data, true, 0xf4), "i8042 data write 0xf4 (to keyboard: ACKed)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	// Described after the access: the consumed command still explains it.
	r.out(t, r.cmd, CmdWriteOutPort)
	r.out(t, r.data, 0x00)
	if got, want := desc(r.data, true, 0x00), "i8042 data write 0x00 (output port: reset line low: reboot)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	r.out(t, r.cmd, CmdWriteCTR)
	r.out(t, r.data, 0x47)
	if got, want := desc(r.data, true, 0x47), "i8042 data write 0x47 (controller configuration byte: KBDINT AUXINT SYS XLATE)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := r.data.(bus.Describer).Describe(0, true, []byte{1, 2}); !strings.Contains(got, "bad") {
		t.Errorf("bad width described as %q", got)
	}
}

// TestConcurrent lets several vCPUs hammer both ports; run with -race.
func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	resets := 0
	c := New(func() { mu.Lock(); resets++; mu.Unlock() })
	c.SetIRQs(&irq.Fake{}, &irq.Fake{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte{0}
			for i := 0; i < 500; i++ {
				_ = c.CommandPort().Write(0, []byte{CmdSelfTest})
				_ = c.CommandPort().Read(0, b)
				_ = c.DataPort().Read(0, b)
				_ = c.CommandPort().Write(0, []byte{CmdPulseReset})
				_ = c.DataPort().(bus.Describer).Describe(0, true, b)
			}
		}()
	}
	wg.Wait()
	if resets != 4*500 {
		t.Fatalf("%d resets, want %d", resets, 4*500)
	}
}
