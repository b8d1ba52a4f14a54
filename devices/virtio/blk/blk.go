// Package blk is a virtio block device (virtio 1.2 §5.2) backed by a raw
// image file on the host: sector n of the disk is bytes 512n to 512n+511 of
// the file, with no format, header or metadata around them.
//
// # A request on the ring
//
// The device has one virtqueue, requestq (§5.2.2). The driver describes
// each request with one descriptor chain (§5.2.6):
//
//	driver → device (readable)   struct virtio_blk_req header, 16 bytes:
//	                               type     le32  IN 0, OUT 1, FLUSH 4, GET_ID 8
//	                               reserved le32
//	                               sector   le64  in 512-byte units, always
//	                             data for OUT (a write): a multiple of 512 bytes
//	device → driver (writable)   data for IN (a read) or GET_ID
//	                             status, 1 byte: OK 0, IOERR 1, UNSUPP 2
//
// The spec does not tie these fields to descriptors (§2.6.4, message
// framing): the header may be split over several buffers, and the data may
// share a buffer with the header. This device therefore sees a request as
// two byte streams, the readable bytes and the writable bytes, and takes
// the header from the front of the first and the status byte from the very
// end of the second.
//
// # Why the status byte comes last
//
// The status is the device's answer, so it must be writable, and it goes
// after the data because a read's data is writable too: putting it last
// lets the driver post data and status as one run of writable buffers
// whatever the data's length, and the device find it without parsing
// anything but lengths. The status byte is the only thing that tells the
// driver how its request ended, so a chain with no writable byte at all
// cannot be answered: this device treats it as a broken driver and puts
// itself into DEVICE_NEEDS_RESET (virtio.ErrNeedsReset) rather than guess.
// Every other malformed request (a short header, a length that is not a
// multiple of 512, sectors beyond the end of the disk) is answered with
// IOERR, the way a real disk refuses a bad command without going offline.
// A write to a read-only device also gets IOERR, and no data is written, as
// §5.2.6.2 requires. Request types this device does not offer (discard,
// write zeroes, zoned commands, …) get UNSUPP.
//
// Reads and writes go straight between the image and guest RAM: pread and
// pwrite take the slices that kvmlab/guestmem checked, so there is no
// bounce buffer and no copy. The used length returned with each chain is
// the number of bytes the device wrote into the writable buffers: the data
// actually read plus the status byte.
//
// # What flush promises
//
// Without VIRTIO_BLK_F_CONFIG_WCE the driver cannot tell whether the device
// caches writes, so once VIRTIO_BLK_F_FLUSH is negotiated it sends a FLUSH
// request (§5.2.6, §5.2.6.2) whenever it needs earlier writes to be stable:
// a journal commit, fsync in the guest. A completed write here is already in
// the host's page cache, which survives the VMM being killed but not the
// host losing power; FLUSH calls fdatasync(2) on the image so that the
// writes completed before it survive a host crash too. A read-only device
// has written nothing, so its FLUSH succeeds without a system call.
//
// # Configuration space (§5.2.4)
//
// capacity (le64 at 0) is the disk size in 512-byte sectors, the image size
// divided by 512: a trailing partial sector in the image is not exposed to
// the guest at all. seg_max (le32 at 12) tells the driver how many data
// buffers a request may use; blk_size (le32 at 20) is the logical block
// size. The other fields are zero and their features not offered. The
// space is read-only: writeback (at 32) is writable only with
// VIRTIO_BLK_F_CONFIG_WCE, which this device does not offer.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"kvmlab/devices/virtio"
	"kvmlab/guestmem"
	"kvmlab/internal/userfile"
)

// SectorSize is the unit of capacity and of the sector field: 512 bytes
// whatever blk_size says (§5.2.6).
const SectorSize = 512

// Request types (§5.2.6).
const (
	TypeIn    = 0 // VIRTIO_BLK_T_IN: read
	TypeOut   = 1 // VIRTIO_BLK_T_OUT: write
	TypeFlush = 4 // VIRTIO_BLK_T_FLUSH
	TypeGetID = 8 // VIRTIO_BLK_T_GET_ID: device ID string
)

// Request status values (§5.2.6).
const (
	StatusOK     = 0 // VIRTIO_BLK_S_OK
	StatusIOErr  = 1 // VIRTIO_BLK_S_IOERR
	StatusUnsupp = 2 // VIRTIO_BLK_S_UNSUPP
)

