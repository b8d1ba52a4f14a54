package main

import "testing"

// TestRestoring: run skips its re-exec for a restore only (main), however
// the flag is spelled, and not for a word after "--" or a flag that merely
// starts the same.
func TestRestoring(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{"--restore", "vm.snap"}, true},
		{[]string{"-restore", "vm.snap"}, true},
		{[]string{"--restore=vm.snap", "--stats"}, true},
		{[]string{"--stats", "-restore=vm.snap"}, true},
		{[]string{"--kernel", "bzImage"}, false},
		{[]string{"--restored", "x"}, false},
		{[]string{"restore"}, false},
		{[]string{"--", "--restore"}, false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := restoring(tc.args); got != tc.want {
			t.Errorf("restoring(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
