package bench

// What `kvmlab bench` measures, told to its user (--help), and the bounds of
// what a user may ask of it.

// About says what the benchmark measures and how, for `kvmlab bench
// --help`: this package's doc comment, told to its user.
const About = `Boots one kernel + initramfs + command line under kvmlab, QEMU with KVM
(-machine q35 and -machine microvm) and gokvm, several times each,
interleaved (kvmlab, q35, microvm, gokvm, kvmlab, ...), and prints for each
the median, minimum and maximum of:

  - process start -> first line of guest user space;
  - process start -> VMM exited after the guest's poweroff (gokvm cannot exit);
  - console: time for the guest to write --console-bytes to the serial port;
  - memory: peak RSS, RSS outside guest RAM, guest RAM resident at the end;
  - exits: all VM exits during the boot, and port/MMIO ones (KVM debugfs);
    the exits that reached the VMM's user space, by KVM_EXIT_* reason (a
    histogram on kvm:kvm_userspace_exit; root and tracefs), and, on each
    boot's line, the boot's busiest I/O ports (kvm:kvm_pio);

and each peer's ratio to kvmlab. With a command line without "quiet"
(--append "console=ttyS0 panic=-1"), the guest kernel logs as it boots,
and the bench also prints where each boot's time went, phase by phase
(firmware and decompressor, early set-up, clock calibration, initcalls,
initramfs unpack, to the first user-space line), with KVM's exits in each.

--guest debian boots Debian's stock kernel instead of kvmlab's (fetched
with apt-get download and cached). The peer kvmlab-guest-decompress is
kvmlab run --guest-decompress: the bzImage's own decompressor runs in the
guest, as under QEMU, where kvmlab otherwise decompresses it on the host.

The guest writes its markers and the console payload to the serial tty,
as programs do; gokvm's UART never raises the transmit interrupt the tty
waits for, so its guest writes through /dev/kmsg, which the kernel's
console sends by polling the UART. --console-via kmsg puts every VMM on
that path, for a console figure comparable with gokvm's.

Then the cost of one exit (--exit-loop N): a guest that writes a port N
and 2N times, under a minimal C loop (ioctl KVM_RUN and a switch), the
same loop in Go, and kvmlab's vCPU loop, all in the same VM; each prints
its own loop time. --vmms none runs this part only.

With --io it measures virtio devices instead: the guest gets a virtio-blk
disk on a raw image (and, with --net-mib N, a virtio-net card on a TAP this
command creates, which needs root) and runs /bin/kvmlab-io: sequential
1 MiB writes and reads and random 4 KiB reads and writes with O_DIRECT
(MB/s, IOPS), then the TCP stream to a sink on the host (MB/s), each with
KVM's exits per MiB. VMMs: kvmlab,
kvmlab-no-eventfds (kvmlab --no-eventfds) and qemu-q35 (virtio-blk-pci and
virtio-net-pci).

Without a usable /dev/kvm it runs inside
the emulated host (QEMU TCG with nested SVM), carrying QEMU, its firmware
and gokvm in. gokvm is built from the Go module proxy at the version
the bench names (needs go). --emulated-host --emulated-cpu intel runs it
in the emulated Intel host instead (Bochs interpreting VT-x, kvm_intel
inside): its times are an interpreter's, so compare its ratios only.
`

// Check refuses counts and sizes out of their bounds in Config, in one
// line naming the flag (a UsageError), before anything boots.
func (c *Config) Check() error {
	switch {
	case c.Runs < 1 || c.Runs > 100:
		return usagef("bench: --runs %d: give 1 to 100 boots per VMM", c.Runs)
	case c.Warmup < 0 || c.Warmup > 10:
		return usagef("bench: --warmup %d: give 0 to 10 uncounted rounds", c.Warmup)
	case c.ExitLoop < 0 || c.ExitLoop > 100_000_000:
		return usagef("bench: --exit-loop %d: give 0 (skip) to 100000000 exits", c.ExitLoop)
	case c.ConsoleVia != "tty" && c.ConsoleVia != "kmsg":
		return usagef("bench: --console-via %q: give tty or kmsg", c.ConsoleVia)
	case c.ConsoleBytes < 0 || c.ConsoleBytes > 16<<20:
		return usagef("bench: --console-bytes %d: give 0 to 16777216", c.ConsoleBytes)
	case c.IOMiB < 1 || c.IOMiB > 1024 || c.IOOps < 0 || c.IOOps > 1_000_000 || c.NetMiB < 0 || c.NetMiB > 4096:
		return usagef("bench: --io-mib %d, --io-ops %d, --net-mib %d: give 1-1024 MiB, 0-1000000 requests, 0-4096 MiB", c.IOMiB, c.IOOps, c.NetMiB)
	}
	return nil
}
