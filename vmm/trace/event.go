// Package trace records VM exits as events and turns them into the outputs a
// learner reads: one JSON object per exit (JSON Lines), a per-reason
// statistics table like `perf kvm stat report`, and a Chrome Trace Event file
// that Perfetto or chrome://tracing shows as a timeline.
//
// Each event has two layers. The KVM layer is what the VMM sees: the
// KVM_EXIT_* reason KVM_RUN returned with, and its details. The hardware
// layer is the processor's own reason for leaving the guest beneath it: a
// VT-x basic exit reason (Intel SDM Vol. 3C, Appendix C) or an AMD SVM exit
// code (AMD APM Vol. 2, Appendix C). KVM does not report the hardware reason
// to user space for ordinary exits, so it is derived from the KVM reason and
// the vendor (an I/O exit on SVM is always VMEXIT_IOIO), and marked so.
//
// The schema (field names are stable; new fields may be added):
//
//	seq        uint64  exit number, from 1, across all vCPUs
//	t_ns       int64   time of the exit since the machine started, ns
//	vcpu       int     vCPU index
//	reason     string  "KVM_EXIT_IO", "KVM_EXIT_MMIO", ...
//	code       uint32  the KVM_EXIT_* number
//	rip        uint64  guest RIP at the exit (after the instruction for I/O)
//	guest_ns   int64   time spent in the guest (inside KVM_RUN) before it
//	handle_ns  int64   time the VMM spent handling it
//	io         {port, size, dir: "in"|"out", count, data: hex}      for IO
//	mmio       {addr, len, write, data: hex}                         for MMIO
//	device     string  bus device that handled it ("" when unclaimed)
//	action     string  what it meant in device terms ("COM1 THR write 'H'")
//	hw         {vendor: "svm"|"vmx", code, name, derived: bool}      hardware layer
package trace

// IO is a port I/O exit's details.
type IO struct {
	Port  uint16 `json:"port"`
	Size  uint8  `json:"size"`
	Dir   string `json:"dir"`
	Count uint32 `json:"count"`
	Data  string `json:"data"` // hex, first element(s)
}

// MMIO is an MMIO exit's details.
type MMIO struct {
	Addr  uint64 `json:"addr"`
	Len   uint32 `json:"len"`
	Write bool   `json:"write"`
	Data  string `json:"data"`
}

// HW is the hardware exit reason beneath a KVM exit.
type HW struct {
	Vendor string `json:"vendor"` // "vmx" (Intel VT-x) or "svm" (AMD SVM)
	Code   uint64 `json:"code"`   // basic exit reason / SVM exit code
	Name   string `json:"name"`   // "IO_INSTRUCTION" / "VMEXIT_IOIO"
	// Derived is true when the code was inferred from the KVM exit (KVM
	// does not report it), false when KVM reported it (FAIL_ENTRY,
	// UNKNOWN) or a tracepoint saw it.
	Derived bool `json:"derived"`
}

// Event is one VM exit that reached user space.
type Event struct {
	Seq      uint64 `json:"seq"`
	TimeNS   int64  `json:"t_ns"`
	VCPU     int    `json:"vcpu"`
	Reason   string `json:"reason"`
	Code     uint32 `json:"code"`
	RIP      uint64 `json:"rip"`
	GuestNS  int64  `json:"guest_ns"`
	HandleNS int64  `json:"handle_ns"`
	IO       *IO    `json:"io,omitempty"`
	MMIO     *MMIO  `json:"mmio,omitempty"`
	Device   string `json:"device,omitempty"`
	Action   string `json:"action,omitempty"`
	HW       *HW    `json:"hw,omitempty"`
}
