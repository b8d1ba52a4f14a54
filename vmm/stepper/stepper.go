package stepper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"kvmlab/vmm"
	"kvmlab/vmm/exits"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/inspect"
	"kvmlab/vmm/trace"
)

// Help lists the commands, for --help and the help command.
const Help = `Commands (the vCPU is stopped at a VM exit; the guest resumes when you go on):
  next [N]                 run to the next exit (or the Nth)
  continue                 run until a breakpoint or the end
  until REASON             run until an exit with this KVM reason (io, mmio, debug, ...)
  until port P             ... until an I/O exit on port P (e.g. 0x3f8)
  until addr A             ... until an MMIO exit at address A
  until device NAME        ... until an exit handled by device NAME (COM1, CMOS, pci-config-address ...)
  stepi [N]                execute one guest instruction (or N) with hardware single-step
  break ADDR|SYMBOL        hardware breakpoint (DR0-DR3) on an address or kernel symbol (--symbols)
  delete [N]               delete breakpoint N, or all
  regs                     registers, CPU mode, CR0/CR4/EFER/RFLAGS decoded; * = changed since last stop
  code [N]                 disassemble N instructions at RIP (default 8)
  mem ADDR [LEN]           hex dump; ADDR is guest-virtual when paging is on, p:ADDR for guest-physical
  explain                  why this exit happened, on both layers
  stats                    exit statistics so far
  help                     this text
  quit                     stop the guest and exit`

// Stepper implements vmm.Debugger: it stops the guest at every exit and runs
// a small command language on it. Make one with New.
type Stepper struct {
	mu     sync.Mutex
	in     LineReader
	out    io.Writer
	sym    *inspect.Symbols
	stats  *trace.Stats
	quit   func()
	cons   *consoleBuffer
	prev   *inspect.State
	breaks []breakpoint

	// What to do until the next prompt.
	skip      int                     // exits to pass silently (next N)
	cont      bool                    // continue: only debug exits stop
	until     func(*trace.Event) bool // run until this matches
	stepsLeft int                     // stepi N
	done      bool                    // input ended or quit: run free

	quiz *quiz // kvmlab step --quiz (quiz.go); nil: off
}

// New returns a stepper that reads commands from in and writes what it
// shows to out (both may be one golang.org/x/term Terminal). sym names
// kernel addresses and may be nil.
func New(in LineReader, out io.Writer, sym *inspect.Symbols) *Stepper {
	return &Stepper{in: in, out: out, sym: sym, stats: trace.NewStats(), cons: &consoleBuffer{}}
}

// Attach makes cfg's machine stop at every exit for s. The guest's console
// goes to s, to be shown between stops, and the guest gets no input: the
// keyboard is the stepper's. With symbols the kernel must run where
// System.map says, so KASLR, which moves it by a random offset, is turned
// off on the command line.
func (s *Stepper) Attach(cfg *vmm.Config) {
	cfg.Debugger = s
	if s.quiz != nil {
		// The quiz sees every exit, also the last one, after which the
		// machine stops without a Stop (quiz.go).
		cfg.Trace = quizSink{q: s.quiz, next: cfg.Trace}
	}
	cfg.Console = s.cons
	cfg.Input = nil
	if s.sym != nil && !strings.Contains(cfg.Cmdline, "nokaslr") {
		cfg.Cmdline += " nokaslr"
	}
}

// Run runs m, built from a config s was attached to, to its end: it stops
// at the first exit, and after the end shows what the guest wrote last and
// how the machine stopped (with a register dump for a failure).
func (s *Stepper) Run(m *vmm.Machine) vmm.Outcome {
	s.quit = m.Quit
	s.printf("kvmlab step: stopped before the first exit; type help for commands\n")
	if s.quiz != nil {
		s.ask(nil)
	}
	out := m.Run()
	s.flushConsole()
	if s.quiz != nil {
		s.finishQuiz()
	}
	s.printf("kvmlab: %s\n", out.Detail)
	if !out.Reason.Success() && out.Dump != "" {
		s.printf("%s\n", out.Dump)
	}
	return out
}

// LineReader gives one command line at a time; io.EOF ends the commands.
// A golang.org/x/term Terminal is one, with line editing and history.
type LineReader interface {
	ReadLine() (string, error)
}

