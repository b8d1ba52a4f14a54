package vmm

import (
	"fmt"
	"os"

	"kvmlab/devices/virtio/blk"
	"kvmlab/vmm/vmstate"
)

// OpenSnapshot reads the snapshot in f (package vmstate) and checks the
// machine it describes against this host before anything is built: its
// description sound (SnapshotConfig), its disk images back at their paths
// and usable, its RAM no more than this host has. Each refusal says what
// to do. Restore then builds the machine from the file and the config.
func OpenSnapshot(f *os.File) (*vmstate.File, Config, error) {
	s, err := vmstate.OpenFile(f)
	if err != nil {
		return nil, Config{}, fmt.Errorf("%w: take a new one with 'kvmlab control SOCKET snapshot FILE'", err)
	}
	cfg, disks, err := SnapshotConfig(s)
	if err != nil {
		return nil, Config{}, err
	}
	for _, d := range disks {
		if err := blk.Check(d.Path, d.ReadOnly); err != nil {
			return nil, Config{}, fmt.Errorf("its disk %s: %w: put the image back at that path as it was", d.Path, err)
		}
	}
	if host := HostMemory(); host > 0 && cfg.MemBytes > host {
		return nil, Config{}, fmt.Errorf("the machine has %d MiB of RAM, more than this host's %d MiB: restore it on a larger host", cfg.MemBytes>>20, host>>20)
	}
	return s, cfg, nil
}
