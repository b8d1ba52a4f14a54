package kvm

// Eventfd plumbing between devices and the guest (Documentation/virt/kvm/api.rst
// §4.75 KVM_IRQFD, §4.59 KVM_IOEVENTFD, §4.52 KVM_SET_GSI_ROUTING, §4.71
// KVM_SIGNAL_MSI).
//
// Without them, a virtio doorbell is an MMIO write that exits to user space
// (KVM_EXIT_MMIO), and an interrupt is an ioctl from the VMM. With them, the
// kernel turns a doorbell write at a registered address straight into an
// eventfd signal and resumes the guest at once (an ioeventfd), and a device
// thread that writes an eventfd makes KVM inject an interrupt without any
// ioctl (an irqfd). Neither round trip goes through the vCPU thread.

import (
	"encoding/binary"
	"fmt"
)

const (
	ioSetGSIRouting = 0x4008AE6A // _IOW(KVMIO, 0x6a, struct kvm_irq_routing)
	ioIRQFD         = 0x4020AE76 // _IOW(KVMIO, 0x76, struct kvm_irqfd)
	ioIOEventFD     = 0x4040AE79 // _IOW(KVMIO, 0x79, struct kvm_ioeventfd)
	ioSignalMSI     = 0x4020AEA5 // _IOW(KVMIO, 0xa5, struct kvm_msi)
)

// More capabilities (KVM_CAP_*).
const (
	CapIRQRouting Cap = 25
	CapSignalMSI  Cap = 77
)

func init() {
	capNames[CapIRQRouting] = "KVM_CAP_IRQ_ROUTING"
	capNames[CapSignalMSI] = "KVM_CAP_SIGNAL_MSI"
}

// IOEventFD is struct kvm_ioeventfd.
type IOEventFD struct {
	DataMatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]byte
}

// KVM_IOEVENTFD flags.
const (
	IOEventFDDataMatch = 1 << 0
	IOEventFDPIO       = 1 << 1
	IOEventFDDeassign  = 1 << 2
)

// IOEventFD registers (or, with IOEventFDDeassign, removes) an ioeventfd:
// a guest write of e.Len bytes to e.Addr signals the eventfd e.FD inside
// the kernel and never exits to user space.
func (v *VM) IOEventFD(e IOEventFD) error {
	if err := ioctlPtr(v.fd(), ioIOEventFD, ptrIOEventFD(&e)); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD addr %#x len %d flags %#x: %w", e.Addr, e.Len, e.Flags, err)
	}
	return nil
}

// IRQFD is struct kvm_irqfd.
type IRQFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]byte
}

// IRQFDDeassign removes an irqfd.
const IRQFDDeassign = 1 << 0

// IRQFD binds (or unbinds) eventfd fd to GSI gsi: a write to the eventfd
// injects the interrupt that the GSI routing table says gsi is.
func (v *VM) IRQFD(fd int, gsi uint32, deassign bool) error {
	r := IRQFD{FD: uint32(fd), GSI: gsi}
	if deassign {
		r.Flags = IRQFDDeassign
	}
	if err := ioctlPtr(v.fd(), ioIRQFD, ptrIRQFD(&r)); err != nil {
		return fmt.Errorf("KVM_IRQFD fd %d gsi %d: %w", fd, gsi, err)
	}
	return nil
}

// MSI is a message-signalled interrupt: the 64-bit address and 32-bit data
// a PCI device writes to raise it (PCI Local Bus 3.0 §6.8). On x86 the
// address selects the destination local APIC (0xFEExxxxx) and the data the
// vector and delivery mode (Intel SDM Vol. 3, §11.11).
type MSI struct {
	Addr uint64
	Data uint32
}

// SignalMSI injects one MSI from user space (KVM_SIGNAL_MSI). It reports
// whether the interrupt was delivered (false: the guest had it blocked).
func (v *VM) SignalMSI(m MSI) (bool, error) {
	var b [32]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(m.Addr))
	le.PutUint32(b[4:], uint32(m.Addr>>32))
	le.PutUint32(b[8:], m.Data)
	n, err := ioctlBytes(v.fd(), ioSignalMSI, b[:])
	if err != nil {
		return false, fmt.Errorf("KVM_SIGNAL_MSI addr %#x data %#x: %w", m.Addr, m.Data, err)
	}
	return n > 0, nil
}

// Route is one entry of the GSI routing table (struct
// kvm_irq_routing_entry): GSI number GSI is either an input pin of an
// in-kernel interrupt controller or an MSI message.
type Route struct {
	GSI uint32
	// IRQChip, Pin for an irqchip route (IRQChip is one of the
	// IRQChip* constants).
	IRQChip, Pin uint32
	// MSI, when IsMSI, for an MSI route.
	IsMSI bool
	MSI   MSI
}

// In-kernel interrupt controllers, as numbered by KVM_SET_GSI_ROUTING.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// Routing entry types and sizes.
const (
	routeTypeIRQChip = 1
	routeTypeMSI     = 2
	routeEntrySize   = 48 // sizeof(struct kvm_irq_routing_entry)
)

// DefaultRoutes returns the routing KVM_CREATE_IRQCHIP sets up, which
// KVM_SET_GSI_ROUTING replaces wholesale: GSIs 0-15 go to both 8259A pins
// (IRQ 0-7 master, 8-15 slave) and GSIs 0-23 to the I/O APIC pins of the
// same number. A VMM that adds MSI routes must send these too, or the
// serial port and the timer would lose their interrupts.
func DefaultRoutes() []Route {
	var rs []Route
	for gsi := uint32(0); gsi < 24; gsi++ {
		if gsi < 8 {
			rs = append(rs, Route{GSI: gsi, IRQChip: IRQChipPICMaster, Pin: gsi})
		} else if gsi < 16 {
			rs = append(rs, Route{GSI: gsi, IRQChip: IRQChipPICSlave, Pin: gsi - 8})
		}
		rs = append(rs, Route{GSI: gsi, IRQChip: IRQChipIOAPIC, Pin: gsi})
	}
	return rs
}

// EncodeRoutes lays out struct kvm_irq_routing with its entries.
func EncodeRoutes(routes []Route) []byte {
	b := make([]byte, 8+routeEntrySize*len(routes))
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(routes)))
	for i, r := range routes {
		e := b[8+i*routeEntrySize:]
		le.PutUint32(e[0:], r.GSI)
		if r.IsMSI {
			le.PutUint32(e[4:], routeTypeMSI)
			le.PutUint32(e[16:], uint32(r.MSI.Addr))
			le.PutUint32(e[20:], uint32(r.MSI.Addr>>32))
			le.PutUint32(e[24:], r.MSI.Data)
		} else {
			le.PutUint32(e[4:], routeTypeIRQChip)
			le.PutUint32(e[16:], r.IRQChip)
			le.PutUint32(e[20:], r.Pin)
		}
	}
	return b
}

// SetGSIRouting replaces the whole GSI routing table.
func (v *VM) SetGSIRouting(routes []Route) error {
	if _, err := ioctlBytes(v.fd(), ioSetGSIRouting, EncodeRoutes(routes)); err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING (%d routes): %w", len(routes), err)
	}
	return nil
}
