// Package docs holds kvmlab's guides for learners (the *.md files beside this
// one, embedded in Pages) and the checker that keeps their examples true.
//
// A guide that shows a command and the output "you will see" rots as soon as
// the command or its output changes. So the examples a learner can type are
// written in a form a program can run: a fenced block whose info string is
// "console" (the name GitHub and most Markdown renderers give a shell session)
// holds lines starting with "$ ", the commands, each followed by the output
// it prints. In the expected output a line "..." stands for any number of
// lines (none included), "[...]" inside a line for any text on that line,
// "[N]" inside a line for a number (a count or a time that changes from run
// to run, where the rest of the line does not), and a last line "(exit
// status N)" says the command ends with status N instead of 0. "console
// kvm" marks a block that needs /dev/kvm (or root): it runs in the emulated
// host. "console emulated-host" marks one whose commands boot the emulated
// host themselves (kvmlab run --emulated-host): they need no KVM, so they
// run on the host, but each takes minutes, so not among the quick ones.
// "unprivileged" (with either, or alone) marks a block whose commands a
// user who is not root types, such as a rootless container: a checker
// running as root runs them as the user nobody. A block whose info string
// is "file NAME" shows a file the next console block's commands use (a
// stepper session, a test script): the checker writes it into that block's
// working directory first, so the page shows every input the output
// depends on. Two programs at once, such as
// kvmlab run and gdb or kvmlab control, are shown as a shell runs them: a
// command ending with "&" runs in the background, the lines under it are
// what it prints before the reader types the next command (the checker
// waits for them, as the reader does), and "wait" waits for it to end and
// shows what it printed after those lines. "< FILE" gives a command its
// standard input (a background kvmlab run reads /dev/null, not the
// terminal). docs/README.md tells learners the same, at its top.
//
// The fences are CommonMark's (spec 0.31, §4.5 "Fenced code blocks"), read
// simply: three or more backticks or tildes, possibly indented, open a block
// whose info string's first word names its language, and a line of at least
// as many of the same character closes it.
//
// Extract reads such blocks from a page, Command turns a command into its
// words as a POSIX shell would for the simple commands the guides show
// (quotes, backslashes, a "#" comment, "< FILE" and a last "&"; no pipes,
// other redirections or variables, which are refused), Env.Argv substitutes the built kvmlab for "kvmlab" or
// "bin/kvmlab" and a fresh home directory for "~" (and runs the few other
// programs in Tools), and Match compares what the
// command printed (standard output and standard error in one stream, as a
// terminal shows them) with what the page says. TestDocs (this package) runs
// the blocks that need no KVM on the host; TestDocsKVM (package tests) runs
// the "console kvm" ones inside the emulated host; TestDocsEmulatedHost
// (this package) runs the "console emulated-host" ones on the host, each
// command booting an emulated host of its own.
package docs

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	Page string // file name, e.g. "labs.md"
	Line int    // line of the opening fence, from 1
	KVM  bool   // "console kvm": runs in the emulated host
	// EmulatedHost is "console emulated-host": its commands boot the
	// emulated host themselves (kvmlab run --emulated-host), as on a
	// machine without a usable /dev/kvm, so it runs on this machine,
	// minutes a command.
	EmulatedHost bool
	// Unprivileged is "unprivileged" after console: the commands run as
	// a user who is not root (Nobody, when the checker is root).
	Unprivileged bool
	Steps        []Step
	// Files are the "file NAME" blocks just before this one on the page:
	// written into the working directory before the first step.
	Files []File
}

// File is a file a block's commands use (a script, a stepper session),
// shown on the page as a fenced block whose info string is "file NAME".
type File struct {
	Name string // relative, slash-separated, within the working directory
	Data []byte
	Line int // the opening fence's line
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
	// Stdin is the file after a "<" in the command ("" for none: the
	// checker's standard input is empty).
	Stdin string
	// Background is a command ending with "&": the checker starts it and
	// goes on once it has printed Want (see Block.Check); "wait" shows
	// what it printed after that and waits for it to end.
	Background bool
}

