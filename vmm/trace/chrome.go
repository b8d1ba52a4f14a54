package trace

// Chrome Trace Event format: a timeline of the exits.
//
// The format (Trace Event Format, the JSON that chrome://tracing, Perfetto's
// ui.perfetto.dev and speedscope open) is a JSON object whose "traceEvents"
// array holds events with a phase "ph". Two phases are used here:
//
//	"X"  complete event: a slice with a start "ts" and a duration "dur",
//	     both in microseconds (fractions allowed), drawn on the track of
//	     thread "tid" of process "pid".
//	"M"  metadata: "process_name" / "thread_name" give the tracks names,
//	     "thread_sort_index" their order.
//
// Each vCPU is a thread (tid = vCPU index) of one process (pid 1, "kvmlab
// VM"), and each exit becomes two slices on it:
//
//	|------ guest ------|-- IO COM1 --|------ guest ------|-- MMIO ... --|
//	   guest_ns         ^ t_ns  handle_ns
//
// the time the vCPU spent running the guest inside KVM_RUN before the exit,
// then the time the VMM spent handling it. What is left between them is
// KVM_RUN's own overhead and time the thread was not running. Zooming in
// shows at a glance whether a guest is slow because it exits often (many
// thin slices) or because the VMM handles some exits slowly (wide ones),
// and the args of a slice (click it) carry the event's fields.
//
// Slices on one thread must nest or follow each other; the importers drop or
// misdraw overlapping ones. Clocks read on different sides of KVM_RUN can
// make a guest slice begin a little before the previous exit's handling
// ended, so starts are moved forward to the end of the previous slice; the
// args keep the measured values.
//
// The file is only valid JSON once Close has written the closing brackets.

import (
	"io"
	"strconv"
	"strings"
)

// ChromeWriter is a Sink that writes a Chrome Trace Event file, from a
// goroutine of its own like JSONWriter. Close also writes the end of the
// JSON document.
type ChromeWriter struct {
	asyncSink
}

// NewChromeWriter starts a ChromeWriter writing to w with a
// DefaultBuffer-event channel. Call Close when done; it does not close w.
func NewChromeWriter(w io.Writer) *ChromeWriter { return NewChromeWriterSize(w, DefaultBuffer) }

// NewChromeWriterSize is NewChromeWriter with a channel of n events.
func NewChromeWriterSize(w io.Writer, n int) *ChromeWriter {
	return &ChromeWriter{asyncSink{p: newPipe(w, n, &chromeFormat{vcpus: map[int]int64{}})}}
}

// ChromePID is the process id all vCPU threads belong to.
const ChromePID = 1

// chromeFormat is only used on the writer goroutine.
type chromeFormat struct {
	vcpus map[int]int64 // vCPUs seen -> end of their last slice, ns
}

func (*chromeFormat) header(dst []byte) []byte {
	dst = append(dst, `{"traceEvents":[`+"\n"...)
	dst = append(dst, `{"name":"process_name","ph":"M","pid":1,"tid":0,"args":{"name":"kvmlab VM"}}`...)
	return dst
}

func (*chromeFormat) trailer(dst []byte) []byte {
	return append(dst, "\n],\n"+`"displayTimeUnit":"ns"}`+"\n"...)
}

