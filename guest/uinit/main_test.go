package main

import (
	"bufio"
	"fmt"
	"testing"
)

// recordWriter keeps each Write as one record, as /dev/kmsg does.
type recordWriter struct{ recs []string }

func (r *recordWriter) Write(p []byte) (int, error) {
	r.recs = append(r.recs, string(p))
	return len(p), nil
}

func TestKmsgWriterOneRecordPerLine(t *testing.T) {
	for _, c := range []struct {
		name   string
		writes []string
		want   []string
	}{
		{"one line", []string{"hello\n"}, []string{"<3>hello\n"}},
		{"two lines in one write", []string{"a\nb\n"}, []string{"<3>a\n", "<3>b\n"}},
		{"a line split over writes", []string{"KVMLAB-", "BENCH ", "userspace\nnext"}, []string{"<3>KVMLAB-BENCH userspace\n"}},
		{"no newline, no record", []string{"partial"}, nil},
		{"empty line", []string{"\n"}, []string{"<3>\n"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r recordWriter
			k := &kmsgWriter{w: &r}
			for _, w := range c.writes {
				n, err := k.Write([]byte(w))
				if err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if fmt.Sprint(r.recs) != fmt.Sprint(c.want) {
				t.Errorf("records %q, want %q", r.recs, c.want)
			}
		})
	}
}

// Behind a bufio.Writer, as consoleBench uses it, 4 KiB chunks that cut
// lines in two must still come out as whole lines.
func TestKmsgWriterBehindBufio(t *testing.T) {
	var r recordWriter
	w := bufio.NewWriterSize(&kmsgWriter{w: &r}, 100)
	for i := range 50 {
		fmt.Fprintf(w, "line %02d 0123456789abcdef\n", i)
	}
	_ = w.Flush()
	if len(r.recs) != 50 {
		t.Fatalf("%d records, want 50", len(r.recs))
	}
	for i, rec := range r.recs {
		if want := fmt.Sprintf("<3>line %02d 0123456789abcdef\n", i); rec != want {
			t.Fatalf("record %d = %q, want %q", i, rec, want)
		}
	}
}