// Wildcards of the expected output (see the package comment).
const (
	AnyLines  = "..."
	AnyText   = "[...]"
	AnyNumber = "[N]"
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

// Extract returns the console blocks of one page, each with the "file NAME"
// blocks just before it. Other fenced blocks (sh, none, yaml...) are prose
// for the reader and are skipped. A console block
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
		file    *File  // inside a "file NAME" block
		files   []File // file blocks waiting for the next console block
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
			if len(info) > 0 && info[0] == "file" {
				if len(info) != 2 || !filepath.IsLocal(info[1]) || strings.Contains(info[1], `\`) {
					return nil, bad(n, "a file block is \"file NAME\", NAME a relative path inside the working directory")
				}
				file = &File{Name: info[1], Line: n}
				inOther, fence, indent = true, f, ind
				continue
			}
			if len(info) == 0 || info[0] != "console" {
				inOther, fence = true, f
				continue
			}
			b := Block{Page: page, Line: n, Files: files}
			files = nil
			for _, w := range info[1:] {
				switch w {
				case "kvm":
					b.KVM = true
				case "emulated-host":
					b.EmulatedHost = true
				case "unprivileged":
					b.Unprivileged = true
				default:
					return nil, bad(n, "unknown word %q after console (known: kvm, emulated-host, unprivileged)", w)
				}
			}
			if b.KVM && b.EmulatedHost {
				// One runs inside the emulated host, the other boots
				// one: an emulated host inside another is out of reach.
				return nil, bad(n, "a block is console kvm (run inside the emulated host) or console emulated-host (boot one), not both")
			}
			cur, fence, indent = &b, f, ind
		case inOther:
			if isFence && strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				inOther = false
				if file != nil {
					files = append(files, *file)
					file = nil
				}
			} else if file != nil {
				file.Data = append(append(file.Data, strings.TrimPrefix(sc.Text(), indent)...), '\n')
			}
		case cur != nil && isFence && strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "":
			if cont {
				return nil, bad(n, "the command before the closing fence ends with a backslash")
			}
			finish()
			if len(cur.Steps) == 0 {
				return nil, bad(cur.Line, "a console block without a command (a line starting with \"$ \")")
			}
			if err := cur.checkJobs(); err != nil {
				return nil, err
			}
			if cur.Unprivileged {
				for _, s := range cur.Steps {
					if s.Words[0] == "sudo" {
						return nil, bad(s.Line, "sudo in an unprivileged block: its commands are those of a user who is not root")
					}
				}
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
	if file != nil {
		return nil, bad(file.Line, "file block never closed")
	}
	if len(files) > 0 {
		return nil, bad(files[0].Line, "file block %s with no console block after it to use it", files[0].Name)
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
	w, stdin, bg, err := Command(s.Command)
	if err != nil {
		return fmt.Errorf("%w: %s:%d: %w", ErrFormat, page, s.Line, err)
	}
	if len(w) == 0 {
		return fmt.Errorf("%w: %s:%d: a command with no words", ErrFormat, page, s.Line)
	}
	s.Words, s.Stdin, s.Background = w, stdin, bg
	return nil
}

// checkJobs refuses the block forms Block.Check could not run: "wait" with
// an operand other than %N of a job started before it, a background
// command with an exit status of its own (wait reports it), and a block
// that ends without waiting for its background commands, which would leave
// what they print after their lines unchecked.
func (b Block) checkJobs() error {
	var waited []bool // by job, from job 1
	for _, s := range b.Steps {
		jobs := len(waited)
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%w: %s:%d: %s", ErrFormat, b.Page, s.Line, fmt.Sprintf(format, a...))
		}
		switch {
		case s.Background && s.Status != 0:
			return bad("a command in the background has no exit status of its own here: put it under wait %%%d", jobs+1)
		case s.Background:
			waited = append(waited, false)
		case s.Words[0] == "wait":
			n, err := waitJob(s.Words)
			if err != nil || n > jobs || jobs == 0 {
				return bad("wait takes no operand or %%N, N a job started before it (%d so far)", jobs)
			}
			for i := range waited {
				if n == 0 || i == n-1 {
					waited[i] = true
				}
			}
		}
	}
	if slices.Contains(waited, false) {
		return fmt.Errorf("%w: %s:%d: the block ends with a command still in the background: end it with wait", ErrFormat, b.Page, b.Line)
	}
	return nil
}

// waitJob is the job wait names: 0 for every job, N for "%N".
func waitJob(words []string) (int, error) {
	switch {
	case len(words) == 1:
		return 0, nil
	case len(words) == 2 && strings.HasPrefix(words[1], "%"):
		n, err := strconv.Atoi(words[1][1:])
		if err != nil || n < 1 {
			return 0, fmt.Errorf("wait %s: not a job", words[1])
		}
		return n, nil
	}
	return 0, errors.New("wait takes no operand or %N")
}

// Split breaks a command line into words following the POSIX shell's quoting
// rules (XCU §2.2): '...' keeps everything, "..." keeps everything but
// backslash before " \ $ `, a backslash outside quotes keeps the next
// character, and an unquoted "#" at the start of a word begins a comment. The
// checker runs commands without a shell, so what would need one (pipes,
// redirections, ";", "&", "$" expansions, globs, backquotes) is refused
// rather than passed on as literal words.
func Split(line string) ([]string, error) {
	words, _, _, err := split(line, false)
	return words, err
}

// Command is Split for a console block's command, which may also end with
// the two shell forms the checker runs itself: "< FILE", standard input
// from FILE (a word without quotes; the only redirection, XCU §2.7.1),
// and a last "&", which runs the command in the background (an
// asynchronous list, XCU §2.9.3; Block.Check).
func Command(line string) (words []string, stdin string, background bool, err error) {
	return split(line, true)
}

func split(line string, jobs bool) (words []string, stdin string, bg bool, err error) {
	var (
		w  strings.Builder
		in bool // a word has started (possibly empty: '')
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
			return words, stdin, bg, nil
		case jobs && c == '<' && stdin == "":
			end()
			j := i + 1
			for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
				j++
			}
			k := j
			for k < len(line) && line[k] != ' ' && line[k] != '\t' {
				if strings.IndexByte("|&;<>()$`*?['\"\\#", line[k]) >= 0 {
					return nil, "", false, fmt.Errorf("%q in the file after <: name it as a plain word", line[k])
				}
				k++
			}
			if k == j {
				return nil, "", false, errors.New("a < without a file after it")
			}
			stdin = line[j:k]
			i = k - 1
		case jobs && c == '&':
			end()
			rest := strings.TrimSpace(line[i+1:])
			if rest != "" && !strings.HasPrefix(rest, "#") {
				return nil, "", false, errors.New("a & that does not end the command needs a shell: the checker runs only a last & itself")
			}
			return words, stdin, true, nil
		case c == '\\':
			if i+1 == len(line) {
				return nil, "", false, errors.New("a backslash at the end of the command")
			}
			i++
			w.WriteByte(line[i])
			in = true
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, "", false, errors.New("an unclosed ' quote")
			}
			w.WriteString(line[i+1 : i+1+j])
			i += j + 1
			in = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				switch line[i] {
				case '$', '`':
					return nil, "", false, fmt.Errorf("%q inside double quotes needs a shell: the checker runs commands without one", line[i])
				case '\\':
					if i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
						i++
					}
				}
				w.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, "", false, errors.New(`an unclosed " quote`)
			}
			in = true
		case strings.IndexByte("|&;<>()$`*?[", c) >= 0:
			return nil, "", false, fmt.Errorf("%q needs a shell: the checker runs commands without one (quote it if it is meant literally)", c)
		default:
			w.WriteByte(c)
			in = true
		}
	}
	end()
	return words, stdin, bg, nil
}