// Feature bits (§5.2.3) this device may offer.
const (
	FeatureSegMax  = 2 // VIRTIO_BLK_F_SEG_MAX: seg_max is valid
	FeatureRO      = 5 // VIRTIO_BLK_F_RO: the device is read-only
	FeatureBlkSize = 6 // VIRTIO_BLK_F_BLK_SIZE: blk_size is valid
	FeatureFlush   = 9 // VIRTIO_BLK_F_FLUSH: FLUSH requests are honoured
)

const (
	// QueueSize is the largest requestq the device accepts.
	QueueSize = 256
	// SegMax is the seg_max the device announces: a chain of QueueSize
	// descriptors less the header and the status leaves this many for data.
	// It is advice to the driver; the device serves longer chains too.
	SegMax = QueueSize - 2
	// IDLen is the size of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
	IDLen = 20
	// HeaderLen is the size of the request header.
	HeaderLen = 16
	// ConfigLen is the size of the configuration fields up to blk_size;
	// everything beyond reads as zero.
	ConfigLen = 24
)

// Stats counts what the device did since Open.
type Stats struct {
	Reads, Writes, Flushes, GetIDs uint64 // requests completed with OK
	BytesRead, BytesWritten        uint64 // image bytes moved for the guest
	IOErrors                       uint64 // requests failed by the host file (IOERR)
	Rejected                       uint64 // malformed, out of range, read-only or unsupported requests
}

// Device is a virtio-blk device over one image file. It implements
// virtio.Device.
type Device struct {
	f        *os.File
	readOnly bool
	sectors  uint64
	id       [IDLen]byte // NUL-padded
	config   [ConfigLen]byte

	// RequestQueue runs Activate, Reset and the batch loop of Notify.
	virtio.RequestQueue

	reads, writes, flushes, getIDs atomic.Uint64
	bytesRead, bytesWritten        atomic.Uint64
	ioErrors, rejected             atomic.Uint64
}

var _ virtio.Device = (*Device)(nil)

// Errors Open reports besides the ones from the file system (which it wraps,
// so errors.Is(err, fs.ErrNotExist) and fs.ErrPermission work) and ErrInUse.
var (
	// ErrNotImage: the path leads to neither a regular file nor a block
	// device (a directory, a FIFO, /dev/zero...). It is userfile.ErrKind.
	ErrNotImage   = userfile.ErrKind
	ErrEmptyImage = errors.New("is smaller than one 512-byte sector")
)

// Open opens the raw image at path, read-write or, with readOnly, read-only
// (the device then offers VIRTIO_BLK_F_RO and refuses writes), and locks it
// against other VMMs (lock.go) for as long as it is open. The disk has
// size/512 sectors; a trailing partial sector is ignored, because the guest
// can only address whole sectors.
//
// The path is user input: it is opened by kvmlab/internal/userfile, which
// refuses anything but a regular file or a block device without opening it
// for I/O (a FIFO would block the open; /dev/zero has no end), and checks
// the file it opened rather than the name.
func Open(path string, readOnly bool) (*Device, error) {
	f, size, err := openImageFile(path, readOnly)
	if err != nil {
		return nil, err
	}
	d := &Device{f: f, readOnly: readOnly, sectors: uint64(size) / SectorSize, RequestQueue: virtio.RequestQueue{Name: "blk"}}
	copy(d.id[:], MakeID(path))
	binary.LittleEndian.PutUint64(d.config[0:], d.sectors) // capacity
	binary.LittleEndian.PutUint32(d.config[12:], SegMax)   // seg_max
	binary.LittleEndian.PutUint32(d.config[20:], SectorSize)
	return d, nil
}

// Check opens the image as Open would, lock included, and closes it: the
// command line calls it to refuse a bad or busy image before it does
// anything else. The image may of course change before Open.
func Check(path string, readOnly bool) error {
	f, _, err := openImageFile(path, readOnly)
	if err != nil {
		return err
	}
	return f.Close()
}

func openImageFile(path string, readOnly bool) (*os.File, int64, error) {
	// No size limit: the image is never read whole, only the sectors the
	// guest asks for.
	f, size, err := userfile.Open(path, userfile.Spec{What: "disk image", BlockDevice: true, Write: !readOnly})
	if err != nil {
		return nil, 0, err
	}
	if size < SectorSize {
		f.Close()
		return nil, 0, fmt.Errorf("%w (%d bytes): a disk is whole 512-byte sectors; make one with truncate -s 64M %s", ErrEmptyImage, size, path)
	}
	if err := lockImage(f, path, readOnly); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, size, nil
}

