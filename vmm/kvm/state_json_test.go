package kvm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestRegisterAreasJSON: the LAPIC page and the XSAVE area go through JSON
// as base64 strings and come back byte for byte; a wrong length or a wrong
// type is an error, not a short or zero-filled area.
func TestRegisterAreasJSON(t *testing.T) {
	var l LAPICState
	var x XSAVE
	for i := range l.Regs {
		l.Regs[i] = byte(i * 7)
	}
	for i := range x.Region {
		x.Region[i] = uint32(i) * 0x01010101
	}
	lb, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	xb, err := json.Marshal(&x)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(lb), `{"Regs":"`) || !strings.HasPrefix(string(xb), `{"Region":"`) {
		t.Errorf("not base64 strings: %.40s, %.40s", lb, xb)
	}
	var l2 LAPICState
	var x2 XSAVE
	if err := json.Unmarshal(lb, &l2); err != nil || l2 != l {
		t.Errorf("LAPIC round trip: %v, equal %v", err, l2 == l)
	}
	if err := json.Unmarshal(xb, &x2); err != nil || x2 != x {
		t.Errorf("XSAVE round trip: %v, equal %v", err, x2 == x)
	}
	bad := []struct {
		name, json string
		into       any
	}{
		{"LAPIC too short", `{"Regs":"AAAA"}`, &l2},
		{"LAPIC as numbers", `{"Regs":[1,2,3]}`, &l2},
		{"LAPIC not base64", `{"Regs":"!!!!"}`, &l2},
		{"XSAVE too short", `{"Region":"AAAA"}`, &x2},
		{"XSAVE as a number", `{"Region":7}`, &x2},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := json.Unmarshal([]byte(tc.json), tc.into); err == nil {
				t.Errorf("%s decoded without an error", tc.json)
			}
		})
	}
}

// TestShiftTSC: the TSC entry moves by the duration at the saved
// frequency, both ways, and nothing moves without a frequency.
func TestShiftTSC(t *testing.T) {
	tests := []struct {
		name string
		khz  uint32
		d    time.Duration
		want uint64
	}{
		{"back 1 ms at 2 GHz", 2_000_000, -time.Millisecond, 1_000_000_000 - 2_000_000},
		{"forward 1.5 s at 3 GHz", 3_000_000, 1500 * time.Millisecond, 1_000_000_000 + 4_500_000_000},
		{"back 250 ns at 2.4 GHz", 2_400_000, -250 * time.Nanosecond, 1_000_000_000 - 600},
		{"no frequency", 0, time.Second, 1_000_000_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := VCPUState{TSCKHz: tc.khz, MSRs: []MSR{{Index: 0x1b, Data: 7}, {Index: MSRTimeStampCounter, Data: 1_000_000_000}}}
			s.ShiftTSC(tc.d)
			if s.MSRs[1].Data != tc.want || s.MSRs[0].Data != 7 {
				t.Errorf("TSC %d, other MSR %d; want %d and 7", s.MSRs[1].Data, s.MSRs[0].Data, tc.want)
			}
		})
	}
}
