package serial

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmlab/devices/irq"
)

// rig is a UART wired to a fake IRQ line and a buffer, with helpers that
// fail the test on an unexpected error.
type rig struct {
	t    *testing.T
	u    *UART
	line *irq.Fake
	out  *bytes.Buffer
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t, line: &irq.Fake{}, out: &bytes.Buffer{}}
	r.u = New("COM1", r.line, r.out)
	return r
}

func (r *rig) in(off uint64) byte {
	r.t.Helper()
	var b [1]byte
	if err := r.u.Read(off, b[:]); err != nil {
		r.t.Fatalf("read offset %d: %v", off, err)
	}
	return b[0]
}

func (r *rig) outb(off uint64, v byte) {
	r.t.Helper()
	if err := r.u.Write(off, []byte{v}); err != nil {
		r.t.Fatalf("write %#02x to offset %d: %v", v, off, err)
	}
}

func (r *rig) want(off uint64, want byte, what string) {
	r.t.Helper()
	if got := r.in(off); got != want {
		r.t.Errorf("%s: read offset %d = %#02x, want %#02x", what, off, got, want)
	}
}

// linuxProbe replays the register sequence of Linux's 8250 autoconfig()
// and autoconfig_16550a() (drivers/tty/serial/8250/8250_port.c) against
// the UART and returns the port type Linux would settle on.
func linuxProbe(r *rig) string {
	in, out := r.in, r.outb

	// Scratch test on IER.
	scratch := in(regIER)
	out(regIER, 0)
	s2 := in(regIER) & 0x0f
	out(regIER, 0x0f)
	s3 := in(regIER) & 0x0f
	out(regIER, scratch)
	if s2 != 0 || s3 != 0x0f {
		return "none (IER scratch test)"
	}

	saveMCR, saveLCR := in(regMCR), in(regLCR)
	// Loopback test: LOOP|OUT2|RTS must read back as DCD|CTS.
	out(regMCR, mcrLoop|mcrOUT2|mcrRTS)
	st := in(regMSR) & 0xf0
	out(regMCR, saveMCR)
	if st != msrDCD|msrCTS {
		return fmt.Sprintf("none (loopback MSR %#02x)", st)
	}

	// Zero the EFR of chips that have one (LCR 0xBF selects it), then
	// turn the FIFOs on and look at IIR bits 7:6.
	out(regLCR, 0xbf)
	out(2, 0)
	out(regLCR, 0)
	out(regIIR, fcrEnable)
	typ := "16550A"
	switch in(regIIR) >> 6 {
	case 0:
		out(regSCR, 0xa5)
		a := in(regSCR)
		out(regSCR, 0x5a)
		b := in(regSCR)
		typ = "8250"
		if a == 0xa5 && b == 0x5a {
			typ = "16450"
		}
	case 1:
		typ = "unknown"
	case 2:
		typ = "16550"
	case 3:
		typ = probe16550A(r)
	}

	out(regLCR, saveLCR)
	out(regMCR, saveMCR)
	// serial8250_clear_fifos, then drain RX and mask interrupts.
	out(regIIR, fcrEnable)
	out(regIIR, fcrEnable|fcrClearRx|fcrClearTx)
	out(regIIR, 0)
	in(regData)
	out(regIER, 0)
	return typ
}

func probe16550A(r *rig) string {
	in, out := r.in, r.outb
	// EFR visible with DLAB set: ST16C650V1.
	out(regLCR, 0x80)
	if in(2) == 0 {
		return "ST16650"
	}
	// EFR visible with LCR 0xBF: ST16C650V2, TI16C752 and friends.
	out(regLCR, 0xbf)
	if in(2) == 0 {
		return "EFR UART"
	}
	// National SuperIO: EXCR1 at offset 2 with LCR 0xE0 tracks MCR.LOOP.
	out(regLCR, 0)
	s1 := in(regMCR)
	out(regLCR, 0xe0)
	s2 := in(2)
	if (s1^s2)&mcrLoop == 0 {
		out(regLCR, 0)
		out(regMCR, s1^mcrLoop)
		out(regLCR, 0xe0)
		s2 = in(2)
		out(regLCR, 0)
		out(regMCR, s1)
		if (s1^s2)&mcrLoop != 0 {
			return "NS16550A"
		}
	}
	// TI16750: IIR bit 5 follows FCR bit 5 when written with DLAB set.
	out(regLCR, 0)
	out(regIIR, fcrEnable|fcr64Byte)
	a := in(regIIR) & 0xe0
	out(regIIR, fcrEnable)
	out(regLCR, 0x80)
	out(regIIR, fcrEnable|fcr64Byte)
	b := in(regIIR) & 0xe0
	out(regIIR, fcrEnable)
	out(regLCR, 0)
	if a == 0xc0 && b == 0xe0 {
		return "16750"
	}
	// XScale: IER bit 6 (UUE) is writable.
	ier := in(regIER)
	out(regIER, ier&^0x40)
	if in(regIER)&0x40 == 0 {
		out(regIER, ier|0x40)
		if in(regIER)&0x40 != 0 {
			return "XScale"
		}
		out(regIER, ier)
	}
	return "16550A"
}

