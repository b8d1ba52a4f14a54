package pci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"kvmlab/devices/bus"
)

// The root bridge's memory window forwards a memory cycle to the function
// whose enabled memory BAR contains it, as a host bridge does on the bus
// (PCI 3.0 §6.2.5.1: a BAR decodes its window only while the command
// register's memory space bit is set, §6.2.2).

const (
	winBase = 0xc000_0000 // where the tests put the window
	winSlot = 3
)

// winAccess is one access a function saw through the window.
type winAccess struct {
	bar   int
	off   uint64
	n     int
	write bool
}

// winFunction is a BARHandler with a 4 KiB 32-bit memory BAR0, an I/O
// BAR1 and a 16 KiB 64-bit BAR2, that records the accesses it gets and
// answers reads with a recognisable pattern.
type winFunction struct {
	*ConfigSpace
	mu       sync.Mutex
	accesses []winAccess
}

var _ BARHandler = (*winFunction)(nil)

func newWinFunction(t testing.TB) *winFunction {
	t.Helper()
	c := NewConfigSpace(0x1234, 0x0042, 0xff0000, 0)
	for _, err := range []error{
		c.SetBAR(0, BARMem32, 0x1000, false),
		c.SetBAR(1, BARIO, 0x20, false),
		c.SetBAR(2, BARMem64, 0x4000, true),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return &winFunction{ConfigSpace: c}
}

// winPattern is what a read of BAR bar at off returns in byte i.
func winPattern(bar int, off uint64, i int) byte { return byte(bar)<<6 ^ byte(off) ^ byte(i) ^ 0x20 }

func (f *winFunction) BARRead(bar int, off uint64, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accesses = append(f.accesses, winAccess{bar, off, len(data), false})
	for i := range data {
		data[i] = winPattern(bar, off, i)
	}
	return nil
}

func (f *winFunction) BARWrite(bar int, off uint64, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accesses = append(f.accesses, winAccess{bar, off, len(data), true})
	return nil
}

func (f *winFunction) take() []winAccess {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accesses
	f.accesses = nil
	return a
}

// winDescFunction adds a BARDescriber.
type winDescFunction struct{ *winFunction }

func (f winDescFunction) DescribeBAR(bar int, off uint64, write bool, data []byte) string {
	return fmt.Sprintf("desc bar%d off %#x write %v len %d", bar, off, write, len(data))
}

// winConfig writes a configuration dword through CONFIG_ADDRESS and
// CONFIG_DATA, as the guest does.
func winConfig(t testing.TB, r *Root, slot, reg int, v uint32) {
	t.Helper()
	addr := binary.LittleEndian.AppendUint32(nil, 0x80000000|uint32(slot)<<11|uint32(reg))
	if err := r.AddressPort().Write(0, addr); err != nil {
		t.Fatal(err)
	}
	if err := r.DataPort().Write(0, binary.LittleEndian.AppendUint32(nil, v)); err != nil {
		t.Fatal(err)
	}
}

// winRoot returns a root with f at winSlot, BAR0 at bar0, BAR2 at bar2 and
// the given command register.
func winRoot(t testing.TB, f Function, bar0, bar2 uint64, cmd uint16) *Root {
	t.Helper()
	r := NewRoot()
	if err := r.Add(winSlot, f); err != nil {
		t.Fatal(err)
	}
	winConfig(t, r, winSlot, RegBAR0, uint32(bar0))
	winConfig(t, r, winSlot, RegBAR0+8, uint32(bar2))
	winConfig(t, r, winSlot, RegBAR0+12, uint32(bar2>>32))
	winConfig(t, r, winSlot, RegCommand, uint32(cmd))
	return r
}

func TestMemoryWindowClaims(t *testing.T) {
	const (
		bar0 = winBase + 0x1000
		bar2 = 0x1_0000_0000 // above 4 GiB, still inside a 64-bit window
	)
	for _, tc := range []struct {
		name    string
		cmd     uint16
		addr    uint64
		n       int
		write   bool
		claimed bool
		bar     int
		off     uint64
	}{
		{name: "BAR0 first byte", cmd: CmdMemory, addr: bar0, n: 1, claimed: true},
		{name: "BAR0 dword", cmd: CmdMemory, addr: bar0 + 0x10, n: 4, claimed: true, off: 0x10},
		{name: "BAR0 last qword", cmd: CmdMemory, addr: bar0 + 0xff8, n: 8, claimed: true, off: 0xff8},
		{name: "BAR0 last byte", cmd: CmdMemory, addr: bar0 + 0xfff, n: 1, claimed: true, off: 0xfff},
		{name: "BAR0 write", cmd: CmdMemory, addr: bar0 + 0x20, n: 4, write: true, claimed: true, off: 0x20},
		{name: "straddles BAR0 end", cmd: CmdMemory, addr: bar0 + 0xffe, n: 4},
		{name: "straddles BAR0 end, write", cmd: CmdMemory, addr: bar0 + 0xffc, n: 8, write: true},
		{name: "straddles BAR0 start", cmd: CmdMemory, addr: bar0 - 2, n: 4},
		{name: "just below BAR0", cmd: CmdMemory, addr: bar0 - 1, n: 1},
		{name: "just past BAR0", cmd: CmdMemory, addr: bar0 + 0x1000, n: 1},
		{name: "window base, no BAR", cmd: CmdMemory, addr: winBase, n: 4},
		{name: "64-bit BAR2 above 4 GiB", cmd: CmdMemory, addr: bar2 + 0x3ffc, n: 4, claimed: true, bar: 2, off: 0x3ffc},
		{name: "64-bit BAR2 write", cmd: CmdMemory, addr: bar2, n: 8, write: true, claimed: true, bar: 2},
		{name: "memory decode off", cmd: 0, addr: bar0, n: 4},
		{name: "memory decode off, write", cmd: 0, addr: bar0, n: 4, write: true},
		{name: "only I/O decode", cmd: CmdIO | CmdBusMaster, addr: bar0 + 0x10, n: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newWinFunction(t)
			w := winRoot(t, f, bar0, bar2, tc.cmd).MemoryWindow(winBase)
			data := make([]byte, tc.n)
			var err error
			if tc.write {
				for i := range data {
					data[i] = 0x5a
				}
				err = w.Write(tc.addr-winBase, data)
			} else {
				err = w.Read(tc.addr-winBase, data)
			}
			got := f.take()
			if !tc.claimed {
				if !errors.Is(err, ErrNoBAR) {
					t.Errorf("err %v, want ErrNoBAR", err)
				}
				if len(got) != 0 {
					t.Errorf("function saw %+v", got)
				}
				if !tc.write && bytes.Count(data, []byte{0xff}) != len(data) {
					t.Errorf("unclaimed read %x, want all ones", data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := winAccess{tc.bar, tc.off, tc.n, tc.write}
			if len(got) != 1 || got[0] != want {
				t.Fatalf("function saw %+v, want %+v", got, want)
			}
			if !tc.write {
				for i, b := range data {
					if b != winPattern(tc.bar, tc.off, i) {
						t.Fatalf("read %x is not the function's answer", data)
					}
				}
			}
		})
	}
}

// TestMemoryWindowFollowsBAR: the OS moves a BAR by rewriting it (Linux
// turns decoding off around it); the window follows without the VMM doing
// anything.
func TestMemoryWindowFollowsBAR(t *testing.T) {
	f := newWinFunction(t)
	r := winRoot(t, f, winBase+0x1000, 0, CmdMemory)
	w := r.MemoryWindow(winBase)
	read := func(addr uint64) error { return w.Read(addr-winBase, make([]byte, 4)) }

	for _, step := range []struct {
		what     string
		do       func()
		old, new error // errors reading at the old and the new address
	}{
		{"before", func() {}, nil, ErrNoBAR},
		{"decode off", func() { winConfig(t, r, winSlot, RegCommand, 0) }, ErrNoBAR, ErrNoBAR},
		{"moved, decode still off", func() { winConfig(t, r, winSlot, RegBAR0, winBase+0x8000) }, ErrNoBAR, ErrNoBAR},
		{"decode on", func() { winConfig(t, r, winSlot, RegCommand, CmdMemory) }, ErrNoBAR, nil},
		// Sizing with decoding left on moves the BAR to the top of
		// the 4 GiB: nothing at either address answers then.
		{"sizing", func() { winConfig(t, r, winSlot, RegBAR0, 0xffffffff) }, ErrNoBAR, ErrNoBAR},
		// An unassigned BAR (address 0) never claims.
		{"address 0", func() { winConfig(t, r, winSlot, RegBAR0, 0) }, ErrNoBAR, ErrNoBAR},
	} {
		step.do()
		f.take()
		if err := read(winBase + 0x1000); !errors.Is(err, step.old) {
			t.Errorf("%s: read at the old address: %v, want %v", step.what, err, step.old)
		}
		if err := read(winBase + 0x8000); !errors.Is(err, step.new) {
			t.Errorf("%s: read at the new address: %v, want %v", step.what, err, step.new)
		}
	}
}

// TestMemoryWindowSkips: an I/O BAR is never claimed by a memory access,
// nor is a BAR at address 0, nor a function that does not handle BAR
// accesses.
func TestMemoryWindowSkips(t *testing.T) {
	// Window at 0, so that I/O-space numbers are also window offsets.
	f := newWinFunction(t)
	r := winRoot(t, f, 0, 0, CmdMemory|CmdIO)
	winConfig(t, r, winSlot, RegBAR0+4, 0x2000) // BAR1, I/O
	w := r.MemoryWindow(0)
	for _, addr := range []uint64{0, 0x10, 0x2000, 0x2004} {
		if err := w.Read(addr, make([]byte, 4)); !errors.Is(err, ErrNoBAR) {
			t.Errorf("read at %#x: %v, want ErrNoBAR", addr, err)
		}
	}
	if got := f.take(); len(got) != 0 {
		t.Errorf("function saw %+v", got)
	}

	// A plain ConfigSpace has BARs and a command register but no
	// BARRead/BARWrite: its BAR is someone else's business.
	plain := NewConfigSpace(0x1234, 0x0043, 0xff0000, 0)
	if err := plain.SetBAR(0, BARMem32, 0x1000, false); err != nil {
		t.Fatal(err)
	}
	r = NewRoot()
	if err := r.Add(winSlot, plain); err != nil {
		t.Fatal(err)
	}
	winConfig(t, r, winSlot, RegBAR0, winBase)
	winConfig(t, r, winSlot, RegCommand, CmdMemory)
	if err := r.MemoryWindow(winBase).Write(0, make([]byte, 4)); !errors.Is(err, ErrNoBAR) {
		t.Errorf("write to a plain ConfigSpace's BAR: %v, want ErrNoBAR", err)
	}
}

// TestMemoryWindowOverlap: two functions with BARs at the same
// address (a misprogramming OS) do not make the window fail; the lower
// slot answers.
func TestMemoryWindowOverlap(t *testing.T) {
	a, b := newWinFunction(t), newWinFunction(t)
	r := winRoot(t, a, winBase, 0, CmdMemory)
	if err := r.Add(winSlot+1, b); err != nil {
		t.Fatal(err)
	}
	winConfig(t, r, winSlot+1, RegBAR0, winBase)
	winConfig(t, r, winSlot+1, RegCommand, CmdMemory)
	if err := r.MemoryWindow(winBase).Read(0, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if len(a.take()) != 1 || len(b.take()) != 0 {
		t.Fatal("the access did not go to exactly the lower slot")
	}
}

func TestMemoryWindowDescribe(t *testing.T) {
	plain := newWinFunction(t)
	desc := winDescFunction{newWinFunction(t)}
	for _, tc := range []struct {
		name  string
		f     Function
		off   uint64
		write bool
		data  []byte
		want  string
	}{
		{"without describer", plain, 0x1010, true, []byte{0x78, 0x56, 0x34, 0x12}, "BAR0+0x10 write 0x12345678"},
		{"without describer, read", plain, 0x1ffe, false, []byte{0x01, 0x02}, "BAR0+0xffe read 0x0201"},
		{"with describer", desc, 0x1010, false, []byte{0, 0}, "desc bar0 off 0x10 write false len 2"},
		{"unclaimed", desc, 0x3000, true, []byte{0}, "PCI window write at 0xc0003000: no BAR claims it"},
		{"straddling", plain, 0x1ffe, false, []byte{0, 0, 0, 0}, "PCI window read at 0xc0001ffe: no BAR claims it"},
	} {
		w := winRoot(t, tc.f, winBase+0x1000, 0, CmdMemory).MemoryWindow(winBase)
		if got := w.(bus.Describer).Describe(tc.off, tc.write, tc.data); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestMemoryWindowOnBus routes guest MMIO through a bus to the window, as
// the VMM does, including an access that runs past the window's end.
func TestMemoryWindowOnBus(t *testing.T) {
	f := newWinFunction(t)
	r := winRoot(t, f, winBase+0xf000, 0, CmdMemory)
	b := bus.New()
	if err := b.Register(bus.MMIO, winBase, 0x10000, "pci-window", r.MemoryWindow(winBase)); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4)
	if res, err := b.Read(bus.MMIO, winBase+0xf004, data); err != nil || !res.Handled {
		t.Fatalf("read in BAR0: handled %v, %v", res.Handled, err)
	}
	if got := f.take(); len(got) != 1 || got[0] != (winAccess{0, 4, 4, false}) {
		t.Fatalf("function saw %+v", got)
	}
	// Handled by the window (it is inside it) but claimed by no BAR.
	if res, err := b.Read(bus.MMIO, winBase+0x100, data); !errors.Is(err, ErrNoBAR) || !res.Handled {
		t.Fatalf("read in the window outside any BAR: handled %v, %v", res.Handled, err)
	}
	// Past the end of the window: the bus does not ask the window.
	if res, _ := b.Read(bus.MMIO, winBase+0xfffc, make([]byte, 8)); res.Handled {
		t.Fatal("access past the window end handled")
	}
}

// TestMemoryWindowConcurrent moves a BAR through configuration space while
// another goroutine (another vCPU) reads through the window, for the race
// detector.
func TestMemoryWindowConcurrent(t *testing.T) {
	f := newWinFunction(t)
	r := winRoot(t, f, winBase+0x1000, 0, CmdMemory)
	w := r.MemoryWindow(winBase)
	done := make(chan struct{})
	go func() {
		defer close(done)
		data := make([]byte, 4)
		for range 2000 {
			err := w.Read(0x1000, data)
			if err != nil && !errors.Is(err, ErrNoBAR) {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 2000 {
		winConfig(t, r, winSlot, RegBAR0, uint32(winBase+0x1000*(1+i%2)))
	}
	<-done
}
