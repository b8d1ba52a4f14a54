package labs

import (
	"bufio"
	"context"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"kvmlab/vmm/trace"
)

// Lab 1, the first exit: a real-mode guest of a few instructions writes a
// word to COM1 and powers off. The check reads the run's --trace: the
// bytes that reached port 0x3f8 and the exit that ended the machine.

//go:embed files/lab1 files/lab1-solution files/lab1-wrong
var lab1Files embed.FS

// lab1Word is what the guest must print.
const lab1Word = "hello\n"

func init() {
	register(&Lab{
		N:     1,
		Slug:  "first-exit",
		Title: "The first exit: a real-mode guest writes a word through COM1 and stops",
		Summary: "Write a boot sector of a dozen instructions that prints hello through the 16550 UART at port " +
			"0x3f8 and powers off through ACPI; each OUT is a KVM_EXIT_IO, and the check reads them from the trace.",
		Files:    func() map[string][]byte { return filesUnder(lab1Files, "files/lab1") },
		Solution: func() map[string][]byte { return filesUnder(lab1Files, "files/lab1-solution") },
		Wrong:    func() map[string][]byte { return filesUnder(lab1Files, "files/lab1-wrong") },
		Check:    tinyGuest(1, "guest.S", checkLab1),
	})
}

func checkLab1(ctx context.Context, env *Env, dir string) (Result, error) {
	src, bad := readLearnerFile(dir, "guest.S", 1)
	if bad != nil {
		return *bad, nil
	}
	tmp, err := os.MkdirTemp("", "kvmlab-lab1-")
	if err != nil {
		return Result{}, fmt.Errorf("lab 1: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin, bad, err := buildBootSector(ctx, env, 1, src, tmp)
	if err != nil || bad != nil {
		return derefResult(bad), err
	}
	tr := filepath.Join(tmp, "trace.json")
	env.Logf("lab 1: running your guest with --trace")
	run, err := runLabGuest(ctx, env, 1, tr, "run", "--any-kvm", "--quiet", "--kernel", bin, "--mem", "64M", "--trace", tr)
	if err != nil {
		return Result{}, err
	}
	evs, err := readTrace(tr, 100000)
	if err != nil && !run.flooded && !run.timedOut {
		return Result{}, fmt.Errorf("lab 1: the run's trace: %w (kvmlab said: %s)", err, strings.TrimSpace(lastLine(run.stderr)))
	}
	return gradeLab1(evs, run), nil
}

// derefResult turns a possibly nil *Result into a Result.
func derefResult(r *Result) Result {
	if r == nil {
		return Result{}
	}
	return *r
}

// readTrace reads at most max events of a JSON Lines trace (vmm/trace's
// schema). The file came from a run of the learner's guest: a line that
// does not decode ends the reading (the run may have been cut short).
func readTrace(path string, max int) ([]trace.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []trace.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() && len(evs) < max {
		var ev trace.Event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			break
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	ls := tail(s, 1)
	return ls[len(ls)-1]
}

// ioBytes is the data of an I/O exit: the trace holds it in hex, in the
// order the bytes sit in memory (little-endian).
func ioBytes(io *trace.IO) []byte {
	b, err := hex.DecodeString(io.Data)
	if err != nil {
		return nil
	}
	return b
}

// gradeLab1 grades a run from its trace: what reached COM1's THR, where
// else the guest wrote, and how the machine ended.
func gradeLab1(evs []trace.Event, run guestRun) Result {
	var res Result
	counts := map[string]int{}
	var com1 []byte
	other := map[uint16]int{}
	for i := range evs {
		ev := &evs[i]
		counts[ev.Reason]++
		if ev.IO == nil || ev.IO.Dir != "out" {
			continue
		}
		switch ev.IO.Port {
		case 0x3f8:
			com1 = append(com1, ioBytes(ev.IO)...)
		case 0x604:
		default:
			other[ev.IO.Port]++
		}
	}
	var byReason []string
	for r, n := range counts {
		byReason = append(byReason, fmt.Sprintf("%s x%d", r, n))
	}
	sort.Strings(byReason)
	if len(evs) == 0 {
		res.Lines = append(res.Lines, "your guest made no exit to kvmlab")
	} else {
		res.Lines = append(res.Lines, fmt.Sprintf("your guest made %d exits to kvmlab: %s", len(evs), strings.Join(byReason, ", ")))
	}
	switch said := strings.TrimSpace(lastLine(run.stderr)); {
	case run.flooded || run.timedOut:
		res.Lines = append(res.Lines, "the check stopped the guest")
	case run.status != 0 && said != "":
		res.Lines = append(res.Lines, fmt.Sprintf("kvmlab ended with status %d: %s", run.status, said))
	case run.status != 0:
		res.Lines = append(res.Lines, fmt.Sprintf("kvmlab ended with status %d", run.status))
	}
	res.Lines = append(res.Lines, "COM1's transmit register (port 0x3f8) received "+quoteShort(com1))
	for _, p := range sortedPorts(other) {
		res.Lines = append(res.Lines, fmt.Sprintf("port %#x received %d writes", p, other[p]))
	}
	var last *trace.Event
	if len(evs) > 0 {
		last = &evs[len(evs)-1]
		res.Lines = append(res.Lines, fmt.Sprintf("the last exit: %s at rip=%#x %s", last.Reason, last.RIP, last.Action))
	}
	poweroff := last != nil && last.IO != nil && last.IO.Port == 0x604 && last.IO.Dir == "out" &&
		strings.Contains(last.Action, "S5") && run.status == 0 && !run.timedOut && !run.flooded
	switch {
	case run.flooded:
		res.Hint = fmt.Sprintf("your guest made exits without end (its trace passed %d MiB): does the loop over the word stop at its end?", floodLimit>>20)
	case len(com1) == 0 && len(other) > 0:
		res.Hint = fmt.Sprintf("nothing reached COM1: your guest wrote to port %#x; COM1's transmit holding register is at 0x3f8 (16550 datasheet, register 0 at COM1's base; 0x2f8 is COM2)", sortedPorts(other)[0])
	case len(com1) == 0:
		res.Hint = "nothing reached COM1: write each byte with 'out %al, %dx', the byte in AL and 0x3f8 in DX"
	case !strings.Contains(string(com1), lab1Word):
		res.Hint = fmt.Sprintf("COM1 received %s, not %q: one OUT per byte, in order, and the newline too", quoteShort(com1), lab1Word)
	case run.timedOut:
		res.Lines = append(res.Lines, fmt.Sprintf("the guest was still running after %v", run.limit))
		res.Hint = "the guest never stopped: a HLT with interrupts off sleeps inside KVM for ever (no exit reaches kvmlab); power off by writing 0x3400 to port 0x604 with a 16-bit OUT (out %ax, %dx)"
	case !poweroff:
		res.Hint = "the word is right, but the machine did not power off: write SLP_EN|SLP_TYP=5 (0x3400) to ACPI PM1a_CNT, port 0x604, as a 16-bit OUT, after the last byte"
	default:
		res.Passed = true
	}
	return res
}

// quoteShort quotes what a guest wrote, the first 64 bytes of it: a guest
// in a loop writes megabytes.
func quoteShort(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q... (%d bytes in all)", b[:64], len(b))
}

func sortedPorts(m map[uint16]int) []uint16 {
	ps := make([]uint16, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}