func TestLinuxAutoconfig(t *testing.T) {
	r := newRig(t)
	r.outb(regSCR, 0x55) // leftover firmware state must not matter
	if got := linuxProbe(r); got != "16550A" {
		t.Fatalf("Linux would detect %q, want 16550A", got)
	}
	if r.out.Len() != 0 {
		t.Errorf("probe transmitted %q, want nothing", r.out.String())
	}
	if n := r.line.Edges(); n != 0 {
		t.Errorf("probe raised %d interrupts, want 0 (IER was 0 throughout)", n)
	}
	r.want(regIER, 0, "IER after probe")
	r.want(regLCR, 0, "LCR after probe")
	r.want(regMCR, 0, "MCR after probe")
	r.want(regIIR, iirNone, "IIR after probe (FIFOs off, nothing pending)")
	r.want(regLSR, lsrTHRE|lsrTEMT, "LSR after probe")
}

func TestAutoconfigSteps(t *testing.T) {
	// The individual checks autoconfig makes, with the values Linux
	// compares against.
	tests := []struct {
		name  string
		setup []struct{ off, v byte }
		off   uint64
		mask  byte
		want  byte
	}{
		{"IER keeps low nibble", []struct{ off, v byte }{{regIER, 0xff}}, regIER, 0xff, 0x0f},
		{"IER scratch 0", []struct{ off, v byte }{{regIER, 0x0f}, {regIER, 0}}, regIER, 0xff, 0x00},
		{"loopback MSR LOOP|OUT2|RTS", []struct{ off, v byte }{{regMCR, 0x1a}}, regMSR, 0xf0, 0x90},
		{"MSR outside loopback", []struct{ off, v byte }{{regMCR, 0x0b}}, regMSR, 0xff, 0xb0},
		{"FCR=0x01 IIR 16550A", []struct{ off, v byte }{{regIIR, 0x01}}, regIIR, 0xc0, 0xc0},
		{"FCR=0xE7 IIR top bits", []struct{ off, v byte }{{regIIR, 0xe7}}, regIIR, 0xe0, 0xc0},
		{"FCR=0x21 with DLAB: no 16750 bit", []struct{ off, v byte }{{regLCR, 0x80}, {regIIR, 0x21}}, regIIR, 0xe0, 0xc0},
		{"FCR=0 IIR 16450 mode", []struct{ off, v byte }{{regIIR, 0x01}, {regIIR, 0x00}}, regIIR, 0xff, 0x01},
		{"EFR probe LCR=0xBF reads nonzero", []struct{ off, v byte }{{regIIR, 0x01}, {regLCR, 0xbf}}, 2, 0xff, 0xc1},
		{"MCR bits 7:5 read zero", []struct{ off, v byte }{{regMCR, 0xff}}, regMCR, 0xff, 0x1f},
		{"scratch register", []struct{ off, v byte }{{regSCR, 0xa5}}, regSCR, 0xff, 0xa5},
		{"LCR reads back", []struct{ off, v byte }{{regLCR, 0x1b}}, regLCR, 0xff, 0x1b},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			for _, w := range tc.setup {
				r.outb(uint64(w.off), w.v)
			}
			if got := r.in(tc.off) & tc.mask; got != tc.want {
				t.Errorf("read offset %d & %#02x = %#02x, want %#02x", tc.off, tc.mask, got, tc.want)
			}
		})
	}
}

// TestLinuxStartupTests replays the THRE checks of serial8250_do_startup:
// a UART that fails them is marked UART_BUG_THRE / UART_BUG_TXEN and
// driven by polling.
func TestLinuxStartupTests(t *testing.T) {
	r := newRig(t)
	r.outb(regLCR, 0x03)
	r.outb(regMCR, mcrDTR|mcrRTS|mcrOUT2)

	// UART_BUG_THRE: THRE must be re-asserted after IER is toggled.
	r.outb(regIER, ierETBEI)
	iir1 := r.in(regIIR)
	r.outb(regIER, 0)
	r.outb(regIER, ierETBEI)
	iir2 := r.in(regIIR)
	r.outb(regIER, 0)
	if iir1&iirNone == 0 && iir2&iirNone != 0 {
		t.Errorf("THRE not re-asserted (IIR %#02x then %#02x): Linux sets UART_BUG_THRE", iir1, iir2)
	}
	if iir1 != iirTHRE || iir2 != iirTHRE {
		t.Errorf("IIR after enabling ETBEI = %#02x, %#02x, want %#02x both times", iir1, iir2, iirTHRE)
	}

	// UART_BUG_TXEN: enabling ETBEI with TEMT set must show in IIR.
	r.outb(regIER, ierETBEI)
	lsr := r.in(regLSR)
	iir := r.in(regIIR)
	r.outb(regIER, 0)
	if lsr&lsrTEMT != 0 && iir&iirNone != 0 {
		t.Errorf("no THRE interrupt on enabling ETBEI (LSR %#02x IIR %#02x): Linux sets UART_BUG_TXEN", lsr, iir)
	}
	if got := r.line.Edges(); got != 3 {
		t.Errorf("edges = %d, want 3 (one per ETBEI 0->1)", got)
	}
}

