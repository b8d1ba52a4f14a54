// Package docs holds kvmlab's guides for learners (the *.md files beside this
// one, embedded in Pages) and the checker that keeps their examples true.
//
// A guide that shows a command and the output "you will see" rots as soon as
// the command or its output changes. So the examples a learner can type are
// written in a form a program can run: a fenced block whose info string is
// "console" (the name GitHub and most Markdown renderers give a shell session)
// holds lines starting with "$ ", the commands, each followed by the output
// it prints. In the expected output a line "..." stands for any number of
// lines (none included), "[...]" inside a line for any text on that line, and
// a last line "(exit status N)" says the command ends with status N instead
// of 0. "console kvm" marks a block that needs /dev/kvm (or root): it runs in
// the emulated host. docs/README.md tells learners the same, at its top.
//
// The fences are CommonMark's (spec 0.31, §4.5 "Fenced code blocks"), read
// simply: three or more backticks or tildes, possibly indented, open a block
// whose info string's first word names its language, and a line of at least
// as many of the same character closes it.
//
// Extract reads such blocks from a page, Split turns a command into its words
// as a POSIX shell would for the simple commands the guides show (quotes,
// backslashes, a "#" comment; no pipes, redirections or variables, which are
// refused), Env.Argv substitutes the built kvmlab for "kvmlab" or
// "bin/kvmlab" and a fresh home directory for "~", and Match compares what the
// command printed (standard output and standard error in one stream, as a
// terminal shows them) with what the page says. TestDocs (this package) runs
// the blocks that need no KVM on the host; TestDocsKVM (package tests) runs
// the others inside the emulated host.
package docs

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pages are the guides, embedded so that a test binary carried into the
// emulated host (which has no source tree) still has them.
//
//go:embed *.md
var Pages embed.FS

// Block is one checked example: a fenced console block of a page.
type Block struct {
	Page  string // file name, e.g. "labs.md"
	Line  int    // line of the opening fence, from 1
	KVM   bool   // "console kvm": runs in the emulated host
	Steps []Step
}

// Name identifies the block in test names and messages: page:line.
func (b Block) Name() string { return fmt.Sprintf("%s:%d", b.Page, b.Line) }

// Step is one command of a block and the output the page promises.
type Step struct {
	Line    int      // line of the "$ " in the page
	Command string   // as written after "$ ", continuation lines joined
	Words   []string // Command split into words (Split)
	Want    []string // expected output lines, patterns included
	Status  int      // expected exit status: 0 unless "(exit status N)"
}

// Wildcards of the expected output (see the package comment).
const (
	AnyLines = "..."
	AnyText  = "[...]"
)

var statusLine = regexp.MustCompile(`^\(exit status ([0-9]{1,3})\)$`)

// ErrFormat is wrapped by every error about the form of a page's blocks.
var ErrFormat = errors.New("docs: malformed console block")

// All extracts the checked blocks of every embedded page, in page order.
func All() ([]Block, error) {
	names, err := fs.Glob(Pages, "*.md")
	if err != nil {
		return nil, fmt.Errorf("docs: listing pages: %w", err)
	}
	var all []Block
	for _, n := range names {
		b, err := fs.ReadFile(Pages, n)
		if err != nil {
			return nil, fmt.Errorf("docs: reading %s: %w", n, err)
		}
		blocks, err := Extract(n, string(b))
		if err != nil {
			return nil, err
		}
		all = append(all, blocks...)
	}
	return all, nil
}

