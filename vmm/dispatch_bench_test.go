package vmm

import (
	"testing"
	"time"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/trace"
	"kvmlab/vmm/x86"
)

// BenchmarkDispatch measures one turn of the exit path in user space, decode
// plus dispatch of a one-byte OUT to a device, with the observatory off and
// on. "off" is what every exit pays when nobody watches: the only addition is
// the check of one bool, so off and bare should not differ measurably.
//
//	go test -run '^$' -bench Dispatch ./vmm/
func BenchmarkDispatch(b *testing.B) {
	cases := []struct {
		name  string
		setup func(tm *testMachine)
	}{
		{"off", func(tm *testMachine) {}},
		{"stats", func(tm *testMachine) { tm.cfg.Trace = trace.NewStats() }},
		{"trace-json", func(tm *testMachine) { tm.cfg.Trace = trace.NewJSONWriter(discard{}) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			tm := newTestMachine(&testing.T{})
			c.setup(tm)
			tm.observed = tm.cfg.Trace != nil
			tm.syncRegs = true // RIP from the run page, as on a host with KVM_CAP_SYNC_REGS
			now := time.Now()
			tm.started.Store(&now)
			exits.EncodeIO(tm.run, exits.Out, 1, x86.COM1Port, 1, 0x1000, []byte{'H'})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := exits.Decode(tm.v.Run, &tm.v.exit); err != nil {
					b.Fatal(err)
				}
				if tm.observed {
					tm.v.enter = time.Now()
					tm.observe(tm.v)
					continue
				}
				tm.handle(tm.v)
			}
			b.StopTimer()
			if w, ok := tm.cfg.Trace.(*trace.JSONWriter); ok {
				_ = w.Close()
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
