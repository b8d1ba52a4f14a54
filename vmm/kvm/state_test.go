package kvm

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// The sizes and offsets of arch/x86/include/uapi/asm/kvm.h and
// include/uapi/linux/kvm.h, as gcc lays them out on x86-64 (sizeof and
// offsetof, Linux 6.x headers).
func TestStateStructLayout(t *testing.T) {
	wantSize := map[string]uintptr{
		"kvm_fpu": 416, "kvm_xsave": 4096, "kvm_xcr": 16, "kvm_xcrs": 392,
		"kvm_lapic_state": 1024, "kvm_vcpu_events": 64, "kvm_debugregs": 128,
		"kvm_irqchip": 520, "kvm_pic_state": 16, "kvm_ioapic_state": 216,
		"kvm_pit_channel_state": 24, "kvm_pit_state2": 112, "kvm_clock_data": 48,
	}
	got := stateStructSizes()
	if len(got) != len(wantSize) {
		t.Errorf("%d sizes reported, %d expected", len(got), len(wantSize))
	}
	for name, size := range wantSize {
		if got[name] != size {
			t.Errorf("sizeof(%s) = %d, want %d", name, got[name], size)
		}
	}
	wantOff := map[string]uintptr{
		"kvm_fpu.fcw": 128, "kvm_fpu.last_ip": 136, "kvm_fpu.xmm": 152, "kvm_fpu.mxcsr": 408,
		"kvm_vcpu_events.interrupt": 8, "kvm_vcpu_events.nmi": 12, "kvm_vcpu_events.sipi_vector": 16,
		"kvm_vcpu_events.flags": 20, "kvm_vcpu_events.smi": 24, "kvm_vcpu_events.triple_fault": 28,
		"kvm_vcpu_events.exception_has_payload": 55, "kvm_vcpu_events.exception_payload": 56,
		"kvm_pit_channel_state.count_load_time": 16, "kvm_pit_state2.flags": 72,
		"kvm_clock_data.flags": 8, "kvm_clock_data.realtime": 16, "kvm_clock_data.host_tsc": 24,
		"kvm_xcrs.xcrs": 8, "kvm_debugregs.dr6": 32, "kvm_debugregs.flags": 48,
		"kvm_ioapic_state.redirtbl": 24, "kvm_irqchip.chip": 8,
	}
	offs := stateFieldOffsets()
	for name, off := range wantOff {
		if o, ok := offs[name]; !ok || o != off {
			t.Errorf("offsetof(%s) = %d (reported %v), want %d", name, o, ok, off)
		}
	}
}

// TestStateIoctlNumbers checks each request's encoded size and direction
// against the structure passed (the numbers were also printed by a C
// program including <linux/kvm.h>; they are the same).
func TestStateIoctlNumbers(t *testing.T) {
	const none, write, read = 0, 1, 2 // _IOC_NONE, _IOC_WRITE, _IOC_READ
	sz := stateStructSizes()
	cases := []struct {
		name string
		req  uint32
		nr   uint32
		dir  uint32
		size uintptr
	}{
		{"KVM_GET_IRQCHIP", ioGetIRQChip, 0x62, read | write, sz["kvm_irqchip"]},
		{"KVM_SET_IRQCHIP", ioSetIRQChip, 0x63, read, sz["kvm_irqchip"]},
		{"KVM_SET_CLOCK", ioSetClock, 0x7b, write, sz["kvm_clock_data"]},
		{"KVM_GET_CLOCK", ioGetClock, 0x7c, read, sz["kvm_clock_data"]},
		{"KVM_GET_FPU", ioGetFPU, 0x8c, read, sz["kvm_fpu"]},
		{"KVM_SET_FPU", ioSetFPU, 0x8d, write, sz["kvm_fpu"]},
		{"KVM_GET_LAPIC", ioGetLAPIC, 0x8e, read, sz["kvm_lapic_state"]},
		{"KVM_SET_LAPIC", ioSetLAPIC, 0x8f, write, sz["kvm_lapic_state"]},
		{"KVM_GET_MP_STATE", ioGetMPState, 0x98, read, 4},
		{"KVM_SET_MP_STATE", ioSetMPState, 0x99, write, 4},
		{"KVM_GET_VCPU_EVENTS", ioGetVCPUEvents, 0x9f, read, sz["kvm_vcpu_events"]},
		{"KVM_SET_VCPU_EVENTS", ioSetVCPUEvents, 0xa0, write, sz["kvm_vcpu_events"]},
		{"KVM_GET_PIT2", ioGetPIT2, 0x9f, read, sz["kvm_pit_state2"]},
		{"KVM_SET_PIT2", ioSetPIT2, 0xa0, write, sz["kvm_pit_state2"]},
		{"KVM_GET_DEBUGREGS", ioGetDebugRegs, 0xa1, read, sz["kvm_debugregs"]},
		{"KVM_SET_DEBUGREGS", ioSetDebugRegs, 0xa2, write, sz["kvm_debugregs"]},
		{"KVM_SET_TSC_KHZ", ioSetTSCKHz, 0xa2, none, 0},
		{"KVM_GET_TSC_KHZ", ioGetTSCKHz, 0xa3, none, 0},
		{"KVM_GET_XSAVE", ioGetXSAVE, 0xa4, read, sz["kvm_xsave"]},
		{"KVM_SET_XSAVE", ioSetXSAVE, 0xa5, write, sz["kvm_xsave"]},
		{"KVM_GET_XCRS", ioGetXCRs, 0xa6, read, sz["kvm_xcrs"]},
		{"KVM_SET_XCRS", ioSetXCRs, 0xa7, write, sz["kvm_xcrs"]},
		{"KVM_GET_XSAVE2", ioGetXSAVE2, 0xcf, read, sz["kvm_xsave"]},
		{"KVM_GET_MSRS", ioGetMSRs, 0x88, read | write, 8},
	}
	for _, c := range cases {
		if c.size == 0 && c.dir != none {
			t.Errorf("%s: no size for the structure", c.name)
		}
		if got := c.req & 0xff; got != c.nr {
			t.Errorf("%s: nr %#x, want %#x", c.name, got, c.nr)
		}
		if got := (c.req >> 8) & 0xff; got != 0xAE {
			t.Errorf("%s: type %#x, not KVMIO", c.name, got)
		}
		if got := (c.req >> 16) & 0x3fff; uintptr(got) != c.size {
			t.Errorf("%s: encoded size %d, want %d", c.name, got, c.size)
		}
		if got := c.req >> 30; got != c.dir {
			t.Errorf("%s: direction %d, want %d", c.name, got, c.dir)
		}
	}
}

