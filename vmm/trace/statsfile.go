package trace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrChromeTrace is what ReadStats returns for a Chrome trace: a timeline
// for Perfetto, which carries the exits' times but not all their fields.
var ErrChromeTrace = errors.New("a Chrome trace (Trace Event Format), not a JSON Lines trace")

// ReadStats reads a saved JSON Lines trace into statistics (`kvmlab stat`),
// with ScanJSON: the memory it takes is one line at a time and one table
// entry per reason, device and vCPU, however long r is. A bad line is
// skipped and reported in err with the statistics of the rest; Scanned
// says what else the trace held, for a trace with no events at all.
func ReadStats(r io.Reader) (*Stats, Scanned, error) {
	br := bufio.NewReaderSize(r, MaxLine) // the size ScanJSON asks for: it reuses br
	if head, _ := br.Peek(16); bytes.HasPrefix(bytes.TrimSpace(head), []byte(`{"traceEvents"`)) {
		return nil, Scanned{}, ErrChromeTrace
	}
	s := NewStats()
	sc, err := ScanJSON(br, s.Add)
	return s, sc, err
}

// NoEvents says what a trace with no exit events held instead, given what
// ScanJSON found and returned: nothing, blank lines, or lines that are not
// events (the first of them named).
func (sc Scanned) NoEvents(err error) string {
	plural := func(n int) string {
		if n == 1 {
			return "1 line"
		}
		return fmt.Sprintf("%d lines", n)
	}
	switch {
	case err != nil && sc.First == nil: // a read error
		return err.Error()
	case sc.Lines == 0:
		return "is empty"
	case sc.Bad == 0:
		return fmt.Sprintf("no exit events in %s, all blank", plural(sc.Lines))
	}
	return fmt.Sprintf("no exit events in %s (line %d: %v)", plural(sc.Lines), sc.First.Line, sc.First.Err)
}
