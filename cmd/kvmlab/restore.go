package main

// kvmlab run --restore FILE: the machine comes from a snapshot file
// (vmm/savestate.go, vmm/restore.go, docs/snapshot.md), not from flags.

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"kvmlab/devices/virtio/blk"
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
	s, err := vmstate.OpenFile(f)
	if err != nil {
		f.Close()
		return nil, usagef("--restore %s: %v: take a new one with 'kvmlab control SOCKET snapshot FILE'", path, err)
	}
	cfg, disks, err := vmm.SnapshotConfig(s)
	if err != nil {
		f.Close()
		return nil, usagef("--restore %s: %v", path, err)
	}
	for _, d := range disks {
		if err := blk.Check(d.Path, d.ReadOnly); err != nil {
			f.Close()
			return nil, usagef("--restore %s: its disk %s: %v: put the image back at that path as it was", path, d.Path, err)
		}
	}
	if host := vmm.HostMemory(); host > 0 && cfg.MemBytes > host {
		f.Close()
		return nil, usagef("--restore %s: the machine has %d MiB of RAM, more than this host's %d MiB: restore it on a larger host", path, cfg.MemBytes>>20, host>>20)
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
