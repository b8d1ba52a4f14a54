package gdbstub

import (
	"bufio"
	"strings"
	"testing"
)

// TestReadEvent: framing, acks, Ctrl-C and the bad packets (GDB manual,
// E.1 Overview and E.11 Packet Acknowledgment).
func TestReadEvent(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []event
	}{
		{"a packet", "$g#67", []event{{kind: evPacket, data: "g"}}},
		{"ack, nak, interrupt", "+-\x03", []event{{kind: evAck}, {kind: evNak}, {kind: evInterrupt}}},
		{"noise between packets is skipped", "xyz$?#3f", []event{{kind: evPacket, data: "?"}}},
		{"upper-case checksum digits", "$qC#B4", []event{{kind: evPacket, data: "qC"}}},
		{"bad checksum", "$g#00", []event{{kind: evBad, why: "checksum 00, packet sums to 67"}}},
		{"checksum not hex", "$g#zz", []event{{kind: evBad, why: `checksum "zz" is not two hex digits`}}},
		{"escaped bytes", "$X}\x03#" + hex2(checksum([]byte("X}\x03"))), []event{{kind: evPacket, data: "X#"}}},
		{"escape at the end", "$X}#" + hex2(checksum([]byte("X}"))), []event{{kind: evBad, why: "packet ends in the escape byte }"}}},
		{"a $ restarts the packet", "$gar$g#67", []event{{kind: evPacket, data: "g"}}},
		{"too long", "$" + strings.Repeat("a", PacketSize+1) + "#00", []event{{kind: evBad, why: ErrTooLong.Error()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(tc.in))
			for i, want := range tc.want {
				got, err := readEvent(r)
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if got != want {
					t.Errorf("event %d = %+v, want %+v", i, got, want)
				}
			}
			if _, err := readEvent(r); err == nil {
				t.Error("more events than expected")
			}
		})
	}
}

func hex2(b uint8) string {
	return strings.ToLower(string("0123456789abcdef"[b>>4]) + string("0123456789abcdef"[b&15]))
}

// TestFrame: a reply is escaped and checksummed, and reads back as sent.
func TestFrame(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"OK", "$OK#9a"},
		{"", "$#00"},
		{"a#b", "$a}\x03b#" + hex2(checksum([]byte("a}\x03b")))},
		{"*}$", "$}\x0a}]}\x04#" + hex2(checksum([]byte("}\x0a}]}\x04")))},
	} {
		got := string(frame(tc.data))
		if got != tc.want {
			t.Errorf("frame(%q) = %q, want %q", tc.data, got, tc.want)
		}
		ev, err := readEvent(bufio.NewReader(strings.NewReader(got)))
		if err != nil || ev.kind != evPacket || ev.data != tc.data {
			t.Errorf("frame(%q) reads back as %+v, %v", tc.data, ev, err)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		a, n    uint64
		wantErr bool
	}{
		{"ffffffff81000000,40", 0xffffffff81000000, 0x40, false},
		{"0,0", 0, 0, false},
		{"10", 0, 0, true},
		{",4", 0, 0, true},
		{"1,", 0, 0, true},
		{"11112222333344445,1", 0, 0, true}, // over 64 bits
		{"zz,1", 0, 0, true},
		{"-1,1", 0, 0, true},
	} {
		a, n, err := parseAddrLen(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && (a != tc.a || n != tc.n)) {
			t.Errorf("parseAddrLen(%q) = %#x, %#x, %v", tc.in, a, n, err)
		}
	}
	for _, tc := range []struct {
		in   string
		cpus int
		want int
		err  bool
	}{
		{"1", 2, 0, false}, {"2", 2, 1, false}, {"3", 2, 0, true}, {"0", 2, -1, false},
		{"-1", 2, -1, false}, {"p1.2", 2, 1, false}, {"p1.-1", 2, -1, false}, {"x", 2, 0, true}, {"", 1, 0, true},
	} {
		got, err := parseThread(tc.in, tc.cpus)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("parseThread(%q) = %d, %v", tc.in, got, err)
		}
	}
}
