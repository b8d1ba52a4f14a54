package x86

import (
	"errors"
	"testing"

	"kvmlab/vmm/kvm"
)

// entry is what package boot returns for a bzImage: GDT at 0x500 with the
// protocol's selectors, PML4 at 0x9000, boot_params at 0x7000.
var entry = LongModeEntry{
	RIP: 0x100200, RSP: 0x8ff0, RSI: 0x7000, CR3: 0x9000,
	GDT:          kvm.DTable{Base: 0x500, Limit: 31},
	CodeSelector: 0x10, DataSelector: 0x18,
	CodeDescriptor: FlatCode64, DataDescriptor: FlatData,
}

func TestLongModeSregs(t *testing.T) {
	// What KVM_GET_SREGS returns for a fresh vCPU, in part: the reset
	// state of SDM Vol. 3A Table 9-1, which long mode must replace or
	// (for what it does not concern) keep.
	reset := kvm.Sregs{
		CS:       kvm.Segment{Base: 0xffff0000, Limit: 0xffff, Selector: 0xf000, Type: 0xb, Present: 1, S: 1},
		DS:       kvm.Segment{Limit: 0xffff, Type: 3, Present: 1, S: 1},
		TR:       kvm.Segment{Limit: 0xffff, Type: 0xb, Present: 1},
		IDT:      kvm.DTable{Limit: 0xffff},
		CR0:      0x60000010,
		APICBase: 0xfee00900,
	}
	s := LongModeSregs(reset, entry)
	code := kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0xb, S: 1, Present: 1, L: 1, G: 1}
	data := kvm.Segment{Limit: 0xffffffff, Selector: 0x18, Type: 0x3, S: 1, Present: 1, DB: 1, G: 1}
	tests := []struct {
		name      string
		got, want any
	}{
		{"CS: flat 64-bit code at __BOOT_CS (SDM 3.4.5, boot.rst)", s.CS, code},
		{"DS: flat data at __BOOT_DS", s.DS, data},
		{"ES", s.ES, data},
		{"FS", s.FS, data},
		{"GS", s.GS, data},
		{"SS", s.SS, data},
		{"GDTR from the loader", s.GDT, kvm.DTable{Base: 0x500, Limit: 31}},
		{"no IDT: interrupts off", s.IDT, kvm.DTable{}},
		{"CR0: PE MP ET NE WP PG (SDM 2.5)", s.CR0, uint64(0x80010033)},
		{"CR3: the identity map's PML4 (SDM 4.5)", s.CR3, uint64(0x9000)},
		{"CR4: PAE only (SDM 2.5)", s.CR4, uint64(0x20)},
		{"EFER: LME and LMA (SDM 2.2.1, 9.8.5)", s.EFER, uint64(0x500)},
		{"TR kept from reset", s.TR, reset.TR},
		{"APIC base kept from reset", s.APICBase, uint64(0xfee00900)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %+v, want %+v", tc.got, tc.want)
			}
		})
	}
}

func TestLongModeRegs(t *testing.T) {
	want := kvm.Regs{RIP: 0x100200, RSP: 0x8ff0, RSI: 0x7000, RFLAGS: 2}
	if got := LongModeRegs(entry); got != want {
		t.Errorf("LongModeRegs = %+v, want %+v (RSI = boot_params, IF clear, reserved bit 1 set)", got, want)
	}
}

// fakeVCPU records what SetupLongMode loads, and fails where told.
type fakeVCPU struct {
	sregs           kvm.Sregs
	regs            kvm.Regs
	failGet, failSS bool
	setSregs        int
	setRegs         int
}

var errFake = errors.New("fake ioctl failure")

func (f *fakeVCPU) GetSregs() (kvm.Sregs, error) {
	if f.failGet {
		return kvm.Sregs{}, errFake
	}
	return f.sregs, nil
}

func (f *fakeVCPU) SetSregs(s kvm.Sregs) error {
	if f.failSS {
		return errFake
	}
	f.sregs, f.setSregs = s, f.setSregs+1
	return nil
}

func (f *fakeVCPU) SetRegs(r kvm.Regs) error {
	f.regs, f.setRegs = r, f.setRegs+1
	return nil
}

// *kvm.VCPU is what the machine hands SetupLongMode.
var _ VCPU = (*kvm.VCPU)(nil)

func TestSetupLongMode(t *testing.T) {
	tests := []struct {
		name                   string
		vcpu                   *fakeVCPU
		wantErr                bool
		wantSetSregs, wantRegs int
	}{
		{"loads special, then general registers", &fakeVCPU{sregs: kvm.Sregs{APICBase: 0xfee00900}}, false, 1, 1},
		{"KVM_GET_SREGS fails: nothing is set", &fakeVCPU{failGet: true}, true, 0, 0},
		{"KVM_SET_SREGS fails: RIP is not set", &fakeVCPU{failSS: true}, true, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := SetupLongMode(tc.vcpu, entry)
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, errFake)) {
				t.Fatalf("SetupLongMode error = %v, want error %v (wrapping the ioctl's)", err, tc.wantErr)
			}
			if tc.vcpu.setSregs != tc.wantSetSregs || tc.vcpu.setRegs != tc.wantRegs {
				t.Errorf("SetSregs %d times, SetRegs %d times; want %d, %d", tc.vcpu.setSregs, tc.vcpu.setRegs, tc.wantSetSregs, tc.wantRegs)
			}
			if err != nil {
				return
			}
			if want := LongModeSregs(kvm.Sregs{APICBase: 0xfee00900}, entry); tc.vcpu.sregs != want {
				t.Errorf("special registers = %+v, want %+v", tc.vcpu.sregs, want)
			}
			if tc.vcpu.regs != LongModeRegs(entry) {
				t.Errorf("general registers = %+v, want %+v", tc.vcpu.regs, LongModeRegs(entry))
			}
		})
	}
}
