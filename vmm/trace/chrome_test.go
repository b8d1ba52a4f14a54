package trace

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"testing"
)

type chromeFile struct {
	TraceEvents []struct {
		Name string         `json:"name"`
		Cat  string         `json:"cat"`
		Ph   string         `json:"ph"`
		PID  int            `json:"pid"`
		TID  int            `json:"tid"`
		TS   float64        `json:"ts"`
		Dur  float64        `json:"dur"`
		Args map[string]any `json:"args"`
	} `json:"traceEvents"`
	DisplayTimeUnit string `json:"displayTimeUnit"`
}

func writeChrome(t *testing.T, evs []Event) (chromeFile, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := NewChromeWriter(&buf)
	for i := range evs {
		w.Record(&evs[i])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var f chromeFile
	dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, buf.Bytes())
	}
	if dec.More() {
		t.Fatalf("data after the JSON object:\n%s", buf.Bytes())
	}
	return f, buf.Bytes()
}

func TestChromeZeroEvents(t *testing.T) {
	f, raw := writeChrome(t, nil)
	if f.DisplayTimeUnit != "ns" {
		t.Errorf("displayTimeUnit %q", f.DisplayTimeUnit)
	}
	if len(f.TraceEvents) != 1 {
		t.Fatalf("%d events, want the process name only:\n%s", len(f.TraceEvents), raw)
	}
	m := f.TraceEvents[0]
	if m.Ph != "M" || m.Name != "process_name" || m.PID != 1 || m.Args["name"] != "kvmlab VM" {
		t.Errorf("metadata event %+v", m)
	}
}

