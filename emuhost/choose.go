package emuhost

import "fmt"

// ChooseEmulator reads a user's --emulated-cpu (amd or intel) for a guest
// of memMiB MiB of RAM (mem, as the user wrote it). amd, QEMU's host, is
// the default; intel, Bochs's, must come with --emulated-host
// (emulatedHost), and its host's 2 GiB (bochsMaxMemMB) must hold the
// guest's RAM and 512 MiB for the host itself: its kernel, and kvmlab and
// the guest's files in its RAM disk. Each refusal names the flag and the
// fix in one line.
func ChooseEmulator(cpu string, emulatedHost bool, memMiB uint64, mem string) (Emulator, error) {
	emu, err := EmulatorFor(cpu)
	if err != nil {
		return "", fmt.Errorf("--emulated-cpu %s: use amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x)", cpu)
	}
	if emu != BochsVMX {
		return emu, nil
	}
	if !emulatedHost {
		return "", fmt.Errorf("--emulated-cpu %s chooses the emulated host's CPU: add --emulated-host", cpu)
	}
	if maxMiB := uint64(bochsMaxMemMB - 512); memMiB > maxMiB {
		return "", fmt.Errorf("--mem %s: the emulated Intel host has %d MiB: give the guest %dM or less", mem, bochsMaxMemMB, maxMiB)
	}
	return emu, nil
}