// Env is where a block's commands run.
type Env struct {
	Bin      string // the kvmlab binary: KVMLAB_BIN
	GuestDir string // the default guest: KVMLAB_GUEST_DIR
	Home     string // a fresh home directory for the block: "~"
	Dir      string // the working directory, fresh for the block
	// HostKernels, when not "", is the emulated host's kernel cache
	// (package emuhost: ~/.cache/kvmlab/hostkernel, a Debian kernel and
	// its KVM modules), linked into the fresh home as the guest is, so
	// that kvmlab run --emulated-host finds it there instead of
	// downloading the kernel again for every block.
	HostKernels string
	// Environ is added to each command's environment ("KEY=value"). The
	// emulated host's /init is built with go build when the host boots,
	// and Go finds its build and module caches through HOME unless told:
	// TestDocsEmulatedHost passes them here, so that a fresh home does
	// not mean a cold build and a module download.
	Environ []string

	as *syscall.Credential // the user the commands run as; nil: the checker's
}

// Nobody is the user and group ID an unprivileged block's commands run as
// when the checker is root: nobody and nogroup on Debian and its
// derivatives (the overflow IDs of the kernel's user namespaces too).
const Nobody = 65534

// Tools are the programs other than kvmlab a checked command may run: GNU
// as and ld, which build the labs' guests, mkfs.ext4 and debugfs, which
// carry files into a disk image and out of it, ip, which makes the TAP a
// virtio network card needs (docs/virtio.md), and gdb, which debugs the
// guest kernel (docs/gdb.md). The integration tests carry them into the
// emulated host (tests/main_test.go, hostTools; gdb through hostFiles in
// tests/gdb_test.go), which has no other programs; a guide's other
// commands (an editor, make, jq) are the learner's own and are shown in
// plain blocks.
var Tools = []string{"as", "ld", "mkfs.ext4", "debugfs", "ip", "gdb"}

