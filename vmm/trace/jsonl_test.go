package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func writeJSON(t *testing.T, evs []Event) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewJSONWriter(&buf)
	for i := range evs {
		w.Record(&evs[i])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := w.Written(); got != uint64(len(evs)) {
		t.Fatalf("Written = %d, want %d", got, len(evs))
	}
	return buf.Bytes()
}

func TestJSONRoundTrip(t *testing.T) {
	in := sampleEvents()
	out := writeJSON(t, in)
	if n := bytes.Count(out, []byte("\n")); n != len(in) {
		t.Fatalf("%d lines, want %d:\n%s", n, len(in), out)
	}
	got, err := ReadJSON(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, in)
	}
}

// The schema's field names, checked on the decoded JSON rather than
// through the Event type, so that a renamed tag fails here.
func TestJSONFieldNames(t *testing.T) {
	tests := []struct {
		ev     Event
		path   string
		want   any // nil: field must be absent
		absent bool
	}{
		{evCOM1Out, "seq", 1.0, false},
		{evCOM1Out, "t_ns", 1250000.0, false},
		{evCOM1Out, "vcpu", 0.0, false},
		{evCOM1Out, "reason", "KVM_EXIT_IO", false},
		{evCOM1Out, "code", 2.0, false},
		{evCOM1Out, "rip", float64(0xffffffff81a3c0de), false},
		{evCOM1Out, "guest_ns", 1200000.0, false},
		{evCOM1Out, "handle_ns", 2500.0, false},
		{evCOM1Out, "io.port", 1016.0, false},
		{evCOM1Out, "io.size", 1.0, false},
		{evCOM1Out, "io.dir", "out", false},
		{evCOM1Out, "io.count", 1.0, false},
		{evCOM1Out, "io.data", "48", false},
		{evCOM1Out, "device", "COM1", false},
		{evCOM1Out, "action", "COM1 THR write 'H'", false},
		{evCOM1Out, "hw.vendor", "svm", false},
		{evCOM1Out, "hw.code", 123.0, false},
		{evCOM1Out, "hw.name", "VMEXIT_IOIO", false},
		{evCOM1Out, "hw.derived", true, false},
		{evCOM1Out, "mmio", nil, true},
		{evIOAPIC, "mmio.addr", float64(0xfec00000), false},
		{evIOAPIC, "mmio.len", 4.0, false},
		{evIOAPIC, "mmio.write", true, false},
		{evIOAPIC, "mmio.data", "10000000", false},
		{evIOAPIC, "io", nil, true},
		{evPOST, "device", nil, true},
		{evFail, "hw.derived", false, false},
		{evBare, "hw", nil, true},
		{evBare, "action", nil, true},
		{evBare, "guest_ns", 0.0, false}, // zero numbers stay
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%s", tt.ev.Seq, tt.path), func(t *testing.T) {
			var m map[string]any
			line := AppendJSON(nil, &tt.ev)
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			var v any = m
			ok := true
			for _, k := range strings.Split(tt.path, ".") {
				v, ok = v.(map[string]any)[k]
				if !ok {
					break
				}
			}
			if tt.absent {
				if ok {
					t.Errorf("%s present (%v), want absent: %s", tt.path, v, line)
				}
				return
			}
			if !ok || v != tt.want {
				t.Errorf("%s = %v (present %v), want %v: %s", tt.path, v, ok, tt.want, line)
			}
		})
	}
}

// The hand-written encoder must write exactly what encoding/json writes.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	evs := sampleEvents()
	for _, s := range []string{
		"", `quote " and \ backslash`, "ctl \x00\x01\x1f\x7f \b\f\n\r\t", "<html> & 'x'",
		"µs ünïcödé 日本", "bad utf8 \xff\xfe end", "sep \u2028 \u2029", "\xe2\x80", "tail\xc3",
	} {
		ev := evCOM1Out
		ev.Action, ev.Device = s, s
		x := *ev.IO
		x.Data = s
		ev.IO = &x
		evs = append(evs, ev)
	}
	for _, ev := range evs {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&ev); err != nil {
			t.Fatal(err)
		}
		got := append(AppendJSON(nil, &ev), '\n')
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendJSON differs from encoding/json:\n got %s\nwant %s", got, want.Bytes())
		}
	}
}