// TestStateIoctlsInSeccompLists: a snapshot reads while the machine runs,
// under the filter; a restore writes before it. Every state GET must be
// allowed, every SET refused, and no request in both lists.
func TestStateIoctlsInSeccompLists(t *testing.T) {
	running := map[uint32]string{}
	for _, i := range RunningIoctls() {
		running[i.Request] = i.Name
	}
	setup := map[uint32]string{}
	for _, i := range SetupIoctls() {
		if n, ok := running[i.Request]; ok {
			t.Errorf("%s (%#x) is in both lists (as %s)", i.Name, i.Request, n)
		}
		setup[i.Request] = i.Name
	}
	gets := map[string]uint32{
		"KVM_GET_REGS": ioGetRegs, "KVM_GET_SREGS": ioGetSregs, "KVM_GET_FPU": ioGetFPU,
		"KVM_GET_XSAVE": ioGetXSAVE, "KVM_GET_XSAVE2": ioGetXSAVE2, "KVM_GET_XCRS": ioGetXCRs,
		"KVM_GET_MSRS": ioGetMSRs, "KVM_GET_MSR_INDEX_LIST": ioGetMSRIndexList,
		"KVM_GET_LAPIC": ioGetLAPIC, "KVM_GET_VCPU_EVENTS": ioGetVCPUEvents,
		"KVM_GET_MP_STATE": ioGetMPState, "KVM_GET_DEBUGREGS": ioGetDebugRegs,
		"KVM_GET_TSC_KHZ": ioGetTSCKHz, "KVM_GET_IRQCHIP": ioGetIRQChip, "KVM_GET_PIT2": ioGetPIT2,
		"KVM_GET_CLOCK": ioGetClock, "KVM_CHECK_EXTENSION": ioCheckExtension,
	}
	sets := map[string]uint32{
		"KVM_SET_SREGS": ioSetSregs, "KVM_SET_FPU": ioSetFPU, "KVM_SET_XSAVE": ioSetXSAVE,
		"KVM_SET_XCRS": ioSetXCRs, "KVM_SET_MSRS": ioSetMSRs, "KVM_SET_LAPIC": ioSetLAPIC,
		"KVM_SET_VCPU_EVENTS": ioSetVCPUEvents, "KVM_SET_MP_STATE": ioSetMPState,
		"KVM_SET_DEBUGREGS": ioSetDebugRegs, "KVM_SET_TSC_KHZ": ioSetTSCKHz,
		"KVM_SET_IRQCHIP": ioSetIRQChip, "KVM_SET_PIT2": ioSetPIT2, "KVM_SET_CLOCK": ioSetClock,
	}
	for name, req := range gets {
		if n, ok := running[req]; !ok || n != name {
			t.Errorf("%s (%#x) not in RunningIoctls (found %q)", name, req, n)
		}
	}
	for name, req := range sets {
		if n, ok := setup[req]; !ok || n != name {
			t.Errorf("%s (%#x) not in SetupIoctls (found %q)", name, req, n)
		}
	}
}

// testMachine is a VM with the in-kernel irqchip and PIT, one vCPU with
// the host's supported CPUID, and 64 KiB of RAM at guest-physical 0.
type testMachine struct {
	sys  *System
	vm   *VM
	vcpu *VCPU
	mem  []byte
}

