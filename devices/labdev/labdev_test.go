package labdev

import (
	"errors"
	"strings"
	"testing"

	"kvmlab/devices/bus"
	"kvmlab/devices/post"
)

// TestAdd: usable descriptions are kept in order; unusable ones are
// refused with an error naming the device, never a panic in init.
func TestAdd(t *testing.T) {
	t.Cleanup(func() { devices, bad = nil, nil })
	newDev := func() bus.Device { return post.New() }
	tests := []struct {
		name string
		d    Device
		err  string // "" when accepted
	}{
		{"a one-port device", Device{Name: "one", Port: 0x700, Size: 1, New: newDev}, ""},
		{"the last port", Device{Name: "last", Port: 0xffff, Size: 1, New: newDev}, ""},
		{"no name", Device{Port: 0x710, Size: 1, New: newDev}, "has no Name"},
		{"no constructor", Device{Name: "nonew", Port: 0x720, Size: 1}, `"nonew" has no New`},
		{"empty range", Device{Name: "empty", Port: 0x730, New: newDev}, `"empty" at port 0x730 with size 0`},
		{"past the port space", Device{Name: "wrap", Port: 0xfff0, Size: 0x20, New: newDev}, `"wrap" at port 0xfff0`},
	}
	var want []string
	for _, tc := range tests {
		devices, bad = nil, nil
		Add(tc.d)
		got, err := All()
		if tc.err == "" {
			want = append(want, tc.d.Name)
			if err != nil || len(got) != 1 || got[0].Name != tc.d.Name {
				t.Errorf("%s: All() = %v, %v; want the device and no error", tc.name, got, err)
			}
			continue
		}
		if len(got) != 0 || !errors.Is(err, ErrBadDevice) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: All() = %v, %v; want no device and an error containing %q", tc.name, got, err, tc.err)
		}
	}
	devices, bad = nil, nil
	for _, tc := range tests {
		Add(tc.d)
	}
	got, _ := All()
	var names []string
	for _, d := range got {
		names = append(names, d.Name)
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("kept %v, want %v in the order added", names, want)
	}
}
