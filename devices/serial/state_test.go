package serial

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"kvmlab/devices/irq"
	"kvmlab/internal/statetest"
)

// registerReads reads every register of u in a fixed order, the divisor
// latch included, and returns what the guest would have seen. Reads with
// side effects (IIR, LSR, MSR, RBR) are made in an order that shows the
// state before they clear it, then again to show what they cleared.
func registerReads(t *testing.T, u *UART) []byte {
	t.Helper()
	rd := func(off uint64) byte {
		var b [1]byte
		if err := u.Read(off, b[:]); err != nil {
			t.Fatalf("read %d: %v", off, err)
		}
		return b[0]
	}
	wr := func(off uint64, v byte) {
		if err := u.Write(off, []byte{v}); err != nil {
			t.Fatalf("write %d: %v", off, err)
		}
	}
	var got []byte
	lcr := rd(regLCR)
	// The divisor latch first, with DLAB set, then DLAB as it was.
	wr(regLCR, lcr|lcrDLAB)
	got = append(got, rd(regData), rd(regIER))
	wr(regLCR, lcr&^lcrDLAB)
	got = append(got, lcr, rd(regIER), rd(regMCR), rd(regSCR))
	got = append(got, rd(regIIR), rd(regMSR), rd(regMSR), rd(regLSR), rd(regLSR))
	for i := 0; i <= FIFOSize; i++ {
		got = append(got, rd(regLSR), rd(regData), rd(regIIR))
	}
	wr(regLCR, lcr)
	return got
}

