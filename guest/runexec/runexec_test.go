package runexec

import (
	"errors"
	"strings"
	"testing"
)

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		name string
		cmd  string
	}{
		{"simple", "echo hi; exit 3"},
		{"quotes and spaces the kernel would split", `printf '%s\n' "a b" 'c"d'`},
		{"newlines and tabs", "echo one\n\techo two"},
		{"UTF-8", "echo héllo ✓"},
		{"longest", strings.Repeat("x", MaxCommand)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Encode(tc.cmd)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if strings.ContainsAny(p, " \t\n\"") {
				t.Fatalf("parameter %q holds characters the kernel's parser splits or quotes on", p)
			}
			line := "console=ttyS0 panic=-1 quiet " + p + " kvmlab.run=x"
			got, found, err := Decode(line)
			if err != nil || !found || got != tc.cmd {
				t.Fatalf("Decode(%q) = %q, %v, %v; want %q", line, got, found, err, tc.cmd)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		cmd  string
		want error
	}{
		{"empty", "", ErrEmpty},
		{"blank", " \t\n", ErrEmpty},
		{"too long", strings.Repeat("x", MaxCommand+1), ErrTooLong},
		{"NUL", "echo a\x00b", ErrNUL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := Encode(tc.cmd); !errors.Is(err, tc.want) {
				t.Fatalf("Encode = %q, %v; want %v", p, err, tc.want)
			}
		})
	}
}

func TestDecodeCmdlines(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    string
		found   bool
		wantErr error
	}{
		{"absent", "console=ttyS0 panic=-1", "", false, nil},
		{"the last one counts", "kvmlab.exec=ZWNobyBh kvmlab.exec=ZWNobyBi", "echo b", true, nil},
		{"trailing newline of /proc/cmdline", "quiet kvmlab.exec=dHJ1ZQ\n", "true", true, nil},
		{"padding is not base64url raw", "kvmlab.exec=dHJ1ZQ==", "", true, ErrBad},
		{"standard alphabet refused", "kvmlab.exec=+/+/", "", true, ErrBad},
		{"empty value", "kvmlab.exec=", "", true, ErrEmpty},
		{"encoded NUL", "kvmlab.exec=AA", "", true, ErrNUL},
		{"too long to decode", "kvmlab.exec=" + strings.Repeat("A", 2000), "", true, ErrTooLong},
		{"a prefix is not the parameter", "xkvmlab.exec=dHJ1ZQ", "", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := Decode(tc.line)
			if got != tc.want || found != tc.found || !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Decode(%q) = %q, %v, %v; want %q, %v, %v", tc.line, got, found, err, tc.want, tc.found, tc.wantErr)
			}
		})
	}
}

// FuzzDecode feeds Decode arbitrary command lines: it must not panic,
// must return at most MaxCommand bytes, and whatever it accepts must
// encode back to a parameter that decodes to the same command.
func FuzzDecode(f *testing.F) {
	f.Add("console=ttyS0 kvmlab.exec=ZWNobyBoaTsgZXhpdCAz")
	f.Add("kvmlab.exec=AA")
	f.Add("kvmlab.exec=%%% kvmlab.exec=")
	f.Fuzz(func(t *testing.T, line string) {
		cmd, found, err := Decode(line)
		if err != nil || !found {
			if cmd != "" {
				t.Fatalf("Decode(%q) returned %q with err %v, found %v", line, cmd, err, found)
			}
			return
		}
		if len(cmd) > MaxCommand {
			t.Fatalf("Decode returned %d bytes", len(cmd))
		}
		p, err := Encode(cmd)
		if err != nil {
			t.Fatalf("Decode accepted %q but Encode refuses it: %v", cmd, err)
		}
		if again, _, err := Decode(p); err != nil || again != cmd {
			t.Fatalf("round trip of %q: %q, %v", cmd, again, err)
		}
	})
}
