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

// MaxLine is the longest line a trace reader takes, newline included. An
// event as JSONWriter writes it is a few hundred bytes (an action text is
// the longest part), and 1 MiB leaves room for any text a device gives; a
// longer line is not an event, and is skipped without being held in memory,
// so a file with no newlines at all (a disk image, the output of /dev/zero)
// costs the reader MaxLine bytes, not its size.
const MaxLine = 1 << 20

// MaxVCPUs bounds the vcpu field of an event: kvmlab's ACPI tables describe
// at most 255 vCPUs. It also bounds what a hostile trace can make the
// statistics table allocate.
const MaxVCPUs = 255

var (
	errNotObject = errors.New("not a JSON object")
	errLongLine  = fmt.Errorf("longer than %d bytes: not an exit event", MaxLine)
	errNoReason  = errors.New(`no "reason": not an exit event`)
	errSeq       = errors.New(`"seq" is 0: exits are numbered from 1`)
	errVCPU      = fmt.Errorf(`"vcpu" outside 0-%d`, MaxVCPUs-1)
)

// Check says whether ev can be an exit kvmlab recorded: it has a reason, a
// sequence number from 1, and a vCPU kvmlab can have. Traces from other
// tools and other JSON Lines files fail it.
func (ev *Event) Check() error {
	switch {
	case ev.Reason == "":
		return errNoReason
	case ev.Seq == 0:
		return errSeq
	case ev.VCPU < 0 || ev.VCPU >= MaxVCPUs:
		return errVCPU
	}
	return nil
}

// Scanned is what ScanJSON found in a trace.
type Scanned struct {
	Lines  int        // lines read, blank ones included
	Events int        // exit events passed to the callback
	Bad    int        // lines that were neither blank nor an exit event
	First  *LineError // the first such line, even when it was the last
}

// ReadJSON reads a JSON Lines trace as JSONWriter writes it, with ScanJSON,
// and returns its events.
func ReadJSON(r io.Reader) ([]Event, error) {
	var evs []Event
	_, err := ScanJSON(r, func(ev *Event) { evs = append(evs, *ev) })
	return evs, err
}

// ScanJSON reads a JSON Lines trace as JSONWriter writes it and calls fn
// with each exit event, in file order; fn must not keep ev. Blank lines are
// skipped and unknown fields ignored. A line is an event when it is one JSON
// object that passes Event.Check, in at most MaxLine bytes.
//
// The last non-blank line may be torn, as when the VMM was killed mid-write:
// if it is not an event it is dropped without an error (Scanned still counts
// it). A bad line before that is skipped too, and reported as a *LineError
// naming the first such line. Only a read error stops the scan early.
//
// The memory it takes is bounded by MaxLine whatever r holds, so r may be
// as long as the caller lets it be (kvmlab stat reads a checked file).
func ScanJSON(r io.Reader, fn func(ev *Event)) (Scanned, error) {
	br := bufio.NewReaderSize(r, MaxLine)
	var (
		sc      Scanned
		bad     *LineError // first bad line in the middle
		pending *LineError // the latest bad line, until a good one follows
	)
	for {
		line, rerr := br.ReadSlice('\n')
		long := false
		for rerr == bufio.ErrBufferFull { // skip the rest of a long line
			long = true
			_, rerr = br.ReadSlice('\n')
		}
		if len(line) > 0 || long {
			sc.Lines++
			if b := bytes.TrimSpace(line); len(b) > 0 || long {
				if pending != nil { // not the last line after all
					if bad == nil {
						bad = pending
					} else {
						bad.More++
					}
					pending = nil
				}
				var ev Event
				var err error
				if long {
					err = errLongLine
				} else if err = parseLine(b, &ev); err == nil {
					err = ev.Check()
				}
				if err != nil {
					pending = &LineError{Line: sc.Lines, Err: err}
					sc.Bad++
					if sc.First == nil {
						sc.First = &LineError{Line: sc.Lines, Err: err}
					}
				} else {
					sc.Events++
					fn(&ev)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return sc, fmt.Errorf("trace: reading line %d: %w", sc.Lines+1, rerr)
		}
	}
	if bad != nil {
		return sc, bad
	}
	return sc, nil
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
