package container

import (
	"errors"
	"os"
	"strings"
	"testing"

	"kvmlab/internal/cli"
)

// TestContainerUsernsFlag checks what --userns maps to on this host: the
// caller's own IDs without root; as root, root's line in /etc/subuid and
// /etc/subgid, or, when there is none, a one-line error saying how to add
// one.
func TestContainerUsernsFlag(t *testing.T) {
	got, err := Options{UserNS: true}.IDRange()
	switch sub, subErr := SubordinateRange("root", 0); {
	case os.Geteuid() != 0:
		if err != nil || got == nil || *got != CallerRange() {
			t.Errorf("--userns without root: %+v, %v; want %+v", got, err, CallerRange())
		}
	case subErr != nil:
		var ue cli.UsageError
		if !errors.As(err, &ue) || !strings.Contains(ue.Msg, "add a line such as root:1000000:65536 to /etc/subuid") || strings.Contains(ue.Msg, "\n") {
			t.Errorf("--userns as root, no range in /etc/subuid (%v): %v; want one line saying how to add one", subErr, err)
		}
	default:
		if err != nil || got == nil || *got != sub {
			t.Errorf("--userns as root: %+v, %v; want root's range %+v", got, err, sub)
		}
	}
}