// Argv substitutes the words of a command as the table in docs/README.md
// says: the binary under test for "kvmlab" or "bin/kvmlab", nothing for a
// "sudo" before it, the block's home for "~" and "~/..." at the start of a
// word (Prepare links the guest into it). Besides kvmlab, only Tools run,
// found in PATH.
func (e Env) Argv(words []string) ([]string, error) {
	if len(words) > 0 && words[0] == "sudo" {
		words = words[1:]
	}
	if len(words) == 0 || (words[0] != "kvmlab" && words[0] != "bin/kvmlab" && !slices.Contains(Tools, words[0])) {
		return nil, fmt.Errorf("only kvmlab and %s commands are checked, not %q", strings.Join(Tools, ", "), strings.Join(words, " "))
	}
	out := []string{e.Bin}
	if words[0] != "kvmlab" && words[0] != "bin/kvmlab" {
		out = []string{words[0]}
	}
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
// link to the guest, Home/.cache/kvmlab/vmlinux to shared, the cache of
// decompressed kernels every block may share (so that each block does not
// decompress the guest's kernel again), and Home/.cache/kvmlab/hostkernel
// to HostKernels when it is set.
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
	if e.HostKernels != "" {
		if err := os.Symlink(e.HostKernels, filepath.Join(c, "hostkernel")); err != nil {
			return fmt.Errorf("docs: %w", err)
		}
	}
	return nil
}

// Run runs one step in e and returns what it printed (standard output and
// standard error through one pipe, in the order written, as on a terminal),
// its exit status, and an error only when it could not be run at all. Its
// standard input is the step's Stdin, or empty.
func (e Env) Run(ctx context.Context, s Step) (string, int, error) {
	var out bytes.Buffer
	cmd, done, err := e.command(ctx, s, &out)
	if err != nil {
		return "", 0, err
	}
	defer done()
	err = cmd.Run()
	status, err := exitStatus(ctx, s, err)
	return out.String(), status, err
}

// command is the process for step s: Argv's program in the block's
// directory, with its home, its standard input and out for both output
// streams. done closes the standard input file.
func (e Env) command(ctx context.Context, s Step, out io.Writer) (cmd *exec.Cmd, done func(), err error) {
	argv, err := e.Argv(s.Words)
	if err != nil {
		return nil, nil, err
	}
	cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = e.Dir
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CACHE_HOME=")
	})
	cmd.Env = append(append(env, e.Environ...), "HOME="+e.Home)
	done = func() {}
	if s.Stdin != "" {
		p := e.path(s.Stdin)
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: standard input: %w", s.Command, err)
		}
		cmd.Stdin, done = f, func() { f.Close() }
	}
	cmd.Stdout, cmd.Stderr = out, out // one pipe: os/exec shares it when both are the same writer
	// kvmlab re-executes itself (run, container): on a hang, the whole
	// process group goes, and Wait does not wait on a pipe a child holds.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: e.as}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd, done, nil
}