func TestStateRoundTrip(t *testing.T) {
	type step struct {
		write bool
		off   uint64
		v     byte
	}
	w := func(off uint64, v byte) step { return step{true, off, v} }
	r := func(off uint64) step { return step{false, off, 0} }
	tests := []struct {
		name  string
		steps []step
		input string
		// wantEdge says the restored UART must pulse its line.
		wantEdge bool
	}{
		{name: "reset state"},
		{name: "divisor, 8N1, FIFOs, RX data pending with OUT2",
			steps: []step{w(regLCR, 0x80), w(regData, 0x01), w(regIER, 0x02), w(regLCR, 0x03),
				w(regIIR, 0xc7), w(regMCR, 0x0b), w(regIER, 0x05), w(regSCR, 0x5a)},
			input: "hello", wantEdge: true},
		{name: "FIFO wrapped around the ring",
			steps: []step{w(regIIR, 0x01), w(regIER, 0x01), w(regMCR, 0x08)},
			input: "0123456789abcdefXYZ", wantEdge: true},
		{name: "THRE pending, no OUT2: no edge",
			steps: []step{w(regIER, 0x02)}},
		{name: "loopback overrun with modem deltas",
			steps:    []step{w(regMCR, 0x1f), w(regIER, 0x0f), w(regData, 'a'), w(regData, 'b'), r(regIIR)},
			wantEdge: true},
		{name: "16450 mode, one byte held, DLAB left set",
			steps: []step{w(regIER, 0x01), w(regLCR, 0x83)},
			input: "zq"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New("COM1", nil, nil)
			for _, s := range tc.steps {
				if s.write {
					if err := a.Write(s.off, []byte{s.v}); err != nil {
						t.Fatal(err)
					}
				} else {
					var b [1]byte
					if err := a.Read(s.off, b[:]); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Feed input in two halves with a read in between, so the
			// ring's head moves off 0.
			in := []byte(tc.input)
			n := a.Input(in[:len(in)/2])
			if len(in) > 2 {
				var b [1]byte
				_ = a.Read(regData, b[:]) // with DLAB set this reads DLL, harmless
			}
			a.Input(in[n:])

			saved := statetest.JSONRoundTrip(t, a.SaveState())
			line := &irq.Fake{}
			b := New("COM1", line, nil)
			if err := b.RestoreState(saved); err != nil {
				t.Fatalf("RestoreState: %v", err)
			}
			if got := line.Edges(); (got == 1) != tc.wantEdge || got > 1 {
				t.Errorf("restore drove %d edges, want edge=%v", got, tc.wantEdge)
			}
			if line.High() {
				t.Errorf("line left high after restore: ISA lines are pulsed")
			}
			if !reflect.DeepEqual(b.SaveState(), a.SaveState()) {
				t.Errorf("restored state %+v, saved %+v", b.SaveState(), a.SaveState())
			}
			ra, rb := registerReads(t, a), registerReads(t, b)
			if !reflect.DeepEqual(ra, rb) {
				t.Errorf("register reads differ:\noriginal %x\nrestored %x", ra, rb)
			}
		})
	}
}

// TestRestoreWakesInput checks that a restore with room in the receiver
// signals Room, so a host input goroutine does not wait for ever.
func TestRestoreWakesInput(t *testing.T) {
	u := New("COM1", nil, nil)
	if err := u.RestoreState(State{FCR: fcrEnable, RxFIFO: []byte("ab")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.Room():
	default:
		t.Fatal("no Room signal after a restore that left room")
	}
	if n := u.Input(make([]byte, 20)); n != FIFOSize-2 {
		t.Errorf("Input took %d bytes after restoring 2, want %d", n, FIFOSize-2)
	}
}

func TestRestoreStateHostile(t *testing.T) {
	tests := []struct {
		name  string
		s     State
		field string
	}{
		{"IER high nibble", State{IER: 0x10}, "IER"},
		{"MCR bit 5", State{MCR: 0x20}, "MCR"},
		{"FCR clear-RX bit latched", State{FCR: fcrEnable | fcrClearRx}, "FCR"},
		{"FCR 64-byte bit", State{FCR: fcrEnable | fcr64Byte}, "FCR"},
		{"FCR trigger without enable", State{FCR: 0xc0}, "FCR"},
		{"LSR parity error", State{LSRErrors: lsrPE}, "LSRErrors"},
		{"LSR data ready stored", State{LSRErrors: lsrDR}, "LSRErrors"},
		{"MSR input levels stored", State{MSRDeltas: msrCTS}, "MSRDeltas"},
		{"RX FIFO of 17", State{FCR: fcrEnable, RxFIFO: make([]byte, 17)}, "RxFIFO"},
		{"two bytes in 16450 mode", State{RxFIFO: []byte("ab")}, "RxFIFO"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			line := &irq.Fake{}
			u := New("COM1", line, nil)
			// An interesting state to keep.
			for _, w := range [][2]byte{{regIIR, 0x01}, {regIER, 0x01}, {regMCR, 0x08}, {regSCR, 0x77}} {
				if err := u.Write(uint64(w[0]), []byte{w[1]}); err != nil {
					t.Fatal(err)
				}
			}
			u.Input([]byte("keep"))
			before := u.SaveState()
			edges := line.Edges()
			err := u.RestoreState(tc.s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState(%+v) = %v, want ErrBadState", tc.s, err)
			}
			if !strings.Contains(err.Error(), " "+tc.field+":") {
				t.Errorf("error %q does not name the field %s", err, tc.field)
			}
			if after := u.SaveState(); !reflect.DeepEqual(after, before) {
				t.Errorf("state changed by a refused restore:\nbefore %+v\nafter  %+v", before, after)
			}
			if line.Edges() != edges {
				t.Errorf("refused restore drove the line")
			}
		})
	}
}

// FuzzRestoreState decodes the input as a JSON State, restores it into a
// fresh UART and drives a few accesses: nothing may panic, and a refused
// state must leave the reset state alone.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"IER":15,"MCR":8,"FCR":193,"RxFIFO":"aGVsbG8="}`))
	f.Add([]byte(`{"FCR":1,"RxFIFO":"MDEyMzQ1Njc4OWFiY2RlZmc="}`))
	f.Add([]byte(`{"LSRErrors":2,"MSRDeltas":15,"THREPending":true,"MCR":31,"IER":15}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s State
		if json.Unmarshal(data, &s) != nil {
			return
		}
		line := &edgeLine{}
		u := New("COM1", line, nil)
		fresh := u.SaveState()
		if err := u.RestoreState(s); err != nil {
			if !reflect.DeepEqual(u.SaveState(), fresh) {
				t.Fatalf("refused restore changed the UART: %v", err)
			}
		} else {
			// What was accepted is what the UART now holds.
			got := u.SaveState()
			if !bytes.Equal(got.RxFIFO, s.RxFIFO) {
				t.Fatalf("restored FIFO %x, want %x", got.RxFIFO, s.RxFIFO)
			}
			got.RxFIFO, s.RxFIFO = nil, nil
			if !reflect.DeepEqual(got, s) {
				t.Fatalf("restored %+v, want %+v", got, s)
			}
		}
		var b [1]byte
		for off := uint64(0); off < NumPorts; off++ {
			if err := u.Read(off, b[:]); err != nil {
				t.Fatalf("read %d: %v", off, err)
			}
		}
		_ = u.Write(regData, []byte{'x'})
		u.Input([]byte("abc"))
		for i := 0; i < FIFOSize+2; i++ {
			_ = u.Read(regData, b[:])
		}
		_ = u.Write(regIIR, []byte{0x07})
		if err := u.Read(regIIR, b[:]); err != nil || b[0]&0x30 != 0 {
			t.Fatalf("IIR %#02x err %v", b[0], err)
		}
	})
}
