package labs

import (
	"context"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Lab 2, predict the exit: the learner reads the lab's guest and writes,
// one line per exit, the KVM reason and the VT-x/SVM reason beneath it.
// The check builds its own copy of the guest (so changing guest.S cannot
// change the answers) and replays answers.txt through `kvmlab step --quiz
// --script`, which grades every guess against the exit that really came
// (vmm/stepper/quiz.go), and reads the quiz's score.

//go:embed files/lab2 files/lab2-solution files/lab2-wrong
var lab2Files embed.FS

func init() {
	register(&Lab{
		N:     2,
		Slug:  "predict-the-exit",
		Title: "Predict the exit: which instructions leave the guest, and how, on both layers",
		Summary: "Read a twenty-instruction guest and predict each VM exit: the KVM_EXIT_* reason and the VT-x or SVM " +
			"reason beneath it. kvmlab step --quiz grades the guesses against the real exits.",
		Files:    func() map[string][]byte { return filesUnder(lab2Files, "files/lab2") },
		Solution: func() map[string][]byte { return filesUnder(lab2Files, "files/lab2-solution") },
		Wrong:    func() map[string][]byte { return filesUnder(lab2Files, "files/lab2-wrong") },
		Check:    tinyGuest(2, "answers.txt", checkLab2),
	})
}

// lab2Score is the quiz's last line (stepper's quiz.score).
var lab2Score = regexp.MustCompile(`^quiz score: (\d+) of (\d+) exits right on both layers`)

func checkLab2(ctx context.Context, env *Env, dir string) (Result, error) {
	answers, bad := readLearnerFile(dir, "answers.txt", 2)
	if bad != nil {
		return *bad, nil
	}
	tmp, err := os.MkdirTemp("", "kvmlab-lab2-")
	if err != nil {
		return Result{}, fmt.Errorf("lab 2: %w", err)
	}
	defer os.RemoveAll(tmp)
	guest := filesUnder(lab2Files, "files/lab2")["guest.S"]
	bin, bad, err := buildBootSector(ctx, env, 2, guest, tmp)
	if err != nil {
		return Result{}, err
	}
	if bad != nil { // the lab's own guest: not the learner's doing
		return Result{}, fmt.Errorf("lab 2: the lab's guest does not build here: %s", strings.Join(bad.Lines, "; "))
	}
	script := filepath.Join(tmp, "answers.txt") // the copy read above
	if err := os.WriteFile(script, answers, 0o644); err != nil {
		return Result{}, fmt.Errorf("lab 2: %w", err)
	}
	env.Logf("lab 2: replaying answers.txt through kvmlab step --quiz")
	run, err := runLabGuest(ctx, env, 2, "", "step", "--any-kvm", "--quiz", "--script", script, "--kernel", bin, "--mem", "64M")
	if err != nil {
		return Result{}, err
	}
	return gradeLab2(run), nil
}

// gradeLab2 reads the quiz's verdicts and score from the stepper's output.
func gradeLab2(run guestRun) Result {
	var res Result
	var firstWrong string
	right, total := -1, -1
	for _, l := range strings.Split(run.stdout, "\n") {
		switch {
		case strings.HasPrefix(l, "quiz #"):
			res.Lines = append(res.Lines, l)
			if firstWrong == "" && !strings.Contains(l, ": right:") {
				firstWrong = l
			}
		case strings.HasPrefix(l, "error: "):
			res.Lines = append(res.Lines, "answers.txt: "+strings.TrimPrefix(l, "error: "))
		case lab2Score.MatchString(l):
			m := lab2Score.FindStringSubmatch(l)
			right, _ = strconv.Atoi(m[1])
			total, _ = strconv.Atoi(m[2])
			res.Lines = append(res.Lines, l)
		}
	}
	switch {
	case run.timedOut:
		res.Hint = fmt.Sprintf("the quiz did not finish in %v", run.limit)
	case total < 0:
		res.Lines = append(res.Lines, tail(run.stderr, 5)...)
		res.Hint = "kvmlab step --quiz gave no score: see what it said above"
	case total == 0:
		res.Hint = "no exit was graded: write one line per exit in answers.txt"
	case right == total:
		res.Passed = true
	case firstWrong != "":
		res.Hint = "look again at " + strings.TrimPrefix(firstWrong, "quiz ") +
			": which instructions of guest.S does KVM handle without leaving the kernel? (README.md, 'What leaves the guest')"
	default:
		res.Hint = "some exits got no answer: answers.txt needs one line per exit, up to the one that powers the machine off"
	}
	return res
}
