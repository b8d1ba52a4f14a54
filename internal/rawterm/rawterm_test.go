package rawterm

import (
	"bytes"
	"os"
	"testing"
)

func TestCRLF(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"no newline", "no newline"},
		{"one\n", "one\r\n"},
		{"a\nb\n\nc", "a\r\nb\r\n\r\nc"},
		{"\n", "\r\n"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		n, err := CRLF(&b).Write([]byte(tc.in))
		if err != nil || n != len(tc.in) || b.String() != tc.want {
			t.Errorf("CRLF(%q) wrote %q, n %d, err %v; want %q, n %d", tc.in, b.String(), n, err, tc.want, len(tc.in))
		}
	}
}

// TestNotATerminal: a pipe is no terminal: Raw leaves it alone and the nil
// Term does nothing, its Writer passing lines through unchanged.
func TestNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	tt, err := Raw(r)
	if tt != nil || err != nil {
		t.Fatalf("Raw(pipe) = %v, %v; want nil, nil", tt, err)
	}
	tt.Restore() // must not panic
	if c := tt.Cooked(); c != nil {
		t.Errorf("Cooked() = %v, want nil", c)
	}
	var b bytes.Buffer
	if _, err := tt.Writer(&b).Write([]byte("a\nb\n")); err != nil || b.String() != "a\nb\n" {
		t.Errorf("Writer wrote %q, %v; want the lines unchanged", b.String(), err)
	}
}