// Extract returns the console blocks of one page. Other fenced blocks (sh,
// none, yaml...) are prose for the reader and are skipped. A console block
// with output before its first command, a command without words, an
// unknown word after "console" or no closing fence is an error, so that a
// typo cannot quietly turn an example into an unchecked one.
func Extract(page, text string) ([]Block, error) {
	var (
		blocks  []Block
		cur     *Block
		fence   string // the opening fence's backticks or tildes, while in a block
		indent  string // the opening fence's indentation
		inOther bool   // inside a fenced block that is not a console block
		pending *Step  // the step whose output lines are being read
		cont    bool   // the previous command line ended with a backslash
	)
	bad := func(line int, format string, a ...any) error {
		return fmt.Errorf("%w: %s:%d: %s", ErrFormat, page, line, fmt.Sprintf(format, a...))
	}
	finish := func() {
		if pending != nil {
			if n := len(pending.Want); n > 0 {
				if m := statusLine.FindStringSubmatch(pending.Want[n-1]); m != nil {
					pending.Status, _ = strconv.Atoi(m[1])
					pending.Want = slices.Clip(pending.Want[:n-1])
					if n == 1 {
						pending.Want = nil
					}
				}
			}
			cur.Steps = append(cur.Steps, *pending)
			pending = nil
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		raw := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimLeft(raw, " ")
		isFence := strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")
		switch {
		case cur == nil && !inOther && isFence:
			ind := raw[:len(raw)-len(trimmed)]
			f := trimmed[:fenceLen(trimmed)]
			info := strings.Fields(trimmed[len(f):])
			if len(info) == 0 || info[0] != "console" {
				inOther, fence = true, f
				continue
			}
			b := Block{Page: page, Line: n}
			for _, w := range info[1:] {
				if w != "kvm" {
					return nil, bad(n, "unknown word %q after console (only kvm is known)", w)
				}
				b.KVM = true
			}
			cur, fence, indent = &b, f, ind
		case inOther:
			if isFence && strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				inOther = false
			}
		case cur != nil && isFence && strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "":
			if cont {
				return nil, bad(n, "the command before the closing fence ends with a backslash")
			}
			finish()
			if len(cur.Steps) == 0 {
				return nil, bad(cur.Line, "a console block without a command (a line starting with \"$ \")")
			}
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			line := strings.TrimPrefix(raw, indent)
			if cont {
				cmd := strings.TrimSuffix(strings.TrimSpace(line), `\`)
				pending.Command += " " + strings.TrimSpace(cmd)
				cont = strings.HasSuffix(line, `\`)
				if !cont {
					if err := pending.split(page); err != nil {
						return nil, err
					}
				}
				continue
			}
			if strings.HasPrefix(line, "$ ") || line == "$" {
				finish()
				cmd := strings.TrimSpace(strings.TrimPrefix(line, "$"))
				pending = &Step{Line: n, Command: strings.TrimSpace(strings.TrimSuffix(cmd, `\`))}
				cont = strings.HasSuffix(cmd, `\`)
				if !cont {
					if err := pending.split(page); err != nil {
						return nil, err
					}
				}
				continue
			}
			if pending == nil {
				return nil, bad(n, "output before the first command: commands start with \"$ \"")
			}
			pending.Want = append(pending.Want, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("docs: reading %s: %w", page, err)
	}
	if cur != nil {
		return nil, bad(cur.Line, "console block never closed")
	}
	return blocks, nil
}

// fenceLen is the length of the run of backticks or tildes opening s.
func fenceLen(s string) int {
	i := 0
	for i < len(s) && s[i] == s[0] {
		i++
	}
	return i
}

func (s *Step) split(page string) error {
	w, err := Split(s.Command)
	if err != nil {
		return fmt.Errorf("%w: %s:%d: %w", ErrFormat, page, s.Line, err)
	}
	if len(w) == 0 {
		return fmt.Errorf("%w: %s:%d: a command with no words", ErrFormat, page, s.Line)
	}
	s.Words = w
	return nil
}

// Split breaks a command line into words following the POSIX shell's quoting
// rules (XCU §2.2): '...' keeps everything, "..." keeps everything but
// backslash before " \ $ `, a backslash outside quotes keeps the next
// character, and an unquoted "#" at the start of a word begins a comment. The
// checker runs commands without a shell, so what would need one (pipes,
// redirections, ";", "&", "$" expansions, globs, backquotes) is refused
// rather than passed on as literal words.
func Split(line string) ([]string, error) {
	var (
		words []string
		w     strings.Builder
		in    bool // a word has started (possibly empty: '')
	)
	end := func() {
		if in {
			words = append(words, w.String())
		}
		w.Reset()
		in = false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			end()
		case c == '#' && !in:
			return words, nil
		case c == '\\':
			if i+1 == len(line) {
				return nil, errors.New("a backslash at the end of the command")
			}
			i++
			w.WriteByte(line[i])
			in = true
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("an unclosed ' quote")
			}
			w.WriteString(line[i+1 : i+1+j])
			i += j + 1
			in = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				switch line[i] {
				case '$', '`':
					return nil, fmt.Errorf("%q inside double quotes needs a shell: the checker runs commands without one", line[i])
				case '\\':
					if i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
						i++
					}
				}
				w.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, errors.New(`an unclosed " quote`)
			}
			in = true
		case strings.IndexByte("|&;<>()$`*?[", c) >= 0:
			return nil, fmt.Errorf("%q needs a shell: the checker runs commands without one (quote it if it is meant literally)", c)
		default:
			w.WriteByte(c)
			in = true
		}
	}
	end()
	return words, nil
}

// Env is where a block's commands run.
type Env struct {
	Bin      string // the kvmlab binary: KVMLAB_BIN
	GuestDir string // the default guest: KVMLAB_GUEST_DIR
	Home     string // a fresh home directory for the block: "~"
	Dir      string // the working directory, fresh for the block
}

// Argv substitutes the words of a command as the table in docs/README.md
// says: the binary under test for "kvmlab" or "bin/kvmlab", nothing for a
// "sudo" before it, the block's home for "~" and "~/..." at the start of a
// word (Prepare links the guest into it). Only kvmlab
// itself runs: the emulated host has no other programs, and a guide's other
// commands are the learner's own (an editor, gdb, mkfs).
func (e Env) Argv(words []string) ([]string, error) {
	if len(words) > 0 && words[0] == "sudo" {
		words = words[1:]
	}
	if len(words) == 0 || (words[0] != "kvmlab" && words[0] != "bin/kvmlab") {
		return nil, fmt.Errorf("only kvmlab commands are checked, not %q", strings.Join(words, " "))
	}
	out := []string{e.Bin}
	for _, w := range words[1:] {
		switch {
		case w == "~":
			w = e.Home
		case strings.HasPrefix(w, "~/"):
			w = filepath.Join(e.Home, w[2:])
		}
		out = append(out, w)
	}
	return out, nil
}

// Prepare makes the fresh home of a block: Home/.cache/kvmlab/default is a
// link to the guest, and Home/.cache/kvmlab/vmlinux to shared, the cache of
// decompressed kernels every block may share (so that each block does not
// decompress the guest's kernel again).
func (e Env) Prepare(shared string) error {
	c := filepath.Join(e.Home, ".cache", "kvmlab")
	if err := os.MkdirAll(c, 0o755); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	if err := os.Symlink(e.GuestDir, filepath.Join(c, "default")); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	if shared != "" {
		if err := os.MkdirAll(shared, 0o755); err != nil {
			return fmt.Errorf("docs: %w", err)
		}
		if err := os.Symlink(shared, filepath.Join(c, "vmlinux")); err != nil {
			return fmt.Errorf("docs: %w", err)
		}
	}
	return nil
}

// Run runs one step in e and returns what it printed (standard output and
// standard error through one pipe, in the order written, as on a terminal),
// its exit status, and an error only when it could not be run at all. Its
// standard input is empty.
func (e Env) Run(ctx context.Context, s Step) (string, int, error) {
	argv, err := e.Argv(s.Words)
	if err != nil {
		return "", 0, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = e.Dir
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CACHE_HOME=")
	})
	cmd.Env = append(env, "HOME="+e.Home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out // one pipe: os/exec shares it when both are the same writer
	// kvmlab re-executes itself (run, container): on a hang, the whole
	// process group goes, and Wait does not wait on a pipe a child holds.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0, nil
	case errors.As(err, &ee) && ee.Exited():
		return out.String(), ee.ExitCode(), nil
	case ctx.Err() != nil:
		return out.String(), -1, fmt.Errorf("%s: %w (output so far above)", s.Command, ctx.Err())
	default:
		return out.String(), -1, fmt.Errorf("%s: %w", s.Command, err)
	}
}

