package labs

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"kvmlab/compare"
)

// Lab 6, VM or container: the learner runs `kvmlab compare`, picks three
// facts the VM and the container see differently, and names the isolation
// that causes each. The check runs the comparison itself and grades the
// values against its own report (the rows of compare.Report) and each
// cause against a table of what makes that row differ (namespaces(7),
// cgroups(7), and the VM's own kernel and virtual hardware).

//go:embed files/lab6
var lab6Files embed.FS

func init() {
	register(&Lab{
		N:     6,
		Slug:  "vm-or-container",
		Title: "VM or container: three facts that differ, and the isolation behind each",
		Summary: "Run the same userland as a VM and as a container with kvmlab compare, find three facts the probe " +
			"sees differently, and say which isolation causes each: the VM's own kernel or hardware, or a namespace.",
		Files: func() map[string][]byte { return embedded(lab6Files, "files/lab6", "README.md", "facts.txt") },
		Solution: func() map[string][]byte {
			return map[string][]byte{"facts.txt": mustRead(lab6Files, "files/lab6/solution/facts.txt")}
		},
		Wrong: func() map[string][]byte {
			return map[string][]byte{"facts.txt": mustRead(lab6Files, "files/lab6/wrong/facts.txt")}
		},
		Check: checkLab6,
	})
}

// lab6Causes are the words a learner may give as a cause, each with what
// it means; README.md lists the same.
var lab6Causes = map[string]string{
	"own-kernel":       "the VM runs its own kernel; the container's processes are served by the host's",
	"virtual-hardware": "the VM's CPU, memory and devices are the ones the VMM made (CPUID, KVM)",
	"pid-namespace":    "a PID namespace: the container sees only its own processes",
	"mount-namespace":  "a mount namespace: the container sees only its own mounts (its root, its /dev, read-only /proc parts)",
	"net-namespace":    "a network namespace: the container has its own interfaces (only lo)",
	"uts-namespace":    "a UTS namespace: its own host name",
	"ipc-namespace":    "an IPC namespace: its own System V IPC and POSIX message queues",
	"user-namespace":   "a user namespace: its own user and group IDs",
	"cgroup":           "a control group: limits on memory, CPU and processes",
	"capabilities":     "capabilities dropped from the container's root (capabilities(7))",
}

// lab6Row says how to grade one row of the report.
type lab6Row struct {
	fact    string
	aliases []string
	causes  []string // the accepted causes
	cost    string   // non-empty: a cost, not an isolation fact; why
	loose   bool     // the values change from run to run: not compared
}

var lab6Rows = []lab6Row{
	{fact: "kernel release", aliases: []string{"release", "uname"}, causes: []string{"own-kernel"}},
	{fact: "kernel build", aliases: []string{"kernel version"}, causes: []string{"own-kernel"}},
	{fact: "same kernel instance as the host (boot id)", aliases: []string{"boot id", "boot_id", "same kernel instance"}, causes: []string{"own-kernel"}},
	{fact: "boot id of the kernel under the workload", causes: []string{"own-kernel"}, loose: true}, // the ids are new every boot
	{fact: "kernel uptime when the probe ran", aliases: []string{"uptime", "kernel uptime"}, causes: []string{"own-kernel"}, loose: true},
	{fact: "CPUID hypervisor bit / CPUs / memory", aliases: []string{"cpuid", "hypervisor bit", "cpus", "memory seen"}, causes: []string{"virtual-hardware"}},
	{fact: "start -> probe running", aliases: []string{"start-up", "startup"}, cost: "a start-up time"},
	{fact: "memory used", cost: "a memory cost"},
	{fact: "image on disk", aliases: []string{"image"}, cost: "a size on disk"},
	{fact: "processes visible (PID 1)", aliases: []string{"processes", "processes visible", "pid 1"}, causes: []string{"pid-namespace"}},
	{fact: "mounts visible", aliases: []string{"mounts"}, causes: []string{"mount-namespace"}},
	{fact: "network interfaces", aliases: []string{"interfaces", "network"}, causes: []string{"net-namespace"}},
	{fact: "entries in /dev", aliases: []string{"/dev", "devices"}, causes: []string{"mount-namespace", "own-kernel"}},
	{fact: "kernel modules loaded", aliases: []string{"modules", "kernel modules"}, causes: []string{"own-kernel"}},
	{fact: "kernel log (dmesg) readable", aliases: []string{"dmesg", "kernel log"}, causes: []string{"own-kernel", "capabilities"}},
	{fact: "VM exits / system calls into the host kernel", aliases: []string{"vm exits", "system calls"}, cost: "a count of boundary crossings"},
	{fact: "sysrq c (crash the kernel)", aliases: []string{"sysrq", "sysrq c", "crash"}, causes: []string{"own-kernel", "mount-namespace"}},
	{fact: "host kernel still up afterwards", aliases: []string{"host still up"}, causes: []string{"own-kernel"}},
}