func newTestMachine(t *testing.T) *testMachine {
	t.Helper()
	sys, err := Open()
	if err != nil {
		t.Skipf("no KVM here: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	m := &testMachine{sys: sys}
	if m.vm, err = sys.CreateVM(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.vm.Close() })
	if err := m.vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := m.vm.CreatePIT2(); err != nil {
		t.Fatal(err)
	}
	if m.mem, err = unix.Mmap(-1, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m.mem) })
	if err := m.vm.SetUserMemoryRegion(0, 0, m.mem); err != nil {
		t.Fatal(err)
	}
	if m.vcpu, err = m.vm.CreateVCPU(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.vcpu.Close() })
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.vcpu.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}
	return m
}

// skipIfUnsupported turns "this KVM has no such ioctl" into a skip that
// names the errno, and any other error into a failure.
func skipIfUnsupported(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var errno unix.Errno
	if errors.As(err, &errno) && (errno == unix.EINVAL || errno == unix.ENOTTY || errno == unix.ENOSYS || errno == unix.EOPNOTSUPP || errno == unix.ENXIO) {
		t.Skipf("this KVM refuses it: %v (errno %s, %d)", err, unix.ErrnoName(errno), int(errno))
	}
	t.Fatal(err)
}

// TestVCPUStateRoundTrip: for each per-vCPU wrapper, get, change a field,
// set, get again, and compare.
func TestVCPUStateRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		cap  Cap // 0: always there
		run  func(t *testing.T, c *VCPU)
	}{
		{"REGS", 0, func(t *testing.T, c *VCPU) {
			r, err := c.GetRegs()
			skipIfUnsupported(t, err)
			r.RBX, r.R15, r.RIP = 0xdeadbeef, 0x1122334455667788, 0x1234
			if err := c.SetRegs(r); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetRegs()
			if err != nil || got != r {
				t.Fatalf("got %+v, %v; want %+v", got, err, r)
			}
		}},
		{"SREGS", 0, func(t *testing.T, c *VCPU) {
			s, err := c.GetSregs()
			skipIfUnsupported(t, err)
			s.CS.Base, s.CS.Selector = 0x10000, 0x1000
			s.GDT.Base, s.GDT.Limit = 0x500, 0x27
			if err := c.SetSregs(s); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetSregs()
			if err != nil || got.CS != s.CS || got.GDT != s.GDT {
				t.Fatalf("got CS %+v GDT %+v, %v; want %+v %+v", got.CS, got.GDT, err, s.CS, s.GDT)
			}
		}},
		{"FPU", 0, func(t *testing.T, c *VCPU) {
			f, err := c.GetFPU()
			skipIfUnsupported(t, err)
			t.Logf("initial FCW %#x MXCSR %#x", f.FCW, f.MXCSR)
			f.FCW = 0x27f            // 53-bit precision
			f.MXCSR = 0x1f80 | 3<<13 // round toward zero
			for i := range f.XMM[3] {
				f.XMM[3][i] = byte(0xa0 + i)
			}
			if err := c.SetFPU(f); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetFPU()
			// MXCSR is not compared: KVM_GET_FPU never reports it
			// (see FPU).
			if err != nil || got.FCW != f.FCW || got.XMM != f.XMM || got.FPR != f.FPR {
				t.Fatalf("got FCW %#x XMM3 %x, %v; want %#x %x", got.FCW, got.XMM[3], err, f.FCW, f.XMM[3])
			}
		}},
		{"XSAVE", CapXSAVE, func(t *testing.T, c *VCPU) {
			x, err := c.GetXSAVE()
			skipIfUnsupported(t, err)
			b := x.Bytes()
			t.Logf("XSTATE_BV %#x, KVM_CAP_XSAVE2 buffer %d bytes", binary.LittleEndian.Uint64(b[512:]), c.xsaveBufSize())
			for i := range 16 { // XMM2, at 160 + 2*16 in the FXSAVE region
				b[192+i] = byte(0x50 + i)
			}
			b[512] |= 2 // XSTATE_BV: the SSE component is not in its initial state
			x.SetBytes(b)
			if err := c.SetXSAVE(x); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetXSAVE()
			if err != nil {
				t.Fatal(err)
			}
			if g := got.Bytes(); !bytes.Equal(g[192:208], b[192:208]) {
				t.Fatalf("XMM2 %x, want %x", g[192:208], b[192:208])
			}
			// The same through GET_XSAVE2 and the byte interface.
			b2, err := c.GetXSAVE2()
			skipIfUnsupported(t, err)
			if !bytes.Equal(b2[:XSAVESize], got.Bytes()) {
				t.Fatalf("KVM_GET_XSAVE2 differs from KVM_GET_XSAVE in the first 4096 bytes")
			}
			b2[200] ^= 0xff
			if err := c.SetXSAVEBytes(b2); err != nil {
				t.Fatal(err)
			}
			if g, _ := c.GetXSAVE2(); g[200] != b2[200] {
				t.Fatalf("after SetXSAVEBytes byte 200 = %#x, want %#x", g[200], b2[200])
			}
			if err := c.SetXSAVEBytes(b2[:100]); !errors.Is(err, ErrXSAVESize) {
				t.Fatalf("SetXSAVEBytes of 100 bytes: %v, want ErrXSAVESize", err)
			}
		}},
		{"XCRS", CapXCRs, func(t *testing.T, c *VCPU) {
			x, err := c.GetXCRs()
			skipIfUnsupported(t, err)
			t.Logf("%d XCRs, XCR0 = %#x", x.NrXCRs, x.XCRs[0].Value)
			if x.NrXCRs < 1 || x.XCRs[0].XCR != 0 {
				t.Fatalf("no XCR0: %+v", x)
			}
			x.XCRs[0].Value = 3 // x87 | SSE, which every x86-64 CPUID offers
			if err := c.SetXCRs(x); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetXCRs()
			if err != nil || got.XCRs[0].Value != 3 {
				t.Fatalf("XCR0 %#x, %v; want 3", got.XCRs[0].Value, err)
			}
		}},
		{"LAPIC", 0, func(t *testing.T, c *VCPU) {
			l, err := c.GetLAPIC()
			skipIfUnsupported(t, err)
			t.Logf("APIC ID %#x version %#x SVR %#x LINT0 %#x", l.Reg(LAPICID), l.Reg(LAPICVer), l.Reg(LAPICSVR), l.Reg(LAPICLINT0))
			l.SetReg(LAPICTPR, 0x20)
			l.SetReg(LAPICSVR, 0x1ff)   // enabled, spurious vector 0xff
			l.SetReg(LAPICLINT0, 0x700) // ExtINT, unmasked: how a BIOS wires the PIC
			if err := c.SetLAPIC(l); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetLAPIC()
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range []int{LAPICTPR, LAPICSVR, LAPICLINT0} {
				if got.Reg(off) != l.Reg(off) {
					t.Errorf("register %#x = %#x, want %#x", off, got.Reg(off), l.Reg(off))
				}
			}
			// Everything else comes back as written, but for the
			// registers the APIC computes: the processor priority
			// (PPR, from TPR and the highest vector in service) and
			// the timer's current count.
			for off := 0; off < LAPICRegsSize; off += 16 {
				if off == LAPICPPR || off == LAPICTMCCT {
					continue
				}
				if got.Reg(off) != l.Reg(off) {
					t.Errorf("register %#x read back %#x, written %#x", off, got.Reg(off), l.Reg(off))
				}
			}
			if got.Reg(LAPICPPR) != 0x20 {
				t.Errorf("PPR %#x, want 0x20 (TPR 0x20, nothing in service)", got.Reg(LAPICPPR))
			}
		}},
		{"VCPU_EVENTS", CapVCPUEvents, func(t *testing.T, c *VCPU) {
			e, err := c.GetVCPUEvents()
			skipIfUnsupported(t, err)
			t.Logf("flags %#x", e.Flags)
			e.NMIPending = 1
			e.InterruptShadow = ShadowSTI
			e.Flags |= VCPUEventValidNMIPending | VCPUEventValidShadow
			if err := c.SetVCPUEvents(e); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetVCPUEvents()
			if err != nil || got.NMIPending != 1 || got.InterruptShadow != ShadowSTI {
				t.Fatalf("got %+v, %v; want an NMI pending and the STI shadow", got, err)
			}
		}},
		{"MP_STATE", CapMPState, func(t *testing.T, c *VCPU) {
			s, err := c.MPState()
			skipIfUnsupported(t, err)
			t.Logf("initial MP state %d", s)
			for _, want := range []uint32{MPStateHalted, MPStateRunnable} {
				if err := c.SetMPState(want); err != nil {
					t.Fatal(err)
				}
				if got, err := c.MPState(); err != nil || got != want {
					t.Fatalf("MP state %d, %v; want %d", got, err, want)
				}
			}
		}},
		{"DEBUGREGS", CapDebugRegs, func(t *testing.T, c *VCPU) {
			d, err := c.GetDebugRegs()
			skipIfUnsupported(t, err)
			t.Logf("DR6 %#x DR7 %#x", d.DR6, d.DR7)
			d.DB = [4]uint64{0x1000, 0x2000, 0x3000, 0x4000}
			d.DR7 = 0x400 | 0x3 // reserved bit 10, L0 and G0
			if err := c.SetDebugRegs(d); err != nil {
				t.Fatal(err)
			}
			got, err := c.GetDebugRegs()
			if err != nil || got.DB != d.DB || got.DR7 != d.DR7 {
				t.Fatalf("got DB %#x DR7 %#x, %v; want %#x %#x", got.DB, got.DR7, err, d.DB, d.DR7)
			}
		}},
		{"TSC_KHZ", CapGetTSCKHz, func(t *testing.T, c *VCPU) {
			khz, err := c.GetTSCKHz()
			skipIfUnsupported(t, err)
			t.Logf("guest TSC %d kHz", khz)
			if khz == 0 {
				t.Fatal("TSC frequency 0")
			}
			// The host's own rate is the one every KVM accepts,
			// with or without TSC scaling.
			if err := c.SetTSCKHz(khz); err != nil {
				skipIfUnsupported(t, err)
			}
			if got, err := c.GetTSCKHz(); err != nil || got != khz {
				t.Fatalf("TSC %d kHz, %v; want %d", got, err, khz)
			}
		}},
		{"MSRS", 0, func(t *testing.T, c *VCPU) {
			const star = 0xC0000081 // MSR_STAR: SYSCALL's segment selectors
			msrs, err := c.ReadMSRs([]uint32{star})
			skipIfUnsupported(t, err)
			msrs[0].Data = 0x0023001000000000
			if err := c.SetMSRs(msrs); err != nil {
				t.Fatal(err)
			}
			got, err := c.ReadMSRs([]uint32{star})
			if err != nil || got[0].Data != msrs[0].Data {
				t.Fatalf("STAR %#x, %v; want %#x", got[0].Data, err, msrs[0].Data)
			}
			if _, err := c.ReadMSRs([]uint32{star, 0xdead0000}); err == nil {
				t.Fatal("ReadMSRs of a made-up MSR succeeded")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMachine(t)
			if tc.cap != 0 && m.vm.Check(tc.cap) <= 0 {
				t.Skipf("this KVM lacks %v", tc.cap)
			}
			tc.run(t, m.vcpu)
		})
	}
}

