package labs

import (
	"context"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Lab 3, into long mode: the learner builds the page tables and the GDT
// and switches the CPU from real mode to 64-bit mode. The guest's own
// word for it would prove nothing (the same bytes print the marker from
// compatibility mode), so the check asks the CPU: it runs the guest under
// `kvmlab step`, reads the vCPU's registers (KVM_GET_SREGS) at every exit
// with the stepper's regs command, and passes when the marker's COM1
// writes happen in 64-bit mode: EFER.LMA set and CS.L = 1 (inspect.CPUMode).

//go:embed files/lab3 files/lab3-solution files/lab3-wrong
var lab3Files embed.FS

func init() {
	register(&Lab{
		N:     3,
		Slug:  "long-mode",
		Title: "Into long mode: page tables, a GDT and the switch from real mode to 64-bit",
		Summary: "Take a real-mode guest into 64-bit long mode yourself: a PML4, PDPT and page directory, a GDT with a " +
			"64-bit code segment, CR4.PAE, EFER.LME, CR0.PG. The check reads the vCPU's registers at each exit.",
		Files:    func() map[string][]byte { return filesUnder(lab3Files, "files/lab3") },
		Solution: func() map[string][]byte { return filesUnder(lab3Files, "files/lab3-solution") },
		Wrong:    func() map[string][]byte { return filesUnder(lab3Files, "files/lab3-wrong") },
		Check:    tinyGuest(3, "guest.S", checkLab3),
	})
}

// lab3Stops is how many exits the check looks at: the marker is three
// COM1 writes, and a learner may print more on the way.
const lab3Stops = 64

func checkLab3(ctx context.Context, env *Env, dir string) (Result, error) {
	src, bad := readLearnerFile(dir, "guest.S", 3)
	if bad != nil {
		return *bad, nil
	}
	tmp, err := os.MkdirTemp("", "kvmlab-lab3-")
	if err != nil {
		return Result{}, fmt.Errorf("lab 3: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin, bad, err := buildBootSector(ctx, env, 3, src, tmp)
	if err != nil || bad != nil {
		return derefResult(bad), err
	}
	// regs at each stop, then on to the next exit; after lab3Stops
	// exits the guest is stopped, so a guest that exits for ever ends.
	script := filepath.Join(tmp, "script")
	cmds := strings.Repeat("regs\nnext\n", lab3Stops) + "quit\n"
	if err := os.WriteFile(script, []byte(cmds), 0o644); err != nil {
		return Result{}, fmt.Errorf("lab 3: %w", err)
	}
	env.Logf("lab 3: running your guest under kvmlab step, reading the registers at each exit")
	run, err := runLabGuest(ctx, env, 3, "", "step", "--any-kvm", "--script", script, "--kernel", bin, "--mem", "64M")
	if err != nil {
		return Result{}, err
	}
	return gradeLab3(run), nil
}

// lab3Stop is one exit the stepper stopped at, with the state regs showed.
type lab3Stop struct {
	summary, mode, efer, cr0, cs string
	com1                         bool
}

// parseLab3 reads the stepper's output: a summary line per stop
// ("#3 vCPU0 KVM_EXIT_IO ... : COM1 THR write '6'"), then regs's lines
// ("mode: long mode (64-bit), CPL 0", " EFER ...", " CS  sel=...").
func parseLab3(out string) []lab3Stop {
	var stops []lab3Stop
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimLeft(l, " *")
		switch {
		case strings.HasPrefix(l, "#") && strings.Contains(l, " vCPU"):
			stops = append(stops, lab3Stop{summary: l, com1: strings.Contains(l, "port=0x3f8 out")})
		case len(stops) == 0:
		case strings.HasPrefix(l, "mode: "):
			stops[len(stops)-1].mode = strings.TrimPrefix(l, "mode: ")
		case strings.HasPrefix(t, "EFER "):
			stops[len(stops)-1].efer = bitNames(t)
		case strings.HasPrefix(t, "CR0 "):
			stops[len(stops)-1].cr0 = bitNames(t)
		case strings.HasPrefix(t, "CS "):
			stops[len(stops)-1].cs = strings.Join(strings.Fields(t)[1:], " ")
		}
	}
	return stops
}

// bitNames is what regs shows after a register's name and hex value: the
// names of its set bits (" EFER   0000000000000500  LME LMA" -> "LME LMA").
func bitNames(line string) string {
	f := strings.Fields(line)
	if len(f) < 3 {
		return "(none)"
	}
	return strings.Join(f[2:], " ")
}

func gradeLab3(run guestRun) Result {
	var res Result
	stops := parseLab3(run.stdout)
	var com1 []lab3Stop
	for _, s := range stops {
		if s.com1 {
			com1 = append(com1, s)
		}
	}
	res.Lines = append(res.Lines, fmt.Sprintf("your guest made %d exits the stepper stopped at, %d of them writes to COM1", len(stops), len(com1)))
	for _, s := range com1 {
		res.Lines = append(res.Lines, s.summary, fmt.Sprintf("    mode: %s; EFER %s; CR0 %s", s.mode, s.efer, s.cr0),
			fmt.Sprintf("    CS %s", s.cs))
	}
	end := lastLine(run.stdout)
	if strings.HasPrefix(end, "kvmlab: ") {
		res.Lines = append(res.Lines, "the end: "+strings.TrimPrefix(end, "kvmlab: "))
	}
	var marker lab3Stop
	if len(com1) > 0 {
		marker = com1[len(com1)-1]
	}
	switch {
	case run.timedOut:
		res.Hint = fmt.Sprintf("the guest ran for %v without an exit: a jump to itself, or a HLT with interrupts off?", run.limit)
	case strings.Contains(run.stdout, "triple fault") || strings.Contains(run.stdout, "KVM_EXIT_SHUTDOWN"):
		res.Lines = append(res.Lines, tail(run.stdout, 12)...)
		res.Hint = "the guest triple-faulted: an exception with no IDT to handle it. The registers above say where: " +
			"RIP after mov to CR0 means the page tables do not map the code (present|writable, PS in the PD entry, CR3 = the PML4); " +
			"at the far jump, the GDT (lgdt's limit and base) or the selector; use kvmlab step and stepi to find the instruction"
	case len(com1) == 0:
		res.Hint = "no write to COM1 reached kvmlab: the marker code at long64 never ran. Does the far jump go to long64?"
	case strings.HasPrefix(marker.mode, "long mode (64-bit)") && strings.Contains(marker.efer, "LMA"):
		if !strings.Contains(end, "poweroff") && !strings.Contains(end, "S5") {
			res.Hint = "long mode is right, but the guest did not power off after the marker: keep the write of 0x3400 to port 0x604"
			break
		}
		res.Passed = true
	case strings.HasPrefix(marker.mode, "long mode (compatibility"):
		res.Hint = "EFER.LMA is set, so long mode is active, but CS is not a 64-bit segment: the CPU runs your .code64 bytes " +
			"in compatibility mode. The code descriptor needs L=1 (bit 53) and D=0 (bit 54) (SDM Vol. 3A §5.2.1), and the far jump must load it"
	case strings.Contains(marker.cr0, "PG") && !strings.Contains(marker.efer, "LME"):
		res.Hint = "paging is on but EFER.LME is clear, so this is 32-bit PAE paging, not long mode: set EFER.LME (MSR 0xC0000080, bit 8) before CR0.PG"
	default:
		res.Hint = fmt.Sprintf("the marker was written in %s: long mode needs CR4.PAE, CR3, EFER.LME and then CR0.PG|PE, and a far jump to a 64-bit code segment (README.md)", marker.mode)
	}
	return res
}
