package virtio_test

// Tests of quiescing and of saving and restoring the transport (snapshot.go):
// a driver (virtiotest) brings a real device up through the common
// configuration, completes a request, the transport is quiesced and saved,
// the state goes through JSON, and a fresh transport over a copy of guest
// RAM is restored from it; the same driver then carries on, without
// negotiating again, on the restored one.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/devices/pci"
	"kvmlab/devices/virtio"
	"kvmlab/devices/virtio/blk"
	virtionet "kvmlab/devices/virtio/net"
	"kvmlab/devices/virtio/rng"
	"kvmlab/devices/virtio/virtiotest"
)

// ---- a TAP stand-in for virtio-net ------------------------------------------------

// pipeBackend is an in-memory virtionet.Backend: frames sent on in come out
// of Read, frames the device writes go to out.
type pipeBackend struct {
	in  chan []byte
	out chan []byte

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{}
}

func newPipeBackend() *pipeBackend {
	return &pipeBackend{in: make(chan []byte, 16), out: make(chan []byte, 16), changed: make(chan struct{})}
}

func (b *pipeBackend) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		d, changed := b.deadline, b.changed
		b.mu.Unlock()
		var timeout <-chan time.Time
		if !d.IsZero() {
			if time.Until(d) <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timeout = time.After(time.Until(d))
		}
		select {
		case f := <-b.in:
			return copy(p, f), nil
		case <-changed:
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (b *pipeBackend) Write(p []byte) (int, error) {
	b.out <- append([]byte(nil), p...)
	return len(p), nil
}

func (b *pipeBackend) SetReadDeadline(t time.Time) error {
	b.mu.Lock()
	b.deadline = t
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	return nil
}

// ---- the machine under test ---------------------------------------------------------

// box is one transport over its own RAM, with the fakes of pci_test.go.
type box struct {
	guest
	ram   *virtiotest.RAM
	sink  *fakeSink
	bells *fakeBells
	dev   virtio.Device
}

func newBox(t *testing.T, ram *virtiotest.RAM, dev virtio.Device) *box {
	t.Helper()
	b := &box{ram: ram, sink: newFakeSink(), bells: &fakeBells{}, dev: dev}
	tr, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: ram.Memory, MSI: b.sink, Bell: b.bells, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	b.guest = guest{tr}
	t.Cleanup(tr.Close)
	return b
}

// copyRAM is a second RAM with the same layout and contents, as a
// snapshot file would bring it back.
func copyRAM(r *virtiotest.RAM) *virtiotest.RAM {
	hole := 0
	if r.High.Data != nil {
		hole = int(r.High.Base - r.Low.End())
	}
	c := virtiotest.NewRAM(len(r.Low.Data), hole, len(r.High.Data))
	copy(c.Low.Data, r.Low.Data)
	copy(c.High.Data, r.High.Data)
	return c
}

// bringUp is the Linux-style handshake with queue q on drv's rings:
// BAR0 placed, reset, features, FEATURES_OK, MSI-X on with the
// configuration on vector 0 and queue q on vector 1, DRIVER_OK.
func (b *box) bringUp(t *testing.T, features uint64, q int, drv *virtiotest.Driver) {
	t.Helper()
	b.placeBAR(barAddr)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.setStatus(0))
	must(b.setStatus(virtio.StatusAcknowledge))
	must(b.setStatus(statusAckDriver))
	must(b.setFeatures(features))
	must(b.setStatus(statusFeatOK))
	if b.status()&virtio.StatusFeaturesOK == 0 {
		t.Fatal(errRefused)
	}
	b.enableMSIX(2)
	must(b.write(ccConfigMSIXVector, 2, 0))
	must(b.write(ccQueueSelect, 2, uint64(q)))
	must(b.write(ccQueueSize, 2, uint64(drv.Size)))
	must(b.write64(ccQueueDesc, uint64(drv.DescAddr)))
	must(b.write64(ccQueueDriver, uint64(drv.AvailAddr)))
	must(b.write64(ccQueueDevice, uint64(drv.UsedAddr)))
	must(b.write(ccQueueMSIXVector, 2, 1))
	must(b.write(ccQueueEnable, 2, 1))
	must(b.setStatus(statusLive))
	if s := b.status(); s != statusLive {
		t.Fatalf("status %#x after DRIVER_OK", s)
	}
}

