package i8042

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"kvmlab/devices/bus"
	"kvmlab/devices/irq"
	"kvmlab/internal/statetest"
)

// guestView reads everything a guest can learn from the controller, in a
// fixed order: the status, the whole output buffer (with the status before
// each byte), the repeated last byte, what the pending command does with a
// data byte, all 32 RAM bytes and the output port.
func guestView(t *testing.T, c *Controller) []byte {
	t.Helper()
	data, cmd := c.DataPort(), c.CommandPort()
	rd := func(d bus.Device) byte {
		b := []byte{0}
		if err := d.Read(0, b); err != nil {
			t.Fatalf("read: %v", err)
		}
		return b[0]
	}
	wr := func(d bus.Device, v byte) {
		if err := d.Write(0, []byte{v}); err != nil {
			t.Fatalf("write %#02x: %v", v, err)
		}
	}
	var got []byte
	drain := func() {
		for i := 0; i <= maxQueue; i++ {
			st := rd(cmd)
			got = append(got, st)
			if st&StatusOBF == 0 {
				break
			}
			got = append(got, rd(data))
		}
		got = append(got, rd(data)) // empty: the last byte again
	}
	drain()
	wr(data, 0x00) // reaches the pending command, or the keyboard
	drain()
	for i := byte(0); i < 32; i++ {
		wr(cmd, CmdReadCTR+i)
		got = append(got, rd(data))
	}
	wr(cmd, CmdReadOutPort)
	got = append(got, rd(data))
	return got
}

