package gdbstub

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"kvmlab/vmm"
)

// Target is the machine as the stub drives it (Machine adapts a
// vmm.Machine; the unit tests use a small fake). Every method but Halt,
// Stops and Done is called only while the machine is stopped.
type Target interface {
	CPUs() int
	// Halt stops every vCPU. wait says a Stop will come on Stops: Halt
	// stopped a running machine, or a stop was under way; false means
	// the machine was stopped already.
	Halt() (wait bool, err error)
	// Resume lets every vCPU run: step is the vCPU to single-step (-1:
	// none), hw the debug-register breakpoints, sw whether INT3 stops.
	Resume(step int, hw []vmm.HWBreakpoint, sw bool) error
	// Stops gives one Stop after each Resume, and after a Halt that
	// returned wait.
	Stops() <-chan Stop
	// Done is closed when the machine has ended.
	Done() <-chan struct{}
	Regs(cpu int) (Registers, error)
	SetRegs(cpu int, r Registers) error
	// ReadMem reads guest-virtual memory (translated by cpu's page
	// tables; physical when its paging is off) or, phys, guest-physical:
	// as much as is readable from addr, and an error when that is less
	// than n.
	ReadMem(cpu int, addr uint64, n int, phys bool) ([]byte, error)
	WriteMem(cpu int, addr uint64, p []byte) error
	PlantINT3(cpu int, addr uint64) (vmm.INT3, error)
	LiftINT3(b vmm.INT3) error
	// Monitor runs a monitor command that is not the stub's own.
	Monitor(cpu int, args []string) (string, error)
	Kill()
}

// Stop is why the machine stopped.
type Stop struct {
	CPU    int    // the vCPU that stopped
	Signal int    // 5 SIGTRAP (debug exception), 2 SIGINT (Ctrl-C)
	Vector uint32 // the exception: 1 #DB, 3 #BP
	DR6    uint64 // #DB: which debug register matched, or BS for a step
	Exited bool   // the machine ended (W00)
}

// Server serves debuggers on a listener, one at a time, for one target.
type Server struct {
	t   Target
	log io.Writer

	mu       sync.Mutex
	attached bool
}

// NewServer returns a server for t; log gets one line per client.
func NewServer(t Target, log io.Writer) *Server {
	if log == nil {
		log = io.Discard
	}
	return &Server{t: t, log: log}
}

// Serve accepts clients on ln until it is closed. A client that comes while
// another is attached gets an error reply to its first packet and is closed.
func (s *Server) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		busy := s.attached
		s.attached = true
		s.mu.Unlock()
		if busy {
			go refuse(c)
			continue
		}
		go func() {
			fmt.Fprintf(s.log, "kvmlab: gdb: %s attached\n", c.RemoteAddr())
			why := s.ServeConn(c)
			fmt.Fprintf(s.log, "kvmlab: gdb: %s %s\n", c.RemoteAddr(), why)
			s.mu.Lock()
			s.attached = false
			s.mu.Unlock()
		}()
	}
}

// busyMessage is the reply to a second client (E.errtext, E.1 "Standard
// Replies"; GDB prints the text).
const busyMessage = "E.kvmlab: another debugger is attached to this machine; detach it first (only one at a time)"

// refuse answers a second client's first packet with busyMessage.
func refuse(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for {
		ev, err := readEvent(r)
		if err != nil {
			return
		}
		if ev.kind == evPacket {
			_, _ = c.Write(append([]byte("+"), frame(busyMessage)...))
			return
		}
	}
}

// writeTimeout bounds how long a reply may wait for a client that does not
// read: past it the client counts as gone (breakpoints removed, the guest
// runs on), so a stuck debugger cannot keep the machine stopped.
const writeTimeout = 30 * time.Second

// session is one attached client.
type session struct {
	t       Target
	c       io.ReadWriter
	conn    net.Conn // for write deadlines; nil in the fuzz target
	w       *bufio.Writer
	events  chan eventOrErr
	last    []byte // the last packet sent, for a -
	noAck   bool
	gThread int // Hg: the vCPU that g, m, Z read and write
	cThread int // Hc: the vCPU c and s apply to (-1 any)
	stop    Stop
	sw      map[uint64]vmm.INT3
	hw      []hwSlot
}

