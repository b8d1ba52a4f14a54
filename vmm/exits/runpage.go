package exits

// The kvm_run page, byte by byte.
//
// This file is the one place in kvmlab that knows where the fields of struct
// kvm_run sit. Package kvm maps the page (mmap of the vCPU fd, size from
// KVM_GET_VCPU_MMAP_SIZE) and hands it over as a []byte; everything that
// reads or writes it (the vCPU loop, the observatory, the benchmark's exit
// loop, the tests that fake an exit) goes through the functions below. It is
// read and written with encoding/binary rather than through a Go struct laid
// over the mapping, so no unsafe is needed and a page that is shorter than
// expected is an error instead of a fault.
//
// Layout on x86-64 (include/uapi/linux/kvm.h, struct kvm_run;
// Documentation/virt/kvm/api.rst, "The kvm_run structure"):
//
//	offset  size  field                           who writes it
//	     0     1  request_interrupt_window        VMM
//	     1     1  immediate_exit                  VMM
//	     8     4  exit_reason                     KVM
//	    12     1  ready_for_interrupt_injection   KVM
//	    13     1  if_flag                         KVM
//	    14     2  flags                           KVM
//	    16     8  cr8                             both
//	    24     8  apic_base                       both
//	    32   256  the exit union: io, mmio, ...   KVM (and the VMM's answers)
//	   288     8  kvm_valid_regs                  VMM (KVM_CAP_SYNC_REGS)
//	   296     8  kvm_dirty_regs                  VMM
//	   304  2048  s.regs: struct kvm_sync_regs    KVM (kvm_regs first)
//
// After struct kvm_run, in the same mapping, KVM puts the port I/O data page
// (KVM_PIO_PAGE_OFFSET: one page in) and the coalesced MMIO ring; an I/O
// exit's data_offset points into that second page.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Offsets of the fixed part of struct kvm_run.
const (
	offImmediateExit = 1
	offExitReason    = 8
	offUnion         = 32
	unionSize        = 256
	offValidRegs     = offUnion + unionSize // 288
	offSyncRegs      = offValidRegs + 16    // 304, after kvm_valid_regs and kvm_dirty_regs
	// offSyncRIP is s.regs.regs.rip: struct kvm_regs is RAX..R15 (16
	// words), then RIP.
	offSyncRIP = offSyncRegs + 16*8

	// MinRunSize is the smallest page Decode accepts: the header and union.
	MinRunSize = offUnion + unionSize
)

// syncX86Regs is KVM_SYNC_X86_REGS, the kvm_valid_regs bit for struct
// kvm_regs (arch/x86/include/uapi/asm/kvm.h).
const syncX86Regs = 1

// Offsets inside the exit union, one group per member.
const (
	// io: __u8 direction, __u8 size, __u16 port, __u32 count, __u64 data_offset.
	ioDirection, ioSize, ioPort, ioCount, ioDataOffset = 0, 1, 2, 4, 8
	// mmio: __u64 phys_addr, __u8 data[8], __u32 len, __u8 is_write.
	mmioPhysAddr, mmioData, mmioLen, mmioIsWrite = 0, 8, 16, 20
	// system_event and internal: __u32 type/suberror, __u32 ndata, __u64 data[16].
	evType, evNData, evData = 0, 4, 8
	// fail_entry: __u64 hardware_entry_failure_reason, __u32 cpu.
	failReason, failCPU = 0, 8
	// debug (struct kvm_debug_exit_arch): __u32 exception, pad, __u64 pc, dr6, dr7.
	dbgException, dbgPC, dbgDR6, dbgDR7 = 0, 8, 16, 24
	// hw: __u64 hardware_exit_reason.
	hwReason = 0
)

// ErrShortRun means the run page is smaller than struct kvm_run's fixed part.
var ErrShortRun = errors.New("kvm_run page too short")

// ErrBadIO means an I/O exit's data does not fit in the run page.
var ErrBadIO = errors.New("I/O exit data outside the kvm_run page")

var le = binary.LittleEndian

