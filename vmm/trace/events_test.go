package trace

import "fmt"

// Events as a small Linux guest produces them: serial output through COM1,
// the IOAPIC and LAPIC through MMIO, POST codes to port 0x80 that nothing
// claims, and a HLT; on an AMD host (svm) and an Intel one (vmx).
var (
	evCOM1Out = Event{
		Seq: 1, TimeNS: 1_250_000, VCPU: 0, Reason: "KVM_EXIT_IO", Code: 2, RIP: 0xffffffff81a3c0de,
		GuestNS: 1_200_000, HandleNS: 2_500,
		IO:     &IO{Port: 0x3f8, Size: 1, Dir: "out", Count: 1, Data: "48"},
		Device: "COM1", Action: "COM1 THR write 'H'",
		HW: &HW{Vendor: "svm", Code: 0x7b, Name: "VMEXIT_IOIO", Derived: true},
	}
	evCOM1LSR = Event{
		Seq: 2, TimeNS: 1_260_000, VCPU: 0, Reason: "KVM_EXIT_IO", Code: 2, RIP: 0xffffffff81a3c0f0,
		GuestNS: 7_500, HandleNS: 1_500,
		IO:     &IO{Port: 0x3fd, Size: 1, Dir: "in", Count: 1, Data: "60"},
		Device: "COM1", Action: "COM1 LSR read: THR empty, line idle",
		HW: &HW{Vendor: "svm", Code: 0x7b, Name: "VMEXIT_IOIO", Derived: true},
	}
	evIOAPIC = Event{
		Seq: 3, TimeNS: 2_000_000, VCPU: 1, Reason: "KVM_EXIT_MMIO", Code: 6, RIP: 0xffffffff8106d2a1,
		GuestNS: 650_000, HandleNS: 4_200,
		MMIO:   &MMIO{Addr: 0xfec00000, Len: 4, Write: true, Data: "10000000"},
		Device: "IOAPIC", Action: "IOAPIC IOREGSEL = 0x10 (redirection entry 0, low)",
		HW: &HW{Vendor: "vmx", Code: 49, Name: "EPT_MISCONFIG", Derived: true},
	}
	evPOST = Event{
		Seq: 4, TimeNS: 2_100_000, VCPU: 1, Reason: "KVM_EXIT_IO", Code: 2, RIP: 0xfff0,
		GuestNS: 95_000, HandleNS: 800,
		IO:     &IO{Port: 0x80, Size: 1, Dir: "out", Count: 1, Data: "ff"},
		Action: "unclaimed port 0x80 out (reads as all ones)",
		HW:     &HW{Vendor: "vmx", Code: 30, Name: "IO_INSTRUCTION", Derived: true},
	}
	evHLT = Event{
		Seq: 5, TimeNS: 3_000_000, VCPU: 0, Reason: "KVM_EXIT_HLT", Code: 5, RIP: 0xffffffff81e0b1c5,
		GuestNS: 1_700_000, HandleNS: 300,
		HW: &HW{Vendor: "vmx", Code: 12, Name: "HLT", Derived: true},
	}
	evFail = Event{
		Seq: 6, TimeNS: 3_500_000, VCPU: 0, Reason: "KVM_EXIT_FAIL_ENTRY", Code: 9, RIP: 0,
		GuestNS: 0, HandleNS: 12_000,
		Action: "entry failed: \"invalid guest state\"\tCR0=0x60000010\n<PE clear>",
		HW:     &HW{Vendor: "vmx", Code: 33, Name: "INVALID_STATE", Derived: false},
	}
	evBare = Event{Seq: 7, TimeNS: 4_000_000, VCPU: 2, Reason: "KVM_EXIT_SHUTDOWN", Code: 8}
)

func sampleEvents() []Event {
	return []Event{evCOM1Out, evCOM1LSR, evIOAPIC, evPOST, evHLT, evFail, evBare}
}

// synth makes the i-th of a stream of events from vCPU v, with handling
// times that are easy to check: the reason cycles IO, IO, MMIO, HLT.
func synth(v, i int, seq uint64) Event {
	ev := Event{
		Seq: seq, TimeNS: int64(i) * 10_000, VCPU: v, RIP: 0x1000 + uint64(i),
		GuestNS: 7_000, HandleNS: int64(1000 + i%7*100),
	}
	switch i % 4 {
	case 0, 1:
		ev.Reason, ev.Code = "KVM_EXIT_IO", 2
		ev.IO = &IO{Port: 0x3f8, Size: 1, Dir: "out", Count: 1, Data: fmt.Sprintf("%02x", i&0xff)}
		ev.Device, ev.Action = "COM1", "COM1 THR write"
		ev.HW = &HW{Vendor: "vmx", Code: 30, Name: "IO_INSTRUCTION", Derived: true}
	case 2:
		ev.Reason, ev.Code = "KVM_EXIT_MMIO", 6
		ev.MMIO = &MMIO{Addr: 0xfee000b0, Len: 4, Write: true, Data: "00000000"}
		ev.Device, ev.Action = "LAPIC", "LAPIC EOI"
		ev.HW = &HW{Vendor: "vmx", Code: 49, Name: "EPT_MISCONFIG", Derived: true}
	case 3:
		ev.Reason, ev.Code = "KVM_EXIT_HLT", 5
		ev.HW = &HW{Vendor: "vmx", Code: 12, Name: "HLT", Derived: true}
	}
	return ev
}
