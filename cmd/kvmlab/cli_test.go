package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"kvmlab/emuhost"
)

// These tests run the kvmlab binary, built once by TestCLI, and look at
// what a user sees: standard output, standard error, exit status.

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func runBin(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("kvmlab %q: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// buildCLI builds kvmlab into dir. With git at hand it stamps the VCS
// revision (go build -buildvcs=true; this machine's go env may turn it
// off) and returns the commit it should name; else "".
func buildCLI(t *testing.T, dir string) (bin, head string) {
	t.Helper()
	bin = filepath.Join(dir, "kvmlab")
	vcs := "-buildvcs=false"
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		head, vcs = strings.TrimSpace(string(out)), "-buildvcs=true"
	}
	build := exec.Command("go", "build", vcs, "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, head
}

// subcommands are the commands with flags of their own.
var subcommands = []string{"run", "step", "stat", "check", "container", "bench", "compare", "lab", "control", "help", "version", "completion"}

// internalFlags must parse but never be shown.
var internalFlags = []string{"any-kvm", "in-emulated-host", "exitfloor", "go-floor", "go-floor-variant"}

// helpFlags lists the flags a --help output shows ("  -name type").
func helpFlags(help string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		out = append(out, "--"+m[1])
	}
	return out
}

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	bin, head := buildCLI(t, dir)
	emptyCache := []string{"XDG_CACHE_HOME=" + filepath.Join(dir, "no-cache"), "HOME=" + filepath.Join(dir, "no-home")}

	t.Run("help", func(t *testing.T) {
		tests := []struct {
			args []string
			want string // start of stdout, case-insensitive
		}{
			{[]string{"--help"}, "kvmlab: an educational hypervisor"},
			{[]string{"-h"}, "kvmlab: an educational hypervisor"},
			{[]string{"help"}, "kvmlab: an educational hypervisor"},
			{[]string{"help", "run"}, "Usage: kvmlab run"},
			{[]string{"help", "--help"}, "Usage: kvmlab help"},
		}
		for _, name := range subcommands {
			tests = append(tests, struct {
				args []string
				want string
			}{[]string{name, "--help"}, "usage: kvmlab " + name}, struct {
				args []string
				want string
			}{[]string{name, "-h"}, "usage: kvmlab " + name})
		}
		for _, tc := range tests {
			t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
				r := runBin(t, bin, nil, tc.args...)
				if r.code != 0 || r.stderr != "" {
					t.Errorf("exit status %d, stderr %q; want 0 and nothing", r.code, r.stderr)
				}
				if !strings.HasPrefix(strings.ToLower(r.stdout), strings.ToLower(tc.want)) {
					t.Errorf("stdout does not start with %q:\n%s", tc.want, r.stdout)
				}
				for _, f := range internalFlags {
					if strings.Contains(r.stdout, "-"+f+" ") || strings.Contains(r.stdout, "-"+f+"\n") {
						t.Errorf("--help shows the internal flag -%s:\n%s", f, r.stdout)
					}
				}
				if strings.Contains(r.stdout, "internal:") {
					t.Errorf("--help shows an internal flag:\n%s", r.stdout)
				}
			})
		}
		if a, b := runBin(t, bin, nil, "help", "step"), runBin(t, bin, nil, "step", "--help"); a != b {
			t.Errorf("help step and step --help differ:\n%+v\n%+v", a, b)
		}
	})

	t.Run("no arguments", func(t *testing.T) {
		r := runBin(t, bin, nil)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "Usage:") || !strings.Contains(r.stderr, "kvmlab completion bash|zsh") {
			t.Errorf("kvmlab: %+v; want the usage on stderr, status 2", r)
		}
	})

	// A usage error is one line on stderr, naming the flag and pointing
	// at --help; nothing on stdout; status 2.
	t.Run("usage errors", func(t *testing.T) {
		type usageCase struct {
			args []string
			want string // the whole line
		}
		var tests []usageCase
		for _, name := range subcommands {
			tests = append(tests, usageCase{[]string{name, "--no-such-flag"},
				"kvmlab: " + name + ": flag provided but not defined: -no-such-flag: see 'kvmlab " + name + " --help'"})
		}
		tests = append(tests, []usageCase{
			{[]string{"run", "--cpus", "many"}, `kvmlab: run: invalid value "many" for flag -cpus: parse error: see 'kvmlab run --help'`},
			{[]string{"run", "--kernel"}, "kvmlab: run: flag needs an argument: -kernel: see 'kvmlab run --help'"},
			{[]string{"step", "--quiet=maybe"}, `kvmlab: step: invalid boolean value "maybe" for -quiet: parse error: see 'kvmlab step --help'`},
			{[]string{"bench", "--runs", "x"}, `kvmlab: bench: invalid value "x" for flag -runs: parse error: see 'kvmlab bench --help'`},
			{[]string{"compare", "--timeout", "soon"}, `kvmlab: compare: invalid value "soon" for flag -timeout: parse error: see 'kvmlab compare --help'`},
			{[]string{"container", "--pids"}, "kvmlab: container: flag needs an argument: -pids: see 'kvmlab container --help'"},
			{[]string{"check", "now"}, `kvmlab: check: unexpected argument "now": see 'kvmlab check --help'`},
			{[]string{"run", "bzImage"}, `kvmlab: run: unexpected argument "bzImage": flags start with --, e.g. --kernel PATH`},
			{[]string{"version", "1"}, `kvmlab: version: unexpected argument "1": see 'kvmlab version --help'`},
			{[]string{"completion"}, "kvmlab: completion: name one shell, bash or zsh: e.g. source <(kvmlab completion bash)"},
			{[]string{"completion", "fish"}, `kvmlab: completion: "fish": kvmlab writes completion for bash and zsh`},
			{[]string{"help", "boot"}, `kvmlab: help: unknown command "boot": run 'kvmlab help' for the list`},
			{[]string{"boot"}, `kvmlab: unknown command "boot": run 'kvmlab help' for the list`},
			// Internal flags parse: the error is about what follows.
			{[]string{"run", "--any-kvm", "--mem", "lots"}, "kvmlab: --mem lots: not a size: use a number with K, M or G, e.g. --mem 512M"},
			{[]string{"compare", "--in-emulated-host", "--mem", "lots"}, `kvmlab: compare: --mem "lots": give 128M to 3G`},
			{[]string{"bench", "--go-floor-variant", "raw", "--runs", "0"}, "kvmlab: bench: --runs 0: give 1 to 100 boots per VMM"},
		}...)
		for _, tc := range tests {
			t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
				r := runBin(t, bin, emptyCache, tc.args...)
				if r.code != 2 || r.stdout != "" {
					t.Errorf("exit status %d, stdout %q; want 2 and nothing", r.code, r.stdout)
				}
				if got := strings.TrimSuffix(r.stderr, "\n"); got != tc.want {
					t.Errorf("stderr:\n%q\nwant the one line\n%q", r.stderr, tc.want)
				}
			})
		}
	})

	// A bare --mem is MiB, as in QEMU: the runs below get past --mem (a
	// size taken as bytes would be refused as too small) and stop at the
	// next check, or are refused for the size in MiB.
	t.Run("mem in MiB", func(t *testing.T) {
		missing := filepath.Join(dir, "nope")
		tests := []struct {
			args []string
			want string // the stderr line
		}{
			{[]string{"container", "--mem", "8", "--initrd", missing, "ls"}, "kvmlab: --initrd " + missing + ": no such file: check the path"},
			{[]string{"container", "--mem", "8388607B", "--initrd", missing, "ls"}, "kvmlab: --mem 8388607B: too little for the container's init to run: use at least 8M"},
			{[]string{"container", "--mem", "4", "ls"}, "kvmlab: --mem 4: too little for the container's init to run: use at least 8M"},
			{[]string{"compare", "--mem", "256", "--kernel", missing, "--initrd", missing}, "kvmlab: compare: --kernel " + missing + ": "},
			{[]string{"compare", "--mem", "100"}, `kvmlab: compare: --mem "100": give 128M to 3G`},
			{[]string{"run", "--mem", "512", "--kernel", missing}, "kvmlab: --kernel " + missing + ": no such file: check the path"},
		}
		for _, tc := range tests {
			t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
				r := runBin(t, bin, emptyCache, tc.args...)
				if got := strings.TrimSuffix(r.stderr, "\n"); r.code != 2 || !strings.HasPrefix(got, tc.want) || strings.Contains(got, "\n") {
					t.Errorf("status %d, stderr %q; want 2 and one line starting %q", r.code, r.stderr, tc.want)
				}
			})
		}
	})

	t.Run("version", func(t *testing.T) {
		rev := `unknown`
		if head != "" {
			rev = regexp.QuoteMeta(head) + `(\+dirty)?`
		}
		want := regexp.MustCompile(`^kvmlab version \S+, revision ` + rev + `, ` + regexp.QuoteMeta(runtime.Version()) + ` linux/amd64\n$`)
		for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
			r := runBin(t, bin, nil, args...)
			if r.code != 0 || r.stderr != "" || !want.MatchString(r.stdout) {
				t.Errorf("kvmlab %s: %+v; want status 0 and stdout matching %s", args[0], r, want)
			}
		}
	})

	t.Run("check", func(t *testing.T) {
		r := runBin(t, bin, emptyCache, "check")
		if r.code != 0 && r.code != 1 {
			t.Fatalf("status %d, want 0 or 1 (this host can or cannot run guests); stderr %q", r.code, r.stderr)
		}
		// What it printed before comes first, ending in the verdict.
		verdict := regexp.MustCompile(`(?m)^This host can(not)? run kvmlab guests`).FindStringIndex(r.stdout)
		first := regexp.MustCompile(`(?m)^\[(ok  |FAIL)\] CPU virtualisation`).FindStringIndex(r.stdout)
		if verdict == nil || first == nil || first[0] != 0 {
			t.Fatalf("check does not open with the KVM checks and their verdict:\n%s", r.stdout)
		}
		after := r.stdout[verdict[1]:]
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`\[no  \] default guest +not built .*` + regexp.QuoteMeta(filepath.Join(dir, "no-cache", "kvmlab", "default")) + `\): run 'make guest'`),
			regexp.MustCompile(`\[(ok  |no  )\] QEMU +`),
			regexp.MustCompile(`\[(ok  |no  )\] Bochs +`),
			regexp.MustCompile(`What works on this host now:\n  kvmlab run, step +(yes|no )`),
			regexp.MustCompile(`(?m)^  (kvmlab run --emulated-host|  --emulated-cpu amd) +(yes|no )`),
			regexp.MustCompile(`  kvmlab container +yes`),
		} {
			if !want.MatchString(after) {
				t.Errorf("check output after the verdict lacks %s:\n%s", want, after)
			}
		}
		// The QEMU line agrees with qemu-system-x86_64 --version.
		if out, err := exec.Command("qemu-system-x86_64", "--version").Output(); err == nil {
			major, minor, v, ok := emuhost.ParseQEMUVersion(string(out))
			mark := "no  "
			if ok && (major > 9 || major == 9 && minor >= 1) {
				mark = "ok  "
			}
			if !ok || !strings.Contains(after, "["+mark+"] QEMU") || !strings.Contains(after, " "+v) {
				t.Errorf("QEMU %s (%v) not reported as [%s]:\n%s", v, ok, mark, after)
			}
		}
	})

	t.Run("bash completion", func(t *testing.T) {
		if _, err := exec.LookPath("bash"); err != nil {
			t.Skip("no bash")
		}
		r := runBin(t, bin, nil, "completion", "bash")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("completion bash: %+v", r)
		}
		script := filepath.Join(dir, "kvmlab.bash")
		if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bash", "-c", "source <(cat "+script+") && complete -p kvmlab").CombinedOutput(); err != nil || string(out) != "complete -o default -F _kvmlab kvmlab\n" {
			t.Fatalf("complete -p kvmlab: %q, %v", out, err)
		}
		complete := func(line string) []string {
			words := strings.Split(line, " ")
			prog := "source " + script + "\nCOMP_WORDS=(" + strings.Join(words, " ") + " '')\nCOMP_CWORD=" + strconv.Itoa(len(words)) + "\n"
			if strings.HasSuffix(line, "*") { // complete the last word itself
				words[len(words)-1] = strings.TrimSuffix(words[len(words)-1], "*")
				prog = "source " + script + "\nCOMP_WORDS=(" + strings.Join(words, " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(words)-1) + "\n"
			}
			out, err := exec.Command("bash", "-c", prog+"_kvmlab\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n").CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			return strings.Fields(string(out))
		}
		// Every command's completed flags are exactly those its --help shows.
		for _, name := range subcommands {
			got := complete("kvmlab " + name + " -*")
			want := append(helpFlags(runBin(t, bin, nil, name, "--help").stdout), "--help")
			if !slices.Equal(got, want) {
				t.Errorf("kvmlab %s -<Tab>: %q; --help shows %q", name, got, want)
			}
		}
		for _, tc := range []struct {
			line string
			want []string
		}{
			{"kvmlab", append(slices.Clone(subcommands), "--help", "--version")},
			{"kvmlab co*", []string{"container", "compare", "control", "completion"}},
			{"kvmlab run --ker*", []string{"--kernel"}},
			{"kvmlab run --any*", nil},
			{"kvmlab bench --i*", []string{"--initrd", "--io", "--io-mib", "--io-ops"}}, // not --in-emulated-host
			{"kvmlab compare --in*", []string{"--initrd"}},
			{"kvmlab help", subcommands},
			{"kvmlab completion", []string{"bash", "zsh"}},
			{"kvmlab run --kernel", nil}, // file names, from complete -o default
			{"kvmlab container -- --*", nil},
		} {
			if got := complete(tc.line); !slices.Equal(got, tc.want) {
				t.Errorf("%q: %q, want %q", tc.line, got, tc.want)
			}
		}
	})

	t.Run("zsh completion", func(t *testing.T) {
		zsh, err := exec.LookPath("zsh")
		if err != nil {
			t.Fatal("no zsh: tests/deps.sh installs it (apt-get install zsh)")
		}
		r := runBin(t, bin, nil, "completion", "zsh")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("completion zsh: %+v", r)
		}
		script := filepath.Join(dir, "_kvmlab")
		if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
			t.Fatalf("zsh -n: %v\n%s", err, out)
		}
		out, err := exec.Command(zsh, "-f", "-c", "autoload -U compinit && compinit -u -D && source "+script+" && print -r -- $_comps[kvmlab]").CombinedOutput()
		if err != nil || string(out) != "_kvmlab\n" {
			t.Fatalf("compdef after source: %q, %v", out, err)
		}
		// Every visible flag of every command is in the script, no internal one is.
		for _, name := range subcommands {
			for _, f := range helpFlags(runBin(t, bin, nil, name, "--help").stdout) {
				if !strings.Contains(r.stdout, "'"+f+"[") && !strings.Contains(r.stdout, "'*"+f+"=[") {
					t.Errorf("zsh script lacks %s %s", name, f)
				}
			}
		}
		for _, f := range internalFlags {
			if strings.Contains(r.stdout, "--"+f+"[") || strings.Contains(r.stdout, "--"+f+"=[") {
				t.Errorf("zsh script offers the internal flag --%s", f)
			}
		}
	})
}