func TestTransmit(t *testing.T) {
	tests := []struct {
		name      string
		mcr, ier  byte
		loop      bool
		data      string
		wantEdges int
		wantIIR   byte // IIR after the writes
	}{
		{"polled, no interrupts", mcrOUT2, 0, false, "Hi\n", 0, iirNone},
		{"THRE enabled: enable edge plus one per byte", mcrOUT2, ierETBEI, false, "Hi\n", 4, iirTHRE},
		{"OUT2 clear gates the line", mcrDTR | mcrRTS, ierETBEI, false, "Hi\n", 0, iirTHRE},
		{"RX interrupt enabled only", mcrOUT2, ierERBFI, false, "abc", 0, iirNone},
		{"binary bytes", mcrOUT2, 0, false, "\x00\xff\x1b[0m", 0, iirNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.outb(regMCR, tc.mcr)
			r.outb(regIER, tc.ier)
			for i := 0; i < len(tc.data); i++ {
				if lsr := r.in(regLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
					t.Fatalf("LSR = %#02x before byte %d, want THRE|TEMT set", lsr, i)
				}
				r.outb(regData, tc.data[i])
			}
			if got := r.out.String(); got != tc.data {
				t.Errorf("out = %q, want %q", got, tc.data)
			}
			if got := r.line.Edges(); got != tc.wantEdges {
				t.Errorf("edges = %d, want %d", got, tc.wantEdges)
			}
			if got := r.line.High(); got {
				t.Error("line left high; pulses must end low")
			}
			if got := r.in(regIIR); got != tc.wantIIR {
				t.Errorf("IIR = %#02x, want %#02x", got, tc.wantIIR)
			}
			st := r.u.Stats()
			if st.TxBytes != uint64(len(tc.data)) || st.Interrupts != uint64(tc.wantEdges) {
				t.Errorf("stats = %+v, want TxBytes %d Interrupts %d", st, len(tc.data), tc.wantEdges)
			}
		})
	}
}

// TestTransmitInterruptDriven runs a message through a miniature version
// of Linux's interrupt handler: start_tx enables ETBEI, each interrupt
// reads IIR and LSR and refills up to 16 bytes, and stop_tx clears ETBEI
// when the buffer is empty.
func TestTransmitInterruptDriven(t *testing.T) {
	r := newRig(t)
	r.outb(regLCR, 0x03)
	r.outb(regIIR, fcrEnable|fcrClearRx|fcrClearTx|0x80)
	r.outb(regMCR, mcrDTR|mcrRTS|mcrOUT2)
	msg := []byte(strings.Repeat("kvmlab ", 6)) // 42 bytes, three FIFO loads
	pending := msg

	ier := byte(ierETBEI)
	r.outb(regIER, ier) // start_tx
	handled := 0
	for handled < r.line.Edges() {
		handled++
		for passes := 0; ; passes++ {
			if passes > 10 {
				t.Fatal("IIR never reported no interrupt")
			}
			iir := r.in(regIIR)
			if iir&iirNone != 0 {
				break
			}
			lsr := r.in(regLSR)
			if lsr&lsrTHRE != 0 && ier&ierETBEI != 0 {
				n := min(len(pending), FIFOSize)
				for _, b := range pending[:n] {
					r.outb(regData, b)
				}
				pending = pending[n:]
				if len(pending) == 0 {
					ier &^= ierETBEI // stop_tx
					r.outb(regIER, ier)
				}
			}
		}
	}
	if !bytes.Equal(r.out.Bytes(), msg) {
		t.Fatalf("out = %q, want %q", r.out.Bytes(), msg)
	}
	// ETBEI enable, then one per 16-byte load (three loads): the writes
	// after the first of a load add no edge until IIR or LSR is read.
	if got, want := r.line.Edges(), 1+(len(msg)+FIFOSize-1)/FIFOSize; got != want {
		t.Errorf("edges = %d, want %d (ETBEI enable plus one per FIFO load)", got, want)
	}
	if got, want := r.u.Stats().CoalescedTHRE, uint64(len(msg)-3); got != want {
		t.Errorf("CoalescedTHRE = %d, want %d", got, want)
	}
	r.want(regIIR, iirFIFOs|iirNone, "IIR when done")
}

func TestReceive(t *testing.T) {
	r := newRig(t)
	r.outb(regIIR, fcrEnable|0x80) // FIFOs on, trigger 8 (what Linux writes)
	select {
	case <-r.u.Room(): // the receiver grew from 1 byte to 16
	default:
		t.Error("enabling the FIFOs did not signal Room")
	}
	r.outb(regMCR, mcrDTR|mcrRTS|mcrOUT2)
	r.outb(regIER, ierERBFI|ierELSI)
	r.want(regLSR, lsrTHRE|lsrTEMT, "LSR empty")

	if n := r.u.Input([]byte("hello")); n != 5 {
		t.Fatalf("Input took %d, want 5", n)
	}
	if got := r.line.Edges(); got != 1 {
		t.Errorf("edges after first input = %d, want 1", got)
	}
	r.want(regIIR, iirFIFOs|iirRxData, "IIR with data")
	r.want(regLSR, lsrTHRE|lsrTEMT|lsrDR, "LSR with data")

	// More input while data is pending: INTR is already high, no new edge.
	long := []byte("0123456789abcdefghij")
	if n := r.u.Input(long); n != FIFOSize-5 {
		t.Fatalf("Input into partly full FIFO took %d, want %d", n, FIFOSize-5)
	}
	if n := r.u.Input([]byte("x")); n != 0 {
		t.Fatalf("Input into full FIFO took %d, want 0", n)
	}
	if got := r.line.Edges(); got != 1 {
		t.Errorf("edges while INTR stayed high = %d, want 1", got)
	}
	if lsr := r.in(regLSR); lsr&lsrOE != 0 {
		t.Errorf("LSR = %#02x: Input refusing bytes must not set OE", lsr)
	}

	// Drain: reading RBR pops in order, and signals Room.
	select {
	case <-r.u.Room():
		t.Fatal("Room signalled before anything was drained")
	default:
	}
	var got []byte
	for r.in(regLSR)&lsrDR != 0 {
		got = append(got, r.in(regData))
	}
	if want := "hello" + string(long[:FIFOSize-5]); string(got) != want {
		t.Errorf("drained %q, want %q", got, want)
	}
	select {
	case <-r.u.Room():
	default:
		t.Error("Room not signalled after draining")
	}
	r.want(regIIR, iirFIFOs|iirNone, "IIR after drain")
	r.want(regLSR, lsrTHRE|lsrTEMT, "LSR after drain")

	// The next byte is a new rising edge.
	r.u.Input([]byte("!"))
	if got := r.line.Edges(); got != 2 {
		t.Errorf("edges after refill = %d, want 2", got)
	}
	if st := r.u.Stats(); st.RxBytes != 17 || st.Interrupts != 2 {
		t.Errorf("stats = %+v, want RxBytes 17 Interrupts 2", st)
	}
}