func lab6Lookup(name string) (lab6Row, bool) {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, r := range lab6Rows {
		if n == strings.ToLower(r.fact) || slices.Contains(r.aliases, n) {
			return r, true
		}
	}
	return lab6Row{}, false
}

func checkLab6(ctx context.Context, env *Env, dir string) (Result, error) {
	b, bad := readLearnerFile(dir, "facts.txt", 6)
	if bad != nil {
		return *bad, nil
	}
	claims, err := lab6Claims(b)
	if err != nil {
		return Result{Lines: []string{"facts.txt: " + err.Error()}, Hint: "write each fact as four lines: fact:, vm:, container:, cause: (see README.md)"}, nil
	}
	args := []string{"compare", "--json", "--no-runc"}
	if env.Emulated {
		args = append(args, "--emulated-host")
	}
	env.Logf("lab 6: running kvmlab %s (a VM boot, a container, a guest kernel panic: minutes)", strings.Join(args, " "))
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := env.Command(cctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("kvmlab compare: %w: %s", err, failure(stderr.String(), 3))
	}
	var rep compare.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return Result{}, fmt.Errorf("kvmlab compare --json printed no report: %w", err)
	}
	if rep.VM.Error != "" || rep.Container.Error != "" {
		return Result{}, fmt.Errorf("kvmlab compare: a side failed (VM: %q, container: %q)", rep.VM.Error, rep.Container.Error)
	}
	return gradeLab6(claims, rep.Rows), nil
}

// lab6Claim is one fact the learner wrote.
type lab6Claim struct {
	fact, vm, container, cause string
	line                       int
}

// lab6Claims reads facts.txt: blocks of fact:, vm:, container:, cause:.
func lab6Claims(b []byte) ([]lab6Claim, error) {
	pairs, err := parseAnswers(b)
	if err != nil {
		return nil, err
	}
	var out []lab6Claim
	for _, p := range pairs {
		if p.key == "fact" {
			out = append(out, lab6Claim{fact: p.value, line: p.line})
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("line %d: %q comes before the first \"fact:\" line", p.line, p.key)
		}
		c := &out[len(out)-1]
		switch p.key {
		case "vm":
			c.vm = p.value
		case "container":
			c.container = p.value
		case "cause":
			c.cause = strings.ToLower(p.value)
		default:
			return nil, fmt.Errorf("line %d: unknown key %q (fact, vm, container, cause)", p.line, p.key)
		}
	}
	return out, nil
}