// Decode reads the exit from run into e (reusing e's storage to keep the hot
// path free of allocations).
func Decode(run []byte, e *Exit) error {
	if len(run) < MinRunSize {
		return fmt.Errorf("%w: %d bytes", ErrShortRun, len(run))
	}
	io, mmio := e.IO, e.MMIO
	*e = Exit{Reason: Reason(le.Uint32(run[offExitReason:]))}
	u := run[offUnion : offUnion+unionSize]
	switch e.Reason {
	case IO:
		if io == nil {
			io = new(IOExit)
		}
		*io = IOExit{
			Direction:  Direction(u[ioDirection]),
			Size:       u[ioSize],
			Port:       le.Uint16(u[ioPort:]),
			Count:      le.Uint32(u[ioCount:]),
			DataOffset: le.Uint64(u[ioDataOffset:]),
		}
		e.IO = io
		if io.Size != 1 && io.Size != 2 && io.Size != 4 {
			return fmt.Errorf("%w: size %d", ErrBadIO, io.Size)
		}
		if io.Direction > Out {
			return fmt.Errorf("%w: direction %d", ErrBadIO, io.Direction)
		}
		n := uint64(io.Size) * uint64(io.Count)
		if io.Count == 0 || io.DataOffset >= uint64(len(run)) || n > uint64(len(run))-io.DataOffset {
			return fmt.Errorf("%w: offset %#x, %d x %d bytes, page %d", ErrBadIO, io.DataOffset, io.Count, io.Size, len(run))
		}
	case MMIO:
		if mmio == nil {
			mmio = new(MMIOExit)
		}
		*mmio = MMIOExit{PhysAddr: le.Uint64(u[mmioPhysAddr:]), Len: le.Uint32(u[mmioLen:]), IsWrite: u[mmioIsWrite] != 0}
		copy(mmio.Data[:], u[mmioData:mmioData+8])
		e.MMIO = mmio
		if mmio.Len == 0 || mmio.Len > 8 {
			return fmt.Errorf("MMIO exit with length %d", mmio.Len)
		}
	case SystemEvent:
		s := &SystemEventExit{Type: le.Uint32(u[evType:]), NData: le.Uint32(u[evNData:])}
		for i := range s.Data {
			s.Data[i] = le.Uint64(u[evData+8*i:])
		}
		e.SystemEvent = s
	case InternalError:
		s := &InternalErrorExit{Suberror: le.Uint32(u[evType:]), NData: le.Uint32(u[evNData:])}
		for i := range s.Data {
			s.Data[i] = le.Uint64(u[evData+8*i:])
		}
		e.InternalError = s
	case FailEntry:
		e.FailEntry = &FailEntryExit{HardwareEntryFailureReason: le.Uint64(u[failReason:]), CPU: le.Uint32(u[failCPU:])}
	case Debug:
		e.Debug = &DebugExit{Exception: le.Uint32(u[dbgException:]), PC: le.Uint64(u[dbgPC:]), DR6: le.Uint64(u[dbgDR6:]), DR7: le.Uint64(u[dbgDR7:])}
	case Unknown:
		e.HardwareExitReason = le.Uint64(u[hwReason:])
	}
	return nil
}

// IOData returns the slice of the run page that holds an I/O exit's data.
// Decode has already checked that it fits.
func IOData(run []byte, io *IOExit) []byte {
	n := uint64(io.Size) * uint64(io.Count)
	return run[io.DataOffset : io.DataOffset+n]
}

// What the VMM writes into the page: its answers to an exit and its requests
// for the next KVM_RUN.

// SetMMIOData writes the result of an MMIO read back into the run page, where
// KVM picks it up on the next KVM_RUN to complete the guest's load.
func SetMMIOData(run []byte, data []byte) {
	copy(run[offUnion+mmioData:offUnion+mmioData+8], data)
}

// SetImmediateExit sets kvm_run.immediate_exit: while it is 1, KVM_RUN
// returns EINTR at once instead of entering the guest (api.rst,
// "immediate_exit"). Together with a signal, it is how another thread kicks a
// vCPU out reliably: the signal interrupts a KVM_RUN already in the guest,
// the flag catches one that is about to start.
func SetImmediateExit(run []byte, on bool) {
	if on {
		run[offImmediateExit] = 1
	} else {
		run[offImmediateExit] = 0
	}
}

