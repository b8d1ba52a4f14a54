package vmm

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmlab/vmm/vmstate"
)

// TestSnapshotClones: a tiny guest counting in RAX is saved while it runs,
// stopped, and restored twice. Each clone starts with the saved RAX (not
// zero, not the count the original reached later) and counts on from it:
// the learner's "two clones continue from the same instant".
func TestSnapshotClones(t *testing.T) {
	m, _ := startMachine(t, counterLoop, 1)
	first := waitAdvance(t, m, 0)
	path := filepath.Join(t.TempDir(), "counter.snap")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.SaveSnapshot(out, true) // stays paused: RAX stands still
	out.Close()
	if err != nil {
		t.Fatalf("SaveSnapshot: %v", err)
	}
	saved := rax(t, m)
	if saved < first {
		t.Fatalf("saved RAX %d is below %d, read before", saved, first)
	}
	t.Logf("snapshot: %d bytes in the file, %d of %d bytes of RAM, %d runs, guest paused %v", res.FileBytes, res.SavedBytes, res.RAMBytes, res.Runs, res.Paused)
	if res.SavedBytes == 0 || res.SavedBytes >= res.RAMBytes/4 {
		t.Errorf("saved %d bytes of RAM of %d: want the few pages the tiny guest touched", res.SavedBytes, res.RAMBytes)
	}
	// The original runs on after a resume: its count leaves the saved one
	// behind, and the clones must not see that.
	m.Resume()
	waitAdvance(t, m, saved)
	m.Quit()

	for clone := 1; clone <= 2; clone++ {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sf, err := vmstate.OpenFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if clone == 2 {
			// As kvmlab run --restore does: the configuration is
			// checked first, and Restore takes the description that
			// check decoded instead of parsing the JSON again.
			if cfg, _, err := SnapshotConfig(sf); err != nil || cfg.CPUs != 1 {
				t.Fatalf("SnapshotConfig: %+v, %v", cfg, err)
			}
			if sf.Parsed == nil {
				t.Fatal("SnapshotConfig kept no decoded description for Restore")
			}
		}
		c, err := Restore(Config{}, sf)
		f.Close()
		if err != nil {
			t.Fatalf("clone %d: Restore: %v", clone, err)
		}
		if sf.Parsed != nil {
			t.Errorf("clone %d: Restore left the decoded description in the File, for a second Restore to reuse after changing it", clone)
		}
		regs, err := c.vcpus[0].GetRegs()
		if err != nil {
			t.Fatal(err)
		}
		if regs.RAX != saved {
			t.Errorf("clone %d starts with RAX %d, want the saved %d", clone, regs.RAX, saved)
		}
		done := make(chan Outcome, 1)
		go func() { done <- c.Run() }()
		waitAdvance(t, c, saved)
		c.Quit()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Fatalf("clone %d did not stop", clone)
		}
		c.Close()
	}
}

// TestSnapshotOutputRefused: SaveSnapshot writes only into an empty regular
// file, and the machine runs on after a refusal.
func TestSnapshotOutputRefused(t *testing.T) {
	m, _ := startMachine(t, counterLoop, 1)
	path := filepath.Join(t.TempDir(), "full")
	if err := os.WriteFile(path, []byte("not empty"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := m.SaveSnapshot(f, false); err == nil {
		t.Fatal("a non-empty output was accepted")
	}
	if m.Paused() {
		t.Error("the machine stayed paused after a refused snapshot")
	}
	waitAdvance(t, m, rax(t, m))
}

// TestRestoreRefusesDescription: a damaged description is refused before
// anything is built.
func TestRestoreRefusesDescription(t *testing.T) {
	tests := []struct{ name, desc string }{
		{"not JSON", "{"},
		{"unknown field", `{"bogus":1}`},
		{"no vCPUs", `{"config":{"cpus":0}}`},
		{"too many vCPUs", `{"config":{"cpus":100000}}`},
		{"vCPU count mismatch", `{"config":{"cpus":2},"vcpus":[{}],"vm":{}}`},
		{"no VM", `{"config":{"cpus":1},"vcpus":[{}]}`},
		{"bad MAC", `{"config":{"cpus":1,"nets":[{"tap":"t0","mac":"zz"}]},"vcpus":[{}],"vm":{}}`},
		{"virtio count", `{"config":{"cpus":1,"rng":true},"vcpus":[{}],"vm":{}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeDescription([]byte(tc.desc)); !errors.Is(err, ErrSnapshot) {
				t.Errorf("err = %v, want ErrSnapshot", err)
			}
		})
	}
}

// TestRestoreRefusesOtherVendor: a snapshot taken on the other CPU vendor's
// host is refused (its MSRs and XSAVE layout would be misread), with a
// message naming both.
func TestRestoreRefusesOtherVendor(t *testing.T) {
	m, _ := startMachine(t, counterLoop, 1)
	waitAdvance(t, m, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "here.snap")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.SaveSnapshot(out, false); err != nil {
		t.Fatal(err)
	}
	out.Close()
	m.Quit()

	// The same snapshot with the description's vendor swapped.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sf, err := vmstate.OpenFile(f)
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeDescription(sf.Description)
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"vmx": "svm", "svm": "vmx"}[d.Vendor]
	if other == "" {
		t.Skipf("this host's vendor %q is neither VT-x nor SVM", d.Vendor)
	}
	d.Vendor = other
	desc, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	ram := []vmstate.Region{{GPA: 0, Data: make([]byte, sf.RAMBytes)}}
	if err := sf.LoadRAM(ram); err != nil {
		t.Fatal(err)
	}
	swapped := filepath.Join(dir, "other.snap")
	w, err := os.Create(swapped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vmstate.Write(w, desc, ram); err != nil {
		t.Fatal(err)
	}
	w.Close()
	g, err := os.Open(swapped)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	sg, err := vmstate.OpenFile(g)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Restore(Config{}, sg)
	if !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), "host") {
		t.Fatalf("Restore of a %s snapshot here: %v, want a refusal naming the hosts", other, err)
	}
	t.Logf("refused: %v", err)
}
