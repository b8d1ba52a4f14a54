package virtionet

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"kvmlab/guestmem"
)

// heldState activates a device, hands it a host frame while the driver has
// no receive buffer posted, pauses it and returns its saved state.
func heldState(t *testing.T, frame []byte) []byte {
	t.Helper()
	h := newHarness(t)
	h.activate()
	h.be.in <- frame
	h.waitStalls(1) // read, and waiting for a buffer
	if err := h.dev.PauseIO(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := h.dev.SaveDeviceState()
	h.dev.ResumeIO()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeldFrameSurvivesSnapshot: a frame the device held for want of a
// receive buffer is in the saved state and is the first frame the
// restored device delivers.
func TestHeldFrameSurvivesSnapshot(t *testing.T) {
	frame := withHeader(ethFrame(100, 7))
	blob := heldState(t, frame)
	var st State
	if err := json.Unmarshal(blob, &st); err != nil {
		t.Fatal(err)
	}
	if st.MAC != testMAC.String() || !bytes.Equal(st.RXFrame, frame) {
		t.Fatalf("state MAC %q, frame of %d bytes; want %v and the %d-byte frame", st.MAC, len(st.RXFrame), testMAC, len(frame))
	}

	h := newHarness(t)
	if err := h.dev.RestoreDeviceState(blob); err != nil {
		t.Fatal(err)
	}
	h.activate()
	head := h.rx.post(seg{addr: dataBase, len: 2048, write: true})
	h.dev.Notify(RXQueue)
	h.waitIRQ(RXQueue)
	u := h.rx.reap()
	if len(u) != 1 || u[0] != (usedElem{uint32(head), uint32(len(frame))}) {
		t.Fatalf("used %v, want [{%d %d}]", u, head, len(frame))
	}
	if got := h.ram[dataBase+HeaderSize : dataBase+guestmem.GPA(len(frame))]; !bytes.Equal(got, frame[HeaderSize:]) {
		t.Error("the delivered frame is not the held one")
	}
}

// TestPauseIOHoldsDelivery: while paused, a host frame is not written into
// guest RAM; after ResumeIO it is.
func TestPauseIOHoldsDelivery(t *testing.T) {
	h := newHarness(t)
	h.activate()
	h.rx.post(seg{addr: dataBase, len: 2048, write: true})
	h.dev.Notify(RXQueue)
	if err := h.dev.PauseIO(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	h.be.in <- withHeader(ethFrame(60, 1))
	if u := h.rx.reap(); len(u) != 0 {
		t.Fatalf("used %v while paused", u)
	}
	h.dev.ResumeIO()
	h.waitIRQ(RXQueue)
	if u := h.rx.reap(); len(u) != 1 {
		t.Fatalf("used %v after ResumeIO, want one frame", u)
	}
	h.dev.ResumeIO() // not paused: harmless
}

func TestRestoreDeviceStateRefuses(t *testing.T) {
	frame := withHeader(ethFrame(60, 1))
	enc := func(st State) []byte { b, _ := json.Marshal(st); return b }
	csum := append([]byte(nil), frame...)
	csum[0] = hdrFlagNeedsCsum
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"not JSON", []byte("{"), "device state"},
		{"bad MAC", enc(State{MAC: "52:54"}), "MAC"},
		{"other MAC", enc(State{MAC: "52:54:00:00:00:01"}), "this device has"},
		{"runt frame", enc(State{MAC: testMAC.String(), RXFrame: frame[:HeaderSize+10]}), "receive frame"},
		{"huge frame", enc(State{MAC: testMAC.String(), RXFrame: make([]byte, HeaderSize+MaxFrame+1)}), "receive frame"},
		{"offload frame", enc(State{MAC: testMAC.String(), RXFrame: csum}), "receive frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			err := h.dev.RestoreDeviceState(tc.blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreDeviceState: %v, want an error about %q", err, tc.want)
			}
			if h.dev.restoredRX != nil {
				t.Error("a refused state left a frame to deliver")
			}
		})
	}
	h := newHarness(t)
	h.activate()
	if err := h.dev.RestoreDeviceState(enc(State{MAC: testMAC.String()})); err == nil {
		t.Fatal("RestoreDeviceState on an active device succeeded")
	}
}

// FuzzNetRestoreDeviceState restores the fuzzer's bytes as device state
// (user input from a snapshot file); an accepted state is activated and
// given a receive buffer. Nothing may panic, and an accepted frame is
// delivered whole.
func FuzzNetRestoreDeviceState(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:ab:cd:ef"}`))
	f.Add([]byte(`{"mac":"52:54:00:ab:cd:ef","rx_frame":"AAAAAAAAAAAAAAAA////////UlQAAQIDiLUBAgME"}`))
	f.Add([]byte(`{"mac":"52-54-00-AB-CD-EF","rx_frame":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		if h.dev.RestoreDeviceState(data) != nil {
			return
		}
		held := h.dev.restoredRX
		h.activate()
		if held == nil {
			return
		}
		head := h.rx.post(seg{addr: dataBase, len: HeaderSize + MaxFrame, write: true})
		h.dev.Notify(RXQueue)
		h.waitIRQ(RXQueue)
		u := h.rx.reap()
		if len(u) != 1 || u[0] != (usedElem{uint32(head), uint32(len(held))}) {
			t.Fatalf("used %v, want [{%d %d}]", u, head, len(held))
		}
	})
}

// TestResumeIOWithoutPause: a ResumeIO that no PauseIO took a token for
// adds none, even while the receive goroutine holds the gate (its channel
// is empty then too). Before, it added a second token, the goroutine's
// leaveRX blocked for ever, and so did the Reset after it: a test's
// second ResumeIO, landing in that window, hung make test.
func TestResumeIOWithoutPause(t *testing.T) {
	d := newHarness(t).dev // not activated: no receive goroutine takes the token
	tests := []struct {
		name  string
		steps func()
	}{
		// The receive goroutine's part, done by hand: take the
		// token, and give it back after a ResumeIO nobody paused for.
		{"resume while the receive path holds the gate", func() {
			<-d.rxGate
			d.ResumeIO()
			d.leaveRX()
		}},
		{"pause, resume, resume again", func() {
			if err := d.PauseIO(time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			d.ResumeIO()
			d.ResumeIO()
		}},
		{"a pause that timed out, then resume", func() {
			<-d.rxGate
			if err := d.PauseIO(time.Now().Add(10 * time.Millisecond)); err == nil {
				t.Fatal("PauseIO took a token the receive path holds")
			}
			d.ResumeIO()
			d.leaveRX()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			go func() { tc.steps(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("a give-back of the token blocked: a second token was in the gate")
			}
			if n := len(d.rxGate); n != 1 {
				t.Fatalf("%d tokens in the gate, want 1", n)
			}
		})
	}
}