// gradeLab6 grades the claims against the rows of a real report: each
// names a row where the VM and the container differ, gives both values
// as the report shows them, and the cause the table accepts. Three right
// facts on three rows pass; a wrong one fails, with the first hint.
func gradeLab6(claims []lab6Claim, rows []compare.Row) Result {
	var r Result
	real := map[string]compare.Row{}
	for _, row := range rows {
		real[row.Fact] = row
	}
	good := map[string]bool{}
	fail := func(c lab6Claim, what, hint string) {
		r.Lines = append(r.Lines, fmt.Sprintf("fact %q (line %d): %s", c.fact, c.line, what))
		if r.Hint == "" {
			r.Hint = hint
		}
	}
	for _, c := range claims {
		if c.fact == "" {
			fail(c, "empty", "fill in the three facts in facts.txt (README.md says how)")
			continue
		}
		row, ok := lab6Lookup(c.fact)
		if !ok {
			fail(c, "not a row of kvmlab compare's report", "name each fact as the report's first column does, e.g. \"kernel release\" or \"processes visible (PID 1)\"")
			continue
		}
		if row.cost != "" {
			fail(c, "is "+row.cost+", not something isolation hides or changes", "pick facts from the rows about the kernel, the virtual hardware and what the workload sees (README.md)")
			continue
		}
		rr, ok := real[row.fact]
		if !ok {
			return Result{Lines: []string{"this kvmlab compare has no row " + strconv.Quote(row.fact)}, Hint: "the lab and kvmlab compare disagree: update kvmlab"}
		}
		r.Lines = append(r.Lines, fmt.Sprintf("  measured %s: VM %q, container %q", row.fact, rr.VM, rr.Container))
		switch {
		case good[row.fact]:
			fail(c, "the same row twice", "give three different facts")
			continue
		case rr.VM == rr.Container:
			fail(c, fmt.Sprintf("the VM and the container both showed %q", rr.VM), "pick facts where the two columns differ")
			continue
		case c.vm == "" || c.container == "":
			fail(c, "vm: or container: is missing", "write what the VM and the container showed for each fact")
			continue
		case strings.EqualFold(c.vm, c.container):
			fail(c, "the values you wrote for the VM and the container are the same", "write what each side showed: they differ")
			continue
		case !row.loose && !lab6Matches(c.vm, rr.VM):
			fail(c, fmt.Sprintf("you wrote vm: %q, the VM showed %q", c.vm, rr.VM), "copy the values from the report (a leading part of a long one is enough)")
			continue
		case !row.loose && !lab6Matches(c.container, rr.Container):
			fail(c, fmt.Sprintf("you wrote container: %q, the container showed %q", c.container, rr.Container), "copy the values from the report (a leading part of a long one is enough)")
			continue
		}
		if _, known := lab6Causes[c.cause]; !known {
			fail(c, fmt.Sprintf("cause %q is not one of the causes in README.md", c.cause), "name the cause with one of: "+strings.Join(lab6CauseWords(), ", "))
			continue
		}
		if !slices.Contains(row.causes, c.cause) {
			fail(c, fmt.Sprintf("cause %q (%s) does not make this row differ", c.cause, lab6Causes[c.cause]),
				"for \""+row.fact+"\", ask what the container's process is given or denied, and by which mechanism (namespaces(7), cgroups(7)); or whether it is the VM's own kernel or hardware")
			continue
		}
		good[row.fact] = true
		r.Lines = append(r.Lines, fmt.Sprintf("fact %q: right (%s)", row.fact, lab6Causes[c.cause]))
	}
	if len(good) < 3 && r.Hint == "" {
		r.Hint = fmt.Sprintf("%d right fact(s): three are needed", len(good))
	}
	r.Passed = r.Hint == ""
	return r
}

func lab6CauseWords() []string {
	var w []string
	for k := range lab6Causes {
		w = append(w, k)
	}
	slices.Sort(w)
	return w
}

// lab6Matches says whether the learner's value is the report's cell, or
// a leading part of it, token by token: words and small numbers must be
// equal (case aside), numbers of 20 and more may differ by a quarter (a
// process count changes by a kernel worker or two between runs).
func lab6Matches(claim, cell string) bool {
	ct, rt := lab6Tokens(claim), lab6Tokens(cell)
	if len(ct) == 0 || len(ct) > len(rt) {
		return false
	}
	for i, c := range ct {
		r := rt[i]
		cn, err1 := strconv.ParseFloat(c, 64)
		rn, err2 := strconv.ParseFloat(r, 64)
		if err1 == nil && err2 == nil {
			if rn < 20 && cn != rn || rn >= 20 && (cn < rn*0.75 || cn > rn*1.25) {
				return false
			}
			continue
		}
		if !strings.EqualFold(c, r) {
			return false
		}
	}
	return true
}

// lab6Tokens splits a value into words and numbers.
func lab6Tokens(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '.' && r != '-' && r != '+'
	})
}