func TestReceiveLimits(t *testing.T) {
	tests := []struct {
		name   string
		setup  []struct{ off, v byte }
		input  int
		want   int
		reread int // Input again after the first, how many taken
	}{
		{"16450 mode holds one byte", nil, 5, 1, 0},
		{"FIFO mode holds 16", []struct{ off, v byte }{{regIIR, 0x01}}, 20, 16, 0},
		{"FIFO exactly full", []struct{ off, v byte }{{regIIR, 0xc1}}, 16, 16, 0},
		{"loopback refuses host input", []struct{ off, v byte }{{regIIR, 0x01}, {regMCR, 0x10}}, 4, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			for _, w := range tc.setup {
				r.outb(uint64(w.off), w.v)
			}
			in := bytes.Repeat([]byte{'z'}, tc.input)
			if n := r.u.Input(in); n != tc.want {
				t.Errorf("Input(%d bytes) = %d, want %d", tc.input, n, tc.want)
			}
			if n := r.u.Input(in); n != tc.reread {
				t.Errorf("second Input = %d, want %d", n, tc.reread)
			}
		})
	}

	t.Run("FCR clear and mode switch empty the FIFO", func(t *testing.T) {
		r := newRig(t)
		r.outb(regIIR, fcrEnable)
		r.u.Input([]byte("abcdefgh"))
		r.outb(regIIR, fcrEnable|fcrClearRx)
		r.want(regLSR, lsrTHRE|lsrTEMT, "LSR after FCR clear RX")
		if n := r.u.Input([]byte("ab")); n != 2 {
			t.Fatalf("Input after clear = %d, want 2", n)
		}
		r.outb(regIIR, 0) // back to 16450 mode
		r.want(regLSR, lsrTHRE|lsrTEMT, "LSR after leaving FIFO mode")
		select {
		case <-r.u.Room():
		default:
			t.Error("Room not signalled after FIFO clear")
		}
	})

	t.Run("leaving loopback signals Room", func(t *testing.T) {
		r := newRig(t)
		r.outb(regMCR, mcrLoop)
		if n := r.u.Input([]byte("a")); n != 0 {
			t.Fatalf("Input in loopback = %d, want 0", n)
		}
		r.outb(regMCR, 0)
		select {
		case <-r.u.Room():
		default:
			t.Fatal("Room not signalled when loopback ended")
		}
		if n := r.u.Input([]byte("a")); n != 1 {
			t.Fatalf("Input after loopback = %d, want 1", n)
		}
	})
}

func TestLoopback(t *testing.T) {
	r := newRig(t)
	r.outb(regIIR, fcrEnable)
	r.outb(regMCR, mcrLoop|mcrOUT2)
	r.outb(regIER, ierERBFI|ierELSI)
	for i := range FIFOSize {
		r.outb(regData, byte('A'+i))
	}
	if r.out.Len() != 0 {
		t.Errorf("loopback leaked %q to the output", r.out.String())
	}
	r.want(regIIR, iirFIFOs|iirRxData, "IIR with looped data")
	if got := r.line.Edges(); got != 1 {
		t.Errorf("edges = %d, want 1", got)
	}
	// The 17th byte overruns: OE and a line-status interrupt, which
	// outranks received data.
	r.outb(regData, 'Z')
	r.want(regIIR, iirFIFOs|iirLSR, "IIR after overrun")
	r.want(regLSR, lsrTHRE|lsrTEMT|lsrDR|lsrOE, "LSR after overrun")
	r.want(regLSR, lsrTHRE|lsrTEMT|lsrDR, "LSR read clears OE")
	r.want(regIIR, iirFIFOs|iirRxData, "IIR after LSR read")
	var got []byte
	for r.in(regLSR)&lsrDR != 0 {
		got = append(got, r.in(regData))
	}
	if string(got) != "ABCDEFGHIJKLMNOP" {
		t.Errorf("looped back %q, want ABCDEFGHIJKLMNOP", got)
	}
	if st := r.u.Stats(); st.Overruns != 1 || st.RxBytes != 16 || st.TxBytes != 0 {
		t.Errorf("stats = %+v, want Overruns 1 RxBytes 16 TxBytes 0", st)
	}
}