// path is a file a command names, as a shell would find it: "~" is the
// block's home, a relative name is in the block's directory.
func (e Env) path(p string) string {
	switch {
	case p == "~":
		return e.Home
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(e.Home, p[2:])
	case filepath.IsAbs(p):
		return p
	}
	return filepath.Join(e.Dir, p)
}

// exitStatus is the status a shell reports for a command that ended with
// err: its exit code, or 128 plus the signal that killed it.
func exitStatus(ctx context.Context, s Step, err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case ctx.Err() != nil:
		return -1, fmt.Errorf("%s: %w (output so far above)", s.Command, ctx.Err())
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
	}
	return -1, fmt.Errorf("%s: %w", s.Command, err)
}

// Check runs a step and compares its output and status with the page's.
func (e Env) Check(ctx context.Context, s Step) error {
	got, status, err := e.Run(ctx, s)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, got)
	}
	return s.compare(got, status)
}

// compare compares what a step printed and its status with the page's.
func (s Step) compare(got string, status int) error {
	if err := Match(s.Want, got); err != nil {
		return fmt.Errorf("$ %s (line %d): %w", s.Command, s.Line, err)
	}
	if status != s.Status {
		return fmt.Errorf("$ %s (line %d): exit status %d, the page says %d\noutput:\n%s", s.Command, s.Line, status, s.Status, got)
	}
	return nil
}

// job is a command started in the background ("&"): the shell's job.
type job struct {
	step   Step
	cmd    *exec.Cmd
	out    lockedBuffer
	done   chan struct{} // closed when it has ended
	status int           // its exit status, once done
	err    error         // why it could not be waited for, once done
	shown  int           // how much of out the page has shown so far
}

// lockedBuffer is what a background command printed, read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start starts s in the background. Its life is bounded by limit, as a
// step's is.
func (e Env) start(s Step, limit time.Duration) (*job, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	j := &job{step: s, done: make(chan struct{})}
	cmd, closeIn, err := e.command(ctx, s, &j.out)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		closeIn()
		return nil, fmt.Errorf("%s: %w", s.Command, err)
	}
	j.cmd = cmd
	go func() {
		err := cmd.Wait()
		j.status, j.err = exitStatus(ctx, s, err)
		cancel()
		closeIn()
		close(j.done)
	}()
	return j, nil
}

// awaitLines waits until j has printed the lines the page shows under its
// command, as a reader waits for them before typing the next command (a
// prompt, "listening on..."), and marks them shown. It fails when j ends
// or its limit passes first.
func (j *job) awaitLines() error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-j.done:
		case <-tick.C:
		}
		got := j.out.String()
		if n, ok := matchPrefix(j.step.Want, got); ok {
			j.shown = n
			return nil
		}
		select {
		case <-j.done:
			if j.err != nil {
				return fmt.Errorf("%w\n%s", j.err, got)
			}
			return fmt.Errorf("$ %s (line %d): it ended (exit status %d) before printing what the page shows under it: %w",
				j.step.Command, j.step.Line, j.status, Match(j.step.Want, got))
		default:
		}
	}
}

// kill ends j, if it still runs, and waits for it.
func (j *job) kill() {
	select {
	case <-j.done:
	default:
		_ = syscall.Kill(-j.cmd.Process.Pid, syscall.SIGKILL)
		<-j.done
	}
}

// wait is the shell's wait: it waits for the jobs it names (all, or "%N"),
// and its output is what they printed after the lines already shown,
// in the order they were started. Its status is job N's, or 0 for all
// (POSIX, XCU wait).
func wait(s Step, jobs []*job) (string, int, error) {
	n, err := waitJob(s.Words)
	if err != nil {
		return "", 0, err
	}
	var out strings.Builder
	status := 0
	for i, j := range jobs {
		if n != 0 && i != n-1 {
			continue
		}
		<-j.done
		if j.err != nil {
			return j.out.String(), -1, j.err
		}
		got := j.out.String()
		out.WriteString(got[j.shown:])
		j.shown = len(got)
		if n != 0 {
			status = j.status
		}
	}
	return out.String(), status, nil
}