// ring signals queue q through the ioeventfd assigned at its doorbell, as
// KVM does on a guest write; it fails the test when none is assigned.
func (b *box) ring(t *testing.T, q int) {
	t.Helper()
	fd := b.bells.fd(barAddr + virtio.NotifyOffset + uint64(virtio.NotifyMultiple*q))
	if fd < 0 {
		t.Fatalf("no ioeventfd assigned for queue %d's doorbell", q)
	}
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil {
		t.Fatal(err)
	}
}

// waitUsedIdx waits until drv's used idx is n.
func waitUsedIdx(t *testing.T, drv *virtiotest.Driver, n uint16) {
	t.Helper()
	waitUntil(t, "used idx", func() bool {
		idx, err := drv.UsedIdx()
		return err == nil && idx == n
	})
}

// blkHeader is a virtio-blk request header (§5.2.6).
func blkHeader(typ uint32, sector uint64) []byte {
	h := make([]byte, 16)
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// ethFrame is a virtio_net_hdr and a minimal Ethernet frame whose payload
// starts with tag.
func ethFrame(tag byte) []byte {
	f := make([]byte, virtionet.HeaderSize+60)
	copy(f[virtionet.HeaderSize:], []byte{0x52, 0x54, 0, 1, 2, 3, 0x52, 0x54, 0, 4, 5, 6, 0x08, 0x00})
	f[virtionet.HeaderSize+14] = tag
	return f
}

// snapshotCase is one device driven through a snapshot.
type snapshotCase struct {
	name     string
	features uint64
	queue    int // the queue the driver uses
	// open builds the device; for the restore it is called again, after
	// the first transport was closed (a disk image is locked by one
	// device at a time).
	open func(t *testing.T) virtio.Device
	// request posts one request numbered i (0 before the snapshot, 1
	// after) and returns the bytes the device must report written.
	request func(t *testing.T, drv *virtiotest.Driver, i int) uint32
	// check looks at the completed request i.
	check func(t *testing.T, drv *virtiotest.Driver, dev virtio.Device, head uint16, i int)
	// served counts the requests the device model served.
	served func(dev virtio.Device) uint64
}

func snapshotCases(t *testing.T) []snapshotCase {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	sector := bytes.Repeat([]byte("snapshot"), blk.SectorSize/8)
	var nets []*pipeBackend
	return []snapshotCase{
		{
			name: "rng", features: featV1, queue: 0,
			open:   func(t *testing.T) virtio.Device { return rng.New() },
			served: func(dev virtio.Device) uint64 { return dev.(*rng.Device).Stats().Requests },
			request: func(t *testing.T, drv *virtiotest.Driver, i int) uint32 {
				if _, err := drv.Post(nil, []uint32{32}); err != nil {
					t.Fatal(err)
				}
				return 32
			},
			check: func(t *testing.T, drv *virtiotest.Driver, dev virtio.Device, head uint16, i int) {
				got, err := drv.ReadWritable(head)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Equal(got, bytes.Repeat([]byte{0xee}, 32)) {
					t.Error("the device wrote no random bytes")
				}
			},
		},
		{
			// EVENT_IDX: the restored device must keep publishing
			// avail_event and deciding interrupts from the restored
			// "signalled" mark.
			name: "rng-event-idx", features: featV1 | featEventIdx, queue: 0,
			open:   func(t *testing.T) virtio.Device { return rng.New() },
			served: func(dev virtio.Device) uint64 { return dev.(*rng.Device).Stats().Requests },
			request: func(t *testing.T, drv *virtiotest.Driver, i int) uint32 {
				if err := drv.SetUsedEvent(uint16(i)); err != nil {
					t.Fatal(err)
				}
				if _, err := drv.Post(nil, []uint32{8}); err != nil {
					t.Fatal(err)
				}
				return 8
			},
			check: func(t *testing.T, drv *virtiotest.Driver, dev virtio.Device, head uint16, i int) {
				ev, err := drv.AvailEvent()
				if err != nil {
					t.Fatal(err)
				}
				if ev != uint16(i+1) {
					t.Errorf("avail_event %d after %d requests, want %d", ev, i+1, i+1)
				}
			},
		},
		{
			// Write a sector before the snapshot, read it back after.
			name: "blk", features: featV1, queue: 0,
			served: func(dev virtio.Device) uint64 {
				st := dev.(*blk.Device).Stats()
				return st.Reads + st.Writes + st.Rejected + st.IOErrors
			},
			open: func(t *testing.T) virtio.Device {
				d, err := blk.Open(disk, false)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
				return d
			},
			request: func(t *testing.T, drv *virtiotest.Driver, i int) uint32 {
				var err error
				if i == 0 {
					_, err = drv.Post([][]byte{blkHeader(blk.TypeOut, 3), sector}, []uint32{1})
				} else {
					_, err = drv.Post([][]byte{blkHeader(blk.TypeIn, 3)}, []uint32{blk.SectorSize, 1})
				}
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					return 1
				}
				return blk.SectorSize + 1
			},
			check: func(t *testing.T, drv *virtiotest.Driver, dev virtio.Device, head uint16, i int) {
				got, err := drv.ReadWritable(head)
				if err != nil {
					t.Fatal(err)
				}
				want := []byte{blk.StatusOK}
				if i == 1 {
					want = append(append([]byte(nil), sector...), blk.StatusOK)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("request %d wrote %q, want %q", i, got, want)
				}
			},
		},
		{
			// Transmit on transmitq1 (queue 1); receiveq1 is never
			// enabled, so a frame the host sends is held by the
			// device, and must survive the snapshot.
			name: "net", features: featV1, queue: virtionet.TXQueue,
			served: func(dev virtio.Device) uint64 {
				st := dev.(*virtionet.Device).Stats()
				return st.TxPackets + st.TxDropped + st.TxErrors
			},
			open: func(t *testing.T) virtio.Device {
				b := newPipeBackend()
				nets = append(nets, b)
				if len(nets) == 1 {
					b.in <- ethFrame(0x77) // held: no receive buffers
				}
				return virtionet.New(b, []byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef})
			},
			request: func(t *testing.T, drv *virtiotest.Driver, i int) uint32 {
				if _, err := drv.Post([][]byte{ethFrame(byte(i))}, nil); err != nil {
					t.Fatal(err)
				}
				return 0
			},
			check: func(t *testing.T, drv *virtiotest.Driver, dev virtio.Device, head uint16, i int) {
				b := nets[len(nets)-1]
				select {
				case f := <-b.out:
					if f[virtionet.HeaderSize+14] != byte(i) {
						t.Errorf("backend got frame %d, want %d", f[virtionet.HeaderSize+14], i)
					}
				case <-time.After(waitTimeout):
					t.Fatalf("request %d: no frame reached the backend", i)
				}
			},
		},
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, tc := range snapshotCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			ram := virtiotest.NewRAM(64<<10, 4<<10, 4<<10)
			drv, err := virtiotest.NewDriver(ram, 16)
			if err != nil {
				t.Fatal(err)
			}
			a := newBox(t, ram, tc.open(t))
			a.bringUp(t, tc.features, tc.queue, drv)

			want := tc.request(t, drv, 0)
			a.ring(t, tc.queue)
			waitUsedIdx(t, drv, 1)
			a.waitMSIOn(t, 1)
			used, err := drv.Used()
			if err != nil || len(used) != 1 || used[0].Len != want {
				t.Fatalf("before the snapshot: used %+v, %v; want one entry of len %d", used, err, want)
			}
			tc.check(t, drv, a.dev, uint16(used[0].ID), 0)

			if _, err := a.tr.SaveState(); !errors.Is(err, virtio.ErrNotQuiesced) {
				t.Fatalf("SaveState before Quiesce: %v, want ErrNotQuiesced", err)
			}
			if tc.name == "net" {
				// The host frame is read and held before the snapshot.
				waitUntil(t, "the held frame", func() bool { return rxStalled(a.dev) })
			}
			if err := a.tr.Quiesce(); err != nil {
				t.Fatal(err)
			}
			st, err := a.tr.SaveState()
			if err != nil {
				t.Fatal(err)
			}
			q := st.Queues[tc.queue]
			if st.DeviceStatus != statusLive || !q.Enable || q.LastAvailIdx != 1 || q.UsedIdx != 1 || q.MSIXVector != 1 ||
				q.Size != drv.Size || q.DescAddr != uint64(drv.DescAddr) || st.DriverFeatures != tc.features {
				t.Fatalf("saved state %+v, queue %+v", st, q)
			}
			if tc.name == "net" && !strings.Contains(string(st.Device), `"rx_frame"`) {
				t.Errorf("net state %s holds no rx_frame", st.Device)
			}
			blob, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s state: %d bytes of JSON", tc.name, len(blob))
			// The snapshot is taken: the original machine goes away.
			ram2 := copyRAM(ram)
			a.tr.Unquiesce()
			a.tr.Close()
			if c, ok := a.dev.(io.Closer); ok {
				c.Close()
			}

			var st2 virtio.State
			if err := json.Unmarshal(blob, &st2); err != nil {
				t.Fatal(err)
			}
			b := newBox(t, ram2, tc.open(t))
			if err := b.tr.RestoreState(st2); err != nil {
				t.Fatal(err)
			}
			if s := b.status(); s != statusLive {
				t.Fatalf("restored status %#x, want %#x", s, statusLive)
			}
			// The driver carries on: same rings, now in the copy.
			drv2 := *drv
			drv2.RAM = ram2
			want = tc.request(t, &drv2, 1)
			b.ring(t, tc.queue) // the ioeventfd is assigned at the restored BAR0
			waitUsedIdx(t, &drv2, 2)
			b.waitMSIOn(t, 1)
			used, err = drv2.Used()
			if err != nil || len(used) != 1 || used[0].Len != want {
				t.Fatalf("after the restore: used %+v, %v; want one entry of len %d", used, err, want)
			}
			tc.check(t, &drv2, b.dev, uint16(used[0].ID), 1)
			// Exactly the new request was served: the restored
			// last_avail_idx kept the device from serving the first
			// one again.
			if n := tc.served(b.dev); n != 1 {
				t.Errorf("the restored device served %d requests, want 1", n)
			}

			// Saving the restored device gives the same state, but for
			// the indices that moved (and the net device still holds
			// the host's frame).
			if tc.name == "net" {
				waitUntil(t, "the restored held frame", func() bool { return rxStalled(b.dev) })
			}
			if err := b.tr.Quiesce(); err != nil {
				t.Fatal(err)
			}
			st3, err := b.tr.SaveState()
			if err != nil {
				t.Fatal(err)
			}
			b.tr.Unquiesce()
			st3.Queues[tc.queue].LastAvailIdx, st3.Queues[tc.queue].UsedIdx, st3.Queues[tc.queue].SignalledUsedIdx = 1, 1, st.Queues[tc.queue].SignalledUsedIdx
			st3.ConfigSpace, st3.MSIX = st.ConfigSpace, st.MSIX // the PBA and ISR may differ by the new interrupt
			st3.ISR = st.ISR
			j1, _ := json.Marshal(st)
			j3, _ := json.Marshal(st3)
			if !bytes.Equal(j1, j3) {
				t.Errorf("state after restore differs:\n%s\n%s", j1, j3)
			}
		})
	}
}

