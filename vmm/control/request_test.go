package control

import (
	"errors"
	"strings"
	"testing"

	"kvmlab/internal/cli"
)

// TestNewRequest: the words of `kvmlab control PATH CMD ARGS` become a
// request, or one usage line.
func TestNewRequest(t *testing.T) {
	tests := []struct {
		cmd     string
		args    []string
		paused  bool
		want    Request
		wantErr string
	}{
		{cmd: "pause", want: Request{Cmd: "pause"}},
		{cmd: "stats", want: Request{Cmd: "stats"}},
		{cmd: "snapshot", args: []string{"vm.snap"}, want: Request{Cmd: "snapshot", Path: "vm.snap"}},
		{cmd: "snapshot", args: []string{"vm.snap"}, paused: true, want: Request{Cmd: "snapshot", Path: "vm.snap", Paused: true}},
		{cmd: "snapshot", wantErr: "control: snapshot takes one FILE: kvmlab control /s snapshot FILE [--paused]"},
		{cmd: "snapshot", args: []string{"a", "b"}, wantErr: "control: snapshot takes one FILE"},
		{cmd: "quit", args: []string{"now"}, wantErr: "control: quit takes no arguments"},
		{cmd: "resume", paused: true, wantErr: "control: resume takes no arguments"},
		{cmd: "reboot", wantErr: `control: unknown command "reboot": one of pause, resume, snapshot, stats, quit`},
	}
	for _, tc := range tests {
		got, err := NewRequest("/s", tc.cmd, tc.args, tc.paused)
		var ue cli.UsageError
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("NewRequest(%q, %q, %v) = %+v, %v; want %+v", tc.cmd, tc.args, tc.paused, got, err, tc.want)
		case tc.wantErr != "" && (!errors.As(err, &ue) || !strings.HasPrefix(ue.Msg, tc.wantErr)):
			t.Errorf("NewRequest(%q, %q, %v): %v; want a usage error starting %q", tc.cmd, tc.args, tc.paused, err, tc.wantErr)
		}
	}
}
