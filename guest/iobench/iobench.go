// Package iobench is the guest half of `kvmlab bench --io`: a small
// fio-like workload that measures what a virtio disk and a virtio network
// card deliver to a program inside the VM, the same binary under kvmlab and
// under QEMU so the figures compare devices, not tools.
//
// # What it measures, and why this way
//
// A virtio-blk request is a descriptor chain the driver puts on a virtqueue
// (virtio 1.2 §5.2.6): a header naming the operation and sector, the data
// buffers and a status byte. Its cost, seen from the guest, is the notify
// (a write to the device's notification area, which either exits to the
// VMM or is caught by an ioeventfd in KVM), the VMM's read or write on the
// image, and the completion interrupt (an irqfd, or an ioctl from the VMM).
// To see that cost and not the guest's page cache, every disk access here
// uses O_DIRECT with a page-aligned buffer: one read(2) of 1 MiB becomes
// requests on the queue at once, with no cache in the guest to hide them.
//
//   - seqwrite: N MiB written in 1 MiB blocks, then fdatasync (a virtio-blk
//     FLUSH), timed together;
//   - seqread: the same N MiB read back in 1 MiB blocks;
//   - randread / randwrite: K single 4 KiB requests at random 4 KiB-aligned
//     offsets in that area, one at a time (queue depth 1), so the figure is
//     the round trip of one request: IOPS = K / time;
//   - net: a TCP connection to a sink on the host side of the TAP, M MiB
//     sent, timed until the sink's 8-byte reply (the count it received)
//     arrives, so the clock stops only when every byte reached the host.
//
// Each phase prints "KVMLAB-IO start NAME" on standard output (the serial
// console), waits for the console to drain and a moment more, so the host
// can sample KVM's exit counters before the phase begins, and ends with
// "KVMLAB-IO end NAME bytes=B ops=K ns=T" after it. Times come from the
// guest's CLOCK_MONOTONIC.
package iobench

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Name is the program's name in the guest image (/bin/kvmlab-io).
const Name = "kvmlab-io"

// Marker lines.
const (
	MarkUser     = "KVMLAB-IO userspace"
	MarkStart    = "KVMLAB-IO start "
	MarkEnd      = "KVMLAB-IO end "
	MarkFail     = "KVMLAB-IO fail "
	MarkPoweroff = "KVMLAB-IO poweroff"
)

// Config is what to run.
type Config struct {
	Disk    string         // block device, e.g. /dev/vda ("" skips the disk phases)
	Direct  bool           // O_DIRECT (bypass the guest's page cache)
	MiB     int            // sequential area
	Ops     int            // random requests per direction
	Iface   string         // network interface ("" skips the network phase)
	Addr    netip.Prefix   // the guest's address on it
	Sink    netip.AddrPort // the host's sink
	NetMiB  int
	Settle  time.Duration // pause after each start marker
	Console *os.File      // drained after markers (nil: no drain)
}

// Main parses args and runs the phases, printing markers on stdout.
func Main(args []string, stdout, stderr *os.File) int {
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c Config
	var addr, sink string
	fs.StringVar(&c.Disk, "disk", "/dev/vda", "block device to measure (empty: none)")
	fs.BoolVar(&c.Direct, "direct", true, "use O_DIRECT on the disk")
	fs.IntVar(&c.MiB, "mib", 32, "MiB for the sequential phases")
	fs.IntVar(&c.Ops, "ops", 1000, "4 KiB requests for each random phase")
	fs.StringVar(&c.Iface, "iface", "eth0", "network interface (empty: no network phase)")
	fs.StringVar(&addr, "addr", "10.0.2.15/24", "the guest's address")
	fs.StringVar(&sink, "sink", "10.0.2.1:5201", "the host's TCP sink")
	fs.IntVar(&c.NetMiB, "net-mib", 16, "MiB to send to the sink")
	fs.DurationVar(&c.Settle, "settle", 200*time.Millisecond, "pause after each start marker")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if c.Addr, err = netip.ParsePrefix(addr); err != nil || !c.Addr.Addr().Is4() {
		fmt.Fprintf(stderr, "%s: -addr %q: want an IPv4 prefix like 10.0.2.15/24\n", Name, addr)
		return 2
	}
	if c.Sink, err = netip.ParseAddrPort(sink); err != nil {
		fmt.Fprintf(stderr, "%s: -sink %q: want ADDR:PORT\n", Name, sink)
		return 2
	}
	if c.MiB < 1 || c.Ops < 0 || c.NetMiB < 0 {
		fmt.Fprintf(stderr, "%s: -mib must be at least 1, -ops and -net-mib not negative\n", Name)
		return 2
	}
	c.Console = stdout
	fmt.Fprintln(stdout, MarkUser)
	if err := Run(c, stdout); err != nil {
		fmt.Fprintf(stdout, "%s%v\n", MarkFail, err)
		drain(stdout)
		return 1
	}
	fmt.Fprintln(stdout, MarkPoweroff)
	drain(stdout)
	return 0
}

// Run runs the phases in order.
func Run(c Config, out io.Writer) error {
	if c.Disk != "" {
		if err := diskPhases(c, out); err != nil {
			return err
		}
	}
	if c.Iface != "" && c.NetMiB > 0 {
		if err := IfUp(c.Iface, c.Addr); err != nil {
			return fmt.Errorf("net: configure %s: %w", c.Iface, err)
		}
		if err := phase(c, out, "net", func() (int64, int, error) { return sendTo(c.Sink, c.NetMiB<<20) }); err != nil {
			return err
		}
	}
	return nil
}

