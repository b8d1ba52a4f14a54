package kvm

import (
	"encoding/json"
	"strings"
	"testing"
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