// TestSaveableMSRs: the filtered list is a subset of the index list, in
// order, and one KVM_GET_MSRS reads all of it.
func TestSaveableMSRs(t *testing.T) {
	m := newTestMachine(t)
	all, err := m.sys.MSRIndexList()
	if err != nil {
		t.Fatal(err)
	}
	keep, err := m.vcpu.SaveableMSRs(all)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("KVM_GET_MSR_INDEX_LIST: %d MSRs, %d of them readable", len(all), len(keep))
	var dropped []uint32
	j := 0
	for _, idx := range all {
		if j < len(keep) && keep[j] == idx {
			j++
		} else {
			dropped = append(dropped, idx)
		}
	}
	if j != len(keep) {
		t.Fatalf("the saveable list is not an ordered subset of the index list")
	}
	t.Logf("dropped: %#x", dropped)
	if len(keep) == 0 {
		t.Fatal("no MSR is readable")
	}
	msrs, err := m.vcpu.ReadMSRs(keep)
	if err != nil {
		t.Fatal(err)
	}
	if len(msrs) != len(keep) {
		t.Fatalf("%d values for %d MSRs", len(msrs), len(keep))
	}
	// A made-up MSR in the middle is dropped and the rest kept.
	mixed := []uint32{keep[0], 0xdead0000, keep[len(keep)-1]}
	got, err := m.vcpu.SaveableMSRs(mixed)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{keep[0], keep[len(keep)-1]}; !reflect.DeepEqual(got, want) {
		t.Fatalf("SaveableMSRs(%#x) = %#x, want %#x", mixed, got, want)
	}
}

