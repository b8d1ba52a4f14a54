package gdbstub

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"kvmlab/vmm"
)

// client is the test's side of a connection: it sends packets and reads
// replies as GDB does, acks included.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, s *Server) (*client, chan string) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan string, 1)
	go func() { done <- s.ServeConn(b) }()
	t.Cleanup(func() { a.Close() })
	_ = a.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: a, r: bufio.NewReader(a)}, done
}

// reply reads the next packet, skipping acks.
func (c *client) reply() string {
	c.t.Helper()
	for {
		ev, err := readEvent(c.r)
		if err != nil {
			c.t.Fatalf("reading a reply: %v", err)
		}
		switch ev.kind {
		case evPacket:
			// The ack; after D or k the stub may have closed already.
			_, _ = c.c.Write([]byte("+"))
			return ev.data
		case evNak:
			return "-"
		}
	}
}

func (c *client) send(p string) { c.raw(string(frame(p))) }

func (c *client) raw(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) ask(p string) string {
	c.t.Helper()
	c.send(p)
	return c.reply()
}

// TestSession runs a debugging session against the fake target, packet by
// packet, as GDB 13 sends them (E.2, E.3, E.4).
func TestSession(t *testing.T) {
	f := newFake()
	c, done := dial(t, NewServer(f, nil))
	g := func() string {
		r, _ := f.Regs(0)
		return encodeRegs(&r)
	}()
	steps := []struct{ send, want string }{
		{"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386", "PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+"},
		{"vMustReplyEmpty", ""},
		{"Hg0", "OK"},
		{"qXfer:features:read:target.xml:0,20", "m" + targetXML[:0x20]},
		{"qXfer:features:read:other.xml:0,20", "E00"},
		{"qXfer:features:read:target.xml:ffffff,20", "l"},
		{"?", "T05thread:1;"},
		{"qfThreadInfo", "m1,2"},
		{"qsThreadInfo", "l"},
		{"qC", "QC1"},
		{"qAttached", "1"},
		{"qThreadExtraInfo,2", hexString("vCPU 1")},
		{"qThreadExtraInfo,3", "E01"},
		{"T2", "OK"},
		{"T9", "E01"},
		{"g", g},
		{"p0", "8877665544332211"},
		{"p10", "0010000000000000"},
		{"p11", "00000000"},               // eflags, 4 bytes
		{"p12", "10000000"},               // cs selector
		{"p18", strings.Repeat("xx", 10)}, // st0: unavailable
		{"p" + fmt.Sprintf("%x", len(allRegs)-6), "3300058000000000"}, // cr0
		{"p" + fmt.Sprintf("%x", len(allRegs)), "E01"},
		{"pzz", "E01"},
		{"P0=0100000000000000", "OK"},
		{"p0", "0100000000000000"},
		{"P12=11000000", "E01"}, // cs is read-only here
		{"P12=10000000", "OK"},  // ...but writing the value it has is fine
		{"P0=01", "E01"},        // too short
		{"m10,4", "10111213"},
		{"m10,zz", "E01"},
		{"m20000,4", "E14"},
		{"mfff0,100", "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"}, // a short read
		{"m0,ffffffffffffffff", strings.Repeat("x", 0)},   // replaced below: bounded
		{"M10,2:aabb", "OK"},
		{"m10,2", "aabb"},
		{"M10,3:aabb", "E01"},
		{"M10,1:zz", "E01"},
		{"M20000,1:00", "E14"},
		{"Z0,20,1", "OK"},
		{"m20,1", "cc"},
		{"z0,20,1", "OK"},
		{"m20,1", "20"},
		{"Z0,30000,1", "E14"},
		{"Z1,1000,1", "OK"},
		{"Z2,2000,8", "OK"},
		{"Z2,2001,8", "E16"}, // unaligned
		{"Z2,2000,3", "E16"}, // a length DR7 cannot cover
		{"Z3,2000,8", ""},    // x86 has no read-only watchpoint
		{"Z4,3000,4", "OK"},
		{"Z1,1004,1", "OK"},
		{"Z1,1008,1", "E28"}, // all four debug registers in use
		{"Z1,1000,1", "OK"},  // the same again: nothing new
		{"Z9,0,0", ""},
		{"Z1", "E01"},
		{"vCont?", "vCont;c;C;s;S"},
		{"vCont;s:2;c", "T05thread:1;"}, // the fake stops on vCPU 0
		{"vCont;x", "E01"},
		{"s", "T05thread:1;"},
		{"qRcmd," + hexString("frobnicate"), "O"},
		{"Hc-1", "OK"},
		{"Hx1", "E01"},
		{"H", "E01"},
		{"X10,0:", ""},
		{"qUnknown", ""},
		{"", ""},
	}
	for _, s := range steps {
		got := c.ask(s.send)
		switch {
		case s.send == "m0,ffffffffffffffff":
			if len(got) != 2*maxMemRead {
				t.Errorf("%q: %d hex digits, want the bound %d", s.send, len(got), 2*maxMemRead)
			}
		case s.want == "O":
			if !strings.HasPrefix(got, "O") {
				t.Errorf("%q: %q, want monitor output", s.send, got)
			}
			if end := c.reply(); end != "OK" {
				t.Errorf("%q: ends with %q, want OK", s.send, end)
			}
		case got != s.want:
			t.Errorf("%q: got %q, want %q", s.send, got, s.want)
		}
	}
	log := f.resumeLog()
	for _, want := range []string{
		"step=1 hw=[{4096 0 0} {8192 1 8} {12288 3 4} {4100 0 0}] sw=false",
		"step=0 hw=",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("resumes:\n%s\nlack %q", log, want)
		}
	}
	// Detach: breakpoints go, the guest runs on.
	c.send("Z0,40,1")
	if r := c.reply(); r != "OK" || f.mem[0x40] != 0xCC {
		t.Fatalf("Z0 before detach: %q, byte %#x", r, f.mem[0x40])
	}
	if r := c.ask("D"); r != "OK" {
		t.Errorf("D: %q", r)
	}
	if why := <-done; !strings.Contains(why, "detached") {
		t.Errorf("session ended %q", why)
	}
	if f.mem[0x40] != 0x40 {
		t.Errorf("the INT3 stayed after detach: %#x", f.mem[0x40])
	}
	if l := f.resumeLog(); !strings.HasSuffix(l, "step=-1 hw=[] sw=false") {
		t.Errorf("detach did not resume without breakpoints:\n%s", l)
	}
}

