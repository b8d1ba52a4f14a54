package stepper

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/trace"
)

// The quiz (kvmlab step --quiz) turns the stepper around: before the
// guest goes on, the learner says which exit will come next, on both
// layers, and the stepper grades the guess against the exit that really
// comes. Predicting an exit means knowing what the instruction at RIP does
// and which of its effects a hypervisor intercepts: an OUT is an I/O exit
// (VT-x basic reason 30 IO_INSTRUCTION, SDM Vol. 3C §26.1.3 and Appendix
// C; SVM VMEXIT_IOIO 0x7b, AMD APM Vol. 2 §15.10 and Appendix C), a load
// from an address no memory slot covers is an MMIO exit (beneath it an EPT
// violation or misconfiguration, or a nested page fault, VMEXIT_NPF
// 0x400), while CPUID, a write to CR0 or a HLT may never reach user space
// at all, because KVM handles them in the kernel (docs/exits.md).
//
// An answer is one line: the KVM reason, then the hardware reason, by
// name or number, optionally for each vendor:
//
//	io IO_INSTRUCTION                 a VT-x host
//	KVM_EXIT_IO VMEXIT_IOIO           an AMD host
//	mmio vmx:EPT_MISCONFIG svm:NPF    either host: the one that applies is graded
//	io 0x7b                           numbers are fine
//	skip                              no guess for this exit
//
// Between exits the other inspecting commands (regs, code, mem, explain,
// stats, help) still work, so a learner can read the code before
// answering; the commands that choose where to stop (next, until,
// continue, stepi, break) do not, since in the quiz every exit stops.
//
// The exit that ends the guest (a poweroff through ACPI, a triple fault)
// never stops the stepper, as the machine does not resume after it. The
// quiz still sees it through a trace sink (Attach tees one in) and grades
// the last guess against it.

// quiz is the state of a quiz: the pending guess and the score.
type quiz struct {
	guess    *guess
	asked    int // guesses graded
	kvmRight int
	hwRight  int
	both     int
	skipped  int

	lastMu   sync.Mutex
	last     *trace.Event // the newest exit, stopping or not
	lastSeen uint64       // the newest exit the stepper stopped at
}

// guess is one answer.
type guess struct {
	line   string
	reason exits.Reason
	hw     map[string]string // vendor ("vmx", "svm", "" for any) -> name or number
}

// quizSink records the newest exit for the quiz, and passes every exit on
// to next (the --trace sink, if any).
type quizSink struct {
	q    *quiz
	next trace.Sink
}

func (k quizSink) Record(ev *trace.Event) {
	c := *ev
	k.q.lastMu.Lock()
	k.q.last = &c
	k.q.lastMu.Unlock()
	if k.next != nil {
		k.next.Record(ev)
	}
}

// EnableQuiz makes s ask, before every exit, which exit comes next (see
// quiz.go). Call it before Attach.
func (s *Stepper) EnableQuiz() { s.quiz = &quiz{} }

// QuizPrompt is what the quiz asks before each exit.
const QuizPrompt = "quiz: which exit comes next? (KVM reason, then the VT-x or SVM reason, e.g. 'io IO_INSTRUCTION' or 'io VMEXIT_IOIO'; skip; help)"

// QuizHelp explains the answers, for help in the quiz.
const QuizHelp = `The quiz: before each exit, say which exit comes next, on both layers:
  io IO_INSTRUCTION                   the KVM reason, then the VT-x basic exit reason...
  io VMEXIT_IOIO                      ...or the SVM exit code (with or without VMEXIT_)
  mmio vmx:EPT_MISCONFIG svm:NPF      both vendors: the one this host has is graded
  io 0x7b                             numbers work too
  skip                                no guess for this exit
Between exits these commands still work: regs, code, mem, explain, stats, quit.`

// parseGuess reads an answer line; ok is false when the line is not an
// answer (a command, perhaps).
func parseGuess(line string) (g *guess, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil, false, nil
	}
	if _, isCmd := quizCommands[f[0]]; isCmd {
		return nil, false, nil
	}
	r, known := exits.ParseReason(f[0])
	if !known {
		return nil, false, fmt.Errorf("%q is not a KVM exit reason (io, mmio, shutdown, hlt, ... or KVM_EXIT_IO)", f[0])
	}
	g = &guess{line: strings.Join(f, " "), reason: r, hw: map[string]string{}}
	for _, w := range f[1:] {
		vendor, name, found := strings.Cut(w, ":")
		if !found {
			vendor, name = "", w
		}
		vendor = strings.ToLower(vendor)
		if vendor != "" && vendor != "vmx" && vendor != "svm" {
			return nil, false, fmt.Errorf("%q: say vmx:NAME or svm:NAME, or NAME alone", w)
		}
		g.hw[vendor] = name
	}
	return g, true, nil
}

