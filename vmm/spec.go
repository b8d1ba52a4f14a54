package vmm

import (
	"errors"
	"os"
	"path/filepath"

	"kvmlab/guest"
	"kvmlab/guestmem"
	"kvmlab/internal/cli"
	"kvmlab/internal/userfile"
	"kvmlab/vmm/boot"
)

// A machine as a user describes it (kvmlab run's flags, and the VM side of
// kvmlab compare): files by path, sizes as text, devices as the flags write
// them. Loading it reads the files with bounds (package internal/userfile:
// a regular file, no FIFO, no /dev/zero) and checks the whole against the
// host and against itself (enough RAM for the kernel and initrd, no more
// than the host has, the vCPUs the ACPI tables can describe, the PCI slots
// the devices need) before anything is built. Each refusal is one line
// naming the flag and the fix (a cli.UsageError).

// MaxKernelSize bounds a kernel file. A bzImage is about 10 MiB; an ELF
// vmlinux with debug information a few hundred MiB. Anything larger is not
// a kernel (and would need four times its size in guest RAM: MinGuestMem).
const MaxKernelSize = 1 << 30

// Spec is a machine as a user describes it.
type Spec struct {
	// Kernel and Initrd are paths. Without Kernel the default guest is
	// booted (guest.Default), with its initramfs unless Initrd is given.
	Kernel, Initrd  string
	Cmdline         string
	Mem             string // RAM as ParseMemSize reads it
	CPUs            int
	Disks, Nets     []string // as ParseDisk and ParseNet read them
	RNG, NoEventFDs bool
	// GuestDecompress boots a compressed bzImage as it is; otherwise it
	// is decompressed on the host once and cached (hostdecompress.go).
	GuestDecompress bool
}

// Load reads and checks s into a Config, and says which kernel and initrd
// files it read (the defaults filled in).
func (s Spec) Load() (cfg Config, kernelPath, initrdPath string, err error) {
	mem, err := ParseMemSize(s.Mem)
	if err != nil {
		return cfg, "", "", cli.Usagef("--mem %s: not a size: use a number with K, M or G, e.g. --mem 512M", s.Mem)
	}
	if s.CPUs < 1 {
		return cfg, "", "", cli.Usagef("--cpus %d: a guest needs at least one vCPU: use --cpus 1 or more", s.CPUs)
	}
	if s.CPUs > 255 {
		return cfg, "", "", cli.Usagef("--cpus %d: kvmlab's ACPI tables describe at most 255 vCPUs: use fewer (KVM's own limit is shown by 'kvmlab check')", s.CPUs)
	}
	kernelPath, initrdPath = s.Kernel, s.Initrd
	if kernelPath == "" {
		k, i := guest.Default()
		if _, err := os.Stat(k); err != nil {
			return cfg, "", "", cli.Usagef("the default guest kernel is not built (%s): run 'make guest', or pass --kernel PATH", k)
		}
		kernelPath = k
		if initrdPath == "" {
			initrdPath = i
		}
	}
	kernel, err := userfile.ReadFile(kernelPath, userfile.Spec{What: "kernel", Max: MaxKernelSize})
	if err != nil {
		return cfg, "", "", cli.Usagef("--kernel %s: %v", kernelPath, err)
	}
	if _, err := boot.Parse(kernel); err != nil {
		return cfg, "", "", cli.Usagef("--kernel %s: %v", kernelPath, err)
	}
	if host := HostMemory(); host > 0 && mem > host {
		return cfg, "", "", cli.Usagef("--mem %s: more than this host's %d MiB of RAM: use a smaller --mem", s.Mem, host>>20)
	}
	var initrd []byte
	if initrdPath != "" {
		// The size is checked on the opened file before reading: a huge
		// file is refused without costing its read.
		lowRAM := min(mem, uint64(guestmem.MMIOHoleStart))
		initrd, err = userfile.ReadFile(initrdPath, userfile.Spec{What: "initrd", Max: int64(lowRAM / 2)})
		var ue *userfile.Error
		if errors.As(err, &ue) && errors.Is(err, userfile.ErrTooLarge) {
			return cfg, "", "", cli.Usagef("--initrd %s: %d MiB is too large for %d MiB of guest RAM: raise --mem to at least %d MiB",
				initrdPath, ue.Size>>20, mem>>20, (MinGuestMem(len(kernel), int(min(ue.Size, 1<<40)))>>20)+1)
		}
		if err != nil {
			return cfg, "", "", cli.Usagef("--initrd %s: %v", initrdPath, err)
		}
	}
	if need := MinGuestMem(len(kernel), len(initrd)); mem < need {
		return cfg, "", "", cli.Usagef("--mem %s: too little RAM for this kernel and initrd (need about %d MiB): raise --mem", s.Mem, (need>>20)+1)
	}
	cfg = Config{Kernel: kernel, Initrd: initrd, Cmdline: s.Cmdline, MemBytes: mem, CPUs: s.CPUs,
		RNG: s.RNG, NoEventFDs: s.NoEventFDs}
	if !s.GuestDecompress {
		cfg.DecompressCache = filepath.Join(guest.CacheDir(), "vmlinux") // hostdecompress.go
	}
	for _, d := range s.Disks {
		dc, err := ParseDisk(d)
		if err != nil {
			return cfg, "", "", cli.Usagef("--disk %s: %v", d, err)
		}
		cfg.Disks = append(cfg.Disks, dc)
	}
	for _, n := range s.Nets {
		nc, err := ParseNet(n)
		if err != nil {
			return cfg, "", "", cli.Usagef("--net %s: %v", n, err)
		}
		cfg.Nets = append(cfg.Nets, nc)
	}
	devices := len(cfg.Disks) + len(cfg.Nets)
	if s.RNG {
		devices++
	}
	if devices > 31 {
		return cfg, "", "", cli.Usagef("too many virtio devices: PCI bus 0 has 31 free slots")
	}
	return cfg, kernelPath, initrdPath, nil
}