// MakeID derives the device ID string from an image path: "kvmlab-" and the
// file's base name, cut to IDLen bytes. The spec asks for ASCII, so bytes
// outside printable ASCII become '_'. In the guest it is
// /sys/block/vdX/serial.
func MakeID(path string) string {
	b := []byte("kvmlab-" + filepath.Base(path))
	if len(b) > IDLen {
		b = b[:IDLen]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '_'
		}
	}
	return string(b)
}

// Close closes the image. Requests that arrive afterwards fail with IOERR.
func (d *Device) Close() error {
	return d.Quiesce(d.f.Close)
}

// ID returns the device ID string GET_ID answers with.
func (d *Device) ID() string {
	n := 0
	for n < IDLen && d.id[n] != 0 {
		n++
	}
	return string(d.id[:n])
}

// Capacity returns the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.sectors }

// ReadOnly reports whether the device refuses writes.
func (d *Device) ReadOnly() bool { return d.readOnly }

// Stats returns the counters. Each is read atomically; together they are a
// snapshot only when the device is idle.
func (d *Device) Stats() Stats {
	return Stats{
		Reads: d.reads.Load(), Writes: d.writes.Load(),
		Flushes: d.flushes.Load(), GetIDs: d.getIDs.Load(),
		BytesRead: d.bytesRead.Load(), BytesWritten: d.bytesWritten.Load(),
		IOErrors: d.ioErrors.Load(), Rejected: d.rejected.Load(),
	}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := uint64(1)<<FeatureSegMax | 1<<FeatureBlkSize | 1<<FeatureFlush
	if d.readOnly {
		f |= 1 << FeatureRO
	}
	return f
}

// QueueSizes implements virtio.Device: one requestq.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device. Any offset and width work; bytes
// outside the fields read as zero.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < ConfigLen {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements virtio.Device: every field is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Notify implements virtio.Device: it serves every chain the driver has
// posted on requestq, then asks for one interrupt for the batch. A chain
// the device cannot answer puts the device into DEVICE_NEEDS_RESET.
func (d *Device) Notify(q int) { d.Serve(q, d.serve) }

// needsReset blames the driver for err: the device cannot go on without a
// reset.
func needsReset(what string, err error) error {
	return fmt.Errorf("blk: %s: %w: %w", what, virtio.ErrNeedsReset, err)
}

// span is a list of guest RAM slices seen as one byte stream.
type span [][]byte

func (s span) len() uint64 {
	var n uint64
	for _, b := range s {
		n += uint64(len(b))
	}
	return n
}

// skip returns the stream without its first n bytes, which must exist.
func (s span) skip(n uint64) span {
	for len(s) > 0 && n >= uint64(len(s[0])) {
		n -= uint64(len(s[0]))
		s = s[1:]
	}
	if n > 0 {
		s = append(span{s[0][n:]}, s[1:]...)
	}
	return s
}

// resolve turns a chain's buffers into checked guest RAM slices. Empty
// buffers carry nothing and are dropped without looking at their address;
// any other buffer outside RAM is a driver error. Queue.Pop has checked
// that already; checking again is cheap and keeps serve safe on chains
// that did not come from Pop (the fuzzer's).
func resolve(mem *guestmem.Memory, bufs []virtio.Buffer) (span, error) {
	var s span
	for _, b := range bufs {
		if b.Len == 0 {
			continue
		}
		p, err := mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return nil, needsReset("request buffer", err)
		}
		s = append(s, p)
	}
	return s, nil
}

// serve carries out one request and writes its status byte. It returns the
// used length, or an error (wrapping virtio.ErrNeedsReset) when the chain
// cannot be answered at all.
func (d *Device) serve(mem *guestmem.Memory, c *virtio.Chain) (uint32, error) {
	in, err := resolve(mem, c.Readable)
	if err != nil {
		return 0, err
	}
	out, err := resolve(mem, c.Writable)
	if err != nil {
		return 0, err
	}
	if len(out) == 0 {
		return 0, needsReset("request", fmt.Errorf("chain at descriptor %d has no writable byte for the status", c.Head))
	}
	last := out[len(out)-1]
	status := last[len(last)-1:]
	out[len(out)-1] = last[:len(last)-1]
	data := out // writable data, status excluded

	var hdr [HeaderLen]byte
	if in.len() < HeaderLen {
		d.rejected.Add(1)
		status[0] = StatusIOErr
		return 1, nil
	}
	copyFrom(hdr[:], in)
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])

	var st byte
	var n uint64 // data bytes written into guest memory
	switch typ {
	case TypeIn:
		n, st = d.read(sector, data)
	case TypeOut:
		st = d.write(sector, in.skip(HeaderLen))
	case TypeFlush:
		st = d.flush()
	case TypeGetID:
		// The driver posts IDLen bytes; a shorter buffer gets what fits
		// rather than an error, since the answer is advisory anyway.
		n = uint64(copyTo(data, d.id[:]))
		d.getIDs.Add(1)
		st = StatusOK
	default:
		d.rejected.Add(1)
		st = StatusUnsupp
	}
	status[0] = st
	return uint32(n + 1), nil
}

