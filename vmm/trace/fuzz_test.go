package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzReadJSON: whatever a trace file holds, ReadJSON returns, without
// panicking, and every event it returns survives another round trip.
func FuzzReadJSON(f *testing.F) {
	for _, ev := range sampleEvents() {
		f.Add(append(AppendJSON(nil, &ev), '\n'))
	}
	f.Add([]byte("{\"seq\":1}\n{\"seq\":2,\"io\":{\"port\":1016}}\n{\"seq\":3,\"t_"))
	f.Add([]byte("\n\r\n{}\nnull\n[1,2]\n\"x\"\n{\"seq\":-1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := ReadJSON(bytes.NewReader(data))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error %v is not a *LineError with a line", err)
			}
		}
		var buf bytes.Buffer
		for i := range evs {
			buf.Write(AppendJSON(nil, &evs[i]))
			buf.WriteByte('\n')
		}
		again, err := ReadJSON(&buf)
		if err != nil || len(again) != len(evs) {
			t.Fatalf("re-reading %d events: %d, %v", len(evs), len(again), err)
		}
	})
}

// FuzzAppendString: the hand-written string encoder agrees with
// encoding/json for any bytes.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "COM1 THR write 'H'", "\x00\x1f\"\\", "\xff\u2028µ", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		// Compare what the two say, not their bytes: where JSON allows a
		// choice (U+2028 and U+2029 escaped or not) encoding/json's changed
		// between Go 1.26 and 1.27, and appendString escapes them so that a
		// trace line can sit inside JavaScript.
		got := appendString(nil, s)
		var fromOurs, fromJSON string
		if err := json.Unmarshal(got, &fromOurs); err != nil {
			t.Fatalf("appendString(%q) = %s: not a JSON string: %v", s, got, err)
		}
		if err := json.Unmarshal(want.Bytes(), &fromJSON); err != nil {
			t.Fatal(err)
		}
		if fromOurs != fromJSON {
			t.Fatalf("appendString(%q) = %s reads back as %q; encoding/json's %s as %q", s, got, fromOurs, want.Bytes(), fromJSON)
		}
		for _, c := range got {
			if c < 0x20 {
				t.Fatalf("appendString(%q) = %q holds a raw control byte", s, got)
			}
		}
	})
}

// FuzzReadTrace: ScanJSON, the reader behind kvmlab stat, on any bytes. It
// never panics; it counts every line once, hands on only events that pass
// Check, reports the first bad line it saw, and agrees with ReadJSON; what
// it hands on survives a round trip.
func FuzzReadTrace(f *testing.F) {
	for _, ev := range sampleEvents() {
		f.Add(append(AppendJSON(nil, &ev), '\n'))
	}
	f.Add([]byte(""))
	f.Add([]byte("this is a text file\nnot a trace\n"))
	f.Add([]byte(`{"seq":1,"t_ns":5,"vcpu":0,"reason":"KVM_EXIT_IO","io":{"port":10`))
	f.Add([]byte("{\"traceEvents\":[\n{\"ph\":\"X\"}\n"))
	f.Add([]byte(`{"seq":1,"reason":"KVM_EXIT_HLT","vcpu":2000000000}` + "\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []Event
		sc, err := ScanJSON(bytes.NewReader(data), func(ev *Event) {
			if err := ev.Check(); err != nil {
				t.Fatalf("handed on an event that fails Check: %v", err)
			}
			got = append(got, *ev)
		})
		lines := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			lines++
		}
		if sc.Lines != lines || sc.Events != len(got) || sc.Events+sc.Bad > sc.Lines {
			t.Fatalf("Scanned %+v for %d lines and %d events handed on", sc, lines, len(got))
		}
		if (sc.Bad == 0) != (sc.First == nil) {
			t.Fatalf("%d bad lines, first %v", sc.Bad, sc.First)
		}
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || sc.First == nil || le.Line != sc.First.Line || le.More+1 > sc.Bad {
				t.Fatalf("error %v does not match %+v", err, sc)
			}
		} else if sc.Bad > 1 {
			t.Fatalf("%d bad lines and no error: only a torn last line goes unreported", sc.Bad)
		}
		evs, err2 := ReadJSON(bytes.NewReader(data))
		if len(evs) != len(got) || (err == nil) != (err2 == nil) {
			t.Fatalf("ReadJSON: %d events, %v; ScanJSON: %d, %v", len(evs), err2, len(got), err)
		}
		var buf bytes.Buffer
		for i := range got {
			buf.Write(AppendJSON(nil, &got[i]))
			buf.WriteByte('\n')
		}
		again, err := ScanJSON(&buf, func(*Event) {})
		if err != nil || again.Events != len(got) || again.Bad != 0 {
			t.Fatalf("re-reading %d events: %+v, %v", len(got), again, err)
		}
	})
}