// TestVMStateRoundTrip: the same for the VM-wide wrappers.
func TestVMStateRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, vm *VM)
	}{
		{"IRQCHIP PIC master", func(t *testing.T, vm *VM) { picRoundTrip(t, vm, IRQChipPICMaster) }},
		{"IRQCHIP PIC slave", func(t *testing.T, vm *VM) { picRoundTrip(t, vm, IRQChipPICSlave) }},
		{"IRQCHIP IOAPIC", func(t *testing.T, vm *VM) {
			c, err := vm.GetIRQChip(IRQChipIOAPIC)
			skipIfUnsupported(t, err)
			s := c.IOAPIC()
			t.Logf("IOAPIC base %#x id %d pin 4 %#x", s.BaseAddress, s.ID, s.RedirTbl[4])
			if s.BaseAddress != 0xfec00000 {
				t.Errorf("IOAPIC base %#x, want 0xfec00000", s.BaseAddress)
			}
			s.RedirTbl[4] = 0x24 | 1<<56 // vector 0x24, edge, unmasked, to APIC 1
			s.RedirTbl[9] = 0x29 | RedirLevel | RedirMask
			c.SetIOAPIC(s)
			if err := vm.SetIRQChip(c); err != nil {
				t.Fatal(err)
			}
			got, err := vm.GetIRQChip(IRQChipIOAPIC)
			if err != nil {
				t.Fatal(err)
			}
			if g := got.IOAPIC(); g.RedirTbl != s.RedirTbl {
				t.Fatalf("redirection table %#x, want %#x", g.RedirTbl, s.RedirTbl)
			}
		}},
		{"PIT2", func(t *testing.T, vm *VM) {
			p, err := vm.GetPIT2()
			skipIfUnsupported(t, err)
			t.Logf("channel 0: count %d mode %d; flags %#x", p.Channels[0].Count, p.Channels[0].Mode, p.Flags)
			p.Channels[0].Count = 11932 // 100 Hz from 1.193182 MHz
			p.Channels[0].Mode = 2      // rate generator
			p.Channels[0].RWMode = 3    // low byte, then high byte
			if err := vm.SetPIT2(p); err != nil {
				t.Fatal(err)
			}
			got, err := vm.GetPIT2()
			if err != nil {
				t.Fatal(err)
			}
			if c := got.Channels[0]; c.Count != 11932 || c.Mode != 2 || c.RWMode != 3 {
				t.Fatalf("channel 0 %+v, want count 11932 mode 2 rw 3", c)
			}
		}},
		{"CLOCK", func(t *testing.T, vm *VM) {
			d, err := vm.GetClock()
			skipIfUnsupported(t, err)
			t.Logf("kvm-clock %d ns, flags %#x, realtime %d, KVM_CAP_ADJUST_CLOCK %#x", d.Clock, d.Flags, d.Realtime, vm.Check(CapAdjustClock))
			const ahead = 1_000_000_000_000 // 1000 s
			want := d.Clock + ahead
			if err := vm.SetClock(ClockData{Clock: want}); err != nil {
				t.Fatal(err)
			}
			got, err := vm.GetClock()
			if err != nil {
				t.Fatal(err)
			}
			// The clock runs on from where it was set: not
			// before it, and nowhere near the old value + 2000 s.
			if got.Clock < want || got.Clock > want+ahead {
				t.Fatalf("kvm-clock %d after setting %d", got.Clock, want)
			}
		}},
		{"TSC_KHZ (VM)", func(t *testing.T, vm *VM) {
			// Tried even without the capability: some KVMs
			// (kvm_pvm here) answer the ioctl without advertising it.
			khz, err := vm.GetTSCKHz()
			skipIfUnsupported(t, err)
			t.Logf("VM TSC %d kHz, %v = %d", khz, CapVMTSCControl, vm.Check(CapVMTSCControl))
			// The VM of newTestMachine already has a vCPU, and KVM
			// takes a VM-wide rate only before the first: a VM
			// without vCPUs is made here.
			fresh, err := vm.sys.CreateVM()
			if err != nil {
				t.Fatal(err)
			}
			defer fresh.Close()
			if err := fresh.SetTSCKHz(khz); err != nil {
				t.Fatal(err)
			}
			if got, err := fresh.GetTSCKHz(); err != nil || got != khz {
				t.Fatalf("VM TSC %d kHz, %v; want %d", got, err, khz)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMachine(t)
			tc.run(t, m.vm)
		})
	}
}

