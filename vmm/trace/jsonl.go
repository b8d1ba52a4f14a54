package trace

// JSON Lines: one JSON object per exit, one exit per line.
//
// A line per event makes a trace easy to work with while it is being
// written and after a crash: `tail -f`, `grep`, `jq -c 'select(.io.port ==
// 1016)'` and `wc -l` all work on it, and a file cut short by a killed VMM
// loses only its last, torn line.
//
// The encoder is written by hand instead of calling encoding/json: it runs
// once per exit, and appending known fields with strconv is several times
// faster than reflection and allocates nothing. Its output is byte for byte
// what encoding/json's Encoder writes with SetEscapeHTML(false), which the
// tests check; ReadJSON reads it back with encoding/json.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// JSONWriter is a Sink that writes each event as a line of JSON to an
// io.Writer, from a goroutine of its own (see pipe.go for why). Record,
// Close, Waits, Written and Lost are those of asyncSink.
type JSONWriter struct {
	asyncSink
}

// NewJSONWriter starts a JSONWriter writing to w with a DefaultBuffer-event
// channel. Call Close when done; it does not close w.
func NewJSONWriter(w io.Writer) *JSONWriter { return NewJSONWriterSize(w, DefaultBuffer) }

// NewJSONWriterSize is NewJSONWriter with a channel of n events.
func NewJSONWriterSize(w io.Writer, n int) *JSONWriter {
	return &JSONWriter{asyncSink{p: newPipe(w, n, jsonLines{})}}
}

type jsonLines struct{}

func (jsonLines) header(dst []byte) []byte  { return dst }
func (jsonLines) trailer(dst []byte) []byte { return dst }
func (jsonLines) event(dst []byte, ev *Event) []byte {
	return append(AppendJSON(dst, ev), '\n')
}

// AppendJSON appends ev as one JSON object, without a newline, with the
// field names of the schema in the package documentation.
func AppendJSON(dst []byte, ev *Event) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, ev.Seq, 10)
	dst = append(dst, `,"t_ns":`...)
	dst = strconv.AppendInt(dst, ev.TimeNS, 10)
	dst = append(dst, `,"vcpu":`...)
	dst = strconv.AppendInt(dst, int64(ev.VCPU), 10)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, ev.Reason)
	dst = append(dst, `,"code":`...)
	dst = strconv.AppendUint(dst, uint64(ev.Code), 10)
	dst = append(dst, `,"rip":`...)
	dst = strconv.AppendUint(dst, ev.RIP, 10)
	dst = append(dst, `,"guest_ns":`...)
	dst = strconv.AppendInt(dst, ev.GuestNS, 10)
	dst = append(dst, `,"handle_ns":`...)
	dst = strconv.AppendInt(dst, ev.HandleNS, 10)
	if x := ev.IO; x != nil {
		dst = append(dst, `,"io":{"port":`...)
		dst = strconv.AppendUint(dst, uint64(x.Port), 10)
		dst = append(dst, `,"size":`...)
		dst = strconv.AppendUint(dst, uint64(x.Size), 10)
		dst = append(dst, `,"dir":`...)
		dst = appendString(dst, x.Dir)
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendUint(dst, uint64(x.Count), 10)
		dst = append(dst, `,"data":`...)
		dst = appendString(dst, x.Data)
		dst = append(dst, '}')
	}
	if m := ev.MMIO; m != nil {
		dst = append(dst, `,"mmio":{"addr":`...)
		dst = strconv.AppendUint(dst, m.Addr, 10)
		dst = append(dst, `,"len":`...)
		dst = strconv.AppendUint(dst, uint64(m.Len), 10)
		dst = append(dst, `,"write":`...)
		dst = strconv.AppendBool(dst, m.Write)
		dst = append(dst, `,"data":`...)
		dst = appendString(dst, m.Data)
		dst = append(dst, '}')
	}
	if ev.Device != "" {
		dst = append(dst, `,"device":`...)
		dst = appendString(dst, ev.Device)
	}
	if ev.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = appendString(dst, ev.Action)
	}
	if hw := ev.HW; hw != nil {
		dst = append(dst, `,"hw":{"vendor":`...)
		dst = appendString(dst, hw.Vendor)
		dst = append(dst, `,"code":`...)
		dst = strconv.AppendUint(dst, hw.Code, 10)
		dst = append(dst, `,"name":`...)
		dst = appendString(dst, hw.Name)
		dst = append(dst, `,"derived":`...)
		dst = strconv.AppendBool(dst, hw.Derived)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendString appends s as a JSON string the way encoding/json does with
// HTML escaping off: quote and backslash escaped, control characters as
// \n-style or \u00XX escapes, invalid UTF-8 replaced by U+FFFD, and U+2028
// and U+2029 escaped (JavaScript treats them as line ends).
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// LineError is ReadJSON's error for a line that is not an event.
type LineError struct {
	Line int   // 1-based line number of the first bad line
	Err  error // why it did not parse
	More int   // how many further bad lines were skipped
}

func (e *LineError) Error() string {
	s := fmt.Sprintf("trace: line %d: %v", e.Line, e.Err)
	if e.More > 0 {
		s += fmt.Sprintf(" (and %d more bad lines)", e.More)
	}
	return s
}

func (e *LineError) Unwrap() error { return e.Err }

var errNotObject = errors.New("not a JSON object")

// ReadJSON reads a JSON Lines trace as JSONWriter writes it (blank lines are
// skipped, unknown fields ignored). The last non-blank line may be torn, as
// when the VMM was killed mid-write: if it does not parse it is dropped
// without an error. A bad line before that is skipped too, and reported as
// a *LineError naming the first such line; the events returned are then all
// the lines that did parse. Only a read error stops it early.
func ReadJSON(r io.Reader) ([]Event, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		evs     []Event
		bad     *LineError // first bad line in the middle
		pending *LineError // the latest bad line, until a good one follows
		n       int
	)
	for {
		line, rerr := br.ReadBytes('\n')
		if len(line) > 0 {
			n++
			if b := bytes.TrimSpace(line); len(b) > 0 {
				if pending != nil { // not the last line after all
					if bad == nil {
						bad = pending
					} else {
						bad.More++
					}
					pending = nil
				}
				var ev Event
				if err := parseLine(b, &ev); err != nil {
					pending = &LineError{Line: n, Err: err}
				} else {
					evs = append(evs, ev)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return evs, fmt.Errorf("trace: reading line %d: %w", n+1, rerr)
		}
	}
	if bad != nil {
		return evs, bad
	}
	return evs, nil
}

func parseLine(b []byte, ev *Event) error {
	if b[0] != '{' { // json.Unmarshal takes null, numbers, arrays...
		return errNotObject
	}
	return json.Unmarshal(b, ev)
}

// Record queues ev (see asyncSink.Record); a nil *JSONWriter in a Sink
// variable records nothing.
func (j *JSONWriter) Record(ev *Event) {
	if j != nil {
		j.asyncSink.Record(ev)
	}
}