type eventOrErr struct {
	ev  event
	err error
}

// hwSlot is a debug-register breakpoint as GDB set it (Z1-Z4).
type hwSlot struct {
	typ byte // '1' execution, '2' write, '4' access
	bp  vmm.HWBreakpoint
}

// ServeConn runs one client until it detaches, kills the machine, goes
// away, or the machine ends; it returns how it ended, for the log.
func (s *Server) ServeConn(c net.Conn) string {
	defer c.Close()
	ss := &session{t: s.t, c: c, conn: c, w: bufio.NewWriter(c), events: make(chan eventOrErr, 16), sw: map[uint64]vmm.INT3{}}
	go func() {
		r := bufio.NewReaderSize(c, 4096)
		for {
			ev, err := readEvent(r)
			ss.events <- eventOrErr{ev, err}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		// The reader goroutine ends when the connection closes.
		go func() {
			for e := range ss.events {
				if e.err != nil {
					return
				}
			}
		}()
	}()
	return ss.run()
}

// run is the session's loop: attach (stop the machine), then packets.
func (ss *session) run() string {
	wait, err := ss.t.Halt()
	if err != nil {
		return fmt.Sprintf("could not stop the machine: %v", err)
	}
	ss.stop = Stop{Signal: 5}
	if wait {
		select {
		case ss.stop = <-ss.t.Stops():
		case <-ss.t.Done():
			return "the machine ended"
		}
	}
	ss.gThread, ss.cThread = ss.stop.CPU, -1
	for {
		var e eventOrErr
		select {
		case e = <-ss.events:
		case <-ss.t.Done():
			return "closed: the machine ended"
		}
		if e.err != nil {
			ss.cleanup(true)
			return fmt.Sprintf("went away (%v): breakpoints removed, the guest runs on", e.err)
		}
		switch e.ev.kind {
		case evAck, evInterrupt: // Ctrl-C while stopped: nothing to do
			continue
		case evNak:
			ss.resend()
			continue
		case evBad:
			ss.nak()
			continue
		}
		ss.ack()
		reply, action := ss.handle(e.ev.data)
		switch action {
		case actReply:
			ss.send(reply)
		case actResume:
			ss.flush() // the ack goes now; the reply when the guest stops
			if why, end := ss.running(); end {
				return why
			}
		case actDetach:
			ss.send("OK")
			ss.cleanup(false)
			return "detached: the guest runs on"
		case actKill:
			ss.flush() // the ack: k has no reply (E.2)
			ss.t.Kill()
			return "killed the machine"
		}
	}
}

type action int

const (
	actReply action = iota
	actResume
	actDetach
	actKill
	actNone // the reply went out already
)

func (ss *session) ack() {
	if !ss.noAck {
		_ = ss.w.WriteByte('+')
	}
}

func (ss *session) nak() {
	if !ss.noAck {
		_ = ss.w.WriteByte('-')
		ss.flush()
	}
}

func (ss *session) send(data string) {
	ss.last = frame(data)
	_, _ = ss.w.Write(ss.last)
	ss.flush()
}

func (ss *session) resend() {
	if ss.last != nil {
		_, _ = ss.w.Write(ss.last)
		ss.flush()
	}
}

// flush sends what is buffered, within writeTimeout. A write that fails
// closes the connection: the reader then reports the client gone.
func (ss *session) flush() {
	if ss.conn != nil {
		_ = ss.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	if err := ss.w.Flush(); err != nil && ss.conn != nil {
		_ = ss.conn.Close()
	}
}

// running waits for the machine to stop after a resume: a stop reply goes
// to the client, Ctrl-C halts the machine, and a client that goes away
// detaches. end is true when the session is over.
func (ss *session) running() (why string, end bool) {
	for {
		select {
		case st := <-ss.t.Stops():
			if st.Exited {
				ss.send("W00")
				return "the machine ended", true
			}
			ss.stop = st
			ss.gThread = st.CPU
			ss.send(ss.stopReply())
			return "", false
		case <-ss.t.Done():
			ss.send("W00")
			return "the machine ended", true
		case e := <-ss.events:
			switch {
			case e.err != nil:
				ss.cleanup(true)
				return fmt.Sprintf("went away (%v) while the guest ran: breakpoints removed, the guest runs on", e.err), true
			case e.ev.kind == evInterrupt:
				if _, err := ss.t.Halt(); err != nil {
					ss.send("O" + hexString(fmt.Sprintf("kvmlab: could not stop the guest: %v\n", err)))
				}
			case e.ev.kind == evPacket:
				// All-stop: nothing but Ctrl-C is expected now. A
				// vCtrlC packet is the same request in packet form.
				ss.ack()
				ss.flush()
				if e.ev.data == "vCtrlC" {
					ss.send("OK")
					_, _ = ss.t.Halt()
				}
			}
		}
	}
}

// cleanup removes every breakpoint and lets the guest run: at detach, and
// when the client went away (then the machine may be running or stopping).
func (ss *session) cleanup(vanished bool) {
	if vanished {
		if wait, err := ss.t.Halt(); err != nil {
			return
		} else if wait {
			select {
			case <-ss.t.Stops():
			case <-ss.t.Done():
				return
			}
		}
	}
	for a, b := range ss.sw {
		_ = ss.t.LiftINT3(b)
		delete(ss.sw, a)
	}
	ss.hw = nil
	_ = ss.t.Resume(-1, nil, false)
}

// stopReply is the T packet for ss.stop (E.3): the signal, the thread,
// and why: a watchpoint with its address, a hardware or software
// breakpoint (swbreak/hwbreak, which qSupported announced).
func (ss *session) stopReply() string {
	st := ss.stop
	var b strings.Builder
	fmt.Fprintf(&b, "T%02xthread:%x;", st.Signal, st.CPU+1)
	if st.Signal == 5 {
		b.WriteString(ss.stopCause(st))
	}
	return b.String()
}

// stopCause names the debug event: INT3 is #BP (vector 3); for #DB, DR6
// bits B0-B3 say which debug register matched (Intel SDM Vol. 3B §18.2.3).
func (ss *session) stopCause(st Stop) string {
	if st.Vector == 3 {
		return "swbreak:;"
	}
	for i := range min(len(ss.hw), 4) {
		if st.DR6&(1<<i) == 0 {
			continue
		}
		switch h := ss.hw[i]; h.typ {
		case '1':
			return "hwbreak:;"
		case '2':
			return fmt.Sprintf("watch:%x;", h.bp.Addr)
		case '4':
			return fmt.Sprintf("awatch:%x;", h.bp.Addr)
		}
	}
	return ""
}

// handle answers one packet (E.2).
func (ss *session) handle(p string) (string, action) {
	if p == "" {
		return "", actReply
	}
	cpus := ss.t.CPUs()
	switch p[0] {
	case '?':
		return ss.stopReply(), actReply
	case 'g':
		r, err := ss.t.Regs(ss.gThread)
		if err != nil {
			return errReply(err), actReply
		}
		return encodeRegs(&r), actReply
	case 'G':
		r, err := ss.t.Regs(ss.gThread)
		if err != nil {
			return errReply(err), actReply
		}
		if err := decodeRegs(p[1:], &r); err != nil {
			return "E01", actReply
		}
		return okOrErr(ss.t.SetRegs(ss.gThread, r)), actReply
	case 'p':
		n, err := parseHex(p[1:])
		if err != nil || n >= uint64(len(allRegs)) {
			return "E01", actReply
		}
		r, err := ss.t.Regs(ss.gThread)
		if err != nil {
			return errReply(err), actReply
		}
		var b strings.Builder
		encodeReg(&b, allRegs[n], &r)
		return b.String(), actReply
	case 'P':
		ns, vs, ok := strings.Cut(p[1:], "=")
		n, err := parseHex(ns)
		if !ok || err != nil || n >= uint64(len(allRegs)) {
			return "E01", actReply
		}
		v, err := decodeHex(vs)
		if err != nil {
			return "E01", actReply
		}
		r, err := ss.t.Regs(ss.gThread)
		if err != nil {
			return errReply(err), actReply
		}
		if err := decodeReg(allRegs[n], v, &r); err != nil {
			return "E01", actReply
		}
		return okOrErr(ss.t.SetRegs(ss.gThread, r)), actReply
	case 'm':
		a, n, err := parseAddrLen(p[1:])
		if err != nil {
			return "E01", actReply
		}
		n = min(n, maxMemRead)
		// A short read is a good reply (GDB asks again for the rest);
		// nothing at all is EFAULT.
		b, _ := ss.t.ReadMem(ss.gThread, a, int(n), false)
		if len(b) == 0 && n > 0 {
			return "E14", actReply
		}
		return fmt.Sprintf("%x", b), actReply
	case 'M':
		al, data, ok := strings.Cut(p[1:], ":")
		a, n, err := parseAddrLen(al)
		if !ok || err != nil {
			return "E01", actReply
		}
		b, err := decodeHex(data)
		if err != nil || uint64(len(b)) != n {
			return "E01", actReply
		}
		if err := ss.t.WriteMem(ss.gThread, a, b); err != nil {
			return "E14", actReply
		}
		return "OK", actReply
	case 'H':
		if len(p) < 2 {
			return "E01", actReply
		}
		id, err := parseThread(p[2:], cpus)
		if err != nil {
			return "E01", actReply
		}
		switch p[1] {
		case 'g':
			if id >= 0 {
				ss.gThread = id
			}
		case 'c':
			ss.cThread = id
		default:
			return "E01", actReply
		}
		return "OK", actReply
	case 'T':
		if _, err := parseThread(p[1:], cpus); err != nil {
			return "E01", actReply
		}
		return "OK", actReply
	case 'c', 's':
		if len(p) > 1 { // c ADDR: resume at ADDR
			if err := ss.setPC(p[1:]); err != nil {
				return "E01", actReply
			}
		}
		step := -1
		if p[0] == 's' {
			step = ss.gThread
			if ss.cThread >= 0 {
				step = ss.cThread
			}
		}
		return ss.resume(step)
	case 'v':
		return ss.handleV(p)
	case 'Z', 'z':
		return ss.breakpoint(p), actReply
	case 'q':
		return ss.query(p), actReply
	case 'Q':
		if p == "QStartNoAckMode" {
			ss.send("OK") // acknowledged in the old mode, then no more acks
			ss.noAck = true
			return "", actNone // already sent
		}
		return "", actReply
	case 'D':
		return "", actDetach
	case 'k':
		return "", actKill
	}
	return "", actReply
}

func (ss *session) setPC(s string) error {
	a, err := parseHex(s)
	if err != nil {
		return err
	}
	r, err := ss.t.Regs(ss.gThread)
	if err != nil {
		return err
	}
	r.Regs.RIP = a
	return ss.t.SetRegs(ss.gThread, r)
}

// resume lets the guest run with the breakpoints GDB has set.
func (ss *session) resume(step int) (string, action) {
	hw := make([]vmm.HWBreakpoint, len(ss.hw))
	for i, h := range ss.hw {
		hw[i] = h.bp
	}
	if err := ss.t.Resume(step, hw, len(ss.sw) > 0); err != nil {
		return errReply(err), actReply
	}
	return "", actResume
}

// handleV answers the v packets: vCont (E.2 "vCont[;action[:thread-id]]...").
func (ss *session) handleV(p string) (string, action) {
	switch {
	case p == "vCont?":
		return "vCont;c;C;s;S", actReply
	case strings.HasPrefix(p, "vCont;"):
		step := -1
		for _, a := range strings.Split(p[len("vCont;"):], ";") {
			act, th, _ := strings.Cut(a, ":")
			if act == "" {
				return "E01", actReply
			}
			switch act[0] {
			case 's', 'S':
				id := ss.gThread
				if th != "" {
					var err error
					if id, err = parseThread(th, ss.t.CPUs()); err != nil {
						return "E01", actReply
					}
					if id < 0 {
						id = ss.gThread
					}
				}
				if step < 0 {
					step = id
				}
			case 'c', 'C':
			default:
				// t (stop) and r (range step) are not offered in vCont?.
				return "E01", actReply
			}
		}
		return ss.resume(step)
	case p == "vCtrlC":
		return "OK", actReply // stopped already
	case strings.HasPrefix(p, "vKill"):
		// Unlike k, vKill wants an answer before the connection goes.
		ss.send("OK")
		return "", actKill
	}
	return "", actReply // vMustReplyEmpty and the rest: not supported
}

// breakpoint handles Z (insert) and z (remove), E.2: Z0 software, Z1
// hardware execution, Z2 write, Z3 read and Z4 access watchpoints, with
// ",addr,kind" (kind: the length in bytes for watchpoints).
func (ss *session) breakpoint(p string) string {
	insert := p[0] == 'Z'
	if len(p) < 3 || p[2] != ',' {
		return "E01"
	}
	typ := p[1]
	// Conditions and commands (;cond...) are not offered: cut them off.
	args, _, _ := strings.Cut(p[3:], ";")
	a, kind, err := parseAddrLen(args)
	if err != nil {
		return "E01"
	}
	switch typ {
	case '0':
		if !insert {
			b, ok := ss.sw[a]
			if !ok {
				return "OK"
			}
			delete(ss.sw, a)
			return okOrErr(ss.t.LiftINT3(b))
		}
		if _, ok := ss.sw[a]; ok {
			return "OK"
		}
		b, err := ss.t.PlantINT3(ss.gThread, a)
		if err != nil {
			return "E14"
		}
		ss.sw[a] = b
		return "OK"
	case '1', '2', '4':
		h := hwSlot{typ: typ, bp: vmm.HWBreakpoint{Addr: a, Kind: vmm.HWExec}}
		switch typ {
		case '2':
			h.bp.Kind, h.bp.Len = vmm.HWWrite, int(min(kind, 16))
		case '4':
			h.bp.Kind, h.bp.Len = vmm.HWReadWrite, int(min(kind, 16))
		}
		for i, x := range ss.hw {
			if x == h {
				if !insert {
					ss.hw = append(ss.hw[:i], ss.hw[i+1:]...)
				}
				return "OK"
			}
		}
		if !insert {
			return "OK"
		}
		if len(ss.hw) == 4 {
			return "E28" // ENOSPC: GDB says it cannot insert it
		}
		if _, err := vmm.DebugRegisters([]vmm.HWBreakpoint{h.bp}); err != nil {
			return "E16" // EINVAL: a length or alignment DR7 cannot do
		}
		ss.hw = append(ss.hw, h)
		return "OK"
	}
	return "" // Z3: x86 cannot watch reads alone
}

// query answers the q packets (E.4).
func (ss *session) query(p string) string {
	name, args, _ := strings.Cut(p, ":")
	cpus := ss.t.CPUs()
	switch {
	case name == "qSupported":
		return fmt.Sprintf("PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+", PacketSize)
	case name == "qXfer" && strings.HasPrefix(args, "features:read:"):
		return xferRead(strings.TrimPrefix(args, "features:read:"))
	case name == "qAttached":
		return "1" // the machine existed before GDB: detach leaves it running
	case name == "qC":
		return fmt.Sprintf("QC%x", ss.gThread+1)
	case name == "qfThreadInfo":
		var ids []string
		for i := range cpus {
			ids = append(ids, strconv.FormatInt(int64(i+1), 16))
		}
		return "m" + strings.Join(ids, ",")
	case name == "qsThreadInfo":
		return "l"
	case strings.HasPrefix(p, "qThreadExtraInfo,"):
		id, err := parseThread(strings.TrimPrefix(p, "qThreadExtraInfo,"), cpus)
		if err != nil || id < 0 {
			return "E01"
		}
		return hexString(fmt.Sprintf("vCPU %d", id))
	case name == "qSymbol":
		return "OK"
	case strings.HasPrefix(p, "qRcmd,"):
		b, err := decodeHex(strings.TrimPrefix(p, "qRcmd,"))
		if err != nil {
			return "E01"
		}
		return ss.monitor(string(b))
	}
	return ""
}

// xferRead serves qXfer:features:read:ANNEX:OFFSET,LENGTH: a piece of
// target.xml, m (more follows) or l (the last piece).
func xferRead(s string) string {
	annex, ol, ok := strings.Cut(s, ":")
	if !ok {
		return "E00"
	}
	if annex != "target.xml" {
		return "E00"
	}
	off, n, err := parseAddrLen(ol)
	if err != nil {
		return "E00"
	}
	n = min(n, PacketSize/2)
	if off >= uint64(len(targetXML)) {
		return "l"
	}
	end := min(off+n, uint64(len(targetXML)))
	piece := targetXML[off:end]
	if end == uint64(len(targetXML)) {
		return "l" + piece
	}
	return "m" + piece
}

// maxMonitorOut bounds what one monitor command sends back.
const maxMonitorOut = 64 << 10

// monitor runs qRcmd: its output goes out in O packets, then OK.
func (ss *session) monitor(cmd string) string {
	f := strings.Fields(cmd)
	var out string
	var err error
	switch {
	case len(f) == 0 || f[0] == "help":
		out = MonitorHelp
	case f[0] == "phys":
		out, err = ss.physDump(f[1:])
	default:
		out, err = ss.t.Monitor(ss.gThread, f)
	}
	if err != nil {
		out += fmt.Sprintf("error: %v\n", err)
	}
	if len(out) > maxMonitorOut {
		out = out[:maxMonitorOut] + "\n[cut]\n"
	}
	for len(out) > 0 {
		n := min(len(out), maxMemRead/2)
		ss.send("O" + hexString(out[:n]))
		out = out[n:]
	}
	return "OK"
}

// MonitorHelp lists the monitor commands.
const MonitorHelp = `kvmlab monitor commands (monitor CMD in gdb):
  help                 this text
  stats                the VM exit statistics so far (as run --stats prints them)
  explain              the last exit of the current vCPU, explained on both layers (KVM and VT-x/SVM)
  regs                 registers with CR0/CR4/EFER and the CPU mode decoded
  phys ADDR [LEN]      hex dump of guest-physical memory (gdb's x reads guest-virtual)
  quit                 stop the machine (as Ctrl-A x)
`

func (ss *session) physDump(args []string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("phys ADDR [LEN]")
	}
	a, err := parseHex(strings.TrimPrefix(strings.ToLower(args[0]), "0x"))
	if err != nil {
		return "", err
	}
	n := uint64(64)
	if len(args) > 1 {
		if n, err = strconv.ParseUint(args[1], 0, 32); err != nil || n == 0 || n > 4096 {
			return "", fmt.Errorf("length %q: 1 to 4096 bytes", args[1])
		}
	}
	b, err := ss.t.ReadMem(ss.gThread, a, int(n), true)
	var out strings.Builder
	fmt.Fprintf(&out, "guest-physical %#x:\n", a)
	for i := 0; i < len(b); i += 16 {
		fmt.Fprintf(&out, "  %016x  % x\n", a+uint64(i), b[i:min(i+16, len(b))])
	}
	return out.String(), err
}

func okOrErr(err error) string {
	if err != nil {
		return errReply(err)
	}
	return "OK"
}

// errReply is an error for GDB: E NN (E.1 "Standard Replies"). GDB does
// not interpret the number, and the text form (E.text) is only for some
// packets, so the error itself is not sent.
func errReply(error) string { return "E01" }