// TestMalformed: a bad checksum is answered with -, a good packet after it
// still works, and a client that repeats - gets the reply again.
func TestMalformed(t *testing.T) {
	f := newFake()
	c, _ := dial(t, NewServer(f, nil))
	c.raw("$g#00")
	if r := c.reply(); r != "-" {
		t.Errorf("bad checksum: %q, want -", r)
	}
	if r := c.ask("qC"); r != "QC1" {
		t.Errorf("after a bad packet: %q", r)
	}
	c.raw("-")
	if r := c.reply(); r != "QC1" {
		t.Errorf("a nak gets %q, want the last reply again", r)
	}
	if r := c.ask("QStartNoAckMode"); r != "OK" {
		t.Errorf("QStartNoAckMode: %q", r)
	}
	c.raw(string(frame("qC")))
	if b, _ := c.r.Peek(1); string(b) == "+" {
		t.Error("an ack after no-ack mode")
	}
}

// TestInterruptAndVanish: Ctrl-C stops a running guest with SIGINT; a
// client that goes away while the guest runs leaves it running, with no
// breakpoints.
func TestInterruptAndVanish(t *testing.T) {
	f := newFake()
	f.hold = true
	c, done := dial(t, NewServer(f, nil))
	c.ask("Z1,1000,1")
	c.send("c")
	// The resume is acknowledged at once; its reply comes with the stop.
	if b, err := c.r.ReadByte(); err != nil || b != '+' {
		t.Errorf("c: ack %q, %v", b, err)
	}
	c.raw("\x03")
	if r := c.reply(); r != "T02thread:1;" {
		t.Errorf("Ctrl-C: %q, want T02thread:1;", r)
	}
	c.send("c")
	time.Sleep(10 * time.Millisecond) // the stub waits for the guest
	c.c.Close()
	if why := <-done; !strings.Contains(why, "went away") {
		t.Errorf("session ended %q", why)
	}
	if l := f.resumeLog(); !strings.HasSuffix(l, "step=-1 hw=[] sw=false") {
		t.Errorf("a vanished client did not leave the guest running without breakpoints:\n%s", l)
	}
	if !f.running {
		t.Error("the guest is stopped after the client went away")
	}
}