func picRoundTrip(t *testing.T, vm *VM, chip uint32) {
	c, err := vm.GetIRQChip(chip)
	skipIfUnsupported(t, err)
	p := c.PIC()
	t.Logf("PIC %d: IMR %#x base %#x ELCR mask %#x", chip, p.IMR, p.IRQBase, p.ELCRMask)
	p.IMR = 0xfb
	p.IRQBase = 0x20 + 8*uint8(chip)
	c.SetPIC(p)
	if err := vm.SetIRQChip(c); err != nil {
		t.Fatal(err)
	}
	got, err := vm.GetIRQChip(chip)
	if err != nil {
		t.Fatal(err)
	}
	if g := got.PIC(); g.IMR != p.IMR || g.IRQBase != p.IRQBase {
		t.Fatalf("IMR %#x base %#x, want %#x %#x", g.IMR, g.IRQBase, p.IMR, p.IRQBase)
	}
}

// counterGuest is 16-bit real-mode code at 0x1000: AX counts up from 0
// and each value's low byte goes out to port 0x10.
//
//	1000: mov ax, 0      b8 00 00
//	1003: inc ax         40
//	1004: out 0x10, al   e6 10
//	1006: jmp 1003       eb fb
var counterGuest = []byte{0xb8, 0x00, 0x00, 0x40, 0xe6, 0x10, 0xeb, 0xfb}

// startGuest puts the vCPU in real mode at 0x1000.
func (m *testMachine) startGuest(t *testing.T) {
	t.Helper()
	copy(m.mem[0x1000:], counterGuest)
	s, err := m.vcpu.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := m.vcpu.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := m.vcpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
}

// nextOut runs the vCPU to its next OUT and returns the byte written.
// kvm_run: exit_reason at 8; the io exit at 32 (direction, size, port,
// count, data_offset at 40).
func (m *testMachine) nextOut(t *testing.T, c *VCPU) byte {
	t.Helper()
	for range 16 {
		err := c.RunOnce()
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		reason := binary.NativeEndian.Uint32(c.Run[8:])
		if reason != 2 { // KVM_EXIT_IO
			t.Fatalf("exit reason %d, want KVM_EXIT_IO", reason)
		}
		if port := binary.NativeEndian.Uint16(c.Run[34:]); port != 0x10 {
			t.Fatalf("OUT to port %#x", port)
		}
		off := binary.NativeEndian.Uint64(c.Run[40:])
		if off >= uint64(len(c.Run)) {
			t.Fatalf("data offset %d", off)
		}
		return c.Run[off]
	}
	t.Fatal("no exit")
	return 0
}

