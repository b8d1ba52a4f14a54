package trace

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// What the exit path pays per exit. Run with
//
//	go test -run '^$' -bench . -benchmem ./vmm/trace/

// offSink is package-level so the compiler cannot prove it nil and delete
// the check being measured.
var offSink Sink

var benchNop Sink = Nop{}

// BenchmarkRecordOff: tracing off. "nil" is the check the exit path makes
// before even building the event; "nop" calls a Nop through the interface.
func BenchmarkRecordOff(b *testing.B) {
	ev := evCOM1Out
	b.Run("nil", func(b *testing.B) {
		for b.Loop() {
			if offSink != nil {
				offSink.Record(&ev)
			}
		}
	})
	b.Run("nop", func(b *testing.B) {
		for b.Loop() {
			benchNop.Record(&ev)
		}
	})
}

// BenchmarkJSONRecord: tracing on, to io.Discard.
//
// "burst" is what a vCPU pays in Record while the writer keeps up, the
// normal case (exits are microseconds apart): events are recorded in bursts
// of 1000 and the clock is stopped while the writer catches up.
//
// "sustained" records as fast as one goroutine can, so after the first
// DefaultBuffer events it measures the writer's throughput, the rate at
// which Record starts to wait (waits/op says how often it did).
func BenchmarkJSONRecord(b *testing.B) {
	b.Run("burst", func(b *testing.B) {
		ev := evCOM1Out
		w := NewJSONWriter(io.Discard)
		recordBursts(b, w, w.Written, &ev)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(w.Waits())/float64(b.N), "waits/op")
	})
	b.Run("sustained", func(b *testing.B) {
		ev := evCOM1Out
		w := NewJSONWriter(io.Discard)
		for b.Loop() {
			w.Record(&ev)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(w.Waits())/float64(b.N), "waits/op")
	})
}

func recordBursts(b *testing.B, s Sink, written func() uint64, ev *Event) {
	const burst = 1000
	done := 0
	b.ResetTimer()
	for done < b.N {
		n := min(burst, b.N-done)
		for range n {
			s.Record(ev)
		}
		done += n
		b.StopTimer()
		for written() < uint64(done) {
			time.Sleep(50 * time.Microsecond)
		}
		b.StartTimer()
	}
}

// BenchmarkJSONRecordParallel: several vCPUs record at once.
func BenchmarkJSONRecordParallel(b *testing.B) {
	w := NewJSONWriter(io.Discard)
	b.RunParallel(func(pb *testing.PB) {
		ev := evCOM1Out
		for pb.Next() {
			w.Record(&ev)
		}
	})
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(w.Waits())/float64(b.N), "waits/op")
}

// BenchmarkChromeRecord is BenchmarkJSONRecord's burst case for the Chrome
// writer (Record is the same; only the writer goroutine differs).
func BenchmarkChromeRecord(b *testing.B) {
	ev := evCOM1Out
	w := NewChromeWriter(io.Discard)
	recordBursts(b, w, w.Written, &ev)
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(w.Waits())/float64(b.N), "waits/op")
}

// BenchmarkAppendJSON is the encoder alone, as the writer goroutine runs it.
func BenchmarkAppendJSON(b *testing.B) {
	ev := evCOM1Out
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		buf = AppendJSON(buf[:0], &ev)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkStatsAdd is --stats without a trace, on a mix of exits (IO,
// MMIO, HLT, unclaimed...) so that the maps see several keys.
func BenchmarkStatsAdd(b *testing.B) {
	s := NewStats()
	evs := sampleEvents()
	i := 0
	for b.Loop() {
		s.Add(&evs[i])
		if i++; i == len(evs) {
			i = 0
		}
	}
}

// BenchmarkStatsAddParallel: one goroutine per vCPU, as in the VMM.
func BenchmarkStatsAddParallel(b *testing.B) {
	s := NewStats()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		evs := sampleEvents()
		v := int(next.Add(1))
		for i := range evs {
			evs[i].VCPU = v
		}
		i := 0
		for pb.Next() {
			s.Add(&evs[i])
			if i++; i == len(evs) {
				i = 0
			}
		}
	})
}
