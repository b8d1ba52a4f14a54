package virtionet

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// tunDevice is the TUN/TAP clone device (Documentation/networking/tuntap.rst
// §3): each open file is bound to one interface by TUNSETIFF.
const tunDevice = "/dev/net/tun"

// TAP is an open TAP interface: a Backend whose frames carry the 12-byte
// virtio_net_hdr (IFF_VNET_HDR, TUNSETVNETHDRSZ 12). The file descriptor is
// non-blocking and registered with Go's poller, so Read parks the goroutine
// instead of a thread, SetReadDeadline works, and Close makes a blocked Read
// return.
type TAP struct {
	f    *os.File
	name string
}

var _ Backend = (*TAP)(nil)

// OpenTAP attaches to the TAP interface name, creating it when it does not
// exist. Creating one needs CAP_NET_ADMIN; attaching to a persistent TAP
// made with "ip tuntap add NAME mode tap user $USER" only needs to be that
// user. A name containing %d (like "tap%d") lets the kernel pick the
// number; Name returns the result. An interface created here disappears on
// Close; a persistent one stays.
//
// The interface is not brought up or given an address: that is host
// network configuration (ip link set NAME up, a bridge, …), not the VMM's.
// Until it is up, writes fail with EIO (the device counts them as
// TxErrors) and nothing is read.
func OpenTAP(name string) (*TAP, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("virtio-net: TAP name %q: %w", name, err)
	}
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%s: %w (load the tun module: modprobe tun)", tunDevice, err)
		}
		if errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("open %s: %w (it is normally mode 0666; access control is on the interface)", tunDevice, err)
		}
		return nil, fmt.Errorf("open %s: %w", tunDevice, err)
	}
	// fd is closed on every error below until os.NewFile owns it.
	// IFF_TAP: Ethernet frames, not IP packets. IFF_NO_PI: no 4-byte
	// packet-information prefix. IFF_VNET_HDR: a virtio_net_hdr instead.
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, tunsetiffError(name, err)
	}
	got := ifr.Name()
	// The kernel's default header is the 10-byte legacy one; the VERSION_1
	// header has num_buffers too (§5.1.6).
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: TUNSETVNETHDRSZ %d on %s: %w", HeaderSize, got, err)
	}
	// VERSION_1 headers are little-endian whatever the host (§5.1.6);
	// without this a big-endian host would use its own order.
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: TUNSETVNETLE on %s: %w", got, err)
	}
	// No receive offloads: the host stack must checksum and segment every
	// frame before it reaches us, because the guest is offered none
	// (GUEST_CSUM, GUEST_TSO*). A persistent TAP may still have them from
	// its last user. Transmit offloads need no setting: a TAP with
	// IFF_VNET_HDR takes a partial checksum or a TSO segment from the
	// header it is written with.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: TUNSETOFFLOAD 0 on %s: %w", got, err)
	}
	// fd is non-blocking, so NewFile registers it with the poller.
	f := os.NewFile(uintptr(fd), tunDevice+":"+got)
	return &TAP{f: f, name: got}, nil
}

// tunsetiffError explains the usual reasons TUNSETIFF fails.
func tunsetiffError(name string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("virtio-net: TUNSETIFF %s: %w (create the TAP first: ip tuntap add %s mode tap user $USER)", name, err, name)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("virtio-net: TUNSETIFF %s: %w (another process has it open)", name, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("virtio-net: TUNSETIFF %s: %w (an interface of that name exists and is not a single-queue TAP)", name, err)
	}
	return fmt.Errorf("virtio-net: TUNSETIFF %s: %w", name, err)
}

// Name returns the interface name.
func (t *TAP) Name() string { return t.name }

// Read implements Backend: one frame, virtio_net_hdr first.
func (t *TAP) Read(p []byte) (int, error) { return t.f.Read(p) }

// Write implements Backend: one frame, virtio_net_hdr first.
func (t *TAP) Write(p []byte) (int, error) { return t.f.Write(p) }

// SetReadDeadline implements Backend.
func (t *TAP) SetReadDeadline(d time.Time) error { return t.f.SetReadDeadline(d) }

// Close detaches from the interface (and deletes it, unless persistent).
func (t *TAP) Close() error { return t.f.Close() }
