package virtio

// The PCI layer of a virtio device's state: its configuration space (BAR0's
// address, the command register, MSI-X message control) and its MSI-X table
// and pending bits, saved and checked by package pci.

import (
	"errors"
	"fmt"

	"kvmlab/devices/pci"
)

func (t *PCI) savePCI() (pci.ConfigState, pci.MSIXState, error) {
	// Configuration space first, MSI-X second: the order RestoreState
	// needs (the MSI-X state's message control bits are the ones that
	// stay).
	return t.ConfigSpace.SaveState(), t.msix.SaveState(), nil
}

// restorePCI applies cfg and ms; on error nothing changed.
func (t *PCI) restorePCI(cfg pci.ConfigState, ms pci.MSIXState) error {
	old := t.ConfigSpace.SaveState()
	if err := t.ConfigSpace.RestoreState(cfg); err != nil {
		return err
	}
	if err := t.msix.RestoreState(ms); err != nil {
		if errors.Is(err, pci.ErrMSIXDeliver) {
			// Restored; only sending a pending message failed, as an
			// unmask's delivery can.
			t.opts.Log("%s: %v", t.name, err)
			return nil
		}
		if rerr := t.ConfigSpace.RestoreState(old); rerr != nil {
			return errors.Join(err, fmt.Errorf("putting configuration space back: %w", rerr))
		}
		return err
	}
	return nil
}