// quizCommands are the stepper commands the quiz lets through (they
// inspect, they do not resume).
var quizCommands = map[string]bool{
	"regs": true, "r": true, "code": true, "mem": true, "x": true, "explain": true, "e": true,
	"stats": true, "help": true, "h": true, "?": true, "quit": true, "q": true,
	"next": false, "n": false, "continue": false, "c": false, "until": false, "u": false,
	"stepi": false, "si": false, "break": false, "b": false, "sbreak": false, "sb": false, "delete": false, "d": false,
}

// hwMatches says whether answer names hw: its name with or without the
// VMEXIT_ prefix and in any case, or its code in decimal or hex.
func hwMatches(answer string, hw *trace.HW) bool {
	if hw == nil {
		return answer == "" || answer == "-" || strings.EqualFold(answer, "none")
	}
	if n, err := strconv.ParseUint(answer, 0, 64); err == nil {
		return n == hw.Code
	}
	norm := func(s string) string { return strings.TrimPrefix(strings.ToUpper(s), "VMEXIT_") }
	return answer != "" && norm(answer) == norm(hw.Name)
}

// grade compares the pending guess with ev and says how it went.
func (s *Stepper) grade(ev *trace.Event) {
	q := s.quiz
	g := q.guess
	q.guess = nil
	if g == nil {
		return
	}
	q.asked++
	kvmOK := g.reason.String() == ev.Reason
	hwOK := true
	if ev.HW != nil {
		a, ok := g.hw[ev.HW.Vendor]
		if !ok {
			a = g.hw[""]
		}
		hwOK = hwMatches(a, ev.HW)
	} else {
		// No hardware reason to name (kvmlab derives none for this
		// exit): right only if the answer names none either.
		for _, a := range g.hw {
			hwOK = hwOK && hwMatches(a, nil)
		}
	}
	if kvmOK {
		q.kvmRight++
	}
	if hwOK {
		q.hwRight++
	}
	if kvmOK && hwOK {
		q.both++
	}
	want := ev.Reason
	if ev.HW != nil {
		want += fmt.Sprintf(" %s:%s (%#x)", ev.HW.Vendor, ev.HW.Name, ev.HW.Code)
	}
	switch {
	case kvmOK && hwOK:
		s.printf("quiz #%d: right: %s\n", ev.Seq, want)
	case kvmOK:
		s.printf("quiz #%d: half right: KVM reason right, hardware reason wrong: it was %s, you said %q\n", ev.Seq, want, g.line)
	case hwOK:
		s.printf("quiz #%d: half right: hardware reason right, KVM reason wrong: it was %s, you said %q\n", ev.Seq, want, g.line)
	default:
		s.printf("quiz #%d: wrong: it was %s, you said %q\n", ev.Seq, want, g.line)
	}
}

// ask reads lines until one is an answer (or the input ends), running the
// inspecting commands in between. run is nil before the first exit, when
// there is no vCPU stop to inspect yet.
func (s *Stepper) ask(run func(f []string) error) {
	for {
		s.printf("%s\n", QuizPrompt)
		line, err := s.in.ReadLine()
		if err != nil {
			s.done = true
			return
		}
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") { // a comment in a script
			continue
		}
		if f[0] == "skip" || f[0] == "-" {
			s.quiz.skipped++
			return
		}
		if allowed, isCmd := quizCommands[f[0]]; isCmd {
			if !allowed {
				s.printf("error: in the quiz every exit stops: answer with the exit you expect, or skip\n")
				continue
			}
			if f[0] == "help" || f[0] == "h" || f[0] == "?" {
				s.printf("%s\n%s\n", QuizHelp, Help)
				continue
			}
			if run == nil {
				s.printf("error: the guest has not started: there is nothing to inspect yet; answer, or skip\n")
				continue
			}
			if err := run(f); err != nil {
				s.printf("error: %v\n", err)
			}
			if s.done {
				return
			}
			continue
		}
		g, _, err := parseGuess(line)
		if err != nil {
			s.printf("error: %v\n", err)
			continue
		}
		s.quiz.guess = g
		return
	}
}

// finishQuiz grades a guess left for the exit that ended the machine,
// and prints the score.
func (s *Stepper) finishQuiz() {
	q := s.quiz
	q.lastMu.Lock()
	last := q.last
	q.lastMu.Unlock()
	if q.guess != nil && last != nil && last.Seq > q.lastSeen {
		s.printf("%s\n", summary(last, s.sym))
		s.grade(last)
	}
	total := uint64(0)
	if last != nil {
		total = last.Seq
	}
	s.printf("%s\n", q.score(total))
}

// score is the quiz's last line; kvmlab lab check reads it. total is the
// number of exits the guest made: an exit nobody predicted (the answers
// ran out) counts as wrong.
func (q *quiz) score(total uint64) string {
	n := max(uint64(q.asked+q.skipped), total)
	return fmt.Sprintf("quiz score: %d of %d exits right on both layers (KVM reason %d/%d, VT-x/SVM reason %d/%d; %d skipped, %d unanswered)",
		q.both, n, q.kvmRight, n, q.hwRight, n, q.skipped, n-uint64(q.asked+q.skipped))
}