// EnableSyncRegs sets KVM_SYNC_X86_REGS in kvm_valid_regs, asking KVM (if it
// has KVM_CAP_SYNC_REGS) to copy the general-purpose registers into the run
// page at every exit, so that SyncedRIP costs no KVM_GET_REGS ioctl.
func EnableSyncRegs(run []byte) { le.PutUint64(run[offValidRegs:], syncX86Regs) }

// SyncedRIP is the guest's RIP at the last exit, from s.regs. It is only
// meaningful after EnableSyncRegs on a host with KVM_CAP_SYNC_REGS.
func SyncedRIP(run []byte) uint64 { return le.Uint64(run[offSyncRIP:]) }

// Encoder helpers for tests and fuzzers: build a run page holding an exit,
// the way the kernel would.

// EncodeIO writes an I/O exit into run with its data at dataOff.
func EncodeIO(run []byte, dir Direction, size uint8, port uint16, count uint32, dataOff uint64, data []byte) {
	le.PutUint32(run[offExitReason:], uint32(IO))
	u := run[offUnion:]
	u[ioDirection], u[ioSize] = byte(dir), size
	le.PutUint16(u[ioPort:], port)
	le.PutUint32(u[ioCount:], count)
	le.PutUint64(u[ioDataOffset:], dataOff)
	if dataOff < uint64(len(run)) {
		copy(run[dataOff:], data)
	}
}

// EncodeMMIO writes an MMIO exit into run.
func EncodeMMIO(run []byte, addr uint64, data []byte, write bool) {
	le.PutUint32(run[offExitReason:], uint32(MMIO))
	u := run[offUnion:]
	le.PutUint64(u[mmioPhysAddr:], addr)
	copy(u[mmioData:mmioData+8], data)
	le.PutUint32(u[mmioLen:], uint32(len(data)))
	u[mmioIsWrite] = 0
	if write {
		u[mmioIsWrite] = 1
	}
}

// EncodeReason writes only the exit reason.
func EncodeReason(run []byte, r Reason) { le.PutUint32(run[offExitReason:], uint32(r)) }

// EncodeSystemEvent writes a KVM_EXIT_SYSTEM_EVENT of type typ, with data
// (at most 16 words; ndata says how many).
func EncodeSystemEvent(run []byte, typ uint32, data ...uint64) {
	encodeEvent(run, SystemEvent, typ, data)
}

// EncodeInternalError writes a KVM_EXIT_INTERNAL_ERROR with suberror sub and
// data (at most 16 words; ndata says how many).
func EncodeInternalError(run []byte, sub uint32, data ...uint64) {
	encodeEvent(run, InternalError, sub, data)
}

// encodeEvent writes the layout system_event and internal share.
func encodeEvent(run []byte, r Reason, first uint32, data []uint64) {
	data = data[:min(len(data), 16)]
	le.PutUint32(run[offExitReason:], uint32(r))
	u := run[offUnion:]
	le.PutUint32(u[evType:], first)
	le.PutUint32(u[evNData:], uint32(len(data)))
	for i, d := range data {
		le.PutUint64(u[evData+8*i:], d)
	}
}

// EncodeFailEntry writes a KVM_EXIT_FAIL_ENTRY with the hardware's reason.
func EncodeFailEntry(run []byte, reason uint64, cpu uint32) {
	le.PutUint32(run[offExitReason:], uint32(FailEntry))
	u := run[offUnion:]
	le.PutUint64(u[failReason:], reason)
	le.PutUint32(u[failCPU:], cpu)
}

// PeekReason and PeekIOPort read one field each straight from a kvm_run
// page (at least MinRunSize bytes), without decoding the rest: for a loop
// that only needs to tell its exits apart, like the benchmark's Go floor,
// which mirrors a C loop reading these two fields. The offsets stay here,
// with Decode's.
func PeekReason(run []byte) Reason { return Reason(le.Uint32(run[offExitReason:])) }

// PeekIOPort is the port of a KVM_EXIT_IO (meaningless for other reasons).
func PeekIOPort(run []byte) uint16 { return le.Uint16(run[offUnion+ioPort:]) }
