package docs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
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
		{name: "no console blocks", page: "text\n```\n$ x\n```\n"},
		{name: "output before a command", page: "```console\nhello\n$ kvmlab help\n```\n", err: "p.md:2: output before the first command"},
		{name: "no command", page: "```console\n```\n", err: "p.md:1: a console block without a command"},
		{name: "unknown attribute", page: "```console kvn\n$ kvmlab help\n```\n", err: `unknown word "kvn"`},
		{name: "unclosed", page: "```console\n$ kvmlab help\n", err: "p.md:1: console block never closed"},
		{name: "a pipe", page: "```console\n$ kvmlab help | head\n```\n", err: `p.md:2: '|' needs a shell`},
		{name: "dangling continuation", page: "```console\n$ kvmlab help \\\n```\n", err: "ends with a backslash"},
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
		{in: []string{"rm", "-rf", "/"}, err: true},
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
	host, kvm := 0, 0
	pages := map[string]bool{}
	for _, b := range blocks {
		pages[b.Page] = true
		if b.KVM {
			kvm += len(b.Steps)
		} else {
			host += len(b.Steps)
		}
	}
	t.Logf("%d checked commands on the host and %d in the emulated host, on %d pages", host, kvm, len(pages))
	if host == 0 || kvm == 0 {
		t.Errorf("checked commands: %d on the host, %d in the emulated host; want some of each", host, kvm)
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
	bin := os.Getenv("KVMLAB_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "kvmlab")
		out, err := exec.Command("go", "build", "-o", bin, "kvmlab/cmd/kvmlab").CombinedOutput()
		if err != nil {
			t.Fatalf("building kvmlab (set KVMLAB_BIN to use a built one): %v\n%s", err, out)
		}
	}
	guest := os.Getenv("KVMLAB_GUEST_DIR")
	if guest == "" {
		guest = filepath.Join(t.TempDir(), "no-guest") // no host block may need one
	}
	shared := filepath.Join(t.TempDir(), "vmlinux")
	for _, b := range blocks {
		if b.KVM {
			continue
		}
		t.Run(b.Name(), func(t *testing.T) {
			RunBlock(t, b, bin, guest, shared, time.Minute)
		})
	}
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
