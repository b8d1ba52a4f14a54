// Package statetest holds what the device models' snapshot tests share: a
// device's saved state goes into the snapshot file as JSON (vmm/vmstate),
// so every test of a State checks it survives that trip, field by field.
package statetest

import (
	"encoding/json"
	"testing"
)

// JSONRoundTrip marshals s as a snapshot does and unmarshals it into a
// fresh value, failing t if either step fails.
func JSONRoundTrip[S any](t testing.TB, s S) S {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var back S
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return back
}