// Check runs a step and compares its output and status with the page's.
func (e Env) Check(ctx context.Context, s Step) error {
	got, status, err := e.Run(ctx, s)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, got)
	}
	if err := Match(s.Want, got); err != nil {
		return fmt.Errorf("$ %s (line %d): %w", s.Command, s.Line, err)
	}
	if status != s.Status {
		return fmt.Errorf("$ %s (line %d): exit status %d, the page says %d\noutput:\n%s", s.Command, s.Line, status, s.Status, got)
	}
	return nil
}

// Check prepares e (Prepare) and runs the steps of b in it in order, each
// bounded by limit (a guard against a hang, not a timed assertion), logging
// each step that is as the page says; it stops at the first that is not.
func (b Block) Check(e Env, shared string, limit time.Duration, logf func(format string, a ...any)) error {
	if err := e.Prepare(shared); err != nil {
		return err
	}
	for _, s := range b.Steps {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		err := e.Check(ctx, s)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
		logf("%s:%d: $ %s: as the page says", b.Page, s.Line, s.Command)
	}
	return nil
}

// Match reports whether output, split into lines (trailing blanks of each
// line and empty lines at the end dropped, as a Markdown editor drops them
// from a page), fits want, with its "..." lines and "[...]" wildcards. The
// error names the first line of want that could not be matched and shows the
// whole output.
func Match(want []string, output string) error {
	got := strings.Split(strings.ReplaceAll(output, "\r", ""), "\n")
	for i := range got {
		got[i] = strings.TrimRight(got[i], " \t")
	}
	for len(got) > 0 && got[len(got)-1] == "" {
		got = got[:len(got)-1]
	}
	// A line-by-line match with backtracking at each "...": memo[i][j]
	// remembers that want[i:] cannot match got[j:], so the search is
	// O(len(want)·len(got)). furthest is how far into want any attempt
	// got, which names the line to blame.
	memo := make(map[[2]int]bool)
	furthest := 0
	var match func(i, j int) bool
	match = func(i, j int) bool {
		furthest = max(furthest, i)
		if i == len(want) {
			return j == len(got)
		}
		if memo[[2]int{i, j}] {
			return false
		}
		ok := false
		if want[i] == AnyLines {
			for k := j; k <= len(got) && !ok; k++ {
				ok = match(i+1, k)
			}
		} else {
			ok = j < len(got) && matchLine(want[i], got[j]) && match(i+1, j+1)
		}
		if !ok {
			memo[[2]int{i, j}] = true
		}
		return ok
	}
	if match(0, 0) {
		return nil
	}
	if furthest == len(want) {
		return fmt.Errorf("the output goes on after the last expected line\noutput:\n%s", strings.Join(got, "\n"))
	}
	return fmt.Errorf("no output line matches expected line %d, %q\noutput:\n%s", furthest+1, want[furthest], strings.Join(got, "\n"))
}

// matchLine matches one output line against one expected line: literal
// bytes, with "[...]" any text. Compared as bytes, not as a regular
// expression, so that nothing in a page (invalid UTF-8 included) is
// special. The leftmost place for each literal part is the right one: a
// later place would leave less room for the parts after it.
func matchLine(want, got string) bool {
	parts := strings.Split(strings.TrimRight(want, " \t"), AnyText)
	if len(parts) == 1 {
		return parts[0] == got
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(got) < len(first)+len(last) || !strings.HasPrefix(got, first) || !strings.HasSuffix(got, last) {
		return false
	}
	rest := got[len(first) : len(got)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return true
}