func TestMSR(t *testing.T) {
	tests := []struct {
		mcr  byte
		want byte // MSR & 0xf0
	}{
		{0x00, msrDCD | msrDSR | msrCTS},
		{0x0f, msrDCD | msrDSR | msrCTS},
		{0x10, 0x00},
		{0x11, msrDSR},
		{0x12, msrCTS},
		{0x14, msrRI},
		{0x18, msrDCD},
		{0x1a, msrDCD | msrCTS},
		{0x1f, 0xf0},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("MCR=%#02x", tc.mcr), func(t *testing.T) {
			r := newRig(t)
			r.outb(regMCR, tc.mcr)
			if got := r.in(regMSR) & 0xf0; got != tc.want {
				t.Errorf("MSR & 0xf0 = %#02x, want %#02x", got, tc.want)
			}
		})
	}

	t.Run("deltas", func(t *testing.T) {
		r := newRig(t)
		r.want(regMSR, 0xb0, "MSR at reset")
		// Entering loopback with all outputs off drops CTS, DSR, DCD.
		r.outb(regMCR, mcrLoop)
		r.want(regMSR, msrDCTS|msrDDSR|msrDDCD, "MSR after entering loopback")
		r.want(regMSR, 0x00, "MSR deltas cleared on read")
		// RI rising sets no delta; falling sets TERI.
		r.outb(regMCR, mcrLoop|mcrOUT1)
		r.want(regMSR, msrRI, "RI rising")
		r.outb(regMCR, mcrLoop)
		r.want(regMSR, msrTERI, "RI falling")
	})

	t.Run("modem status interrupt", func(t *testing.T) {
		r := newRig(t)
		r.outb(regIER, ierEDSSI)
		r.outb(regMCR, mcrLoop|mcrOUT2) // DCD rises, the others fall
		r.want(regIIR, iirMSR, "IIR with MSR delta")
		if got := r.line.Edges(); got != 1 {
			t.Errorf("edges = %d, want 1", got)
		}
		r.in(regMSR)
		r.want(regIIR, iirNone, "IIR after MSR read")
	})
}

func TestDLAB(t *testing.T) {
	r := newRig(t)
	r.outb(regIER, 0x05)
	r.outb(regLCR, lcrDLAB|0x03)
	r.want(regData, 12, "DLL at reset (9600 baud)")
	r.want(regIER, 0, "DLM at reset")
	r.outb(regData, 0x01) // 115200 baud
	r.outb(regIER, 0x00)
	r.want(regData, 0x01, "DLL")
	r.want(regIER, 0x00, "DLM")
	r.outb(regIER, 0xa5)
	r.want(regIER, 0xa5, "DLM keeps all 8 bits")
	if r.out.Len() != 0 {
		t.Errorf("DLL write transmitted %q", r.out.String())
	}
	// IIR, LSR and SCR are not behind DLAB.
	r.want(regIIR, iirNone, "IIR with DLAB")
	r.want(regLSR, lsrTHRE|lsrTEMT, "LSR with DLAB")
	r.u.Input([]byte("q"))
	r.want(regData, 0x01, "DLL read does not pop RX")
	r.outb(regLCR, 0x03)
	r.want(regIER, 0x05, "IER untouched by DLM writes")
	r.want(regData, 'q', "RBR after DLAB cleared")
	r.outb(regLCR, lcrDLAB)
	r.want(regData, 0x01, "DLL kept")
	r.want(regIER, 0xa5, "DLM kept")
}

func TestIIRPriorities(t *testing.T) {
	r := newRig(t)
	r.outb(regIIR, fcrEnable)
	r.outb(regMCR, mcrLoop|mcrOUT2)
	r.in(regMSR) // drop the deltas from entering loopback
	for i := range FIFOSize + 1 {
		r.outb(regData, byte(i)) // 16 bytes plus an overrun
	}
	r.outb(regMCR, mcrLoop|mcrOUT2|mcrRTS) // CTS delta
	r.outb(regIER, ierMask)                // everything pending at once

	steps := []struct {
		action func()
		what   string
		want   byte
	}{
		{func() {}, "all four pending: line status first", iirFIFOs | iirLSR},
		{func() { r.in(regLSR) }, "LSR read: RX data next", iirFIFOs | iirRxData},
		{func() {}, "IIR read does not clear RX data", iirFIFOs | iirRxData},
		{func() {
			for r.in(regLSR)&lsrDR != 0 {
				r.in(regData)
			}
		}, "FIFO drained: THRE next", iirFIFOs | iirTHRE},
		{func() {}, "IIR read cleared THRE: modem status last", iirFIFOs | iirMSR},
		{func() { r.in(regMSR) }, "MSR read: nothing pending", iirFIFOs | iirNone},
		{func() { r.outb(regData, 'x') }, "THR write (looped): RX data beats THRE", iirFIFOs | iirRxData},
		{func() { r.in(regData) }, "RBR read: THRE survived the earlier IIR read", iirFIFOs | iirTHRE},
		{func() { r.outb(regIER, ierERBFI) }, "ETBEI disabled masks THRE", iirFIFOs | iirNone},
	}
	for _, s := range steps {
		s.action()
		if got := r.in(regIIR); got != s.want {
			t.Errorf("%s: IIR = %#02x, want %#02x", s.what, got, s.want)
		}
	}
}

