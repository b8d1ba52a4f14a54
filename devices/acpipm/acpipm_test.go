package acpipm

import (
	"errors"
	"sync"
	"testing"

	"kvmlab/devices/irq"
)

type rig struct {
	pm   *PM
	offs int
}

func newRig() *rig {
	r := &rig{}
	r.pm = New(func() { r.offs++ })
	return r
}

func (r *rig) w16(t *testing.T, off uint64, v uint16) error {
	t.Helper()
	return r.pm.Write(off, []byte{byte(v), byte(v >> 8)})
}

func (r *rig) r16(t *testing.T, off uint64) uint16 {
	t.Helper()
	b := make([]byte, 2)
	if err := r.pm.Read(off, b); err != nil {
		t.Fatal(err)
	}
	return uint16(b[0]) | uint16(b[1])<<8
}

func TestLayoutConstants(t *testing.T) {
	// The FADT's view and the VMM's registration must agree.
	if EvtBlk != Base+OffSts || CntBlk != Base+OffCnt || EvtLen+CntLen != Size {
		t.Fatalf("inconsistent layout: base %#x evt %#x+%d cnt %#x+%d size %d", Base, EvtBlk, EvtLen, CntBlk, CntLen, Size)
	}
}

func TestResetValues(t *testing.T) {
	r := newRig()
	for _, c := range []struct {
		off  uint64
		want uint16
	}{{OffSts, 0}, {OffEn, 0}, {OffCnt, CntSCIEn}} {
		if got := r.r16(t, c.off); got != c.want {
			t.Errorf("offset %d = %#04x, want %#04x", c.off, got, c.want)
		}
	}
}

func TestPoweroff(t *testing.T) {
	tests := []struct {
		name    string
		off     uint64
		data    []byte
		offs    int
		wantErr bool
	}{
		{"S5 with SLP_EN (ACPICA, word)", OffCnt, []byte{0x01, 0x34}, 1, false},
		{"S5 with SLP_EN, no SCI_EN", OffCnt, []byte{0x00, 0x34}, 1, false},
		{"S5 without SLP_EN (ACPICA's first write)", OffCnt, []byte{0x01, 0x14}, 0, false},
		{"S5 SLP_EN by a byte at offset 5", OffCnt + 1, []byte{0x34}, 1, false},
		{"S5 SLP_TYP by a byte at offset 5, no SLP_EN", OffCnt + 1, []byte{0x14}, 0, false},
		{"low byte only", OffCnt, []byte{0xff}, 0, false},
		{"SLP_EN with SLP_TYP=0 (S0)", OffCnt, []byte{0x00, 0x20}, 0, true},
		{"SLP_EN with SLP_TYP=3", OffCnt, []byte{0x00, 0x2c}, 0, true},
		{"SLP_EN with SLP_TYP=7", OffCnt, []byte{0x00, 0x3c}, 0, true},
		{"0x3400 written to PM1_STS", OffSts, []byte{0x00, 0x34}, 0, false},
		{"0x3400 written to PM1_EN", OffEn, []byte{0x00, 0x34}, 0, false},
		{"dword at offset 2 reaching PM1_CNT", OffEn, []byte{0, 0, 0x01, 0x34}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			err := r.pm.Write(tt.off, tt.data)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrSleepType) {
				t.Fatalf("err = %v, want ErrSleepType", err)
			}
			if r.offs != tt.offs {
				t.Fatalf("poweroff called %d times, want %d", r.offs, tt.offs)
			}
		})
	}
}

// ACPICA's real sequence: clear WAK_STS, write SLP_TYP, then SLP_TYP|SLP_EN.
func TestACPICASequence(t *testing.T) {
	r := newRig()
	steps := []struct {
		off  uint64
		v    uint16
		offs int
	}{
		{OffSts, StsWak, 0},
		{OffCnt, CntSCIEn | SlpTypS5<<CntSlpTypSh, 0},
		{OffCnt, CntSCIEn | SlpTypS5<<CntSlpTypSh | CntSlpEn, 1},
	}
	for i, s := range steps {
		if err := r.w16(t, s.off, s.v); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if r.offs != s.offs {
			t.Fatalf("step %d: poweroff called %d times, want %d", i, r.offs, s.offs)
		}
	}
	// SLP_TYP reads back, SLP_EN does not, SCI_EN is always set.
	if got, want := r.r16(t, OffCnt), uint16(CntSCIEn|SlpTypS5<<CntSlpTypSh); got != want {
		t.Fatalf("PM1_CNT = %#04x, want %#04x", got, want)
	}
}

func TestUnsupportedSleepWakesAtOnce(t *testing.T) {
	r := newRig()
	err := r.w16(t, OffCnt, 3<<CntSlpTypSh|CntSlpEn)
	if !errors.Is(err, ErrSleepType) {
		t.Fatalf("err = %v", err)
	}
	if got := r.r16(t, OffSts); got != StsWak {
		t.Fatalf("PM1_STS = %#04x, want WAK_STS", got)
	}
	if err := r.w16(t, OffSts, StsWak); err != nil {
		t.Fatal(err)
	}
	if got := r.r16(t, OffSts); got != 0 {
		t.Fatalf("PM1_STS = %#04x after clearing WAK_STS", got)
	}
}