// rxStalled reports whether the net device's receive goroutine is waiting
// for a receive buffer (it holds a frame).
func rxStalled(dev virtio.Device) bool {
	return dev.(*virtionet.Device).Stats().RxStalls > 0
}

// waitMSIOn waits for a message on vector v.
func (b *box) waitMSIOn(t *testing.T, v int) {
	t.Helper()
	m, ok := b.sink.wait(waitTimeout)
	if !ok || m.vector != v {
		t.Fatalf("MSI-X: got %+v (%v), want vector %d", m, ok, v)
	}
}

// ---- quiescing ------------------------------------------------------------------------

// gatedDevice is virtio-rng whose Notify waits, once it has started, until
// the test opens the gate: a request in flight for as long as the test
// wants.
type gatedDevice struct {
	*rng.Device
	entered chan struct{}
	gate    chan struct{}
}

func (d *gatedDevice) Notify(q int) {
	d.entered <- struct{}{}
	<-d.gate
	d.Device.Notify(q)
}

func newGated() *gatedDevice {
	return &gatedDevice{Device: rng.New(), entered: make(chan struct{}, 16), gate: make(chan struct{})}
}

// liveBox is a box with rng (or gated rng) up and a driver on queue 0.
func liveBox(t *testing.T, dev virtio.Device) (*box, *virtiotest.Driver) {
	t.Helper()
	ram := virtiotest.NewRAM(64<<10, 4<<10, 4<<10)
	drv, err := virtiotest.NewDriver(ram, 16)
	if err != nil {
		t.Fatal(err)
	}
	b := newBox(t, ram, dev)
	b.bringUp(t, featV1, 0, drv)
	return b, drv
}

