package docs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExtract(t *testing.T) {
	tests := []struct {
		name string
		page string
		want []Block
		err  string // a substring of the error; "" for none
	}{
		{
			name: "command, output, other blocks skipped",
			page: "# t\n```sh\n$ not checked\n```\ntext\n```console\n$ kvmlab lab list\n1. one\n...\n```\n",
			want: []Block{{Page: "p.md", Line: 6, Steps: []Step{
				{Line: 7, Command: "kvmlab lab list", Words: []string{"kvmlab", "lab", "list"}, Want: []string{"1. one", "..."}},
			}}},
		},
		{
			name: "kvm, two steps, exit status, continuation, comment",
			page: "```console kvm\n$ kvmlab run --exec 'exit 3' \\\n    --mem 256M   # a comment\n(exit status 3)\n$ kvmlab version\nkvmlab version [...]\n```\n",
			want: []Block{{Page: "p.md", Line: 1, KVM: true, Steps: []Step{
				{Line: 2, Command: "kvmlab run --exec 'exit 3' --mem 256M   # a comment", Words: []string{"kvmlab", "run", "--exec", "exit 3", "--mem", "256M"}, Status: 3},
				{Line: 5, Command: "kvmlab version", Words: []string{"kvmlab", "version"}, Want: []string{"kvmlab version [...]"}},
			}}},
		},
		{
			name: "indented fence, tildes, trailing blanks",
			page: "- a list item:\n\n   ~~~~console\n   $ kvmlab help   \n   Usage:  \n   ~~~~\n",
			want: []Block{{Page: "p.md", Line: 3, Steps: []Step{
				{Line: 4, Command: "kvmlab help", Words: []string{"kvmlab", "help"}, Want: []string{"Usage:"}},
			}}},
		},
		{
			name: "a longer fence holds a shorter one",
			page: "````console\n$ kvmlab help\n```\n````\n",
			want: []Block{{Page: "p.md", Line: 1, Steps: []Step{
				{Line: 2, Command: "kvmlab help", Words: []string{"kvmlab", "help"}, Want: []string{"```"}},
			}}},
		},
		{
			name: "file blocks go with the next console block",
			page: "```file s.txt\nregs\n  indented # kept\n```\ntext\n```file t/run.sh\n#!/bin/sh\n```\n```console\n$ kvmlab help\n```\n```console\n$ kvmlab version\n```\n",
			want: []Block{
				{Page: "p.md", Line: 9, Steps: []Step{{Line: 10, Command: "kvmlab help", Words: []string{"kvmlab", "help"}}},
					Files: []File{{Name: "s.txt", Data: []byte("regs\n  indented # kept\n"), Line: 1}, {Name: "t/run.sh", Data: []byte("#!/bin/sh\n"), Line: 6}}},
				{Page: "p.md", Line: 12, Steps: []Step{{Line: 13, Command: "kvmlab version", Words: []string{"kvmlab", "version"}}}},
			},
		},
		{name: "a file block outside the directory", page: "```file ../x\na\n```\n```console\n$ kvmlab help\n```\n", err: "p.md:1: a file block is"},
		{name: "a file block without a name", page: "```file\na\n```\n", err: "p.md:1: a file block is"},
		{name: "a file block with no console block after it", page: "```file a\nb\n```\ntext\n", err: "p.md:1: file block a with no console block"},
		{name: "a file block never closed", page: "```file a\nb\n", err: "p.md:1: file block never closed"},
		{name: "no console blocks", page: "text\n```\n$ x\n```\n"},
		{name: "output before a command", page: "```console\nhello\n$ kvmlab help\n```\n", err: "p.md:2: output before the first command"},
		{name: "no command", page: "```console\n```\n", err: "p.md:1: a console block without a command"},
		{name: "unknown attribute", page: "```console kvn\n$ kvmlab help\n```\n", err: `unknown word "kvn"`},
		{
			name: "a block that boots the emulated host",
			page: "```console emulated-host\n$ kvmlab run --emulated-host --exec 'uname -r'\n[N].[N][...]\n```\n",
			want: []Block{{Page: "p.md", Line: 1, EmulatedHost: true, Steps: []Step{
				{Line: 2, Command: "kvmlab run --emulated-host --exec 'uname -r'", Words: []string{"kvmlab", "run", "--emulated-host", "--exec", "uname -r"}, Want: []string{"[N].[N][...]"}},
			}}},
		},
		{
			name: "an unprivileged block",
			page: "```console kvm unprivileged\n$ kvmlab container -- id\n```\n",
			want: []Block{{Page: "p.md", Line: 1, KVM: true, Unprivileged: true, Steps: []Step{
				{Line: 2, Command: "kvmlab container -- id", Words: []string{"kvmlab", "container", "--", "id"}},
			}}},
		},
		{name: "sudo in an unprivileged block", page: "```console unprivileged\n$ kvmlab help\n$ sudo kvmlab container -- id\n```\n", err: "p.md:3: sudo in an unprivileged block"},
		{name: "kvm and emulated-host", page: "```console emulated-host kvm\n$ kvmlab help\n```\n", err: "p.md:1: a block is console kvm (run inside the emulated host) or console emulated-host (boot one), not both"},
		{name: "unclosed", page: "```console\n$ kvmlab help\n", err: "p.md:1: console block never closed"},
		{name: "a pipe", page: "```console\n$ kvmlab help | head\n```\n", err: `p.md:2: '|' needs a shell`},
		{name: "dangling continuation", page: "```console\n$ kvmlab help \\\n```\n", err: "ends with a backslash"},
		{
			name: "a background command, standard input, wait",
			page: "```console kvm\n$ kvmlab run --gdb 1234 </dev/null &  # a comment\nkvmlab: gdb: listening [...]\n$ gdb -batch -x s.txt\n$ wait %1\n(exit status 3)\n```\n",
			want: []Block{{Page: "p.md", Line: 1, KVM: true, Steps: []Step{
				{Line: 2, Command: "kvmlab run --gdb 1234 </dev/null &  # a comment", Words: []string{"kvmlab", "run", "--gdb", "1234"}, Stdin: "/dev/null", Background: true, Want: []string{"kvmlab: gdb: listening [...]"}},
				{Line: 4, Command: "gdb -batch -x s.txt", Words: []string{"gdb", "-batch", "-x", "s.txt"}},
				{Line: 5, Command: "wait %1", Words: []string{"wait", "%1"}, Status: 3},
			}}},
		},
		{name: "a background command not waited for", page: "```console\n$ kvmlab run &\n$ kvmlab help\n```\n", err: "p.md:1: the block ends with a command still in the background"},
		{name: "wait for one of two", page: "```console\n$ kvmlab run &\n$ kvmlab run &\n$ wait %2\n```\n", err: "still in the background"},
		{name: "wait for a job not started", page: "```console\n$ kvmlab run &\n$ wait %2\n```\n", err: "p.md:3: wait takes"},
		{name: "wait with nothing to wait for", page: "```console\n$ wait\n```\n", err: "p.md:2: wait takes"},
		{name: "a background command's status", page: "```console\n$ kvmlab run &\n(exit status 1)\n$ wait\n```\n", err: "p.md:2: a command in the background has no exit status"},
		{name: "&& needs a shell", page: "```console\n$ kvmlab help && kvmlab help\n```\n", err: "p.md:2: a & that does not end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract("p.md", tt.page)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrFormat) {
					t.Fatalf("Extract: error %v, want one containing %q (and ErrFormat)", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Extract:\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{in: `kvmlab run --exec 'uname -r; exit 3'`, want: []string{"kvmlab", "run", "--exec", "uname -r; exit 3"}},
		{in: `kvmlab run --append "console=ttyS0 quiet" --mem 256M`, want: []string{"kvmlab", "run", "--append", "console=ttyS0 quiet", "--mem", "256M"}},
		{in: `a "x\"y\\z" b\ c ''`, want: []string{"a", `x"y\z`, "b c", ""}},
		{in: `a "\n"`, want: []string{"a", `\n`}},
		{in: `kvmlab help   # what follows is a comment`, want: []string{"kvmlab", "help"}},
		{in: `a#b`, want: []string{"a#b"}},
		{in: `   `},
		{in: `kvmlab run > out`, err: `'>' needs a shell`},
		{in: `kvmlab $HOME`, err: `'$' needs a shell`},
		{in: `kvmlab "$HOME"`, err: `'$' inside double quotes`},
		{in: `kvmlab lab start 1 *`, err: `'*' needs a shell`},
		{in: `kvmlab 'open`, err: "unclosed ' quote"},
		{in: `kvmlab "open`, err: `unclosed " quote`},
		{in: `kvmlab \`, err: "backslash at the end"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Split(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Split(%q): %q, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Split(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	tests := []struct {
		in    string
		words []string
		stdin string
		bg    bool
		err   string
	}{
		{in: `kvmlab run --control vm.sock </dev/null &`, words: []string{"kvmlab", "run", "--control", "vm.sock"}, stdin: "/dev/null", bg: true},
		{in: `debugfs < cmds.txt`, words: []string{"debugfs"}, stdin: "cmds.txt"},
		{in: `kvmlab run --exec 'sleep 1 &' <~/in &   # both`, words: []string{"kvmlab", "run", "--exec", "sleep 1 &"}, stdin: "~/in", bg: true},
		{in: `kvmlab '<' "&" \& \<`, words: []string{"kvmlab", "<", "&", "&", "<"}},
		{in: `kvmlab run &&`, err: "a & that does not end"},
		{in: `kvmlab run & kvmlab help`, err: "a & that does not end"},
		{in: `kvmlab run <`, err: "a < without a file"},
		{in: `kvmlab run < 'x y'`, err: "in the file after <"},
		{in: `kvmlab run < a < b`, err: `'<' needs a shell`},
		{in: `kvmlab run > out`, err: `'>' needs a shell`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			words, stdin, bg, err := Command(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Command(%q): %q, %v; want an error containing %q", tt.in, words, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(words, tt.words) || stdin != tt.stdin || bg != tt.bg {
				t.Errorf("Command(%q) = %q, %q, %v, %v; want %q, %q, %v", tt.in, words, stdin, bg, err, tt.words, tt.stdin, tt.bg)
			}
		})
	}
	// Split, for words alone, still refuses both.
	for _, in := range []string{"kvmlab run &", "kvmlab run < f"} {
		if _, err := Split(in); err == nil {
			t.Errorf("Split(%q) took it", in)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name string
		want []string
		got  string
		ok   bool
	}{
		{"exact", []string{"a", "b"}, "a\nb\n", true},
		{"trailing blanks and lines", []string{"a", "b"}, "a  \r\nb\n\n\n", true},
		{"a line missing", []string{"a", "b"}, "a\n", false},
		{"a line too many", []string{"a"}, "a\nb\n", false},
		{"a different line", []string{"a", "b"}, "a\nc\n", false},
		{"no output expected", nil, "", true},
		{"no output expected, some came", nil, "x\n", false},
		{"... matches none", []string{"a", "...", "b"}, "a\nb\n", true},
		{"... matches many", []string{"a", "...", "b"}, "a\nx\ny\nb\n", true},
		{"... at both ends", []string{"...", "b", "..."}, "a\nb\nc\n", true},
		{"... alone", []string{"..."}, "anything\nat all\n", true},
		{"... then a missing line", []string{"...", "z"}, "a\nb\n", false},
		{"backtracking past an early match", []string{"...", "b", "c"}, "b\nx\nb\nc\n", true},
		{"[...] in a line", []string{"kvmlab version [...], go[...]"}, "kvmlab version v0.0.0-x, go1.26 linux/amd64\n", true},
		{"[...] matches nothing", []string{"a[...]b"}, "ab\n", true},
		{"[...] keeps the literal text", []string{"kvmlab version [...]"}, "kvmlab verison v1\n", false},
		{"[...] stays in its line", []string{"a[...]c"}, "a\nc\n", false},
		{"regexp characters are literal", []string{"(x) 1.5 * [y]"}, "(x) 1.5 * [y]\n", true},
		{"regexp characters do not match others", []string{"1.5"}, "125\n", false},
		{"[...] twice, in order", []string{"a[...]b[...]c"}, "a1b2b3c\n", true},
		{"[...] twice, out of order", []string{"a[...]c[...]b"}, "abc\n", false},
		{"prefix and suffix may not overlap", []string{"ab[...]bc"}, "abc\n", false},
		{"invalid UTF-8 is literal", []string{"\xff[...]"}, "\xff\xfe\n", true},
		{"[N] a count", []string{"kvmlab: [N] user-space exits"}, "kvmlab: 1436 user-space exits\n", true},
		{"[N] with a thousands comma and a point", []string{"[N] exits, [N]%"}, "24,583 exits, 6.2%\n", true},
		{"[N] negative", []string{"rsi [N]"}, "rsi -131391639386112\n", true},
		{"[N] is not a word", []string{"kvmlab: [N] user-space exits"}, "kvmlab: many user-space exits\n", false},
		{"[N] needs a digit", []string{"a [N] b"}, "a  b\n", false},
		{"[N] is not a hex number", []string{"rip=[N]"}, "rip=0xffff\n", false},
		{"[N] leaves a sentence's point", []string{"[N]."}, "5.\n", true},
		{"[N] backtracks to leave a literal", []string{"[N].5 s"}, "1.5 s\n", true},
		{"[N] stays in its line", []string{"[N]"}, "1\n2\n", false},
		{"[N] and [...] together", []string{"COM1 [N] [...]%"}, "COM1                 1153   80.29%\n", false},
		{"[N] after spaces through [...]", []string{"COM1[...][N][...]%"}, "COM1                 1153   80.29%\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Match(tt.want, tt.got)
			if (err == nil) != tt.ok {
				t.Errorf("Match(%q, %q) = %v, want ok=%v", tt.want, tt.got, err, tt.ok)
			}
		})
	}
	// The error names the line to blame.
	err := Match([]string{"a", "...", "b", "c"}, "a\nx\nb\nd\n")
	if err == nil || !strings.Contains(err.Error(), `expected line 4, "c"`) {
		t.Errorf("Match error = %v, want it to name expected line 4", err)
	}
}

// FuzzExtract: the extractor and the word splitter take any text without
// panicking, and every step they return has words.
func FuzzExtract(f *testing.F) {
	f.Add("```console kvm\n$ kvmlab run --exec 'x' \\\n  --mem 1G # c\n...\n(exit status 3)\n```\n")
	f.Add("````console\n$ kvmlab \"a\\\"b\" c\\ d\n```\n````\n~~~\n```console\n~~~\n")
	f.Add("```file s.txt\nregs\n```\n```console kvm\n$ kvmlab step --script s.txt\n#[N] vCPU0 [...]\n...\n```\n")
	f.Add("```console emulated-host unprivileged\n$ kvmlab run --emulated-host --emulated-cpu intel --stats\n...\n  KVM_EXIT_IO [...][N][...]%[...]\n```\n")
	f.Fuzz(func(t *testing.T, page string) {
		blocks, err := Extract("f.md", page)
		if err != nil {
			return
		}
		for _, b := range blocks {
			for _, s := range b.Steps {
				if len(s.Words) == 0 {
					t.Fatalf("%s:%d: a step without words: %q", b.Page, s.Line, s.Command)
				}
			}
		}
		_ = Match(strings.Split(page, "\n"), page)
	})
}

func TestArgv(t *testing.T) {
	e := Env{Bin: "/b/kvmlab", Home: "/h"}
	tests := []struct {
		in   []string
		want []string
		err  bool
	}{
		{in: []string{"kvmlab", "lab", "start", "1", "~/lab1"}, want: []string{"/b/kvmlab", "lab", "start", "1", "/h/lab1"}},
		{in: []string{"bin/kvmlab", "stat", "~"}, want: []string{"/b/kvmlab", "stat", "/h"}},
		{in: []string{"sudo", "kvmlab", "container", "--", "echo", "~x"}, want: []string{"/b/kvmlab", "container", "--", "echo", "~x"}},
		{in: []string{"as", "--64", "-o", "g.o", "~/g.S"}, want: []string{"as", "--64", "-o", "g.o", "/h/g.S"}},
		{in: []string{"ld", "-o", "guest.bin", "g.o"}, want: []string{"ld", "-o", "guest.bin", "g.o"}},
		{in: []string{"rm", "-rf", "/"}, err: true},
		{in: []string{"make", "run"}, err: true},
		{in: []string{"sudo"}, err: true},
	}
	for _, tt := range tests {
		got, err := e.Argv(tt.in)
		if (err != nil) != tt.err || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Argv(%q) = %q, %v; want %q (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// TestPages checks that every page parses and that the guides do hold
// checked examples of both kinds: a page whose blocks all fell out of the
// console form would otherwise pass unnoticed.
func TestPages(t *testing.T) {
	blocks, err := All()
	if err != nil {
		t.Fatal(err)
	}
	host, kvm, emulated := 0, 0, 0
	pages := map[string]bool{}
	for _, b := range blocks {
		pages[b.Page] = true
		switch {
		case b.KVM:
			kvm += len(b.Steps)
		case b.EmulatedHost:
			emulated += len(b.Steps)
		default:
			host += len(b.Steps)
		}
	}
	t.Logf("%d checked commands on the host, %d in the emulated host and %d that boot one, on %d pages", host, kvm, emulated, len(pages))
	if host == 0 || kvm == 0 || emulated == 0 {
		t.Errorf("checked commands: %d on the host, %d in the emulated host, %d that boot one; want some of each", host, kvm, emulated)
	}
	if !pages["README.md"] {
		t.Errorf("docs/README.md has no checked example")
	}
}

// TestDocs runs the console blocks that need no KVM, on this machine, with
// the kvmlab of KVMLAB_BIN, or one built from this tree when it is not set
// (make unit does not set it). It is a unit-level test, not one of the
// integration tests in tests/: package tests re-runs itself inside the
// emulated host when /dev/kvm is missing, a minute of boot and both cores
// for commands that need neither KVM nor root. The blocks that do need them
// ("console kvm") run in TestDocsKVM, in package tests.
func TestDocs(t *testing.T) {
	blocks, err := All()
	if err != nil {
		t.Fatal(err)
	}
	bin := kvmlabBin(t)
	guest := os.Getenv("KVMLAB_GUEST_DIR")
	if guest == "" {
		guest = filepath.Join(t.TempDir(), "no-guest") // no host block may need one
	}
	shared := filepath.Join(t.TempDir(), "vmlinux")
	for _, b := range blocks {
		if b.KVM || b.EmulatedHost {
			continue // TestDocsKVM's and TestDocsEmulatedHost's
		}
		t.Run(b.Name(), func(t *testing.T) {
			RunBlock(t, b, bin, guest, shared, time.Minute)
		})
	}
}

// kvmlabBin is the kvmlab under test: KVMLAB_BIN, or one built from this
// tree when it is not set, static as make build builds it (CGO_ENABLED=0):
// kvmlab run --emulated-host carries itself into the emulated host, which
// has no C library.
func kvmlabBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("KVMLAB_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "kvmlab")
	build := exec.Command("go", "build", "-o", bin, "kvmlab/cmd/kvmlab")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kvmlab (set KVMLAB_BIN to use a built one): %v\n%s", err, out)
	}
	return bin
}

// RunBlock runs b in a fresh home and working directory under t.TempDir.
func RunBlock(t *testing.T, b Block, bin, guest, shared string, limit time.Duration) {
	t.Helper()
	d := t.TempDir()
	e := Env{Bin: bin, GuestDir: guest, Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work")}
	if err := b.Check(e, shared, limit, t.Logf); err != nil {
		t.Fatal(err)
	}
}

// TestBlockFiles: a block's file blocks are in its working directory before
// its first command runs, a script (#!) executable, and the command reads
// them: kvmlab stat says what is in the one it is given (without the file,
// it would say "no such file").
func TestBlockFiles(t *testing.T) {
	bin := kvmlabBin(t)
	page := "```file sub/trace.json\nnot json\n```\n```file run.sh\n#!/bin/sh\n```\n```console\n$ kvmlab stat sub/trace.json\n" +
		"kvmlab: stat sub/trace.json: no exit events in [N] line (line 1: not a JSON object): [...]\n(exit status 2)\n```\n"
	blocks, err := Extract("p.md", page)
	if err != nil || len(blocks) != 1 {
		t.Fatalf("Extract: %v, %d blocks", err, len(blocks))
	}
	d := t.TempDir()
	e := Env{Bin: bin, GuestDir: filepath.Join(d, "guest"), Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work")}
	if err := blocks[0].Check(e, "", time.Minute, t.Logf); err != nil {
		t.Error(err)
	}
	if st, err := os.Stat(filepath.Join(e.Dir, "run.sh")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("run.sh: %v, %v; want mode 0755", st, err)
	}
}

// TestBackground runs a block with a background command on this machine:
// debugfs, reading its commands from a file (< FILE), prints its answer
// and a last prompt, and ends at the end of the file; the checker goes on
// once the answer is there, and wait shows the rest and the status of job 1. A background
// command that ends without printing what the page says fails the block,
// and so does a wrong status after wait.
func TestBackground(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Fatalf("debugfs (e2fsprogs) is needed: %v", err)
	}
	bin := kvmlabBin(t)
	file := "```file cmds.txt\nshow_debugfs_params\n```\n"
	tests := []struct {
		name, block, err string
	}{
		{name: "as the page says", block: "```console\n$ debugfs < cmds.txt &\n...\nFilesystem in use: --none--\n$ kvmlab version\nkvmlab version [...]\n$ wait %1\n...\n```\n"},
		{name: "wait for all: status 0", block: "```console\n$ debugfs < cmds.txt &\n$ wait\n...\nFilesystem in use: --none--\n...\n```\n"},
		{name: "lines it never prints", block: "```console\n$ debugfs < cmds.txt &\n...\nFilesystem in use: /dev/sda\n$ wait\n```\n", err: "it ended (exit status 0) before printing"},
		{name: "another status", block: "```console\n$ debugfs < cmds.txt &\n$ wait %1\n...\n(exit status 1)\n```\n", err: "exit status 0, the page says 1"},
		{name: "output after the lines is wait's", block: "```console\n$ debugfs < cmds.txt &\n...\nFilesystem in use: --none--\n$ wait\n```\n", err: "$ wait (line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks, err := Extract("p.md", file+tt.block)
			if err != nil || len(blocks) != 1 {
				t.Fatalf("Extract: %v, %d blocks", err, len(blocks))
			}
			d := t.TempDir()
			e := Env{Bin: bin, GuestDir: filepath.Join(d, "guest"), Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work")}
			err = blocks[0].Check(e, "", time.Minute, t.Logf)
			if tt.err == "" && err != nil {
				t.Fatal(err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Check: %v; want an error containing %q", err, tt.err)
			}
		})
	}
}

// TestUnprivileged runs an unprivileged block: as root, its commands run as
// Nobody, in a home and a directory that are Nobody's (kvmlab lab start
// writes its files as the user it runs as); as another user, as that user.
// A directory Nobody cannot enter is refused, naming it.
func TestUnprivileged(t *testing.T) {
	bin := kvmlabBin(t)
	blocks, err := Extract("p.md", "```console unprivileged\n$ kvmlab lab start 1 ~/lab1\n...\n$ kvmlab lab start 1 lab1\n...\n```\n")
	if err != nil || len(blocks) != 1 {
		t.Fatalf("Extract: %v, %d blocks", err, len(blocks))
	}
	want := os.Geteuid()
	if want == 0 {
		want = Nobody
	}
	// Others may enter d, as they may enter a home under /home.
	d, err := os.MkdirTemp("", "kvmlab-docs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	// And so may they run the binary: a copy, as kvmlabBin's may be in a
	// t.TempDir.
	if err := copyFile(bin, filepath.Join(d, "kvmlab")); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(d, "kvmlab")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	e := Env{Bin: bin, GuestDir: filepath.Join(d, "no-guest"), Home: filepath.Join(d, "home"), Dir: filepath.Join(d, "work")}
	if err := blocks[0].Check(e, "", time.Minute, t.Logf); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(e.Home, "lab1", "guest.S"), filepath.Join(e.Dir, "lab1", "guest.S")} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != want {
			t.Errorf("%s belongs to uid %d, want %d", f, uid, want)
		}
	}
	if os.Geteuid() != 0 {
		return
	}
	hidden := t.TempDir() // 0700, and so is its parent
	e = Env{Bin: bin, GuestDir: filepath.Join(hidden, "no-guest"), Home: filepath.Join(hidden, "home"), Dir: filepath.Join(hidden, "work")}
	if err := blocks[0].Check(e, "", time.Minute, t.Logf); err == nil || !strings.Contains(err.Error(), "uid 65534 cannot reach") {
		t.Errorf("Check in a directory nobody may enter: %v, want an error saying so", err)
	}
}
