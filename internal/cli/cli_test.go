package cli

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sample is a command set like kvmlab's: a value flag, a repeatable one, a
// switch, an internal flag, a flag whose usage holds characters that are
// syntax to a shell or to zsh's _arguments.
func sample() []Command {
	run := flag.NewFlagSet("run", flag.ContinueOnError)
	run.String("kernel", "", "guest kernel: a bzImage [or vmlinux] (default: the guest's)")
	run.Int("cpus", 1, "number of vCPUs")
	run.Bool("quiet", false, "say nothing; it's 'quiet'")
	run.Bool("any-kvm", false, "internal: skip the check")
	var disks listValue
	run.Var(&disks, "disk", "a disk image, repeatable")
	stat := flag.NewFlagSet("stat", flag.ContinueOnError)
	return []Command{
		{Name: "run", Summary: "boot a guest: the default one", Flags: run},
		{Name: "stat", Summary: "statistics from a trace", Flags: stat},
		{Name: "completion", Summary: "print a shell completion script", Words: []string{"bash", "zsh"}},
		{Name: "help", Summary: "show a command's flags", Words: []string{"run", "stat", "completion"}},
	}
}

type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(v string) error { *l = append(*l, v); return nil }

func TestPrintFlagsHidesInternal(t *testing.T) {
	fs := sample()[0].Flags
	if err := fs.Parse([]string{"--cpus", "4"}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fs.SetOutput(&b)
	PrintFlags(fs)
	out := b.String()
	for _, want := range []string{"-kernel string", "-cpus int", "number of vCPUs (default 1)", "-quiet", "-disk value"} {
		if !strings.Contains(out, want) {
			t.Errorf("PrintFlags lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"any-kvm", "internal", "(default 4)"} {
		if strings.Contains(out, bad) {
			t.Errorf("PrintFlags shows %q:\n%s", bad, out)
		}
	}
	// The flag set itself is untouched: the internal flag still parses.
	if err := fs.Parse([]string{"--any-kvm"}); err != nil {
		t.Errorf("internal flag no longer parses: %v", err)
	}
}

func TestVersion(t *testing.T) {
	got := Version("kvmlab")
	// A test binary has build information but no VCS stamp.
	want := regexp.MustCompile(`^kvmlab version \S+, revision ([0-9a-f]{40}(\+dirty)?|unknown), ` + regexp.QuoteMeta(runtime.Version()) + ` linux/amd64$`)
	if !want.MatchString(got) {
		t.Errorf("Version = %q, want it to match %s", got, want)
	}
}

func TestVCSRevision(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{nil, "unknown"},
		{[]debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}, rev},
		{[]debug.BuildSetting{{Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: rev}}, rev + "+dirty"},
		{[]debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, "unknown"},
	} {
		if got := vcsRevision(tc.settings); got != tc.want {
			t.Errorf("vcsRevision(%v) = %q, want %q", tc.settings, got, tc.want)
		}
	}
}

// TestBashCompletion loads the script into a real bash and calls the
// completion function as bash's completion does: the words of the line in
// COMP_WORDS, the index of the one being completed in COMP_CWORD.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash installed")
	}
	var script bytes.Buffer
	if err := WriteBash(&script, "kvmlab", sample()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kvmlab.bash")
	if err := os.WriteFile(path, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bash, "-c", "source "+path+" && complete -p kvmlab").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "complete -o default -F _kvmlab kvmlab" {
		t.Fatalf("complete -p kvmlab: %q, %v", out, err)
	}
	tests := []struct {
		line string // the words typed; the last one is being completed
		want string // COMPREPLY, space-separated
	}{
		{"kvmlab ", "run stat completion help --help --version"},
		{"kvmlab r", "run"},
		{"kvmlab --v", "--version"},
		{"kvmlab run --", "--cpus --disk --kernel --quiet --help"},
		{"kvmlab run --k", "--kernel"},
		{"kvmlab run --a", ""}, // --any-kvm is internal
		{"kvmlab run --kernel ", ""},
		{"kvmlab run --quiet --", "--cpus --disk --kernel --quiet --help"},
		{"kvmlab stat --", "--help"},
		{"kvmlab completion ", "bash zsh"},
		{"kvmlab completion z", "zsh"},
		{"kvmlab help s", "stat"},
		{"kvmlab run -- --", ""},
		{"kvmlab nosuch --", "--help"},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			words := strings.Split(tc.line, " ")
			var quoted []string
			for _, w := range words {
				quoted = append(quoted, "'"+w+"'")
			}
			prog := "source " + path + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
				strconv.Itoa(len(words)-1) + "\n_kvmlab\necho \"${COMPREPLY[*]}\"\n"
			out, err := exec.Command(bash, "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("completing %q: %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// TestZshCompletion loads the script into a real, interactive zsh with its
// completion system, types a line and a Tab into it through zsh's own
// pseudo-terminal module (zpty), and reads what the completion inserted.
func TestZshCompletion(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("no zsh installed (apt-get install zsh)")
	}
	var script bytes.Buffer
	if err := WriteZsh(&script, "kvmlab", sample()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "_kvmlab")
	if err := os.WriteFile(filepath.Join(dir, "bzImage-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(zsh, "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	out, err := exec.Command(zsh, "-f", "-c", "autoload -U compinit && compinit -u -D && source "+path+" && print -r -- $_comps[kvmlab]").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_kvmlab" {
		t.Fatalf("compdef after source: %q, %v", out, err)
	}
	tests := []struct {
		typed string // then Tab
		want  string // the line after the completion
	}{
		{"kvmlab ru", "kvmlab run "},
		{"kvmlab run --ker", "kvmlab run --kernel="},
		{"kvmlab run --kernel bzI", "kvmlab run --kernel bzImage-1 "}, // a file in the working directory
		{"kvmlab run --cpus=2 --disk=bzI", "kvmlab run --cpus=2 --disk=bzImage-1 "},
		{"kvmlab run --qu", "kvmlab run --quiet "},
		{"kvmlab run --an", "kvmlab run --an"}, // internal: not offered
		{"kvmlab completion z", "kvmlab completion zsh "},
		{"kvmlab stat --he", "kvmlab stat --help "},
	}
	for _, tc := range tests {
		t.Run(tc.typed, func(t *testing.T) {
			if got := zshComplete(t, zsh, path, tc.typed); got != tc.want {
				t.Errorf("%q + Tab = %q, want %q", tc.typed, got, tc.want)
			}
		})
	}
}

// zshComplete runs an interactive zsh in a zpty, types line and a Tab, and
// returns the edited line (zle's BUFFER, printed by a widget bound to ^X;
// the marker around it is written in two pieces so that the echo of the
// definition does not match).
func zshComplete(t *testing.T, zsh, script, line string) string {
	t.Helper()
	driver := `
zmodload zsh/zpty
zpty -b z ` + zsh + ` -f -i
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source ` + script + `'
zpty -w z 'show() { print -r -- "@""@$BUFFER@""@"; zle send-break }; zle -N show; bindkey "^X" show'
zpty -w -n z ` + zshQuote(line) + `$'\t'
zpty -w -n z $'\x18'
out=
for i in {1..100}; do
	while zpty -r -t z chunk; do out+=$chunk; done
	[[ $out == *@@*@@* ]] && break
	sleep 0.1
done
print -r -- "$out"
zpty -d z
`
	cmd := exec.Command(zsh, "-f", "-c", driver)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(), "TERM=dumb", "HOME="+t.TempDir())
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("zsh did not finish:\n%s", out)
	}
	if err != nil {
		t.Fatalf("zsh: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`@@([^\n@]*)@@`).FindAllStringSubmatch(string(out), -1)
	if m == nil {
		t.Fatalf("no line printed back:\n%q", out)
	}
	return m[len(m)-1][1]
}