// Check prepares e (Prepare) and runs the steps of b in it in order, each
// bounded by limit (a guard against a hang, not a timed assertion), logging
// each step that is as the page says, with its output; it stops at the
// first that is not. A command ending with "&" runs in the background, as
// in a shell: Check goes on to the next command once it has printed the
// lines the page shows under it, and a later "wait" waits for it to end
// and checks what it printed after those lines. What still runs when
// Check returns (after a failure) is killed.
func (b Block) Check(e Env, shared string, limit time.Duration, logf func(format string, a ...any)) error {
	if err := e.Prepare(shared); err != nil {
		return err
	}
	for _, f := range b.Files {
		// A script the page shows starting with "#!" is one to run.
		mode := os.FileMode(0o644)
		if bytes.HasPrefix(f.Data, []byte("#!")) {
			mode = 0o755
		}
		p := filepath.Join(e.Dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("docs: %w", err)
		}
		if err := os.WriteFile(p, f.Data, mode); err != nil {
			return fmt.Errorf("docs: %w", err)
		}
	}
	if b.Unprivileged && os.Geteuid() == 0 {
		if err := e.giveTo(Nobody, Nobody); err != nil {
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
		// No supplementary groups: Groups is empty and setgroups is
		// called, so root's groups are not kept.
		e.as = &syscall.Credential{Uid: Nobody, Gid: Nobody}
	}
	var jobs []*job
	defer func() {
		for _, j := range jobs {
			j.kill()
		}
	}()
	for _, s := range b.Steps {
		var got string
		switch {
		case s.Background:
			j, err := e.start(s, limit)
			if err != nil {
				return fmt.Errorf("%s: %w", b.Name(), err)
			}
			jobs = append(jobs, j)
			if err := j.awaitLines(); err != nil {
				return fmt.Errorf("%s: %w", b.Name(), err)
			}
			got = j.out.String()[:j.shown]
		case s.Words[0] == "wait":
			out, status, err := wait(s, jobs)
			if err == nil {
				err = s.compare(out, status)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", b.Name(), err)
			}
			got = out
		default:
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			out, status, err := e.Run(ctx, s)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w\n%s", b.Name(), err, out)
			}
			if err := s.compare(out, status); err != nil {
				return fmt.Errorf("%s: %w", b.Name(), err)
			}
			got = out
		}
		logf("%s:%d: $ %s: as the page says (exit status %d); it printed:\n%s", b.Page, s.Line, s.Command, s.Status, got)
	}
	return nil
}

// giveTo hands the block's home and working directory, prepared and with
// its files, to the user uid (group gid) its commands will run as. The
// guest in the home becomes a copy of its kernel and initramfs: GuestDir
// may be under root's home, which others cannot enter. Every directory
// above Home and Dir must let others through (mode o+x): the caller's
// directories (t.TempDir's are 0700) are not changed here, but named.
func (e Env) giveTo(uid, gid int) error {
	for _, d := range []string{e.Home, e.Dir} {
		for p := filepath.Dir(d); ; p = filepath.Dir(p) {
			st, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("docs: %w", err)
			}
			if st.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("docs: uid %d cannot reach %s: %s has mode %v (an unprivileged block needs directories others may enter)", uid, d, p, st.Mode().Perm())
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	def := filepath.Join(e.Home, ".cache", "kvmlab", "default")
	if err := os.Remove(def); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	if err := os.Mkdir(def, 0o755); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	for _, f := range []string{"bzImage", "initramfs.cpio"} {
		if err := copyFile(filepath.Join(e.GuestDir, f), filepath.Join(def, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("docs: the guest for an unprivileged block: %w", err)
		}
	}
	for _, d := range []string{e.Home, e.Dir} {
		err := filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		})
		if err != nil {
			return fmt.Errorf("docs: %w", err)
		}
	}
	return nil
}

// copyFile copies the file src (a link followed) to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Match reports whether output, split into lines (trailing blanks of each
// line and empty lines at the end dropped, as a Markdown editor drops them
// from a page), fits want, with its "..." lines and "[...]" wildcards. The
// error names the first line of want that could not be matched and shows the
// whole output.
func Match(want []string, output string) error {
	got := outputLines(output)
	ok, furthest := matchLines(want, got)
	if ok {
		return nil
	}
	if furthest == len(want) {
		return fmt.Errorf("the output goes on after the last expected line\noutput:\n%s", strings.Join(got, "\n"))
	}
	return fmt.Errorf("no output line matches expected line %d, %q\noutput:\n%s", furthest+1, want[furthest], strings.Join(got, "\n"))
}