func TestOUT2Gating(t *testing.T) {
	r := newRig(t)
	r.outb(regIER, ierERBFI)
	r.u.Input([]byte("a"))
	if got := r.line.Edges(); got != 0 {
		t.Fatalf("edges with OUT2 clear = %d, want 0", got)
	}
	r.want(regIIR, iirRxData, "IIR reports the condition even with OUT2 clear")
	// Setting OUT2 connects the already-high INTR to the line: one edge.
	r.outb(regMCR, mcrOUT2)
	if got := r.line.Edges(); got != 1 {
		t.Fatalf("edges after setting OUT2 = %d, want 1", got)
	}
	r.outb(regMCR, mcrOUT2|mcrDTR) // still high: no new edge
	if got := r.line.Edges(); got != 1 {
		t.Fatalf("edges after unrelated MCR write = %d, want 1", got)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		lcr   byte
		off   uint64
		write bool
		data  []byte
		want  string
	}{
		{0, 0, true, []byte{'H'}, "COM1 THR write 'H'"},
		{0, 0, true, []byte{'\n'}, `COM1 THR write '\n'`},
		{0, 0, true, []byte{0xe9}, "COM1 THR write 0xe9"},
		{0, 0, false, []byte{'x'}, "COM1 RBR read 'x'"},
		{0x80, 0, true, []byte{0x01}, "COM1 DLL write 0x01 (DLAB)"},
		{0x80, 1, false, []byte{0x00}, "COM1 DLM read 0x00 (DLAB)"},
		{0, 1, true, []byte{0x0f}, "COM1 IER write 0x0f (ERBFI ETBEI ELSI EDSSI)"},
		{0, 1, true, []byte{0x00}, "COM1 IER write 0x00 (none)"},
		{0, 2, false, []byte{0xc2}, "COM1 IIR read 0xc2 (THRE, FIFOs on)"},
		{0, 2, false, []byte{0x01}, "COM1 IIR read 0x01 (no interrupt)"},
		{0, 2, true, []byte{0xc7}, "COM1 FCR write 0xc7 (FIFOs on|clear RX|clear TX, RX trigger 14)"},
		{0, 2, true, []byte{0x00}, "COM1 FCR write 0x00 (FIFOs off)"},
		{0, 3, true, []byte{0x03}, "COM1 LCR write 0x03 (8N1)"},
		{0, 3, true, []byte{0x83}, "COM1 LCR write 0x83 (8N1|DLAB)"},
		{0, 3, true, []byte{0x1a}, "COM1 LCR write 0x1a (7E1)"},
		{0, 4, true, []byte{0x0b}, "COM1 MCR write 0x0b (DTR RTS OUT2)"},
		{0, 4, true, []byte{0x1a}, "COM1 MCR write 0x1a (RTS OUT2 LOOP)"},
		{0, 5, false, []byte{0x60}, "COM1 LSR read 0x60 (THRE TEMT)"},
		{0, 5, false, []byte{0x61}, "COM1 LSR read 0x61 (DR THRE TEMT)"},
		{0, 5, true, []byte{0x00}, "COM1 LSR write 0x00 (read-only, ignored)"},
		{0, 6, false, []byte{0xb0}, "COM1 MSR read 0xb0 (CTS DSR DCD)"},
		{0, 7, true, []byte{0x55}, "COM1 SCR write 0x55"},
		{0, 0, false, []byte{1, 2}, "COM1 bad 2-byte read at offset 0"},
		{0, 9, true, []byte{0}, "COM1 write at offset 9 (no such register)"},
	}
	for _, tc := range tests {
		r := newRig(t)
		r.outb(regLCR, tc.lcr)
		data := append([]byte(nil), tc.data...)
		if got := r.u.Describe(tc.off, tc.write, data); got != tc.want {
			t.Errorf("Describe(%d, %v, % x) with LCR %#02x = %q, want %q", tc.off, tc.write, tc.data, tc.lcr, got, tc.want)
		}
		if !bytes.Equal(data, tc.data) {
			t.Errorf("Describe changed data to % x", data)
		}
	}
}

