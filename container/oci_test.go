package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteBundle(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		resources string // the linux.resources object as JSON, "" for none
	}{
		{"no limits: the defaults", Config{Args: []string{"/bin/sh"}},
			`{"memory":{"limit":536870912,"swap":536870912},"pids":{"limit":512}}`},
		{"unlimited", Config{Args: []string{"/bin/sh"}, Limits: Limits{Memory: MemoryUnlimited, Pids: PidsUnlimited}}, ""},
		{"all limits", Config{Args: []string{"/bin/sh"}, Hostname: "box", Limits: Limits{Memory: 256 << 20, CPUs: 0.5, Pids: 64}},
			`{"memory":{"limit":268435456,"swap":268435456},"cpu":{"quota":50000,"period":100000},"pids":{"limit":64}}`},
		{"memory only", Config{Args: []string{"/bin/true"}, Limits: Limits{Memory: 32 << 20}},
			`{"memory":{"limit":33554432,"swap":33554432},"pids":{"limit":512}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteBundle(dir, "/some/root", tc.cfg); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			// Read it back the way a runtime would: as generic JSON.
			var spec struct {
				Version  string `json:"ociVersion"`
				Hostname string `json:"hostname"`
				Root     struct{ Path string }
				Process  struct{ Args []string }
				Linux    struct {
					Namespaces []struct{ Type string }
					Resources  json.RawMessage
				}
			}
			if err := json.Unmarshal(b, &spec); err != nil {
				t.Fatalf("config.json is not JSON: %v", err)
			}
			wantHost := tc.cfg.Hostname
			if wantHost == "" {
				wantHost = DefaultHostname
			}
			if spec.Version != "1.0.2" || spec.Root.Path != "/some/root" || spec.Hostname != wantHost ||
				strings.Join(spec.Process.Args, " ") != strings.Join(tc.cfg.Args, " ") {
				t.Errorf("config.json: %s", b)
			}
			var ns []string
			for _, n := range spec.Linux.Namespaces {
				ns = append(ns, n.Type)
			}
			if got := strings.Join(ns, ","); got != "pid,mount,uts,ipc,network,cgroup" {
				t.Errorf("namespaces %s", got)
			}
			if got := string(spec.Linux.Resources); tc.resources == "" && got != "" || tc.resources != "" && compactJSON(t, got) != tc.resources {
				t.Errorf("resources %s, want %s", got, tc.resources)
			}
		})
	}
	if err := WriteBundle(t.TempDir(), "/r", Config{}); err == nil {
		t.Error("WriteBundle without a command: no error")
	}
}

func compactJSON(t *testing.T, s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRunc runs workloads through runc when it is installed (it is an
// optional comparison; apt-get install runc).
func TestRunc(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc is not installed (apt-get install runc): the runc comparison is not tested")
	}
	root := fixture(t)
	tests := []struct {
		name     string
		cfg      Config
		wantCode int
		wantOut  string
	}{
		{"hostname", Config{Args: []string{"/probe", "hostname"}, Hostname: "runc-box"}, 0, "hostname=runc-box\n"},
		{"exit status", Config{Args: []string{"/bin/sh", "-c", "exit 7"}}, 7, ""},
		{"only lo", Config{Args: []string{"/probe", "netdevs"}}, 0, "devs=lo\n"},
		{"OOM under a memory limit", Config{Args: []string{"/probe", "alloc", "100"}, Limits: Limits{Memory: 32 << 20}}, 137, ""},
		// runc is given the same capabilities and no_new_privs as Init.
		{"capabilities and no_new_privs", Config{Args: []string{"/probe", "status"}}, 0, fmt.Sprintf(
			"Uid=0 0 0 0\nGid=0 0 0 0\nCapInh=0000000000000000\nCapPrm=%016x\nCapEff=%016x\nCapBnd=%016x\nCapAmb=0000000000000000\nNoNewPrivs=1\n",
			workloadCapMask(), workloadCapMask(), workloadCapMask())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			tc.cfg.Rootfs, tc.cfg.Stdin, tc.cfg.Stdout, tc.cfg.Stderr = root, strings.NewReader(""), &out, &errb
			before := snapshot(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := RunRunc(ctx, tc.cfg)
			if err != nil {
				t.Fatalf("RunRunc: %v\nstderr: %s", err, errb.String())
			}
			t.Logf("exit %d, wall %v, teardown %v", res.ExitCode, res.Wall, res.Teardown)
			if res.ExitCode != tc.wantCode || !strings.HasPrefix(out.String(), tc.wantOut) {
				t.Errorf("exit %d, output %q; want %d and %q (stderr %s)", res.ExitCode, out.String(), tc.wantCode, tc.wantOut, errb.String())
			}
			before.checkLeaks(t, res)
		})
	}
	t.Run("no command", func(t *testing.T) {
		if _, err := RunRunc(context.Background(), Config{Rootfs: root}); !errors.Is(err, ErrSetup) {
			t.Errorf("RunRunc without a command: %v, want ErrSetup", err)
		}
	})
}
