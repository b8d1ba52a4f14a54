package trace

import (
	"errors"
	"strings"
	"testing"
)

func TestReadStats(t *testing.T) {
	event := `{"seq":1,"t_ns":5,"vcpu":0,"reason":"KVM_EXIT_IO","code":2,"rip":4096,"io":{"port":1016,"size":1,"dir":"out","count":1,"data":"48"}}`
	for _, tc := range []struct {
		name, trace string
		events      int
		err         error  // errors.Is
		noEvents    string // what NoEvents says, for a trace without events
	}{
		{name: "one event", trace: event + "\n", events: 1},
		{name: "chrome", trace: ` {"traceEvents":[]}`, err: ErrChromeTrace},
		{name: "empty", trace: "", noEvents: "is empty"},
		{name: "blank", trace: "\n\n", noEvents: "no exit events in 2 lines, all blank"},
		{name: "text", trace: "hello\nworld\n", noEvents: "no exit events in 2 lines (line 1: not a JSON object)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, sc, err := ReadStats(strings.NewReader(tc.trace))
			if tc.err != nil {
				if !errors.Is(err, tc.err) || s != nil {
					t.Fatalf("ReadStats = %v, %v; want %v and no statistics", s, err, tc.err)
				}
				return
			}
			if sc.Events != tc.events || s.Total() != uint64(tc.events) {
				t.Fatalf("%d events scanned, %d counted; want %d", sc.Events, s.Total(), tc.events)
			}
			if tc.events == 0 {
				if got := sc.NoEvents(err); got != tc.noEvents {
					t.Errorf("NoEvents = %q, want %q", got, tc.noEvents)
				}
			}
		})
	}
}