func TestStateRoundTrip(t *testing.T) {
	type access struct {
		cmd bool
		v   byte
		rd  bool
	}
	c := func(v byte) access { return access{cmd: true, v: v} }
	d := func(v byte) access { return access{v: v} }
	r := access{rd: true}
	tests := []struct {
		name     string
		prog     []access
		wantKbd  bool // IRQ1 edge on restore
		wantAux  bool // IRQ12 edge on restore
		wantHigh bool
	}{
		{name: "power-on"},
		{name: "keyboard reset reply waiting", prog: []access{d(0xff)}, wantKbd: true},
		{name: "identify reply half read, CTR changed",
			prog:    []access{c(CmdWriteCTR), d(CTRKbdInt | CTRSys), d(0xf2), r},
			wantKbd: true},
		{name: "aux byte waiting, A20 off, RAM written",
			prog:    []access{c(0x65), d(0x99), c(CmdA20Off), c(CmdWriteAuxOBF), d(0x42)},
			wantAux: true},
		{name: "command waiting for its data byte", prog: []access{c(CmdSelfTest), r, c(0x61)}},
		{name: "output port write pending, interrupts off",
			prog: []access{c(CmdWriteCTR), d(CTRSys), c(CmdSelfTest), c(CmdWriteKbdOBF)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New(nil)
			for _, x := range tc.prog {
				dev := a.DataPort()
				if x.cmd {
					dev = a.CommandPort()
				}
				b := []byte{x.v}
				var err error
				if x.rd {
					err = dev.Read(0, b)
				} else {
					err = dev.Write(0, b)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			saved := statetest.JSONRoundTrip(t, a.SaveState())
			b := New(nil)
			kbd, aux := &irq.Fake{}, &irq.Fake{}
			b.SetIRQs(kbd, aux)
			if err := b.RestoreState(saved); err != nil {
				t.Fatalf("RestoreState: %v", err)
			}
			if got := kbd.Edges(); got != map[bool]int{true: 1}[tc.wantKbd] || kbd.High() != tc.wantKbd {
				t.Errorf("IRQ1: %d edges, high %v; want edge %v", got, kbd.High(), tc.wantKbd)
			}
			if got := aux.Edges(); got != map[bool]int{true: 1}[tc.wantAux] || aux.High() != tc.wantAux {
				t.Errorf("IRQ12: %d edges, high %v; want edge %v", got, aux.High(), tc.wantAux)
			}
			if !reflect.DeepEqual(b.SaveState(), a.SaveState()) {
				t.Errorf("restored %+v, saved %+v", b.SaveState(), a.SaveState())
			}
			va, vb := guestView(t, a), guestView(t, b)
			if !reflect.DeepEqual(va, vb) {
				t.Errorf("guest view differs:\noriginal %x\nrestored %x", va, vb)
			}
		})
	}
}

// TestRestoreRedrivesHighLine restores a waiting byte into a controller
// whose IRQ1 is already high for another byte: the line must drop and rise
// again, or the edge-triggered PIC sees nothing new.
func TestRestoreRedrivesHighLine(t *testing.T) {
	c := New(nil)
	kbd := &irq.Fake{}
	c.SetIRQs(kbd, nil)
	if err := c.DataPort().Write(0, []byte{0xee}); err != nil {
		t.Fatal(err)
	}
	if !kbd.High() || kbd.Edges() != 1 {
		t.Fatalf("setup: high %v edges %d", kbd.High(), kbd.Edges())
	}
	s := c.SaveState()
	if err := c.RestoreState(s); err != nil {
		t.Fatal(err)
	}
	if !kbd.High() || kbd.Edges() != 2 {
		t.Errorf("after restore: high %v, %d edges, want high with 2", kbd.High(), kbd.Edges())
	}
}

func TestRestoreStateHostile(t *testing.T) {
	good := func() State { return New(nil).SaveState() }
	with := func(f func(*State)) State { s := good(); f(&s); return s }
	tests := []struct {
		name  string
		s     State
		field string
	}{
		{"no RAM", with(func(s *State) { s.RAM = nil }), "RAM"},
		{"33 RAM bytes", with(func(s *State) { s.RAM = make([]byte, 33) }), "RAM"},
		{"IRQ1 output latched", with(func(s *State) { s.OutputPort |= OutKbdIRQ }), "OutputPort"},
		{"IRQ12 output latched", with(func(s *State) { s.OutputPort |= OutAuxIRQ }), "OutputPort"},
		{"reset held low", with(func(s *State) { s.OutputPort &^= OutReset }), "OutputPort"},
		{"17 queued bytes", with(func(s *State) { s.Output = make([]OutputByte, 17) }), "Output"},
		{"pending self test", with(func(s *State) { s.PendingCommand = CmdSelfTest }), "PendingCommand"},
		{"pending 0x20", with(func(s *State) { s.PendingCommand = 0x20 }), "PendingCommand"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(nil)
			kbd := &irq.Fake{}
			c.SetIRQs(kbd, nil)
			if err := c.DataPort().Write(0, []byte{0xff}); err != nil {
				t.Fatal(err)
			}
			before, edges := c.SaveState(), kbd.Edges()
			err := c.RestoreState(tc.s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState = %v, want ErrBadState", err)
			}
			if !strings.Contains(err.Error(), " "+tc.field+":") {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if !reflect.DeepEqual(c.SaveState(), before) || kbd.Edges() != edges {
				t.Errorf("refused restore changed the controller or its line")
			}
		})
	}
}

// FuzzRestoreState restores a JSON-decoded State into a fresh controller
// and drives a few accesses: no panic, a refused state changes nothing, and
// the queue bound holds.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"RAM":"RwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","OutputPort":3,"Output":[{"Value":250},{"Value":170,"Aux":true}]}`))
	f.Add([]byte(`{"RAM":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","OutputPort":1,"PendingCommand":209,"CommandLast":true}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var s State
		if json.Unmarshal(in, &s) != nil {
			return
		}
		c := New(nil)
		kbd, aux := &irq.Fake{}, &irq.Fake{}
		c.SetIRQs(kbd, aux)
		fresh := c.SaveState()
		if err := c.RestoreState(s); err != nil && !reflect.DeepEqual(c.SaveState(), fresh) {
			t.Fatalf("refused restore changed the controller: %v", err)
		}
		data, cmd := c.DataPort(), c.CommandPort()
		b := []byte{0}
		for i := 0; i < 20; i++ {
			_ = cmd.Read(0, b)
			if b[0]&(StatusIBF|StatusTimeout|StatusParity) != 0 {
				t.Fatalf("status %#02x", b[0])
			}
			_ = data.Read(0, b)
		}
		_ = data.Write(0, []byte{0xf2})
		_ = cmd.Write(0, []byte{CmdReadOutPort})
		if got := len(c.SaveState().Output); got > maxQueue {
			t.Fatalf("queue of %d", got)
		}
		// The lines follow the output buffer and the CTR.
		_ = cmd.Read(0, b)
		st := c.SaveState()
		obf, isAux := b[0]&StatusOBF != 0, b[0]&StatusAuxData != 0
		if want := obf && !isAux && st.RAM[0]&CTRKbdInt != 0; kbd.High() != want {
			t.Fatalf("IRQ1 %v, want %v (status %#02x, CTR %#02x)", kbd.High(), want, b[0], st.RAM[0])
		}
		if want := obf && isAux && st.RAM[0]&CTRAuxInt != 0; aux.High() != want {
			t.Fatalf("IRQ12 %v, want %v (status %#02x, CTR %#02x)", aux.High(), want, b[0], st.RAM[0])
		}
	})
}