func TestPM1CNTBits(t *testing.T) {
	tests := []struct {
		write, want uint16
	}{
		{0x0000, CntSCIEn},              // SCI_EN cannot be cleared
		{CntBMRld, CntSCIEn | CntBMRld}, // BM_RLD stored
		{CntGblRls, CntSCIEn},           // GBL_RLS is write-only
		{0xc3f8, CntSCIEn},              // reserved bits read 0
		{2 << CntSlpTypSh, CntSCIEn | 2<<CntSlpTypSh},
	}
	for _, tt := range tests {
		r := newRig()
		_ = r.w16(t, OffCnt, tt.write)
		if got := r.r16(t, OffCnt); got != tt.want {
			t.Errorf("wrote %#04x: PM1_CNT = %#04x, want %#04x", tt.write, got, tt.want)
		}
	}
}

func TestStatusWriteOneToClear(t *testing.T) {
	tests := []struct {
		name  string
		off   uint64
		data  []byte
		after uint16
	}{
		{"clear PWRBTN", OffSts, []byte{0x00, 0x01}, StsWak},
		{"clear WAK", OffSts, []byte{0x00, 0x80}, StsPwrBtn},
		{"clear both", OffSts, []byte{0x00, 0x81}, 0},
		{"zeros clear nothing", OffSts, []byte{0x00, 0x00}, StsPwrBtn | StsWak},
		{"low byte of ones leaves the high byte", OffSts, []byte{0xff}, StsPwrBtn | StsWak},
		{"high byte alone", OffSts + 1, []byte{0x01}, StsWak},
		{"all ones", OffSts, []byte{0xff, 0xff}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			r.pm.PowerButton()
			_ = r.w16(t, OffCnt, 3<<CntSlpTypSh|CntSlpEn) // sets WAK_STS
			if got := r.r16(t, OffSts); got != StsPwrBtn|StsWak {
				t.Fatalf("setup: PM1_STS = %#04x", got)
			}
			if err := r.pm.Write(tt.off, tt.data); err != nil {
				t.Fatal(err)
			}
			if got := r.r16(t, OffSts); got != tt.after {
				t.Fatalf("PM1_STS = %#04x, want %#04x", got, tt.after)
			}
		})
	}
}

func TestEnableReadWrite(t *testing.T) {
	r := newRig()
	if err := r.w16(t, OffEn, 0xffff); err != nil {
		t.Fatal(err)
	}
	if got, want := r.r16(t, OffEn), uint16(enMask); got != want {
		t.Fatalf("PM1_EN = %#04x, want %#04x (defined bits only)", got, want)
	}
	// A byte write changes only its byte.
	if err := r.pm.Write(OffEn+1, []byte{0x00}); err != nil {
		t.Fatal(err)
	}
	if got, want := r.r16(t, OffEn), uint16(EnTmr|EnGbl); got != want {
		t.Fatalf("PM1_EN = %#04x, want %#04x", got, want)
	}
	// Enables do not touch status.
	if got := r.r16(t, OffSts); got != 0 {
		t.Fatalf("PM1_STS = %#04x", got)
	}
}

func TestByteReads(t *testing.T) {
	r := newRig()
	_ = r.w16(t, OffEn, EnPwrBtn|EnTmr)
	_ = r.w16(t, OffCnt, SlpTypS5<<CntSlpTypSh)
	want := []byte{0x00, 0x00, 0x01, 0x01, 0x01, 0x14}
	for i, w := range want {
		b := []byte{0}
		if err := r.pm.Read(uint64(i), b); err != nil {
			t.Fatal(err)
		}
		if b[0] != w {
			t.Errorf("byte %d = %#02x, want %#02x", i, b[0], w)
		}
	}
	b := make([]byte, 4)
	if err := r.pm.Read(0, b); err != nil {
		t.Fatal(err)
	}
	if string(b) != string(want[:4]) {
		t.Errorf("dword read = % x, want % x", b, want[:4])
	}
}

func TestBadAccesses(t *testing.T) {
	r := newRig()
	for _, a := range []struct {
		off uint64
		n   int
	}{{0, 0}, {0, 3}, {0, 8}, {4, 4}, {5, 2}, {6, 1}, {1 << 63, 2}, {^uint64(0), 1}} {
		b := make([]byte, a.n)
		if err := r.pm.Read(a.off, b); err == nil {
			t.Errorf("%d-byte read at %d: no error", a.n, a.off)
		}
		for _, v := range b {
			if v != 0xff {
				t.Errorf("%d-byte read at %d returned %#02x", a.n, a.off, v)
			}
		}
		w := make([]byte, a.n)
		for i := range w {
			w[i] = 0xff // SLP_EN|S7 if it reached PM1_CNT
		}
		if err := r.pm.Write(a.off, w); err == nil {
			t.Errorf("%d-byte write at %d: no error", a.n, a.off)
		}
	}
	if r.offs != 0 || r.r16(t, OffSts) != 0 {
		t.Fatal("a bad access reached the registers")
	}
}