// Lines reads commands from r, one a line: a script, or a standard input
// that is not a terminal.
func Lines(r io.Reader) LineReader { return scannerReader{bufio.NewScanner(r)} }

type scannerReader struct{ sc *bufio.Scanner }

func (s scannerReader) ReadLine() (string, error) {
	if s.sc.Scan() {
		return s.sc.Text(), nil
	}
	if err := s.sc.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

// consoleBuffer keeps the guest's serial output apart from the stepper's:
// bytes collect here and are shown, marked, at the next stop.
type consoleBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (c *consoleBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	return len(p), nil
}

func (c *consoleBuffer) take() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := string(c.buf)
	c.buf = c.buf[:0]
	return s
}

func (s *Stepper) printf(format string, args ...any) { fmt.Fprintf(s.out, format, args...) }

// flushConsole shows what the guest wrote since the last stop, each line
// marked as the guest's.
func (s *Stepper) flushConsole() {
	if out := s.cons.take(); out != "" {
		for _, l := range strings.Split(strings.TrimRight(out, "\r\n"), "\n") {
			s.printf("[console] %s\n", strings.TrimRight(l, "\r"))
		}
	}
}

// summary is the one line shown at each stop.
func summary(ev *trace.Event, sym *inspect.Symbols) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d vCPU%d %s", ev.Seq, ev.VCPU, ev.Reason)
	if ev.HW != nil {
		fmt.Fprintf(&b, " [%s %s %#x]", ev.HW.Vendor, ev.HW.Name, ev.HW.Code)
	}
	fmt.Fprintf(&b, " rip=%#x", ev.RIP)
	if n := sym.Describe(ev.RIP); n != "" {
		fmt.Fprintf(&b, " <%s>", n)
	}
	switch {
	case ev.IO != nil:
		fmt.Fprintf(&b, " port=%#x %s size=%d", ev.IO.Port, ev.IO.Dir, ev.IO.Size)
	case ev.MMIO != nil:
		w := "read"
		if ev.MMIO.Write {
			w = "write"
		}
		fmt.Fprintf(&b, " mmio=%#x %s len=%d", ev.MMIO.Addr, w, ev.MMIO.Len)
	}
	if ev.Action != "" {
		fmt.Fprintf(&b, " : %s", ev.Action)
	}
	return b.String()
}

func (s *Stepper) Stop(c *vmm.Control, ev *trace.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Add(ev)
	if s.done {
		return
	}
	if s.quiz != nil {
		// Every exit stops in the quiz: grade the guess, ask again.
		s.flushConsole()
		s.printf("%s\n", summary(ev, s.sym))
		s.quiz.lastSeen = ev.Seq
		s.grade(ev)
		s.ask(func(f []string) error { _, err := s.command(c, ev, f); return err })
		return
	}
	isDebug := ev.Reason == exits.Debug.String()
	swHit := 0
	if isDebug {
		swHit, _ = s.swHit(c, ev.RIP)
	}
	if swHit == 0 {
		s.rearm(c, ev.RIP)
	}
	if isDebug && swHit == 0 {
		if vec, ok := c.DebugException(); ok && vec == bpVector {
			// An INT3 that is not one of ours: the guest's own. It goes
			// to the guest's #BP handler, and the stepper does not stop.
			if err := c.ReinjectBreakpoint(); err != nil {
				s.printf("the guest's own INT3 at %#x: handing it back: %v\n", ev.RIP, err)
			}
			return
		}
	}
	switch {
	case s.stepsLeft > 0 && isDebug:
		s.stepsLeft--
		if s.stepsLeft > 0 {
			return
		}
		_ = c.SetSingleStep(false)
	case s.stepsLeft > 0:
		return // an ordinary exit in the middle of a stepi: keep stepping
	case isDebug:
		// a breakpoint: always stop
	case s.until != nil:
		if !s.until(ev) {
			return
		}
		s.until = nil
	case s.cont:
		return
	case s.skip > 0:
		s.skip--
		if s.skip > 0 {
			return
		}
	}
	s.cont = false
	s.flushConsole()
	s.printf("%s\n", summary(ev, s.sym))
	if swHit > 0 {
		s.printf("software breakpoint %d hit (its INT3 is lifted while the instruction runs)\n", swHit)
	}
	s.prompt(c, ev)
}