// Eight vCPUs record at once, each reusing one Event and IO as the exit
// path does; every event must arrive exactly once and intact.
func TestJSONConcurrentRecord(t *testing.T) {
	const goroutines, per = 8, 10_000
	var buf bytes.Buffer
	w := NewJSONWriter(&buf)
	var seq atomic.Uint64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var port IO
			var ev Event
			for i := range per {
				ev = synth(g, i, seq.Add(1))
				if ev.IO != nil {
					port = *ev.IO
					port.Data = fmt.Sprint(ev.Seq)
					ev.IO = &port
				}
				w.Record(&ev)
				port.Data = "clobbered" // the writer must have copied
				ev.Seq = 0
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != goroutines*per {
		t.Fatalf("%d lines, want %d", n, goroutines*per)
	}
	evs, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, goroutines*per+1)
	perVCPU := map[int]int{}
	for _, ev := range evs {
		if ev.Seq == 0 || ev.Seq > goroutines*per || seen[ev.Seq] {
			t.Fatalf("seq %d missing, out of range or repeated", ev.Seq)
		}
		seen[ev.Seq] = true
		perVCPU[ev.VCPU]++
		if ev.IO != nil && ev.IO.Data != fmt.Sprint(ev.Seq) {
			t.Fatalf("seq %d: io.data %q: event not copied by Record", ev.Seq, ev.IO.Data)
		}
	}
	for s := 1; s <= goroutines*per; s++ {
		if !seen[s] {
			t.Fatalf("seq %d missing", s)
		}
	}
	for g := range goroutines {
		if perVCPU[g] != per {
			t.Errorf("vCPU %d: %d events, want %d", g, perVCPU[g], per)
		}
	}
	t.Logf("Record waited %d times for a full queue", w.Waits())
}

// gate is a Writer that blocks until released.
type gate struct {
	release chan struct{}
	buf     bytes.Buffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.release
	return g.buf.Write(p)
}

// With the writer stuck, Record blocks instead of dropping, and counts it.
func TestJSONWriterBlocksWhenFull(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	w := NewJSONWriterSize(g, 1)
	big := strings.Repeat("x", 100<<10) // larger than the bufio buffer: written at once
	const n = 5
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			ev := evCOM1Out
			ev.Seq = uint64(i + 1)
			ev.Action = big
			w.Record(&ev)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for w.Waits() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Record never waited although the writer is stuck")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("all Records returned while the writer was stuck: events dropped?")
	default:
	}
	close(g.release)
	<-done
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadJSON(&g.buf)
	if err != nil || len(evs) != n {
		t.Fatalf("%d events, %v; want %d", len(evs), err, n)
	}
	if w.Lost() != 0 {
		t.Errorf("Lost = %d", w.Lost())
	}
}

type failWriter struct{ n int }

var errDiskFull = errors.New("no space left on device")

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errDiskFull
}

// A failing writer must not stall the vCPUs: Record goes on returning,
// the events are counted as lost and Close reports the error.
func TestJSONWriterError(t *testing.T) {
	for _, name := range []string{"json", "chrome"} {
		t.Run(name, func(t *testing.T) {
			fw := &failWriter{}
			var rec Sink
			var closer func() error
			var lost func() uint64
			if name == "json" {
				w := NewJSONWriterSize(fw, 4)
				rec, closer, lost = w, w.Close, w.Lost
			} else {
				w := NewChromeWriterSize(fw, 4)
				rec, closer, lost = w, w.Close, w.Lost
			}
			big := strings.Repeat("y", 70<<10)
			for i := range 1000 {
				ev := synth(0, i, uint64(i+1))
				ev.Action = big
				rec.Record(&ev)
			}
			if err := closer(); !errors.Is(err, errDiskFull) {
				t.Fatalf("Close = %v, want %v", err, errDiskFull)
			}
			if lost() < 999 {
				t.Errorf("Lost = %d, want >= 999", lost())
			}
			if fw.n > 2 {
				t.Errorf("%d writes after the first error", fw.n-1)
			}
		})
	}
}

func TestJSONRecordAfterClose(t *testing.T) {
	var buf bytes.Buffer
	w := NewJSONWriter(&buf)
	w.Record(&evHLT)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Record(&evHLT) // must not panic on the closed channel
	if err := w.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if w.Lost() != 1 || w.Written() != 1 {
		t.Errorf("Lost %d Written %d, want 1 1", w.Lost(), w.Written())
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("%d lines, want 1", n)
	}
	var nilW *JSONWriter
	nilW.Record(&evHLT) // a typed nil in a Sink is harmless
}

