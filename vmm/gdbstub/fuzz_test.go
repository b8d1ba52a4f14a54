package gdbstub

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"kvmlab/vmm"
)

// FuzzPacket feeds arbitrary bytes from a client to the packet reader: it
// must never panic, never return data over PacketSize, and a packet it
// accepts must frame back to the same data.
func FuzzPacket(f *testing.F) {
	for _, s := range []string{"$g#67", "+-\x03", "$X}\x03#00", "$m0,4#fd", "$" + strings.Repeat("}", 100) + "#00", "$$$#", "$a#"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			ev, err := readEvent(r)
			if err != nil {
				return
			}
			if len(ev.data) > PacketSize {
				t.Fatalf("packet of %d bytes accepted", len(ev.data))
			}
			if ev.kind == evPacket {
				back, err := readEvent(bufio.NewReader(bytes.NewReader(frame(ev.data))))
				if err != nil || back.data != ev.data {
					t.Fatalf("%q does not frame back: %+v %v", ev.data, back, err)
				}
			}
		}
	})
}

// FuzzCommand hands arbitrary packet data to the command decoder, against
// the fake target: no panic, and no reply over PacketSize.
func FuzzCommand(f *testing.F) {
	for _, s := range []string{"g", "G" + strings.Repeat("00", 200), "p10", "P0=0102030405060708", "m0,ffffffff", "M0,2:aabb",
		"Z0,10,1", "z2,8,8", "Z4,0,4", "vCont;s:1;c", "vCont;c:p1.-1", "Hg2", "Hc-1", "qXfer:features:read:target.xml:0,ffff",
		"qRcmd,7068797320302034", "qThreadExtraInfo,1", "c1000", "s", "T1", "?", "D"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		tgt := newFake()
		ss := &session{t: tgt, c: &bytes.Buffer{}, w: bufio.NewWriter(&bytes.Buffer{}), sw: map[uint64]vmm.INT3{}}
		// A resume's stop is left in the channel: drain it so that the
		// next resume does not block.
		for range 3 {
			reply, _ := ss.handle(p)
			if len(reply) > PacketSize {
				t.Fatalf("%q: a reply of %d bytes", p, len(reply))
			}
			select {
			case <-tgt.stops:
			default:
			}
		}
	})
}
