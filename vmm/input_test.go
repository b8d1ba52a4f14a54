package vmm

import (
	"bytes"
	"testing"
)

func TestEscapeFilter(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
		quit   bool
	}{
		{"plain text passes", []string{"ls\r"}, "ls\r", false},
		{"ctrl-a x quits", []string{"ab\x01x"}, "ab", true},
		{"ctrl-a X quits", []string{"\x01X"}, "", true},
		{"ctrl-a ctrl-a sends one ctrl-a", []string{"\x01\x01z"}, "\x01z", false},
		{"escape split across reads", []string{"q\x01", "x"}, "q", true},
		{"unknown escape swallowed", []string{"\x01hi"}, "i", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f escapeFilter
			var got []byte
			quit := false
			for _, c := range tc.chunks {
				out, q := f.filter([]byte(c))
				got = append(got, out...)
				if q {
					quit = true
					break
				}
			}
			if string(got) != tc.want || quit != tc.quit {
				t.Errorf("got %q quit=%v, want %q quit=%v", got, quit, tc.want, tc.quit)
			}
		})
	}
}

type slowRX struct {
	got  bytes.Buffer
	room chan struct{}
}

func (s *slowRX) Input(p []byte) int {
	n := min(len(p), 3)
	s.got.Write(p[:n])
	return n
}
func (s *slowRX) Room() <-chan struct{} { return s.room }

func TestPumpInputWaitsForRoom(t *testing.T) {
	rx := &slowRX{room: make(chan struct{}, 1)}
	go func() {
		for range 100 {
			rx.room <- struct{}{}
		}
	}()
	pumpInput(bytes.NewReader([]byte("hello world, this is longer than a FIFO")), rx, true, func() { t.Error("quit") }, make(chan struct{}))
	if rx.got.String() != "hello world, this is longer than a FIFO" {
		t.Errorf("guest received %q", rx.got.String())
	}
}