func (f *chromeFormat) event(dst []byte, ev *Event) []byte {
	last, seen := f.vcpus[ev.VCPU]
	if !seen {
		dst = appendMeta(dst, "thread_name", ev.VCPU, `"name":"vCPU `+strconv.Itoa(ev.VCPU)+`"`)
		dst = appendMeta(dst, "thread_sort_index", ev.VCPU, `"sort_index":`+strconv.Itoa(ev.VCPU))
		last = 0
	}
	t := ev.TimeNS
	guestStart := max(t-max(ev.GuestNS, 0), last)
	exitStart := max(t, last)
	exitEnd := exitStart + max(ev.HandleNS, 0)
	f.vcpus[ev.VCPU] = exitEnd

	// The guest slice, ending at the exit.
	dst = appendSliceHead(dst, "guest", "guest", ev.VCPU, guestStart, max(t-guestStart, 0))
	dst = append(dst, `"seq":`...)
	dst = strconv.AppendUint(dst, ev.Seq, 10)
	dst = append(dst, `,"guest_ns":`...)
	dst = strconv.AppendInt(dst, ev.GuestNS, 10)
	dst = append(dst, "}}"...)

	// The exit slice, starting at it.
	dst = appendSliceHead(dst, ChromeName(ev), "exit", ev.VCPU, exitStart, exitEnd-exitStart)
	dst = append(dst, `"seq":`...)
	dst = strconv.AppendUint(dst, ev.Seq, 10)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, ev.Reason)
	dst = append(dst, `,"code":`...)
	dst = strconv.AppendUint(dst, uint64(ev.Code), 10)
	dst = append(dst, `,"rip":`...)
	dst = appendHex(dst, ev.RIP)
	dst = append(dst, `,"guest_ns":`...)
	dst = strconv.AppendInt(dst, ev.GuestNS, 10)
	dst = append(dst, `,"handle_ns":`...)
	dst = strconv.AppendInt(dst, ev.HandleNS, 10)
	if ev.Device != "" {
		dst = append(dst, `,"device":`...)
		dst = appendString(dst, ev.Device)
	}
	if ev.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = appendString(dst, ev.Action)
	}
	if x := ev.IO; x != nil {
		dst = append(dst, `,"port":`...)
		dst = appendHex(dst, uint64(x.Port))
		dst = append(dst, `,"size":`...)
		dst = strconv.AppendUint(dst, uint64(x.Size), 10)
		dst = append(dst, `,"dir":`...)
		dst = appendString(dst, x.Dir)
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendUint(dst, uint64(x.Count), 10)
		dst = append(dst, `,"data":`...)
		dst = appendString(dst, x.Data)
	}
	if m := ev.MMIO; m != nil {
		dst = append(dst, `,"addr":`...)
		dst = appendHex(dst, m.Addr)
		dst = append(dst, `,"len":`...)
		dst = strconv.AppendUint(dst, uint64(m.Len), 10)
		dst = append(dst, `,"write":`...)
		dst = strconv.AppendBool(dst, m.Write)
		dst = append(dst, `,"data":`...)
		dst = appendString(dst, m.Data)
	}
	if hw := ev.HW; hw != nil {
		dst = append(dst, `,"hw":`...)
		dst = appendString(dst, hw.Vendor+" "+hw.Name)
		dst = append(dst, `,"hw_code":`...)
		dst = appendHex(dst, hw.Code)
		dst = append(dst, `,"hw_derived":`...)
		dst = strconv.AppendBool(dst, hw.Derived)
	}
	return append(dst, "}}"...)
}

// ChromeName is the name of an exit's slice: the KVM reason without its
// KVM_EXIT_ prefix and the device that handled it, "IO COM1", or
// "IO unclaimed" for an access no device claimed.
func ChromeName(ev *Event) string {
	r := ShortReason(ev.Reason)
	switch {
	case ev.Device != "":
		return r + " " + ev.Device
	case ev.IO != nil || ev.MMIO != nil:
		return r + " unclaimed"
	}
	return r
}

// ShortReason strips the KVM_EXIT_ prefix: "KVM_EXIT_IO" -> "IO".
func ShortReason(reason string) string {
	if s := strings.TrimPrefix(reason, "KVM_EXIT_"); s != "" {
		return s
	}
	return reason
}

func appendMeta(dst []byte, name string, tid int, args string) []byte {
	dst = append(dst, ",\n"+`{"name":"`...)
	dst = append(dst, name...)
	dst = append(dst, `","ph":"M","pid":1,"tid":`...)
	dst = strconv.AppendInt(dst, int64(tid), 10)
	dst = append(dst, `,"args":{`...)
	dst = append(dst, args...)
	return append(dst, "}}"...)
}

// appendSliceHead appends a complete event up to and including `"args":{`.
func appendSliceHead(dst []byte, name, cat string, tid int, startNS, durNS int64) []byte {
	dst = append(dst, ",\n"+`{"name":`...)
	dst = appendString(dst, name)
	dst = append(dst, `,"cat":"`...)
	dst = append(dst, cat...)
	dst = append(dst, `","ph":"X","pid":1,"tid":`...)
	dst = strconv.AppendInt(dst, int64(tid), 10)
	dst = append(dst, `,"ts":`...)
	dst = appendMicros(dst, startNS)
	dst = append(dst, `,"dur":`...)
	dst = appendMicros(dst, durNS)
	return append(dst, `,"args":{`...)
}

// appendMicros appends ns as microseconds, exactly: 1234567 -> 1234.567.
func appendMicros(dst []byte, ns int64) []byte {
	u := uint64(ns)
	if ns < 0 {
		dst = append(dst, '-')
		u = -u
	}
	dst = strconv.AppendUint(dst, u/1000, 10)
	frac := u % 1000
	if frac == 0 {
		return dst
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	dst = append(dst, '.')
	return append(dst, digits[:n]...)
}

// appendHex appends v as a JSON string "0x...".
func appendHex(dst []byte, v uint64) []byte {
	dst = append(dst, `"0x`...)
	dst = strconv.AppendUint(dst, v, 16)
	return append(dst, '"')
}

// Record queues ev (see asyncSink.Record); a nil *ChromeWriter records
// nothing.
func (c *ChromeWriter) Record(ev *Event) {
	if c != nil {
		c.asyncSink.Record(ev)
	}
}