func TestChromeTrace(t *testing.T) {
	f, raw := writeChrome(t, sampleEvents())
	t.Logf("\n%s", raw)

	type slice struct {
		name, cat string
		tid       int
		ts, dur   float64
	}
	// ts and dur in µs: guest slice [t_ns-guest_ns, t_ns], exit slice
	// [t_ns, t_ns+handle_ns].
	want := []slice{
		{"guest", "guest", 0, 50, 1200},
		{"IO COM1", "exit", 0, 1250, 2.5},
		{"guest", "guest", 0, 1252.5, 7.5},
		{"IO COM1", "exit", 0, 1260, 1.5},
		{"guest", "guest", 1, 1350, 650},
		{"MMIO IOAPIC", "exit", 1, 2000, 4.2},
		{"guest", "guest", 1, 2005, 95},
		{"IO unclaimed", "exit", 1, 2100, 0.8},
		{"guest", "guest", 0, 1300, 1700},
		{"HLT", "exit", 0, 3000, 0.3},
		{"guest", "guest", 0, 3500, 0},
		{"FAIL_ENTRY", "exit", 0, 3500, 12},
		{"guest", "guest", 2, 4000, 0},
		{"SHUTDOWN", "exit", 2, 4000, 0},
	}
	var got []slice
	threads := map[int]string{}
	sortIndex := map[int]float64{}
	process := ""
	for _, e := range f.TraceEvents {
		if e.PID != ChromePID {
			t.Errorf("event %q in pid %d", e.Name, e.PID)
		}
		switch e.Ph {
		case "X":
			got = append(got, slice{e.Name, e.Cat, e.TID, e.TS, e.Dur})
		case "M":
			switch e.Name {
			case "process_name":
				process, _ = e.Args["name"].(string)
			case "thread_name":
				if len(got) > 0 && got[len(got)-1].tid == e.TID {
					t.Errorf("thread_name for tid %d after its slices", e.TID)
				}
				threads[e.TID], _ = e.Args["name"].(string)
			case "thread_sort_index":
				sortIndex[e.TID], _ = e.Args["sort_index"].(float64)
			default:
				t.Errorf("unexpected metadata %q", e.Name)
			}
		default:
			t.Errorf("unexpected phase %q", e.Ph)
		}
	}
	if process != "kvmlab VM" {
		t.Errorf("process name %q", process)
	}
	for v := range 3 {
		if threads[v] != fmt.Sprintf("vCPU %d", v) || sortIndex[v] != float64(v) {
			t.Errorf("tid %d: name %q sort index %v", v, threads[v], sortIndex[v])
		}
	}
	if len(threads) != 3 {
		t.Errorf("thread names %v", threads)
	}
	if len(got) != len(want) {
		t.Fatalf("%d slices, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.cat != w.cat || g.tid != w.tid ||
			math.Abs(g.ts-w.ts) > 1e-9 || math.Abs(g.dur-w.dur) > 1e-9 {
			t.Errorf("slice %d = %+v, want %+v", i, g, w)
		}
	}

	// The exit slice's args carry the event.
	args := map[string]map[string]any{}
	for _, e := range f.TraceEvents {
		if e.Cat == "exit" {
			args[e.Name] = e.Args
		}
	}
	checks := []struct {
		slice, key string
		want       any
	}{
		{"IO COM1", "action", "COM1 LSR read: THR empty, line idle"},
		{"IO COM1", "port", "0x3fd"},
		{"IO COM1", "dir", "in"},
		{"IO COM1", "hw", "svm VMEXIT_IOIO"},
		{"IO COM1", "hw_code", "0x7b"},
		{"IO COM1", "hw_derived", true},
		{"IO COM1", "seq", 2.0},
		{"IO COM1", "handle_ns", 1500.0},
		{"MMIO IOAPIC", "addr", "0xfec00000"},
		{"MMIO IOAPIC", "write", true},
		{"MMIO IOAPIC", "device", "IOAPIC"},
		{"MMIO IOAPIC", "rip", "0xffffffff8106d2a1"},
		{"IO unclaimed", "port", "0x80"},
		{"FAIL_ENTRY", "reason", "KVM_EXIT_FAIL_ENTRY"},
		{"FAIL_ENTRY", "hw_derived", false},
		{"FAIL_ENTRY", "action", evFail.Action},
	}
	for _, c := range checks {
		if got := args[c.slice][c.key]; got != c.want {
			t.Errorf("%s args[%s] = %v, want %v", c.slice, c.key, got, c.want)
		}
	}
}

// Slices on a thread never overlap, even when the clocks say they would.
func TestChromeNoOverlap(t *testing.T) {
	evs := []Event{
		{Seq: 1, TimeNS: 10_000, VCPU: 3, Reason: "KVM_EXIT_IO", GuestNS: 9_000, HandleNS: 5_000},
		// guest would start at 12µs, inside the previous exit (10-15µs)
		{Seq: 2, TimeNS: 20_000, VCPU: 3, Reason: "KVM_EXIT_IO", GuestNS: 8_000, HandleNS: 1_000},
		// exit time before the previous end: clocks disagree badly
		{Seq: 3, TimeNS: 20_500, VCPU: 3, Reason: "KVM_EXIT_HLT", GuestNS: 100, HandleNS: -50},
		{Seq: 4, TimeNS: 30_000, VCPU: 3, Reason: "KVM_EXIT_IO", GuestNS: 1_000, HandleNS: 1_000},
	}
	f, _ := writeChrome(t, evs)
	type span struct{ ts, end float64 }
	var spans []span
	for _, e := range f.TraceEvents {
		if e.Ph == "X" {
			if e.Dur < 0 {
				t.Errorf("%s: negative dur %v", e.Name, e.Dur)
			}
			spans = append(spans, span{e.TS, e.TS + e.Dur})
		}
	}
	if !sort.SliceIsSorted(spans, func(i, j int) bool { return spans[i].ts < spans[j].ts }) {
		t.Errorf("slices out of order: %v", spans)
	}
	for i := 1; i < len(spans); i++ {
		if spans[i].ts < spans[i-1].end-1e-9 {
			t.Errorf("slice %d %v overlaps %v", i, spans[i], spans[i-1])
		}
	}
	if len(spans) != 8 || spans[2].ts != 15 || spans[7].ts != 30 {
		t.Errorf("spans %v", spans)
	}
}

func TestAppendMicros(t *testing.T) {
	for _, tt := range []struct {
		ns   int64
		want string
	}{
		{0, "0"}, {1, "0.001"}, {10, "0.01"}, {999, "0.999"}, {1000, "1"}, {1500, "1.5"},
		{1_234_567, "1234.567"}, {-2500, "-2.5"}, {math.MaxInt64, "9223372036854775.807"},
		{math.MinInt64, "-9223372036854775.808"},
	} {
		if got := string(appendMicros(nil, tt.ns)); got != tt.want {
			t.Errorf("appendMicros(%d) = %s, want %s", tt.ns, got, tt.want)
		}
	}
}

func TestChromeName(t *testing.T) {
	for _, tt := range []struct {
		ev   Event
		want string
	}{
		{evCOM1Out, "IO COM1"},
		{evIOAPIC, "MMIO IOAPIC"},
		{evPOST, "IO unclaimed"},
		{evHLT, "HLT"},
		{Event{Reason: "KVM_EXIT_"}, "KVM_EXIT_"},
		{Event{Reason: "weird"}, "weird"},
	} {
		if got := ChromeName(&tt.ev); got != tt.want {
			t.Errorf("ChromeName(%s) = %q, want %q", tt.ev.Reason, got, tt.want)
		}
	}
}
