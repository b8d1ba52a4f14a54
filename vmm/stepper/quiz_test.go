package stepper

import (
	"bytes"
	"strings"
	"testing"

	"kvmlab/vmm/trace"
)

func TestParseGuess(t *testing.T) {
	for _, tc := range []struct {
		line   string
		ok     bool
		reason string
		hw     map[string]string
		err    string
	}{
		{line: "io IO_INSTRUCTION", ok: true, reason: "KVM_EXIT_IO", hw: map[string]string{"": "IO_INSTRUCTION"}},
		{line: "KVM_EXIT_MMIO vmx:EPT_MISCONFIG svm:NPF", ok: true, reason: "KVM_EXIT_MMIO", hw: map[string]string{"vmx": "EPT_MISCONFIG", "svm": "NPF"}},
		{line: "shutdown", ok: true, reason: "KVM_EXIT_SHUTDOWN", hw: map[string]string{}},
		{line: "regs"},
		{line: "  "},
		{line: "frobnicate x", err: "not a KVM exit reason"},
		{line: "io amd:IOIO", err: "say vmx:NAME or svm:NAME"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			g, ok, err := parseGuess(tc.line)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || ok != tc.ok {
				t.Fatalf("parseGuess = %v, %v; want ok %v", ok, err, tc.ok)
			}
			if !ok {
				return
			}
			if g.reason.String() != tc.reason || len(g.hw) != len(tc.hw) {
				t.Fatalf("guess %+v, want %s %v", g, tc.reason, tc.hw)
			}
			for k, v := range tc.hw {
				if g.hw[k] != v {
					t.Errorf("hw[%q] = %q, want %q", k, g.hw[k], v)
				}
			}
		})
	}
}

func TestHWMatches(t *testing.T) {
	ioio := &trace.HW{Vendor: "svm", Code: 0x7b, Name: "VMEXIT_IOIO"}
	for _, tc := range []struct {
		answer string
		hw     *trace.HW
		want   bool
	}{
		{"VMEXIT_IOIO", ioio, true},
		{"ioio", ioio, true},
		{"0x7b", ioio, true},
		{"123", ioio, true},
		{"0x7c", ioio, false},
		{"IO_INSTRUCTION", ioio, false},
		{"", ioio, false},
		{"", nil, true},
		{"none", nil, true},
		{"IOIO", nil, false},
	} {
		if got := hwMatches(tc.answer, tc.hw); got != tc.want {
			t.Errorf("hwMatches(%q, %v) = %v, want %v", tc.answer, tc.hw, got, tc.want)
		}
	}
}

// TestQuizScores plays a quiz on synthetic exits: a guess before the
// first exit, commands and comments between, a wrong and a half-right
// answer, and the last exit, which reaches the quiz only through its
// trace sink, as a poweroff does.
func TestQuizScores(t *testing.T) {
	script := strings.Join([]string{
		"# my answers",
		"io vmx:IO_INSTRUCTION svm:VMEXIT_IOIO", // #7: right
		"next",                                  // refused in the quiz
		"mmio svm:NPF",                          // #8 is MMIO with no hw layer in this event: half right
		"hlt",                                   // #9: wrong
		"io 0x7b",                               // #10, seen only by the sink: right
	}, "\n")
	var out bytes.Buffer
	s := New(Lines(strings.NewReader(script)), &out, nil)
	s.EnableQuiz()
	sink := quizSink{q: s.quiz}
	s.ask(nil)
	ev9 := evCOM1
	ev9.Seq = 9
	ev10 := evCOM1
	ev10.Seq = 10
	for _, ev := range []*trace.Event{&evCOM1, &evMMIO, &ev9} {
		sink.Record(ev)
		s.Stop(nil, ev)
	}
	sink.Record(&ev10) // the machine stopped at this one: no Stop
	s.finishQuiz()
	got := out.String()
	t.Log(got)
	for _, want := range []string{
		"quiz #7: right: KVM_EXIT_IO svm:VMEXIT_IOIO (0x7b)",
		"error: in the quiz every exit stops",
		`quiz #8: half right: KVM reason right, hardware reason wrong: it was KVM_EXIT_MMIO, you said "mmio svm:NPF"`,
		`quiz #9: wrong: it was KVM_EXIT_IO svm:VMEXIT_IOIO (0x7b), you said "hlt"`,
		"#10 vCPU0 KVM_EXIT_IO",
		"quiz #10: right",
		"quiz score: 2 of 10 exits right on both layers (KVM reason 3/10, VT-x/SVM reason 2/10; 0 skipped, 6 unanswered)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// FuzzQuizAnswer feeds arbitrary answer lines (an answers.txt is the
// learner's file) to the quiz's parser and grader: no panic, and an
// answer it accepts is graded without one either.
func FuzzQuizAnswer(f *testing.F) {
	for _, s := range []string{"io IO_INSTRUCTION", "mmio vmx:EPT_MISCONFIG svm:NPF", "io 0x7b", "skip", "#", "io :", "42 svm:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		g, ok, err := parseGuess(line)
		if ok != (g != nil) || (err != nil && ok) {
			t.Fatalf("parseGuess(%q) = %v, %v, %v", line, g, ok, err)
		}
		if !ok {
			return
		}
		s := New(Lines(strings.NewReader("")), &bytes.Buffer{}, nil)
		s.EnableQuiz()
		s.quiz.guess = g
		s.grade(&evCOM1)
		if s.quiz.asked != 1 {
			t.Fatalf("a graded guess counted %d times", s.quiz.asked)
		}
	})
}
