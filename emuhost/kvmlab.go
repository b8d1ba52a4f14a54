package emuhost

import (
	"fmt"
	"io"
	"strconv"
)

// This file builds the Spec for running kvmlab itself inside the emulated
// host: the files it carries in and the command line the inner kvmlab gets.
// The CLI checks its flags first; what is here only lays them out.

// KVMLabFiles are what a kvmlab command carries into the emulated host to
// run itself there: the kvmlab binary self, the kernel and, when not "",
// the initramfs, at the paths the inner command is given
// (/kvmlab/kvmlab, /kvmlab/kernel, /kvmlab/initrd).
func KVMLabFiles(self, kernel, initrd string) []File {
	files := []File{
		{HostPath: self, Path: "/kvmlab/kvmlab", Mode: 0o755},
		{HostPath: kernel, Path: "/kvmlab/kernel", Mode: 0o644},
	}
	if initrd != "" {
		files = append(files, File{HostPath: initrd, Path: "/kvmlab/initrd", Mode: 0o644})
	}
	return files
}

// KVMLabRun is a `kvmlab run` to repeat inside the emulated host: host
// paths of the binary, kernel, initramfs and disk images, and the flags
// passed on as they were given.
type KVMLabRun struct {
	Self, Kernel, Initrd string
	Mem, Append          string // --mem as given, --append
	// DefaultAppend leaves --append out, so that the inner kvmlab uses
	// its own default line (with --exec, the default plus quiet).
	DefaultAppend   bool
	MemBytes        uint64 // --mem read: the host is sized to fit it
	CPUs            int
	Quiet, Stats    bool
	RNG, NoEventFDs bool
	GuestDecompress bool // --guest-decompress
	Disks           []Disk
}

// Disk is a disk image for the guest. It travels into the emulated host's
// RAM disk, so the guest's writes stay there.
type Disk struct {
	Path     string
	ReadOnly bool
}

// Spec is the emulated host on emulator emu that runs r, with its console
// on this terminal (out).
func (r KVMLabRun) Spec(emu Emulator, out io.Writer) Spec {
	files := KVMLabFiles(r.Self, r.Kernel, r.Initrd)
	argv := []string{"/kvmlab/kvmlab", "run", "--kernel", "/kvmlab/kernel", "--mem", r.Mem,
		"--cpus", strconv.Itoa(r.CPUs)}
	if !r.DefaultAppend {
		argv = append(argv, "--append", r.Append)
	}
	if r.Initrd != "" {
		argv = append(argv, "--initrd", "/kvmlab/initrd")
	}
	for _, f := range []struct {
		on   bool
		flag string
	}{{r.Quiet, "--quiet"}, {r.Stats, "--stats"}} {
		if f.on {
			argv = append(argv, f.flag)
		}
	}
	for i, d := range r.Disks {
		p := fmt.Sprintf("/kvmlab/disk%d", i)
		files = append(files, File{HostPath: d.Path, Path: p, Mode: 0o644})
		if d.ReadOnly {
			p += ",ro"
		}
		argv = append(argv, "--disk", p)
	}
	if r.RNG {
		argv = append(argv, "--rng")
	}
	if r.NoEventFDs {
		argv = append(argv, "--no-eventfds")
	}
	if r.GuestDecompress {
		argv = append(argv, "--guest-decompress")
	}
	// The emulated host needs the guest's RAM plus room for itself.
	return Spec{
		Emulator: emu,
		Files:    files, Argv: argv, MemMB: max(2048, int(r.MemBytes>>20)+1536), CPUs: max(2, r.CPUs),
		Interactive: true, Output: out,
	}
}