// TestSaveRestoreClone runs the counter guest, saves its vCPU and VM,
// restores both into a second machine with a copy of RAM, and checks that
// both machines continue from the same count: the clone does not start
// over, and nothing it needed was left behind.
func TestSaveRestoreClone(t *testing.T) {
	a := newTestMachine(t)
	a.startGuest(t)
	for want := byte(1); want <= 3; want++ {
		if got := a.nextOut(t, a.vcpu); got != want {
			t.Fatalf("guest wrote %d, want %d", got, want)
		}
	}
	// State the guest does not touch, to see it carried over: an MSR,
	// the guest's debug registers, the APIC's task priority, and events
	// in flight that do not disturb this guest (NMIs blocked, as inside
	// an NMI handler; the one-instruction STI interrupt shadow).
	if err := a.vcpu.SetMSRs([]MSR{{Index: 0xC0000081, Data: 0x0023001000000000}}); err != nil {
		t.Fatal(err)
	}
	if err := a.vcpu.SetDebugRegs(DebugRegs{DB: [4]uint64{0x1000, 0x2000, 0x3000, 0x4000}, DR6: 0xffff0ff0, DR7: 0x400}); err != nil {
		t.Fatal(err)
	}
	l, err := a.vcpu.GetLAPIC()
	if err != nil {
		t.Fatal(err)
	}
	if a.vm.Check(CapXCRs) > 0 {
		x, err := a.vcpu.GetXCRs()
		if err != nil {
			t.Fatal(err)
		}
		x.XCRs[0].Value = 3 // x87 and SSE enabled, as an OS does with XSETBV
		if err := a.vcpu.SetXCRs(x); err != nil {
			t.Fatal(err)
		}
	}
	// TPR alone would not do: it is also CR8, which SREGS carries.
	l.SetReg(LAPICTPR, 0x10)
	l.SetReg(LAPICLINT0, 0x700) // ExtINT: the PIC's output, unmasked
	l.SetReg(LAPICTDCR, 0xb)    // timer divide by 1
	if err := a.vcpu.SetLAPIC(l); err != nil {
		t.Fatal(err)
	}
	ev, err := a.vcpu.GetVCPUEvents()
	if err != nil {
		t.Fatal(err)
	}
	ev.NMIMasked, ev.InterruptShadow = 1, ShadowSTI
	ev.Flags |= VCPUEventValidShadow
	if err := a.vcpu.SetVCPUEvents(ev); err != nil {
		t.Fatal(err)
	}
	// XMM5, as the guest's own SSE code would leave it: in the XSAVE
	// area with the SSE component marked in use (XSTATE_BV bit 1).
	x, err := a.vcpu.GetXSAVE()
	if err != nil {
		t.Fatal(err)
	}
	xb := x.Bytes()
	xb[160+5*16] = 0x5a
	xb[512] |= 2
	x.SetBytes(xb)
	if err := a.vcpu.SetXSAVE(x); err != nil {
		t.Fatal(err)
	}

	all, err := a.sys.MSRIndexList()
	if err != nil {
		t.Fatal(err)
	}
	msrs, err := a.vcpu.SaveableMSRs(all)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := a.vcpu.SaveState(msrs)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := a.vm.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("saved: RIP %#x RAX %#x, MP state %d, XSAVE %v (+%d bytes), XCRs %v, debugregs %v, events %v, %d MSRs, TSC %d kHz, clock %d ns flags %#x",
		vs.Regs.RIP, vs.Regs.RAX, vs.MPState, vs.HasXSAVE, len(vs.XSAVEExtra), vs.HasXCRs, vs.HasDebugRegs, vs.HasEvents, len(vs.MSRs), vs.TSCKHz, ms.Clock.Clock, ms.Clock.Flags)

	// Through gob, as a snapshot file would carry it.
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(vs); err != nil {
		t.Fatal(err)
	}
	var vs2 VCPUState
	if err := gob.NewDecoder(&buf).Decode(&vs2); err != nil {
		t.Fatal(err)
	}

	b := newTestMachine(t)
	copy(b.mem, a.mem)
	if err := b.vcpu.RestoreState(&vs2); err != nil {
		t.Fatal(err)
	}
	if err := b.vm.RestoreState(ms); err != nil {
		t.Fatal(err)
	}

	// Before either runs again, the clone reads back as the original
	// does, but for what moves with time: the TSC and the LAPIC timer.
	sa, err := a.vcpu.SaveState(msrs)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.vcpu.SaveState(msrs)
	if err != nil {
		t.Fatal(err)
	}
	compareVCPUStates(t, sa, sb)

	// Both continue from 4.
	for want := byte(4); want <= 6; want++ {
		ga, gb := a.nextOut(t, a.vcpu), b.nextOut(t, b.vcpu)
		if ga != want || gb != want {
			t.Fatalf("original wrote %d, clone %d; want %d", ga, gb, want)
		}
	}
	got, err := b.vcpu.ReadMSRs([]uint32{0xC0000081})
	if err != nil || got[0].Data != 0x0023001000000000 {
		t.Errorf("clone's STAR %#x, %v", got[0].Data, err)
	}
	xc, err := b.vcpu.GetXSAVE()
	if err != nil || xc.Bytes()[160+5*16] != 0x5a {
		t.Errorf("clone's XMM5 %x, %v", xc.Bytes()[160+5*16:160+6*16], err)
	}
	for _, id := range []uint32{IRQChipPICMaster, IRQChipPICSlave, IRQChipIOAPIC} {
		ca, _ := a.vm.GetIRQChip(id)
		cb, _ := b.vm.GetIRQChip(id)
		if ca != cb {
			t.Errorf("irqchip %d differs", id)
		}
	}
}