// TestSecondClient: one debugger at a time; the second gets a message.
func TestSecondClient(t *testing.T) {
	f := newFake()
	s := NewServer(f, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go s.Serve(ln)
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	fc := &client{t: t, c: first, r: bufio.NewReader(first)}
	if r := fc.ask("qC"); r != "QC1" {
		t.Fatalf("first client: %q", r)
	}
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	sc := &client{t: t, c: second, r: bufio.NewReader(second)}
	if r := sc.ask("qSupported"); r != busyMessage {
		t.Errorf("second client: %q", r)
	}
	if r := fc.ask("qC"); r != "QC1" {
		t.Errorf("first client after the second: %q", r)
	}
}

// TestStopReply: the reason in a T packet, from the exception and DR6.
func TestStopReply(t *testing.T) {
	ss := &session{hw: []hwSlot{{typ: '1'}, {typ: '2', bp: hwBP(0xffffffff82000000)}, {typ: '4', bp: hwBP(0x1000)}}}
	for _, tc := range []struct {
		st   Stop
		want string
	}{
		{Stop{CPU: 0, Signal: 5, Vector: 3}, "T05thread:1;swbreak:;"},
		{Stop{CPU: 1, Signal: 5, Vector: 1, DR6: 1}, "T05thread:2;hwbreak:;"},
		{Stop{CPU: 0, Signal: 5, Vector: 1, DR6: 2}, "T05thread:1;watch:ffffffff82000000;"},
		{Stop{CPU: 0, Signal: 5, Vector: 1, DR6: 4}, "T05thread:1;awatch:1000;"},
		{Stop{CPU: 0, Signal: 5, Vector: 1, DR6: 1 << 14}, "T05thread:1;"},
		{Stop{CPU: 0, Signal: 5, Vector: 1, DR6: 8}, "T05thread:1;"}, // DR3: not set by GDB
		{Stop{CPU: 3, Signal: 2}, "T02thread:4;"},
	} {
		ss.stop = tc.st
		if got := ss.stopReply(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.st, got, tc.want)
		}
	}
}

// TestTargetXML: the description is well-formed XML, has the 40 registers
// GDB's amd64 code requires in org.gnu.gdb.i386.core, and a g reply is as
// long as the registers it lists.
func TestTargetXML(t *testing.T) {
	var doc struct {
		Arch     string `xml:"architecture"`
		Features []struct {
			Name string `xml:"name,attr"`
			Regs []struct {
				Name string `xml:"name,attr"`
				Bits int    `xml:"bitsize,attr"`
			} `xml:"reg"`
		} `xml:"feature"`
	}
	if err := xml.Unmarshal([]byte(targetXML), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Arch != "i386:x86-64" {
		t.Errorf("architecture %q", doc.Arch)
	}
	bits, n := 0, 0
	for _, f := range doc.Features {
		if f.Name == "org.gnu.gdb.i386.core" && len(f.Regs) != 40 {
			t.Errorf("core feature has %d registers, GDB wants 40", len(f.Regs))
		}
		for _, r := range f.Regs {
			bits += r.Bits
			n++
		}
	}
	if n != len(allRegs) {
		t.Errorf("%d registers in the XML, %d in the table", n, len(allRegs))
	}
	var r Registers
	if g := encodeRegs(&r); len(g) != bits/4 {
		t.Errorf("g reply has %d hex digits, the XML says %d bits", len(g), bits)
	}
	for _, want := range []string{`name="rip"`, `name="eflags"`, `name="gs"`, `name="fs_base"`, `name="cr3"`, `name="efer"`} {
		if !strings.Contains(targetXML, want) {
			t.Errorf("target.xml lacks %s", want)
		}
	}
}

func hwBP(a uint64) vmm.HWBreakpoint { return vmm.HWBreakpoint{Addr: a} }

// TestKill: vKill is answered before the machine stops (GDB 13 sends it
// for kill); k has no answer.
func TestKill(t *testing.T) {
	for _, tc := range []struct{ packet, reply string }{{"vKill;a410", "OK"}, {"k", ""}} {
		f := newFake()
		c, done := dial(t, NewServer(f, nil))
		c.send(tc.packet)
		if b, err := c.r.ReadByte(); err != nil || b != '+' {
			t.Errorf("%s: ack %q, %v", tc.packet, b, err)
		}
		if tc.reply != "" {
			if r := c.reply(); r != tc.reply {
				t.Errorf("%s: %q, want %q", tc.packet, r, tc.reply)
			}
		}
		if why := <-done; !strings.Contains(why, "killed") {
			t.Errorf("%s: session ended %q", tc.packet, why)
		}
		select {
		case <-f.done:
		default:
			t.Errorf("%s did not stop the machine", tc.packet)
		}
	}
}