// TestQuiesceWaitsForRequestInFlight: Quiesce returns only after the
// request being served has its used entry, used idx and interrupt written.
func TestQuiesceWaitsForRequestInFlight(t *testing.T) {
	dev := newGated()
	b, drv := liveBox(t, dev)
	if _, err := drv.Post(nil, []uint32{16}); err != nil {
		t.Fatal(err)
	}
	b.ring(t, 0)
	<-dev.entered // the worker is inside Notify
	done := make(chan error, 1)
	go func() { done <- b.tr.Quiesce() }()
	select {
	case err := <-done:
		t.Fatalf("Quiesce returned (%v) while a request was in flight", err)
	default:
	}
	close(dev.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// No waiting here: Quiesce's return is the guarantee.
	if idx, err := drv.UsedIdx(); err != nil || idx != 1 {
		t.Fatalf("used idx %d (%v) when Quiesce returned, want 1", idx, err)
	}
	if n := b.sink.count(); n != 1 {
		t.Fatalf("%d interrupts when Quiesce returned, want 1", n)
	}
	st, err := b.tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if q := st.Queues[0]; q.LastAvailIdx != 1 || q.UsedIdx != 1 {
		t.Fatalf("saved queue %+v, want last_avail_idx 1 and used idx 1", q)
	}
	b.tr.Unquiesce()
}

// TestQuiesceTimeout: a request that does not finish makes Quiesce fail
// after its bound, and leaves the transport running.
func TestQuiesceTimeout(t *testing.T) {
	dev := newGated()
	b, drv := liveBox(t, dev)
	if _, err := drv.Post(nil, []uint32{16}); err != nil {
		t.Fatal(err)
	}
	b.ring(t, 0)
	<-dev.entered
	err := b.tr.QuiesceWithin(20 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "still being served") {
		t.Fatalf("Quiesce with a stuck request: %v, want a timeout error", err)
	}
	if b.tr.Quiesced() {
		t.Fatal("transport quiesced after a failed Quiesce")
	}
	if _, err := b.tr.SaveState(); !errors.Is(err, virtio.ErrNotQuiesced) {
		t.Fatalf("SaveState after a failed Quiesce: %v", err)
	}
	close(dev.gate)
	waitUsedIdx(t, drv, 1)
	// Running: a second request is served and Quiesce now works.
	if _, err := drv.Post(nil, []uint32{16}); err != nil {
		t.Fatal(err)
	}
	b.ring(t, 0)
	waitUsedIdx(t, drv, 2)
	if err := b.tr.Quiesce(); err != nil {
		t.Fatal(err)
	}
	if err := b.tr.Quiesce(); err == nil {
		t.Fatal("a second Quiesce succeeded")
	}
	b.tr.Unquiesce()
}

// TestKickWhileQuiesced: a doorbell rung while the transport is quiesced
// is not served (the snapshot must not change under SaveState) and is
// served after Unquiesce, whichever way it came: ioeventfd or MMIO exit.
func TestKickWhileQuiesced(t *testing.T) {
	for _, tc := range []struct {
		name string
		ring func(t *testing.T, b *box)
	}{
		{"ioeventfd", func(t *testing.T, b *box) { b.ring(t, 0) }},
		{"mmio-exit", func(t *testing.T, b *box) {
			if err := b.write(virtio.NotifyOffset, 2, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, drv := liveBox(t, rng.New())
			if err := b.tr.Quiesce(); err != nil {
				t.Fatal(err)
			}
			if _, err := drv.Post(nil, []uint32{16}); err != nil {
				t.Fatal(err)
			}
			tc.ring(t, b)
			// A worker may take the kick and put it back; either way
			// nothing is popped while quiesced.
			st, err := b.tr.SaveState()
			if err != nil {
				t.Fatal(err)
			}
			if q := st.Queues[0]; q.LastAvailIdx != 0 || q.UsedIdx != 0 {
				t.Fatalf("queue %+v changed while quiesced", q)
			}
			b.tr.Unquiesce()
			waitUsedIdx(t, drv, 1)
			b.waitMSIOn(t, 1)
		})
	}
}

// ---- hostile state ------------------------------------------------------------------------

// goodState is the state of rng with a request done, and the RAM it goes
// with.
func goodState(t *testing.T) (virtio.State, *virtiotest.RAM, *virtiotest.Driver) {
	t.Helper()
	b, drv := liveBox(t, rng.New())
	if _, err := drv.Post(nil, []uint32{16}); err != nil {
		t.Fatal(err)
	}
	b.ring(t, 0)
	waitUsedIdx(t, drv, 1)
	if err := b.tr.Quiesce(); err != nil {
		t.Fatal(err)
	}
	st, err := b.tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b.tr.Unquiesce()
	b.tr.Close()
	return st, b.ram, drv
}

// TestRestoreStateRefuses: every kind of bad field is refused, and the
// transport is left as NewPCI made it: a driver can bring it up from
// scratch.
func TestRestoreStateRefuses(t *testing.T) {
	good, ram, _ := goodState(t)
	hole, _ := ram.Hole()
	for _, tc := range []struct {
		name   string
		mutate func(s *virtio.State)
		want   string
	}{
		{"device type", func(s *virtio.State) { s.DeviceType = uint16(virtio.TypeBlock) }, "type"},
		{"queue count", func(s *virtio.State) { s.Queues = append(s.Queues, s.Queues[0]) }, "queues"},
		{"no queues", func(s *virtio.State) { s.Queues = nil }, "queues"},
		{"status bits", func(s *virtio.State) { s.DeviceStatus |= 16 }, "device_status"},
		{"features not offered", func(s *virtio.State) { s.DriverFeatures |= 1 << 40 }, "subset"},
		{"FEATURES_OK without VERSION_1", func(s *virtio.State) { s.DriverFeatures = 0 }, "VERSION_1"},
		{"ISR", func(s *virtio.State) { s.ISR = 4 }, "ISR"},
		{"size not a power of two", func(s *virtio.State) { s.Queues[0].Size = 12 }, "power of two"},
		{"size above max", func(s *virtio.State) { s.Queues[0].Size = 128 }, "power of two"},
		{"size 0", func(s *virtio.State) { s.Queues[0].Size = 0 }, "power of two"},
		{"desc table in the hole", func(s *virtio.State) { s.Queues[0].DescAddr = uint64(hole) }, "descriptor table"},
		{"desc table misaligned", func(s *virtio.State) { s.Queues[0].DescAddr += 8 }, "aligned"},
		{"device ring past RAM", func(s *virtio.State) { s.Queues[0].DeviceAddr = 1 << 40 }, "device ring"},
		{"driver ring wraps", func(s *virtio.State) { s.Queues[0].DriverAddr = ^uint64(1) }, "driver ring"},
		{"used idx not RAM's", func(s *virtio.State) { s.Queues[0].UsedIdx = 7 }, "used idx"},
		{"last avail behind", func(s *virtio.State) { s.Queues[0].LastAvailIdx = 0x8000 }, "avail idx"},
		{"disabled queue with indices", func(s *virtio.State) {
			s.Queues[0].Enable = false
			s.Queues[0].SignalledUsedIdx = 1
		}, "indices"},
		{"queue vector", func(s *virtio.State) { s.Queues[0].MSIXVector = 2 }, "msix_vector"},
		{"config vector", func(s *virtio.State) { s.ConfigMSIXVector = 0x7fff }, "config_msix_vector"},
		{"device state for rng", func(s *virtio.State) { s.Device = []byte("{}") }, "has none"},
		{"config space short", func(s *virtio.State) { s.ConfigSpace.Config = s.ConfigSpace.Config[:100] }, "Config"},
		{"device ID changed", func(s *virtio.State) {
			s.ConfigSpace.Config = append([]byte(nil), s.ConfigSpace.Config...)
			s.ConfigSpace.Config[2]++
		}, "read-only"},
		{"MSI-X table size", func(s *virtio.State) { s.MSIX.Table = s.MSIX.Table[:1] }, "Table"},
		{"MSI-X reserved control bits", func(s *virtio.State) {
			s.MSIX.Table = append([]pci.MSIXEntryState(nil), s.MSIX.Table...)
			s.MSIX.Table[1].VectorControl = 6
		}, "VectorControl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := good
			st.Queues = append([]virtio.QueueState(nil), good.Queues...)
			tc.mutate(&st)
			ram2 := copyRAM(ram)
			b := newBox(t, ram2, rng.New())
			fresh := b.tr.ConfigSpace.SaveState()
			err := b.tr.RestoreState(st)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState: %v, want an error about %q", err, tc.want)
			}
			// As NewPCI left it.
			if s := b.status(); s != 0 {
				t.Errorf("status %#x after a refused restore", s)
			}
			if got := b.tr.ConfigSpace.SaveState(); !bytes.Equal(got.Config, fresh.Config) {
				t.Error("configuration space changed by a refused restore")
			}
			if fd := b.bells.fd(barAddr + virtio.NotifyOffset); fd >= 0 {
				t.Error("a doorbell is assigned after a refused restore")
			}
			// And it works from a cold handshake.
			clear(ram2.Low.Data)
			drv, err := virtiotest.NewDriver(ram2, 16)
			if err != nil {
				t.Fatal(err)
			}
			b.bringUp(t, featV1, 0, drv)
			if _, err := drv.Post(nil, []uint32{16}); err != nil {
				t.Fatal(err)
			}
			b.ring(t, 0)
			waitUsedIdx(t, drv, 1)
		})
	}
	// The unmodified state restores (the table above is not refusing
	// everything).
	b := newBox(t, copyRAM(ram), rng.New())
	if err := b.tr.RestoreState(good); err != nil {
		t.Fatal(err)
	}
	if err := b.tr.RestoreState(good); err == nil {
		t.Fatal("a second RestoreState on a live transport succeeded")
	}
}

