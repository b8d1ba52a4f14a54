package main

// kvmlab run --restore FILE: the machine comes from a snapshot file
// (vmm/savestate.go, vmm/restore.go, docs/snapshot.md), not from flags.

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"kvmlab/internal/userfile"
	"kvmlab/vmm"
	"kvmlab/vmm/vmstate"
)

// machineFlags are the run flags that describe the machine: a snapshot
// brings its own, so they cannot go with --restore.
var machineFlags = []string{"kernel", "initrd", "append", "mem", "cpus", "disk", "net", "rng", "no-eventfds", "emulated-host", "emulated-cpu"}

// maxSnapshotSize bounds --restore: RAM runs are at most the machine's RAM,
// and kvmlab refuses guests with more RAM than its host has.
const maxSnapshotSize = 1 << 40

// snapshotSource is an opened, checked snapshot file and the machine it
// holds.
type snapshotSource struct {
	file *os.File
	snap *vmstate.File
	cfg  vmm.Config
}

// openSnapshot checks --restore's file and the machine it describes against
// this host, before anything is built: every refusal is one line naming
// the fix.
func openSnapshot(fset *flag.FlagSet, path string) (*snapshotSource, error) {
	var clash []string
	fset.Visit(func(fl *flag.Flag) {
		for _, n := range machineFlags {
			if fl.Name == n {
				clash = append(clash, "--"+n)
			}
		}
	})
	if len(clash) > 0 {
		return nil, usagef("--restore takes the machine from the snapshot: drop %s", strings.Join(clash, ", "))
	}
	f, _, err := userfile.Open(path, userfile.Spec{What: "snapshot", Max: maxSnapshotSize})
	if err != nil {
		return nil, usagef("--restore %s: %v", path, err)
	}
	s, cfg, err := vmm.OpenSnapshot(f)
	if err != nil {
		f.Close()
		return nil, usagef("--restore %s: %v", path, err)
	}
	return &snapshotSource{file: f, snap: s, cfg: cfg}, nil
}

// restoreError turns a refusal from vmm.Restore into one line.
func restoreError(path string, err error) error {
	if errors.Is(err, vmm.ErrSnapshot) || errors.Is(err, vmstate.ErrFormat) {
		return usagef("--restore %s: %v", path, err)
	}
	return kvmError(fmt.Errorf("--restore %s: %w", path, err))
}
