package vmm

import (
	"testing"

	"kvmlab/guest/runexec"
)

// TestExecStatus maps every way a machine can stop to kvmlab's exit status
// under --exec: CMD's own status only when the guest reported one.
func TestExecStatus(t *testing.T) {
	tests := []struct {
		name    string
		out     Outcome
		want    int
		explain bool // a line on stderr says why
	}{
		{"status 0", Outcome{Reason: StopExit, Status: 0}, 0, false},
		{"status 3", Outcome{Reason: StopExit, Status: 3}, 3, false},
		{"status 124 from CMD", Outcome{Reason: StopExit, Status: 124}, 124, false},
		{"timeout", Outcome{Reason: StopTimeout, Detail: "timed out after 5s"}, runexec.StatusTimeout, true},
		{"panic", Outcome{Reason: StopGuestPanic, Detail: "the guest kernel panicked: x"}, runexec.StatusPanic, true},
		{"reset", Outcome{Reason: StopReboot}, runexec.StatusPanic, true},
		{"triple fault", Outcome{Reason: StopTripleFault}, runexec.StatusPanic, true},
		{"poweroff without a status", Outcome{Reason: StopPoweroff}, runexec.StatusFailed, true},
		{"KVM error", Outcome{Reason: StopInternalError, Detail: "KVM internal error"}, runexec.StatusFailed, true},
		{"quit", Outcome{Reason: StopQuit}, runexec.StatusFailed, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, why := tc.out.ExecStatus()
			if code != tc.want || (why != "") != tc.explain {
				t.Fatalf("ExecStatus = %d, %q; want %d, explained %v", code, why, tc.want, tc.explain)
			}
		})
	}
}