func TestPowerButtonSCI(t *testing.T) {
	r := newRig()
	sci := &irq.Fake{}
	r.pm.SetSCI(sci)
	r.pm.PowerButton()
	if sci.High() {
		t.Fatal("SCI raised with PWRBTN_EN clear")
	}
	_ = r.w16(t, OffEn, EnPwrBtn) // enabling a pending event raises the SCI
	if !sci.High() || sci.Edges() != 1 {
		t.Fatalf("SCI high=%v edges=%d after enabling", sci.High(), sci.Edges())
	}
	_ = r.w16(t, OffSts, StsPwrBtn) // acknowledge
	if sci.High() {
		t.Fatal("SCI still high after clearing PWRBTN_STS")
	}
	r.pm.PowerButton()
	if !sci.High() || sci.Edges() != 2 {
		t.Fatalf("second press: high=%v edges=%d", sci.High(), sci.Edges())
	}
	// WAK_STS has no enable and never raises the SCI.
	r2 := newRig()
	sci2 := &irq.Fake{}
	r2.pm.SetSCI(sci2)
	_ = r2.w16(t, OffEn, enMask)
	_ = r2.w16(t, OffCnt, 1<<CntSlpTypSh|CntSlpEn)
	if sci2.High() {
		t.Fatal("WAK_STS raised the SCI")
	}
}

func TestDescribe(t *testing.T) {
	pm := New(nil)
	tests := []struct {
		off   uint64
		write bool
		data  []byte
		want  string
	}{
		{OffCnt, true, []byte{0x00, 0x34}, "ACPI PM1a_CNT write 0x3400 (SLP_TYP=5 SLP_EN: S5 soft-off)"},
		{OffCnt, true, []byte{0x01, 0x34}, "ACPI PM1a_CNT write 0x3401 (SCI_EN SLP_TYP=5 SLP_EN: S5 soft-off)"},
		{OffCnt, true, []byte{0x01, 0x14}, "ACPI PM1a_CNT write 0x1401 (SCI_EN SLP_TYP=5)"},
		{OffCnt, true, []byte{0x00, 0x2c}, "ACPI PM1a_CNT write 0x2c00 (SLP_TYP=3 SLP_EN: unsupported sleep type, ignored)"},
		{OffCnt + 1, true, []byte{0x34}, "ACPI PM1a_CNT write high byte 0x34 (SLP_TYP=5 SLP_EN: S5 soft-off)"},
		{OffCnt, false, []byte{0x01, 0x00}, "ACPI PM1a_CNT read 0x0001 (SCI_EN)"},
		{OffSts, true, []byte{0x00, 0x81}, "ACPI PM1a_STS write 0x8100 (clear PWRBTN WAK)"},
		{OffSts, false, []byte{0x00, 0x00}, "ACPI PM1a_STS read 0x0000"},
		{OffEn, true, []byte{0x00, 0x01}, "ACPI PM1a_EN write 0x0100 (PWRBTN_EN)"},
		{OffSts, false, []byte{0, 0, 0x21, 0x00}, "ACPI PM1a_STS read 0x0000; ACPI PM1a_EN read 0x0021 (TMR_EN GBL_EN)"},
		{OffEn, true, []byte{0x01}, "ACPI PM1a_EN write low byte 0x01 (TMR_EN)"},
		{5, true, []byte{1, 2}, "ACPI PM1a bad 2-byte access at offset 5"},
	}
	for _, tt := range tests {
		if got := pm.Describe(tt.off, tt.write, tt.data); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

// TestConcurrent: vCPUs and the VMM's power button at once; run with -race.
func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	offs := 0
	pm := New(func() { mu.Lock(); offs++; mu.Unlock() })
	sci := &irq.Fake{}
	pm.SetSCI(sci)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 2)
			for i := 0; i < 500; i++ {
				pm.PowerButton()
				_ = pm.Write(OffEn, []byte{0x00, 0x01})
				_ = pm.Read(OffSts, b)
				_ = pm.Write(OffSts, []byte{0x00, 0x01})
				_ = pm.Write(OffCnt, []byte{0x01, 0x34})
				_ = pm.Describe(OffCnt, true, b)
			}
		}()
	}
	wg.Wait()
	if offs != 4*500 {
		t.Fatalf("poweroff called %d times, want %d", offs, 4*500)
	}
	// Once quiet, the SCI line agrees with the registers.
	pm.mu.Lock()
	want := pm.sciWanted()
	pm.mu.Unlock()
	pm.syncSCI()
	if sci.High() != want {
		t.Fatalf("SCI %v, want %v", sci.High(), want)
	}
}
