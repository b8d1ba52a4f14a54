package acpipm

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"kvmlab/devices/irq"
	"kvmlab/internal/statetest"
)

// guestView reads every byte of the block, as bytes and as words.
func guestView(t *testing.T, p *PM) []byte {
	t.Helper()
	var got []byte
	for off := uint64(0); off < Size; off++ {
		b := []byte{0}
		if err := p.Read(off, b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	for off := uint64(0); off < Size; off += 2 {
		b := []byte{0, 0}
		if err := p.Read(off, b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	return got
}

func TestStateRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		prog    func(t *testing.T, r *rig)
		wantSCI bool
	}{
		{"reset", func(*testing.T, *rig) {}, false},
		{"power button pending and enabled", func(t *testing.T, r *rig) {
			if err := r.w16(t, OffEn, EnPwrBtn|EnRTC); err != nil {
				t.Fatal(err)
			}
			r.pm.PowerButton()
		}, true},
		{"power button pending, disabled", func(t *testing.T, r *rig) {
			r.pm.PowerButton()
		}, false},
		{"woke from S3, SLP_TYP and BM_RLD kept", func(t *testing.T, r *rig) {
			if err := r.w16(t, OffCnt, 3<<CntSlpTypSh|CntBMRld|CntSlpEn); !errors.Is(err, ErrSleepType) {
				t.Fatalf("S3: %v", err)
			}
			if err := r.w16(t, OffEn, EnTmr|EnPCIExpWakeDis); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newRig()
			tc.prog(t, a)
			saved := statetest.JSONRoundTrip(t, a.pm.SaveState())
			b := newRig()
			sci := &irq.Fake{}
			b.pm.SetSCI(sci)
			if err := b.pm.RestoreState(saved); err != nil {
				t.Fatalf("RestoreState: %v", err)
			}
			if sci.High() != tc.wantSCI {
				t.Errorf("SCI high=%v after restore, want %v", sci.High(), tc.wantSCI)
			}
			if va, vb := guestView(t, a.pm), guestView(t, b.pm); !reflect.DeepEqual(va, vb) {
				t.Errorf("register reads differ:\noriginal %x\nrestored %x", va, vb)
			}
			// The restored device behaves on: clearing PWRBTN_STS
			// drops the SCI, and S5 still powers off.
			if err := b.w16(t, OffSts, StsPwrBtn); err != nil {
				t.Fatal(err)
			}
			if sci.High() {
				t.Error("SCI still high after PWRBTN_STS was cleared")
			}
			if err := b.w16(t, OffCnt, SlpTypS5<<CntSlpTypSh|CntSlpEn); err != nil || b.offs != 1 {
				t.Errorf("S5 after restore: err %v, %d poweroffs", err, b.offs)
			}
		})
	}
}

// TestRestoreResyncsSCI restores a state without a pending event into a
// device whose SCI is high: the line must drop, and restoring a pending
// one must raise it even if the device thinks it is already high.
func TestRestoreResyncsSCI(t *testing.T) {
	r := newRig()
	sci := &irq.Fake{}
	r.pm.SetSCI(sci)
	if err := r.w16(t, OffEn, EnPwrBtn); err != nil {
		t.Fatal(err)
	}
	r.pm.PowerButton()
	pending := r.pm.SaveState()
	if !sci.High() {
		t.Fatal("setup: SCI low")
	}
	if err := r.pm.RestoreState(State{PM1Control: CntSCIEn}); err != nil {
		t.Fatal(err)
	}
	if sci.High() {
		t.Error("SCI high after restoring a state with nothing pending")
	}
	n := len(sci.Levels)
	if err := r.pm.RestoreState(pending); err != nil {
		t.Fatal(err)
	}
	if err := r.pm.RestoreState(pending); err != nil {
		t.Fatal(err)
	}
	if !sci.High() || len(sci.Levels) != n+2 {
		t.Errorf("SCI levels %v after two restores of a pending event, want high driven twice", sci.Levels[n:])
	}
}

func TestRestoreStateHostile(t *testing.T) {
	tests := []struct {
		name  string
		s     State
		field string
	}{
		{"timer status", State{PM1Status: StsTmr, PM1Control: CntSCIEn}, "PM1Status"},
		{"reserved status bit", State{PM1Status: 1 << 2, PM1Control: CntSCIEn}, "PM1Status"},
		{"reserved enable bit", State{PM1Enable: 1 << 15, PM1Control: CntSCIEn}, "PM1Enable"},
		{"legacy mode", State{PM1Control: 0}, "PM1Control"},
		{"SLP_EN stored", State{PM1Control: CntSCIEn | CntSlpEn | SlpTypS5<<CntSlpTypSh}, "PM1Control"},
		{"GBL_RLS stored", State{PM1Control: CntSCIEn | CntGblRls}, "PM1Control"},
		{"reserved control bit", State{PM1Control: CntSCIEn | 1<<15}, "PM1Control"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig()
			sci := &irq.Fake{}
			r.pm.SetSCI(sci)
			if err := r.w16(t, OffEn, EnPwrBtn); err != nil {
				t.Fatal(err)
			}
			r.pm.PowerButton()
			before, levels := r.pm.SaveState(), len(sci.Levels)
			err := r.pm.RestoreState(tc.s)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("RestoreState = %v, want ErrBadState", err)
			}
			if !strings.Contains(err.Error(), " "+tc.field+":") {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if !reflect.DeepEqual(r.pm.SaveState(), before) || len(sci.Levels) != levels {
				t.Error("refused restore changed the registers or drove the SCI")
			}
		})
	}
}

// FuzzRestoreState restores a JSON-decoded State into a fresh device and
// drives a few accesses: no panic, a refused state changes nothing, and the
// SCI always matches the registers.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"PM1Status":256,"PM1Enable":256,"PM1Control":1}`))
	f.Add([]byte(`{"PM1Status":33024,"PM1Enable":18209,"PM1Control":7171}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var s State
		if json.Unmarshal(in, &s) != nil {
			return
		}
		p := New(nil)
		sci := &irq.Fake{}
		p.SetSCI(sci)
		fresh := p.SaveState()
		if err := p.RestoreState(s); err != nil && !reflect.DeepEqual(p.SaveState(), fresh) {
			t.Fatalf("refused restore changed the device: %v", err)
		}
		check := func(what string) {
			st := p.SaveState()
			if want := st.PM1Status&st.PM1Enable&sciEvents != 0; sci.High() != want {
				t.Fatalf("%s: SCI %v, registers %+v", what, sci.High(), st)
			}
		}
		check("restore")
		b := make([]byte, 2)
		for off := uint64(0); off < Size; off += 2 {
			if err := p.Read(off, b); err != nil {
				t.Fatal(err)
			}
		}
		_ = p.Write(OffSts, []byte{0xff, 0xff})
		check("clear status")
		p.PowerButton()
		check("power button")
		_ = p.Write(OffEn, []byte{0x00, 0x01})
		check("enable")
		_ = p.Write(OffCnt+1, []byte{0x0c}) // SLP_TYP 3 + SLP_EN
		check("sleep")
	})
}