// outputLines splits output into lines as Match compares them.
func outputLines(output string) []string {
	got := strings.Split(strings.ReplaceAll(output, "\r", ""), "\n")
	for i := range got {
		got[i] = strings.TrimRight(got[i], " \t")
	}
	for len(got) > 0 && got[len(got)-1] == "" {
		got = got[:len(got)-1]
	}
	return got
}

// matchLines matches want against got line by line, with backtracking at
// each "...": memo[i][j] remembers that want[i:] cannot match got[j:], so
// the search is O(len(want)·len(got)). furthest is how far into want any
// attempt got, which names the line to blame.
func matchLines(want, got []string) (ok bool, furthest int) {
	memo := make(map[[2]int]bool)
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
	return match(0, 0), furthest
}

// matchPrefix reports whether the lines output begins with fit want, and
// where in output they end: the end of the first line after which they do.
// A last line without its newline counts (a prompt waits on one), so a
// background command's lines can be awaited while it prints.
func matchPrefix(want []string, output string) (int, bool) {
	if len(want) == 0 {
		return 0, true
	}
	for end := 0; end < len(output); {
		i := strings.IndexByte(output[end:], '\n')
		if i < 0 {
			end = len(output)
		} else {
			end += i + 1
		}
		if ok, _ := matchLines(want, outputLines(output[:end])); ok {
			return end, true
		}
	}
	return 0, false
}

// matchLine matches one output line against one expected line: literal
// bytes, with "[...]" any text and "[N]" a number. Compared as bytes, not
// as a regular expression, so that nothing else in a page (invalid UTF-8
// included) is special. Each wildcard tries every length it may take,
// and memo remembers the (pattern part, position) pairs that failed, so
// a line costs at most parts × length² steps.
func matchLine(want, got string) bool {
	parts := patternParts(strings.TrimRight(want, " \t"))
	if len(parts) == 1 {
		return parts[0] == got
	}
	memo := make(map[[2]int]bool)
	var match func(i, pos int) bool
	match = func(i, pos int) bool {
		if i == len(parts) {
			return pos == len(got)
		}
		if memo[[2]int{i, pos}] {
			return false
		}
		ok := false
		switch p := parts[i]; p {
		case AnyText:
			for k := pos; k <= len(got) && !ok; k++ {
				ok = match(i+1, k)
			}
		case AnyNumber:
			for _, k := range numberEnds(got, pos) {
				if ok = match(i+1, k); ok {
					break
				}
			}
		default:
			ok = strings.HasPrefix(got[pos:], p) && match(i+1, pos+len(p))
		}
		if !ok {
			memo[[2]int{i, pos}] = true
		}
		return ok
	}
	return match(0, 0)
}

// patternParts splits an expected line into literal parts and the
// wildcards AnyText and AnyNumber, in order.
func patternParts(want string) []string {
	var parts []string
	for {
		i, w := strings.Index(want, AnyText), AnyText
		if j := strings.Index(want, AnyNumber); j >= 0 && (i < 0 || j < i) {
			i, w = j, AnyNumber
		}
		if i < 0 {
			return append(parts, want)
		}
		parts = append(parts, want[:i], w)
		want = want[i+len(w):]
	}
}

// numberEnds returns every end of a number that starts at s[pos:], longest
// first: an optional minus sign, digits, and groups of digits after a
// comma or a point ("1436", "24,583", "6.2", "-3"); the comma lets a page
// write large counts as a reader would.
func numberEnds(s string, pos int) []int {
	i := pos
	if i < len(s) && s[i] == '-' {
		i++
	}
	var ends []int
	digits := func() bool {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i > start
	}
	if !digits() {
		return nil
	}
	ends = append(ends, i)
	for i+1 < len(s) && (s[i] == ',' || s[i] == '.') && s[i+1] >= '0' && s[i+1] <= '9' {
		i++
		digits()
		ends = append(ends, i)
	}
	slices.Reverse(ends)
	return ends
}