// prompt reads commands until one resumes the guest.
func (s *Stepper) prompt(c *vmm.Control, ev *trace.Event) {
	for {
		line, err := s.in.ReadLine()
		if err != nil {
			// End of the script or of standard input: let the guest
			// run to its end, without INT3s nobody would handle.
			s.done = true
			s.clearSoftware(c)
			return
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		resume, err := s.command(c, ev, f)
		if err != nil {
			s.printf("error: %v\n", err)
		}
		if resume {
			return
		}
	}
}

func parseNum(s string) (uint64, error) {
	return strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
}

func (s *Stepper) command(c *vmm.Control, ev *trace.Event, f []string) (resume bool, err error) {
	arg := func(i int, def int) (int, error) {
		if len(f) <= i {
			return def, nil
		}
		n, err := strconv.Atoi(f[i])
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q is not a positive count", f[i])
		}
		return n, nil
	}
	switch f[0] {
	case "next", "n":
		n, err := arg(1, 1)
		if err != nil {
			return false, err
		}
		s.skip = n
		return true, nil
	case "continue", "c":
		s.cont = true
		return true, nil
	case "until", "u":
		pred, err := untilPredicate(f[1:])
		if err != nil {
			return false, err
		}
		s.until = pred
		return true, nil
	case "stepi", "si":
		n, err := arg(1, 1)
		if err != nil {
			return false, err
		}
		if err := c.SetSingleStep(true); err != nil {
			return false, err
		}
		s.stepsLeft = n
		return true, nil
	case "break", "b", "sbreak", "sb":
		if len(f) < 2 {
			return false, fmt.Errorf("%s ADDR|SYMBOL", f[0])
		}
		a, ok := s.sym.Lookup(f[1])
		if !ok {
			v, err := parseNum(f[1])
			if err != nil {
				return false, fmt.Errorf("%q is neither a symbol (load them with --symbols) nor a hex address", f[1])
			}
			a = v
		}
		if f[0] == "sbreak" || f[0] == "sb" {
			return false, s.addSoftware(c, a)
		}
		if s.hwCount() == 4 {
			return false, errors.New("all four hardware breakpoints (DR0-DR3) are in use: delete one, or use sbreak")
		}
		s.breaks = append(s.breaks, breakpoint{addr: a})
		if err := c.SetHWBreakpoints(s.hwAddrs()); err != nil {
			s.breaks = s.breaks[:len(s.breaks)-1]
			return false, err
		}
		s.printf("breakpoint %d at %#x %s (hardware, DR%d)\n", len(s.breaks), a, s.sym.Describe(a), s.hwCount()-1)
	case "delete", "d":
		keep := []breakpoint{}
		if len(f) > 1 {
			n, err := arg(1, 1)
			if err != nil || n > len(s.breaks) {
				return false, fmt.Errorf("no breakpoint %s", f[1])
			}
			keep = append(append(keep, s.breaks[:n-1]...), s.breaks[n:]...)
		}
		for _, b := range s.breaks {
			if b.sw && !containsBreak(keep, b) {
				if err := s.disarm(c, b); err != nil {
					return false, err
				}
			}
		}
		s.breaks = keep
		if err := c.SetSWBreakpoints(s.swCount() > 0); err != nil {
			return false, err
		}
		return false, c.SetHWBreakpoints(s.hwAddrs())
	case "regs", "r":
		st, err := state(c)
		if err != nil {
			return false, err
		}
		s.printf("%s\n", inspect.Format(st, s.prev, s.sym))
		s.prev = &st
	case "code":
		n, err := arg(1, 8)
		if err != nil {
			return false, err
		}
		return false, s.code(c, ev, n)
	case "mem", "x":
		return false, s.mem(c, f[1:])
	case "explain", "e":
		s.printf("%s\n", hwexit.Explain(ev, c.Vendor()))
	case "stats":
		s.stats.Write(s.out)
	case "help", "h", "?":
		s.printf("%s\n", Help)
	case "quit", "q":
		s.done = true
		s.quit()
		return true, nil
	default:
		return false, fmt.Errorf("unknown command %q: type help", f[0])
	}
	return false, nil
}

func state(c *vmm.Control) (inspect.State, error) {
	r, err := c.Regs()
	if err != nil {
		return inspect.State{}, err
	}
	sr, err := c.Sregs()
	if err != nil {
		return inspect.State{}, err
	}
	return inspect.State{Regs: r, Sregs: sr}, nil
}