// checkRange validates a data length and position against the disk and
// returns the byte offset in the image.
func (d *Device) checkRange(sector, length uint64) (int64, bool) {
	if length%SectorSize != 0 || sector > d.sectors || length/SectorSize > d.sectors-sector {
		return 0, false
	}
	// sector ≤ d.sectors ≤ MaxInt64/512, so the product fits.
	return int64(sector * SectorSize), true
}

// read fills the writable data buffers from the image.
func (d *Device) read(sector uint64, data span) (uint64, byte) {
	length := data.len()
	off, ok := d.checkRange(sector, length)
	// The used length is a le32 and must count the data and the status.
	if !ok || length >= math.MaxUint32 {
		d.rejected.Add(1)
		return 0, StatusIOErr
	}
	// preadv straight into guest RAM. A short read means the image
	// shrank under us: that is the host's failure, not the guest's.
	n, err := d.vectored(unix.Preadv, data, off)
	done := uint64(n)
	if err != nil {
		d.ioErrors.Add(1)
		d.bytesRead.Add(done)
		return done, StatusIOErr
	}
	d.reads.Add(1)
	d.bytesRead.Add(done)
	return done, StatusOK
}

// write stores the readable data buffers that follow the header.
func (d *Device) write(sector uint64, data span) byte {
	if d.readOnly {
		// §5.2.6.2: IOERR, and no data written.
		d.rejected.Add(1)
		return StatusIOErr
	}
	off, ok := d.checkRange(sector, data.len())
	if !ok {
		d.rejected.Add(1)
		return StatusIOErr
	}
	n, err := d.vectored(unix.Pwritev, data, off)
	d.bytesWritten.Add(uint64(n))
	if err != nil {
		d.ioErrors.Add(1)
		return StatusIOErr
	}
	d.writes.Add(1)
	return StatusOK
}

// maxIOV is the most buffers one preadv/pwritev takes (IOV_MAX on Linux).
const maxIOV = 1024

// vectored moves a request's data buffers to or from the image at off with
// one preadv(2) or pwritev(2) for the whole scatter list, where a loop of
// pread/pwrite would make a system call per buffer: a 1 MiB request from
// Linux is about 250 page-sized buffers. Short transfers are resumed where
// they stopped; one that moves nothing at all (end of file on a read) is
// an error, as ReadAt's io.EOF would be.
func (d *Device) vectored(op func(int, [][]byte, int64) (int, error), data span, off int64) (int, error) {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	bufs := make([][]byte, 0, min(len(data), maxIOV))
	for _, b := range data {
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	done := 0
	for len(bufs) > 0 {
		var n int
		var opErr error
		if cerr := rc.Control(func(fd uintptr) {
			n, opErr = op(int(fd), bufs[:min(len(bufs), maxIOV)], off)
		}); cerr != nil {
			return done, cerr
		}
		if opErr == unix.EINTR {
			continue
		}
		if opErr != nil {
			return done, opErr
		}
		if n == 0 {
			return done, io.ErrUnexpectedEOF
		}
		done += n
		off += int64(n)
		// Drop the buffers moved whole; trim the one moved in part.
		for n > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
	return done, nil
}

// flush makes every completed write durable.
func (d *Device) flush() byte {
	if d.readOnly {
		d.flushes.Add(1)
		return StatusOK
	}
	rc, err := d.f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.Fdatasync(int(fd))
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		d.ioErrors.Add(1)
		return StatusIOErr
	}
	d.flushes.Add(1)
	return StatusOK
}

// copyFrom fills p from the front of s, which holds at least len(p) bytes.
func copyFrom(p []byte, s span) {
	for _, b := range s {
		if len(p) == 0 {
			return
		}
		p = p[copy(p, b):]
	}
}

// copyTo copies p into the front of s and returns how much fitted.
func copyTo(s span, p []byte) int {
	n := 0
	for _, b := range s {
		if n == len(p) {
			break
		}
		n += copy(b, p[n:])
	}
	return n
}