// TestStateEncodings: every fixed-size part of VCPUState and the whole of
// VMState go through encoding/binary; a VMState comes back equal.
func TestStateEncodings(t *testing.T) {
	parts := map[string]any{
		"Regs": Regs{}, "Sregs": Sregs{}, "FPU": FPU{}, "XSAVE": XSAVE{}, "XCRs": XCRs{},
		"DebugRegs": DebugRegs{}, "LAPICState": LAPICState{}, "VCPUEvents": VCPUEvents{},
		"MSR": MSR{}, "IRQChip": IRQChip{}, "PITState2": PITState2{}, "ClockData": ClockData{},
		"VMState": VMState{},
	}
	for name, v := range parts {
		if binary.Size(v) <= 0 {
			t.Errorf("encoding/binary cannot size %s", name)
		}
	}
	if n := binary.Size(VMState{}); n != 3*520+112+48 {
		t.Errorf("binary.Size(VMState) = %d", n)
	}
	if binary.Size(VCPUState{}) != -1 {
		t.Errorf("VCPUState has slices: encoding/binary should not size it")
	}
	in := VMState{Clock: ClockData{Clock: 42, Flags: ClockRealtime, Realtime: 7}}
	in.IOAPIC.ChipID = IRQChipIOAPIC
	in.IOAPIC.Chip[0] = 0xfe
	in.PIT.Channels[2].Count = 65536
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, &in); err != nil {
		t.Fatal(err)
	}
	var out VMState
	if err := binary.Read(&buf, binary.LittleEndian, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("VMState through encoding/binary: %+v, want %+v", out, in)
	}
}

// TestRestoreRefusesSwappedChips: a snapshot file is user input; a chip
// stored under another's name is refused before anything is set.
func TestRestoreRefusesSwappedChips(t *testing.T) {
	m := newTestMachine(t)
	s, err := m.vm.SaveState()
	if err != nil {
		skipIfUnsupported(t, err)
	}
	s.PICMaster, s.IOAPIC = s.IOAPIC, s.PICMaster
	if err := m.vm.RestoreState(s); err == nil {
		t.Fatal("restore with swapped chips succeeded")
	} else {
		t.Log(err)
	}
}

// compareVCPUStates reports every difference between two saved states but
// the TSC MSR and the APIC timer's current count, which move with time.
func compareVCPUStates(t *testing.T, a, b *VCPUState) {
	t.Helper()
	same := func(what string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			t.Errorf("%s differs:\noriginal %+v\nclone    %+v", what, x, y)
		}
	}
	same("MP state", a.MPState, b.MPState)
	same("Regs", a.Regs, b.Regs)
	same("Sregs", a.Sregs, b.Sregs)
	same("XSAVE", a.XSAVE, b.XSAVE)
	same("XCRs", a.XCRs, b.XCRs)
	same("DebugRegs", a.DebugRegs, b.DebugRegs)
	same("Events", a.Events, b.Events)
	same("TSC kHz", a.TSCKHz, b.TSCKHz)
	la, lb := a.LAPIC, b.LAPIC
	la.SetReg(LAPICTMCCT, 0)
	lb.SetReg(LAPICTMCCT, 0)
	same("LAPIC", la, lb)
	if len(a.MSRs) != len(b.MSRs) {
		t.Fatalf("%d MSRs saved from the original, %d from the clone", len(a.MSRs), len(b.MSRs))
	}
	for i := range a.MSRs {
		if a.MSRs[i].Index == 0x10 { // IA32_TIME_STAMP_COUNTER
			continue
		}
		same(fmt.Sprintf("MSR %#x", a.MSRs[i].Index), a.MSRs[i], b.MSRs[i])
	}
	if a.Events.NMIMasked != 1 || a.Events.InterruptShadow != ShadowSTI || a.DebugRegs.DB[3] != 0x4000 || a.LAPIC.Reg(LAPICTPR) != 0x10 || a.LAPIC.Reg(LAPICLINT0) != 0x700 || a.LAPIC.Reg(LAPICTDCR) != 0xb {
		t.Errorf("the state set before saving is not in it: events %+v, DB %#x, TPR %#x LINT0 %#x TDCR %#x",
			a.Events, a.DebugRegs.DB, a.LAPIC.Reg(LAPICTPR), a.LAPIC.Reg(LAPICLINT0), a.LAPIC.Reg(LAPICTDCR))
	}
}