// phase prints the start marker, lets the host sample, runs f and prints
// the end marker with what f did and how long it took.
func phase(c Config, out io.Writer, name string, f func() (bytes int64, ops int, err error)) error {
	fmt.Fprintf(out, "%s%s\n", MarkStart, name)
	drain(c.Console)
	time.Sleep(c.Settle)
	t0 := time.Now()
	n, ops, err := f()
	d := time.Since(t0)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(out, "%s%s bytes=%d ops=%d ns=%d\n", MarkEnd, name, n, ops, d.Nanoseconds())
	drain(c.Console)
	return nil
}

const (
	block = 1 << 20
	small = 4 << 10
)

func diskPhases(c Config, out io.Writer) error {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if c.Direct {
		flags |= unix.O_DIRECT
	}
	fd, err := unix.Open(c.Disk, flags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", c.Disk, err)
	}
	defer unix.Close(fd)
	size, err := unix.Seek(fd, 0, io.SeekEnd) // a block device's size
	if err != nil {
		return fmt.Errorf("%s: size: %w", c.Disk, err)
	}
	area := int64(c.MiB) << 20
	if area > size {
		return fmt.Errorf("%s is %d bytes, smaller than -mib %d", c.Disk, size, c.MiB)
	}
	// O_DIRECT needs an aligned buffer: an anonymous mapping is
	// page-aligned.
	buf, err := unix.Mmap(-1, 0, block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	seq := func(write bool) func() (int64, int, error) {
		return func() (int64, int, error) {
			var n int64
			ops := 0
			for off := int64(0); off < area; off += block {
				var k int
				var err error
				if write {
					k, err = unix.Pwrite(fd, buf, off)
				} else {
					k, err = unix.Pread(fd, buf, off)
				}
				if err != nil {
					return n, ops, err
				}
				if k != block {
					return n, ops, fmt.Errorf("short transfer at %d: %d bytes", off, k)
				}
				n += int64(k)
				ops++
			}
			if write {
				if err := unix.Fdatasync(fd); err != nil {
					return n, ops, fmt.Errorf("fdatasync: %w", err)
				}
			}
			return n, ops, nil
		}
	}
	random := func(write bool) func() (int64, int, error) {
		return func() (int64, int, error) {
			r := rand.New(rand.NewPCG(1, 2)) // the same offsets under every VMM
			slots := area / small
			var n int64
			for i := 0; i < c.Ops; i++ {
				off := r.Int64N(slots) * small
				var k int
				var err error
				if write {
					k, err = unix.Pwrite(fd, buf[:small], off)
				} else {
					k, err = unix.Pread(fd, buf[:small], off)
				}
				if err != nil {
					return n, i, err
				}
				if k != small {
					return n, i, fmt.Errorf("short transfer at %d: %d bytes", off, k)
				}
				n += int64(k)
			}
			return n, c.Ops, nil
		}
	}
	for _, p := range []struct {
		name string
		f    func() (int64, int, error)
	}{
		{"seqwrite", seq(true)},
		{"seqread", seq(false)},
		{"randread", random(false)},
		{"randwrite", random(true)},
	} {
		if p.name[:4] == "rand" && c.Ops == 0 {
			continue
		}
		if err := phase(c, out, p.name, p.f); err != nil {
			return err
		}
	}
	return nil
}

// IfUp gives iface its address and brings it up, with the classic ioctls
// (what ifconfig does), so the guest needs no ip tool. The host half of
// the benchmark uses it for its end of the TAP too.
func IfUp(iface string, addr netip.Prefix) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return err
	}
	if err := ifr.SetInet4Addr(addr.Addr().AsSlice()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("SIOCSIFADDR: %w", err)
	}
	mask := net.CIDRMask(addr.Bits(), 32)
	if err := ifr.SetInet4Addr(mask); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("SIOCSIFNETMASK: %w", err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// sendTo connects to the sink, sends n bytes and waits for the sink's
// count. The connect is retried for a few seconds: the link may take a
// moment to come up.
func sendTo(sink netip.AddrPort, n int) (int64, int, error) {
	var conn net.Conn
	var err error
	for i := 0; i < 50; i++ {
		conn, err = net.DialTimeout("tcp", sink.String(), 2*time.Second)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Minute))
	chunk := make([]byte, 64<<10)
	sent := 0
	for sent < n {
		k, err := conn.Write(chunk[:min(len(chunk), n-sent)])
		sent += k
		if err != nil {
			return int64(sent), 0, err
		}
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return int64(sent), 0, err
	}
	var got [8]byte
	if _, err := io.ReadFull(conn, got[:]); err != nil {
		return int64(sent), 0, fmt.Errorf("sink's reply: %w", err)
	}
	if r := binary.BigEndian.Uint64(got[:]); r != uint64(n) {
		return int64(sent), 0, fmt.Errorf("the sink received %d bytes of %d", r, n)
	}
	return int64(sent), 1, nil
}

// drain waits until the serial port has sent what was written to f, if f
// is a terminal (tcdrain).
func drain(f *os.File) {
	if f != nil {
		_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
	}
}

// Sink accepts connections on l and, for each, counts the bytes until the
// sender closes its side, then replies with the count (8 bytes, big
// endian). It is the host half of the net phase. It returns when l is
// closed.
func Sink(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
			n, _ := io.Copy(io.Discard, c)
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(n))
			_, _ = c.Write(b[:])
		}()
	}
}