// ---- fuzzing ------------------------------------------------------------------------

// fuzzRAM is the fuzzer's guest: 16 KiB of RAM, a 4 KiB hole, 4 KiB more,
// with a driver whose rings are at 0 and one chain of writable buffers
// posted but not yet served, so a restored queue has work to do.
func fuzzRAM(t testing.TB) (*virtiotest.RAM, *virtiotest.Driver) {
	ram := virtiotest.NewRAM(16<<10, 4<<10, 4<<10)
	drv, err := virtiotest.NewDriver(ram, 16)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drv.Post(nil, []uint32{16, 8}); err != nil {
		t.Fatal(err)
	}
	return ram, drv
}

// fuzzSeed is the JSON state of virtio-rng brought up by a driver on the
// fuzzer's rings, with no request served yet.
func fuzzSeed(t testing.TB, features uint64) []byte {
	ram := virtiotest.NewRAM(16<<10, 4<<10, 4<<10)
	drv, err := virtiotest.NewDriver(ram, 16)
	if err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	tr, err := virtio.NewPCI(rng.New(), virtio.PCIOptions{Mem: ram.Memory, MSI: sink, Bell: &fakeBells{}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	g := guest{tr}
	g.placeBAR(barAddr)
	s := setup{features: features, size: drv.Size, desc: drv.DescAddr, avail: drv.AvailAddr, used: drv.UsedAddr,
		configVector: 0, queueVector: 1}
	if err := g.init(s); err != nil {
		t.Fatal(err)
	}
	if err := tr.Quiesce(); err != nil {
		t.Fatal(err)
	}
	st, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzRestoreState restores a state decoded from the fuzzer's bytes (the
// JSON a snapshot file holds) into a fresh virtio-rng transport, then
// rings the doorbell the way a guest would and waits until the
// notification has been served. Nothing may panic or hang; a refused
// state must leave the transport at status 0; an accepted one must answer
// its registers.
func FuzzRestoreState(f *testing.F) {
	f.Add(fuzzSeed(f, featV1))
	f.Add(fuzzSeed(f, featV1|featEventIdx|featIndirect))
	f.Add([]byte(`{"device_type":4,"queues":[{}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st virtio.State
		if json.Unmarshal(data, &st) != nil {
			return
		}
		ram, _ := fuzzRAM(t)
		sink := newFakeSink()
		bells := &fakeBells{}
		tr, err := virtio.NewPCI(rng.New(), virtio.PCIOptions{Mem: ram.Memory, MSI: sink, Bell: bells})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		g := guest{tr}
		err = tr.RestoreState(st)
		if err != nil && g.status() != 0 {
			t.Fatalf("refused restore (%v) left status %#x", err, g.status())
		}
		// A guest touching the restored device: read the common
		// configuration, ring the doorbell through the BAR (MMIO exit)
		// and through whatever ioeventfd is assigned.
		for off := uint64(0); off < ccLength; off += 4 {
			g.read(off, 4)
		}
		before := tr.Stats().Notifies
		if err := g.write(virtio.NotifyOffset, 2, 0); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(waitTimeout)
		for tr.Stats().Notifies == before {
			if time.Now().After(deadline) {
				t.Fatal("the doorbell was never served")
			}
			time.Sleep(50 * time.Microsecond)
		}
		// Quiesce waits for the notification to finish.
		if err := tr.Quiesce(); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.SaveState(); err != nil {
			t.Fatalf("SaveState of a restored transport: %v", err)
		}
		tr.Unquiesce()
	})
}

// TestFuzzSeedServes checks that the fuzzer's seed state restores and that
// the restored device serves the chain fuzzRAM posted: the fuzzer starts
// from inputs that reach the device, not only the refusals.
func TestFuzzSeedServes(t *testing.T) {
	for _, features := range []uint64{featV1, featV1 | featEventIdx | featIndirect} {
		var st virtio.State
		if err := json.Unmarshal(fuzzSeed(t, features), &st); err != nil {
			t.Fatal(err)
		}
		ram, drv := fuzzRAM(t)
		tr, err := virtio.NewPCI(rng.New(), virtio.PCIOptions{Mem: ram.Memory, MSI: newFakeSink(), Bell: &fakeBells{}})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if err := tr.RestoreState(st); err != nil {
			t.Fatalf("features %#x: %v", features, err)
		}
		waitUsedIdx(t, drv, 1)
		used, err := drv.Used()
		if err != nil || len(used) != 1 || used[0].Len != 24 {
			t.Fatalf("features %#x: used %+v (%v), want one chain of 24 bytes", features, used, err)
		}
	}
}