func TestBadAccess(t *testing.T) {
	tests := []struct {
		name  string
		off   uint64
		width int
		err   error
	}{
		{"empty", 0, 0, ErrBadWidth},
		{"word THR", 0, 2, ErrBadWidth},
		{"dword LSR", 5, 4, ErrBadWidth},
		{"qword", 0, 8, ErrBadWidth},
		{"offset 8", 8, 1, ErrBadOffset},
		{"huge offset", 1 << 40, 1, ErrBadOffset},
		{"huge offset and width", ^uint64(0), 3, ErrBadWidth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.outb(regIER, ierETBEI)
			r.outb(regMCR, mcrOUT2)
			edges := r.line.Edges()

			buf := bytes.Repeat([]byte{0x11}, tc.width)
			if err := r.u.Read(tc.off, buf); !errors.Is(err, tc.err) {
				t.Errorf("Read error = %v, want %v", err, tc.err)
			}
			for i, b := range buf {
				if b != 0xff {
					t.Errorf("Read filled byte %d with %#02x, want 0xff", i, b)
				}
			}
			if err := r.u.Write(tc.off, bytes.Repeat([]byte{'A'}, tc.width)); !errors.Is(err, tc.err) {
				t.Errorf("Write error = %v, want %v", err, tc.err)
			}
			if r.out.Len() != 0 || r.line.Edges() != edges {
				t.Errorf("bad write had an effect: out %q, edges %d -> %d", r.out.String(), edges, r.line.Edges())
			}
			r.want(regIIR, iirTHRE, "IIR after bad accesses (THRE still latched)")
			if st := r.u.Stats(); st.BadAccesses != 2 {
				t.Errorf("BadAccesses = %d, want 2", st.BadAccesses)
			}
			// The UART keeps working.
			r.outb(regData, 'k')
			if r.out.String() != "k" {
				t.Errorf("out after bad accesses = %q, want \"k\"", r.out.String())
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

type failLine struct{}

func (failLine) Set(bool) error { return errors.New("line gone") }

func TestErrorsPropagate(t *testing.T) {
	u := New("COM2", failLine{}, failWriter{})
	if err := u.Write(regData, []byte{'x'}); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("THR write with failing writer: %v, want ErrClosedPipe", err)
	}
	if err := u.Write(regMCR, []byte{mcrOUT2}); err != nil {
		t.Fatal(err)
	}
	if err := u.Write(regIER, []byte{ierETBEI}); err == nil || !strings.Contains(err.Error(), "line gone") {
		t.Errorf("IER write with failing line: %v, want line error", err)
	}
	if st := u.Stats(); st.TxErrors != 1 || st.IRQErrors != 1 {
		t.Errorf("stats = %+v, want TxErrors 1 IRQErrors 1", st)
	}
	// nil line and writer are accepted.
	n := New("COM3", nil, nil)
	if err := n.Write(regData, []byte{'x'}); err != nil {
		t.Errorf("nil writer: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// TestConcurrent feeds input from a host goroutine that waits on Room while
// two "vCPUs" receive and transmit; run with -race.
func TestConcurrent(t *testing.T) {
	var out syncBuffer
	line := &irq.Fake{}
	u := New("COM1", line, &out)
	must := func(err error) {
		if err != nil {
			t.Error(err)
		}
	}
	must(u.Write(regIIR, []byte{fcrEnable}))
	must(u.Write(regMCR, []byte{mcrOUT2}))
	must(u.Write(regIER, []byte{ierERBFI}))

	input := make([]byte, 5000)
	for i := range input {
		input[i] = byte(i % 251)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // host input
		defer wg.Done()
		p := input
		for len(p) > 0 {
			n := u.Input(p)
			p = p[n:]
			if n == 0 {
				select {
				case <-u.Room():
				case <-time.After(time.Millisecond):
					// A drain between Input and the wait is signalled
					// on the channel, so this is only a safety net.
				}
			}
		}
	}()
	var got []byte
	go func() { // vCPU 0: polled receive
		defer wg.Done()
		b := make([]byte, 1)
		deadline := time.Now().Add(10 * time.Second)
		for len(got) < len(input) && time.Now().Before(deadline) {
			must(u.Read(regLSR, b))
			if b[0]&lsrDR == 0 {
				continue
			}
			must(u.Read(regData, b))
			got = append(got, b[0])
		}
	}()
	go func() { // vCPU 1: transmit
		defer wg.Done()
		for i := range 1000 {
			must(u.Write(regData, []byte{byte('a' + i%26)}))
			b := make([]byte, 1)
			must(u.Read(regIIR, b))
		}
	}()
	wg.Wait()
	if !bytes.Equal(got, input) {
		t.Errorf("received %d bytes, want %d in order", len(got), len(input))
	}
	if out.b.Len() != 1000 {
		t.Errorf("transmitted %d bytes, want 1000", out.b.Len())
	}
	if st := u.Stats(); st.Interrupts != uint64(line.Edges()) {
		t.Errorf("Interrupts = %d, line saw %d edges", st.Interrupts, line.Edges())
	}
}

// edgeLine counts rising edges in O(1); irq.Fake keeps every level and
// rescans them, which is quadratic over a long fuzz program.
type edgeLine struct {
	mu    sync.Mutex
	high  bool
	edges int
}

func (l *edgeLine) Set(high bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if high && !l.high {
		l.edges++
	}
	l.high = high
	return nil
}

func (l *edgeLine) Edges() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.edges
}

func (l *edgeLine) High() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.high
}

// FuzzUART decodes the input into a program of register accesses and Input
// calls, three bytes per step (op, offset, value), and checks invariants
// after every step.
func FuzzUART(f *testing.F) {
	// Program opcodes (op % 6): 0-1 read, 2-3 write, 4 Input of the next
	// value%20 program bytes, 5 bad-width read and write.
	const rd, wr, input = 0, 2, 4
	f.Add([]byte{})
	f.Add([]byte{ // FIFOs on, OUT2, all interrupts, 5 bytes in, read IIR and RBR
		wr, regIIR, 0xe7, wr, regMCR, 0x1b, wr, regIER, 0x0f,
		input, 0, 5, 'a', 'b', 'c', 'd', 'e',
		rd, regIIR, 0, rd, regData, 0})
	f.Add([]byte{ // DLAB on, divisor 1, DLAB off
		wr, regLCR, 0x80, wr, regData, 0x01, wr, regIER, 0x00, wr, regLCR, 0x03, rd, regData, 0})
	f.Fuzz(func(t *testing.T, prog []byte) { runProgram(t, prog) })
}

// runProgram is the body of FuzzUART.
func runProgram(t testing.TB, prog []byte) {
	line := &edgeLine{}
	var out bytes.Buffer
	u := New("COM1", line, &out)
	prevLevel := false
	for step := 0; len(prog) >= 3; step++ {
		op, offb, val := prog[0], prog[1], prog[2]
		prog = prog[3:]
		off := uint64(offb % 10) // 8 and 9 are out of range
		edges := line.Edges()

		switch op % 6 {
		case 0, 1: // read
			u.mu.Lock()
			wantNone := u.iidLocked() == iirNone
			fifoOn := u.fcr&fcrEnable != 0
			dlab := u.lcr&lcrDLAB != 0
			u.mu.Unlock()
			var b [1]byte
			err := u.Read(off, b[:])
			if (err != nil) != (off >= NumPorts) {
				t.Fatalf("step %d: read offset %d: err %v", step, off, err)
			}
			switch {
			case off == regIIR:
				if (b[0]&iirNone != 0) != wantNone {
					t.Fatalf("step %d: IIR %#02x, bit 0 disagrees with pending state (none=%v)", step, b[0], wantNone)
				}
				if b[0]&0x30 != 0 {
					t.Fatalf("step %d: IIR %#02x has bits 5:4 set", step, b[0])
				}
				if want := map[bool]byte{true: 0xc0, false: 0}[fifoOn]; b[0]&0xc0 != want {
					t.Fatalf("step %d: IIR %#02x top bits disagree with FIFO enable %v", step, b[0], fifoOn)
				}
			case off == regIER && !dlab:
				if b[0]&0xf0 != 0 {
					t.Fatalf("step %d: IER read %#02x", step, b[0])
				}
			case off == regLSR:
				if b[0]&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
					t.Fatalf("step %d: LSR %#02x without THRE|TEMT", step, b[0])
				}
			}
			_ = u.Describe(off, false, b[:])
		case 2, 3: // write
			err := u.Write(off, []byte{val})
			if (err != nil) != (off >= NumPorts) {
				t.Fatalf("step %d: write %#02x to offset %d: err %v", step, val, off, err)
			}
			_ = u.Describe(off, true, []byte{val})
		case 4: // host input of up to 19 bytes taken from the program
			n := min(int(val%20), len(prog))
			u.mu.Lock()
			room := u.rxCapLocked() - u.rxLen
			loop := u.mcr&mcrLoop != 0
			u.mu.Unlock()
			took := u.Input(prog[:n])
			want := min(n, room)
			if loop {
				want = 0
			}
			if took != want {
				t.Fatalf("step %d: Input(%d bytes) took %d, want %d", step, n, took, want)
			}
			prog = prog[n:]
		case 5: // bad width
			w := []int{0, 2, 3, 4}[val%4]
			buf := make([]byte, w)
			if err := u.Read(off, buf); err == nil {
				t.Fatalf("step %d: %d-byte read succeeded", step, w)
			}
			if err := u.Write(off, buf); err == nil {
				t.Fatalf("step %d: %d-byte write succeeded", step, w)
			}
			_ = u.Describe(off, val&1 == 0, buf)
		}

		u.mu.Lock()
		ier, mcr := u.ier, u.mcr
		rxLen, rxCap, head := u.rxLen, u.rxCapLocked(), u.rxHead
		level := u.intrLocked()
		st := u.stats
		u.mu.Unlock()
		if ier&0xf0 != 0 {
			t.Fatalf("step %d: IER %#02x has high bits", step, ier)
		}
		if mcr&0xe0 != 0 {
			t.Fatalf("step %d: MCR %#02x has bits 7:5", step, mcr)
		}
		if rxLen < 0 || rxLen > rxCap || rxCap > FIFOSize || head < 0 || head >= FIFOSize {
			t.Fatalf("step %d: RX FIFO len %d cap %d head %d", step, rxLen, rxCap, head)
		}
		newEdges := line.Edges() - edges
		if newEdges > 1 {
			t.Fatalf("step %d: %d edges from one access", step, newEdges)
		}
		if !prevLevel && level && newEdges != 1 {
			t.Fatalf("step %d: INTR rose without an edge on the line", step)
		}
		if newEdges == 1 && !level {
			t.Fatalf("step %d: edge but INTR low afterwards", step)
		}
		if line.High() {
			t.Fatalf("step %d: line left high", step)
		}
		if st.Interrupts != uint64(line.Edges()) {
			t.Fatalf("step %d: Interrupts %d, line saw %d edges", step, st.Interrupts, line.Edges())
		}
		if st.TxBytes != uint64(out.Len()) {
			t.Fatalf("step %d: TxBytes %d, out has %d", step, st.TxBytes, out.Len())
		}
		prevLevel = level
	}
}

// TestTHRECoalescing checks when a THR write adds an edge: the first write
// after the guest looked at the UART does, later ones in the same burst do
// not, and each kind of look re-arms it.
func TestTHRECoalescing(t *testing.T) {
	tests := []struct {
		name  string
		look  func(r *rig)
		edges int // after: enable, 4 writes, look, 4 writes
	}{
		{"no look between bursts", func(r *rig) {}, 2},
		{"IIR read", func(r *rig) { r.in(regIIR) }, 3},
		{"LSR read", func(r *rig) { r.in(regLSR) }, 3},
		{"IER rewritten", func(r *rig) { r.outb(regIER, ierETBEI) }, 3},
		{"FCR write", func(r *rig) { r.outb(regIIR, fcrEnable) }, 3},
		{"MCR rewritten", func(r *rig) { r.outb(regMCR, mcrOUT2) }, 3},
		{"scratch write is no look", func(r *rig) { r.outb(regSCR, 1) }, 2},
		{"MSR read is no look", func(r *rig) { r.in(regMSR) }, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.outb(regMCR, mcrOUT2)
			r.outb(regIER, ierETBEI) // edge 1
			r.in(regIIR)             // the handler acknowledges it
			for _, b := range []byte("abcd") {
				r.outb(regData, b)
			}
			tc.look(r)
			for _, b := range []byte("efgh") {
				r.outb(regData, b)
			}
			if got := r.line.Edges(); got != tc.edges {
				t.Errorf("edges = %d, want %d", got, tc.edges)
			}
			if got := r.out.String(); got != "abcdefgh" {
				t.Errorf("out = %q", got)
			}
			if st := r.u.Stats(); st.Interrupts != uint64(tc.edges) || st.Interrupts+st.CoalescedTHRE != 9 {
				t.Errorf("stats = %+v: want %d interrupts and 9 edges in all, counted or coalesced", st, tc.edges)
			}
		})
	}
}
