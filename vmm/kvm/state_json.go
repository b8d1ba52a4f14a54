package kvm

import (
	"encoding/json"
	"fmt"
)

// The JSON form of the two large register areas a snapshot's description
// holds for each vCPU (package vmm/vmstate, format version 3): the local
// APIC's register page and the XSAVE area, 1 KiB and 4 KiB. encoding/json
// writes a Go array as an array of numbers, one per byte or word, and
// reading those back was three quarters of the time a restore spent
// decoding its description (85 ms of it inside the emulated Intel host,
// docs/snapshot.md, "Where a restore's time goes"). A byte slice is
// written as one base64 string (RFC 4648), which decodes in a few
// instructions a byte; so each area goes through a slice on its way in
// and out, under the same field name as before.

type lapicJSON struct {
	Regs []byte
}

// MarshalJSON writes the register page as {"Regs": "<base64>"}.
func (l LAPICState) MarshalJSON() ([]byte, error) {
	return json.Marshal(lapicJSON{Regs: l.Regs[:]})
}

// UnmarshalJSON reads what MarshalJSON wrote: exactly LAPICRegsSize bytes.
func (l *LAPICState) UnmarshalJSON(b []byte) error {
	var j lapicJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("LAPIC registers: %w", err)
	}
	if len(j.Regs) != len(l.Regs) {
		return fmt.Errorf("LAPIC registers: %d bytes, want %d", len(j.Regs), len(l.Regs))
	}
	copy(l.Regs[:], j.Regs)
	return nil
}

type xsaveJSON struct {
	Region []byte
}

// MarshalJSON writes the area as {"Region": "<base64>"}, its bytes in the
// host's (little-endian) order, as KVM_GET_XSAVE gives them.
func (x XSAVE) MarshalJSON() ([]byte, error) {
	return json.Marshal(xsaveJSON{Region: x.Bytes()})
}

// UnmarshalJSON reads what MarshalJSON wrote: exactly XSAVESize bytes.
func (x *XSAVE) UnmarshalJSON(b []byte) error {
	var j xsaveJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("XSAVE area: %w", err)
	}
	if len(j.Region) != XSAVESize {
		return fmt.Errorf("XSAVE area: %d bytes, want %d", len(j.Region), XSAVESize)
	}
	x.SetBytes(j.Region)
	return nil
}