// The writer flushes on its own while idle, so `tail -f` sees events
// before Close.
func TestJSONWriterFlushesWhileIdle(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	w := NewJSONWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}))
	defer w.Close()
	w.Record(&evCOM1Out)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := buf.Len()
		mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing written 5s after Record")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestReadJSON(t *testing.T) {
	evs := sampleEvents()
	full := string(writeJSON(t, evs))
	lines := strings.SplitAfter(full, "\n")
	lines = lines[:len(lines)-1] // after the last "\n"
	last := lines[len(lines)-1]
	withBad := func(at int, bad string) string {
		l := append([]string{}, lines[:at]...)
		l = append(l, bad+"\n")
		return strings.Join(append(l, lines[at:]...), "")
	}
	tests := []struct {
		name     string
		in       string
		want     int // events
		badLine  int // 0: no error
		moreBad  int
		firstSeq uint64
	}{
		{"complete", full, 7, 0, 0, 1},
		{"empty", "", 0, 0, 0, 0},
		{"only blank lines", "\n\n  \n", 0, 0, 0, 0},
		{"truncated last line", full[:len(full)-len(last)/2], 6, 0, 0, 1},
		{"truncated after the first byte", full[:len(full)-len(last)+1], 6, 0, 0, 1},
		{"truncated last line and blank lines", full[:len(full)-10] + "\n\n", 6, 0, 0, 1},
		{"last line without newline", strings.TrimSuffix(full, "\n"), 7, 0, 0, 1},
		{"CRLF and blank lines", strings.ReplaceAll(full, "\n", "\r\n\r\n"), 7, 0, 0, 1},
		{"bad first line", withBad(0, "garbage"), 7, 1, 0, 1},
		{"bad middle line", withBad(3, `{"seq":99,"t_ns":`), 7, 4, 0, 1},
		{"null in the middle", withBad(2, "null"), 7, 3, 0, 1},
		{"number in the middle", withBad(2, "42"), 7, 3, 0, 1},
		{"wrong type", withBad(2, `{"seq":"one"}`), 7, 3, 0, 1},
		{"two objects on a line", withBad(2, `{"seq":8}{"seq":9}`), 7, 3, 0, 1},
		{"two bad lines", withBad(5, "x") + "y\n" + "{\"seq\":100,\"reason\":\"KVM_EXIT_HLT\"}\n", 8, 6, 1, 1},
		{"bad middle and torn last", withBad(1, "}{") + `{"seq":3`, 7, 2, 0, 1},
		{"unknown fields are fine", `{"seq":1,"reason":"KVM_EXIT_IO","future":{"x":[1,2]}}` + "\n", 1, 0, 0, 1},
		// Objects that are not exits kvmlab recorded.
		{"no reason", withBad(2, `{"seq":8,"vcpu":0}`), 7, 3, 0, 1},
		{"seq 0", withBad(2, `{"seq":0,"reason":"KVM_EXIT_IO"}`), 7, 3, 0, 1},
		{"vcpu out of range", withBad(2, `{"seq":8,"reason":"KVM_EXIT_IO","vcpu":100000000}`), 7, 3, 0, 1},
		{"negative vcpu", withBad(2, `{"seq":8,"reason":"KVM_EXIT_IO","vcpu":-1}`), 7, 3, 0, 1},
		{"line over MaxLine", withBad(2, `{"seq":8,"reason":"`+strings.Repeat("x", MaxLine)+`"}`), 7, 3, 0, 1},
		{"no newline at all", strings.Repeat("\x00", 3*MaxLine), 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadJSON(strings.NewReader(tt.in))
			if len(got) != tt.want {
				t.Errorf("%d events, want %d", len(got), tt.want)
			}
			if len(got) > 0 && got[0].Seq != tt.firstSeq {
				t.Errorf("first seq %d, want %d", got[0].Seq, tt.firstSeq)
			}
			if tt.badLine == 0 {
				if err != nil {
					t.Errorf("err = %v, want nil", err)
				}
				return
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a *LineError", err)
			}
			if le.Line != tt.badLine || le.More != tt.moreBad {
				t.Errorf("LineError line %d more %d, want %d %d (%v)", le.Line, le.More, tt.badLine, tt.moreBad, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("line %d:", tt.badLine)) {
				t.Errorf("error %q does not name line %d", err, tt.badLine)
			}
		})
	}
}

type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestReadJSONReadError(t *testing.T) {
	in := writeJSON(t, sampleEvents()[:2])
	got, err := ReadJSON(bufio.NewReaderSize(errReader{bytes.NewReader(in)}, 16))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want ErrUnexpectedEOF", err)
	}
	if len(got) != 2 {
		t.Errorf("%d events before the error, want 2", len(got))
	}
}