// readGuest reads at a virtual address when paging is on, else physical.
func readGuest(c *vmm.Control, addr uint64, n int, paging bool) ([]byte, error) {
	if paging {
		return c.ReadVirt(addr, n)
	}
	return c.ReadPhys(addr, n)
}

func (s *Stepper) code(c *vmm.Control, ev *trace.Event, n int) error {
	st, err := state(c)
	if err != nil {
		return err
	}
	mode := inspect.CPUMode(st.Sregs)
	paging := st.Sregs.CR0&(1<<31) != 0
	rip := st.Regs.RIP
	if mode.Bits != 64 {
		rip += st.Sregs.CS.Base
	}
	s.printf("%s; disassembling as %d-bit code\n", mode.Name, mode.Bits)
	if ev.IO != nil {
		if before, err := readGuest(c, rip-15, 15, paging); err == nil {
			if l, ok := inspect.PreviousIO(before, rip, mode.Bits); ok {
				s.printf("the I/O instruction just before RIP:\n%s\n", inspect.FormatLines([]inspect.Line{l}, l.Addr, s.sym))
			}
		}
	}
	code, err := readGuest(c, rip, 15*n, paging)
	if err != nil && len(code) == 0 {
		return err
	}
	s.printf("%s\n", inspect.FormatLines(inspect.Disassemble(code, rip, mode.Bits, n), rip, s.sym))
	return nil
}

func (s *Stepper) mem(c *vmm.Control, args []string) error {
	if len(args) == 0 {
		return errors.New("mem ADDR [LEN]")
	}
	st, err := state(c)
	if err != nil {
		return err
	}
	paging := st.Sregs.CR0&(1<<31) != 0
	a := args[0]
	switch {
	case strings.HasPrefix(a, "p:"):
		paging, a = false, a[2:]
	case strings.HasPrefix(a, "v:"):
		paging, a = true, a[2:]
	}
	addr, ok := s.sym.Lookup(a)
	if !ok {
		if addr, err = parseNum(a); err != nil {
			return fmt.Errorf("%q is not an address", a)
		}
	}
	n := 64
	if len(args) > 1 {
		v, err := strconv.Atoi(args[1])
		if err != nil || v < 1 || v > 4096 {
			return fmt.Errorf("length %q: 1 to 4096 bytes", args[1])
		}
		n = v
	}
	b, err := readGuest(c, addr, n, paging)
	if err != nil && len(b) == 0 {
		return err
	}
	kind := "physical"
	if paging {
		kind = "virtual"
	}
	s.printf("guest-%s %#x:\n", kind, addr)
	for i := 0; i < len(b); i += 16 {
		end := min(i+16, len(b))
		s.printf("  %016x  % x\n", addr+uint64(i), b[i:end])
	}
	return err
}

// untilPredicate parses the argument of `until`.
func untilPredicate(args []string) (func(*trace.Event) bool, error) {
	if len(args) == 0 {
		return nil, errors.New("until REASON | port P | addr A | device NAME")
	}
	switch args[0] {
	case "port":
		if len(args) < 2 {
			return nil, errors.New("until port P")
		}
		p, err := parseNum(args[1])
		if err != nil || p > 0xffff {
			return nil, fmt.Errorf("%q is not a port", args[1])
		}
		return func(ev *trace.Event) bool { return ev.IO != nil && uint64(ev.IO.Port) == p }, nil
	case "addr":
		if len(args) < 2 {
			return nil, errors.New("until addr A")
		}
		a, err := parseNum(args[1])
		if err != nil {
			return nil, fmt.Errorf("%q is not an address", args[1])
		}
		return func(ev *trace.Event) bool { return ev.MMIO != nil && ev.MMIO.Addr == a }, nil
	case "device":
		if len(args) < 2 {
			return nil, errors.New("until device NAME")
		}
		name := strings.ToLower(args[1])
		return func(ev *trace.Event) bool { return strings.ToLower(ev.Device) == name }, nil
	}
	r, ok := exits.ParseReason(args[0])
	if !ok {
		return nil, fmt.Errorf("%q is not an exit reason (io, mmio, shutdown, ...), nor port/addr/device", args[0])
	}
	want := r.String()
	return func(ev *trace.Event) bool { return ev.Reason == want }, nil
}

var _ vmm.Debugger = (*Stepper)(nil)
