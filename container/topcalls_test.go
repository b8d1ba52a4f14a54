package container

import "testing"

func TestTopSyscalls(t *testing.T) {
	counts := map[string]uint64{"write": 100, "read": 300, "openat": 100, "close": 7}
	tests := []struct {
		name   string
		counts map[string]uint64
		n      int
		want   string
	}{
		{"most frequent first, ties by name", counts, 3, "read 300, openat 100, write 100"},
		{"n beyond the calls", counts, 10, "read 300, openat 100, write 100, close 7"},
		{"none asked", counts, 0, ""},
		{"nothing counted", nil, 8, ""},
	}
	for _, tt := range tests {
		if got := TopSyscalls(tt.counts, tt.n); got != tt.want {
			t.Errorf("%s: TopSyscalls(%v, %d) = %q, want %q", tt.name, tt.counts, tt.n, got, tt.want)
		}
	}
}
