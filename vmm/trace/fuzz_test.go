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
		got := append(appendString(nil, s), '\n')
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("appendString(%q) = %s, encoding/json %s", s, got, want.Bytes())
		}
	})
}
