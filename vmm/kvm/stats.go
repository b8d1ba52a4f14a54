package kvm

// Binary statistics: the kernel's own exit counters.
//
// Most VM exits never reach kvmlab. When the guest executes HLT, takes an
// EPT violation, is hit by a host timer interrupt or writes to the in-kernel
// PIC, the CPU leaves guest mode, KVM handles the event inside the kernel and
// re-enters the guest — KVM_RUN does not return, so user space cannot count
// what it never sees. Only the exits KVM cannot finish itself (port I/O or
// MMIO to a device that lives in user space, a pending signal, ...) come back
// as a kvm_run exit reason.
//
// To let user space see the rest, Linux 5.14 added KVM_GET_STATS_FD
// (KVM_CAP_BINARY_STATS_FD, Documentation/virt/kvm/api.rst §4.133): an ioctl
// on a VM or vCPU fd that returns a read-only file describing and exposing
// the counters KVM keeps for that object (the same counters debugfs shows
// under /sys/kernel/debug/kvm, but per fd, without debugfs, and
// self-describing). The file has four blocks:
//
//	+-------------+  offset 0: struct kvm_stats_header (24 bytes)
//	|   Header    |    flags, name_size, num_desc,
//	+-------------+    id_offset, desc_offset, data_offset (all __u32)
//	|  id string  |  name_size bytes, e.g. "kvm-1234/vcpu-0\0"
//	+-------------+
//	| Descriptors |  num_desc × (struct kvm_stats_desc (16 bytes) + name_size
//	+-------------+    bytes of NUL-padded name)
//	| Stats Data  |  the __u64 values, each descriptor's at its own offset
//	+-------------+
//
// The kernel promises only that the header is at offset 0 and that the
// blocks are 8-byte aligned and do not overlap; their order is whatever the
// offsets say. Header, id and descriptors never change, so they are parsed
// once; the data block is re-read with pread (io.ReaderAt, which *os.File
// implements with pread(2)) whenever a fresh snapshot is wanted. All fields
// are in the host's native byte order.
//
// Typical use, around a guest run:
//
//	f, err := vcpu.StatsFD()
//	...
//	defer f.Close()
//	sr, err := kvm.NewStatsReader(f)
//	before, _ := sr.Read()
//	// ... KVM_RUN the guest ...
//	after, _ := sr.Read()
//	for name, n := range sr.CounterDelta(before, after) {
//		fmt.Println(name, n, kvm.StatMeaning(name))
//	}

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ErrBadStats is wrapped by every error that reports a malformed stats file
// (as opposed to an error from reading it).
var ErrBadStats = errors.New("malformed KVM binary stats")

// Statistic types: bits 0-3 of kvm_stats_desc.flags (KVM_STATS_TYPE_*).
// StatDesc.Type holds the field already shifted down.
const (
	StatTypeCumulative uint32 = 0 // only ever increases: an event counter
	StatTypeInstant    uint32 = 1 // goes up and down: a current amount
	StatTypePeak       uint32 = 2 // only increases: a high-water mark
	StatTypeLinearHist uint32 = 3 // Size buckets, each BucketSize wide
	StatTypeLogHist    uint32 = 4 // Size buckets: [0,1), [1,2), [2,4), ...
)

// Statistic units: bits 4-7 of kvm_stats_desc.flags (KVM_STATS_UNIT_*),
// shifted down, so StatUnitBytes is 1, not the kernel's 0x10.
const (
	StatUnitNone    uint32 = 0 // a plain count of events
	StatUnitBytes   uint32 = 1
	StatUnitSeconds uint32 = 2
	StatUnitCycles  uint32 = 3
	StatUnitBoolean uint32 = 4
)

// Statistic bases: bits 8-11 of kvm_stats_desc.flags (KVM_STATS_BASE_*),
// shifted down. The unit is scaled by Base^Exponent: nanoseconds are
// seconds with base 10 and exponent -9, MiB are bytes with base 2 and
// exponent 20.
const (
	StatBasePow10 uint32 = 0
	StatBasePow2  uint32 = 1
)

// Layout of the stats file (include/uapi/linux/kvm.h).
const (
	statsHeaderSize = 24 // struct kvm_stats_header: six __u32
	statsDescSize   = 16 // struct kvm_stats_desc without its name

	// Defensive limits. The data comes from the kernel (6.1 uses
	// name_size 48, ~50 vCPU descriptors, ~1 KiB of data), but a reader
	// of a binary format should not trust a header to size its
	// allocations.
	maxStatsNameSize = 256
	maxStatsDescs    = 4096
	maxStatsOffset   = 1 << 24 // no block starts beyond 16 MiB
	maxStatsData     = 1 << 20 // the data block is at most 1 MiB
	statsReadChunk   = 64 << 10
)

// StatDesc describes one statistic (struct kvm_stats_desc).
type StatDesc struct {
	// Name is the counter's name, e.g. "exits" or "halt_wait_ns".
	Name string
	// Flags is the raw kvm_stats_desc.flags; Type, Unit and Base are
	// decoded from it.
	Flags uint32
	// Type is one of the StatType constants, Unit one of the StatUnit
	// constants and Base one of the StatBase constants. Values a newer
	// kernel might add are kept as they are.
	Type, Unit, Base uint32
	// Exponent scales the unit: value × Base^Exponent.
	Exponent int16
	// Size is the number of __u64 values: 1 for a scalar, the number of
	// buckets for a histogram.
	Size uint16
	// Offset is the byte offset of the first value in the data block.
	Offset uint32
	// BucketSize is the width of one bucket of a linear histogram.
	BucketSize uint32
}

// IsHistogram reports whether the statistic is a linear or log histogram.
func (d StatDesc) IsHistogram() bool {
	return d.Type == StatTypeLinearHist || d.Type == StatTypeLogHist
}

// TypeString names the statistic's type.
func (d StatDesc) TypeString() string {
	switch d.Type {
	case StatTypeCumulative:
		return "cumulative"
	case StatTypeInstant:
		return "instant"
	case StatTypePeak:
		return "peak"
	case StatTypeLinearHist:
		return "linear-hist"
	case StatTypeLogHist:
		return "log-hist"
	}
	return fmt.Sprintf("type(%d)", d.Type)
}

// UnitString spells the unit with its scale, e.g. "ns", "MiB", "cycles";
// "" for a plain count.
func (d StatDesc) UnitString() string {
	var name string
	switch d.Unit {
	case StatUnitNone:
		if d.Exponent == 0 {
			return ""
		}
	case StatUnitBytes:
		name = "B"
		if d.Base == StatBasePow2 {
			switch d.Exponent {
			case 0:
				return "B"
			case 10:
				return "KiB"
			case 20:
				return "MiB"
			case 30:
				return "GiB"
			}
		}
	case StatUnitSeconds:
		name = "s"
		if d.Base == StatBasePow10 {
			switch d.Exponent {
			case 0:
				return "s"
			case -3:
				return "ms"
			case -6:
				return "us"
			case -9:
				return "ns"
			}
		}
	case StatUnitCycles:
		name = "cycles"
	case StatUnitBoolean:
		name = "bool"
	default:
		name = fmt.Sprintf("unit(%d)", d.Unit)
	}
	if d.Exponent == 0 {
		return name
	}
	base := "10"
	switch d.Base {
	case StatBasePow10:
	case StatBasePow2:
		base = "2"
	default:
		base = fmt.Sprintf("base(%d)", d.Base)
	}
	if name == "" {
		return fmt.Sprintf("×%s^%d", base, d.Exponent)
	}
	return fmt.Sprintf("%s×%s^%d", name, base, d.Exponent)
}

// StatsReader reads a KVM binary stats file. The header, id and descriptors
// are parsed once by NewStatsReader; Read re-reads only the data block. A
// StatsReader is immutable, so it may be used from several goroutines if
// the underlying io.ReaderAt allows that (*os.File does).
type StatsReader struct {
	r          io.ReaderAt
	id         string
	descs      []StatDesc
	dataOffset int64
	dataLen    int // bytes of the data block the descriptors cover
}

// NewStatsReader parses the header and descriptors of a stats file, such as
// the one VCPU.StatsFD returns, and checks that the data block can be read.
// The caller keeps ownership of r (and closes it when done). Structural
// problems are reported as errors wrapping ErrBadStats, errors from r are
// wrapped as they are; nothing in the file
// can make it panic or allocate more than a few MiB.
func NewStatsReader(r io.ReaderAt) (*StatsReader, error) {
	var hb [statsHeaderSize]byte
	if err := readFull(r, hb[:], 0); err != nil {
		return nil, fmt.Errorf("stats header: %w", err)
	}
	ne := binary.NativeEndian
	// hb[0:4] is the header's flags: "not used at the moment", and ignored
	// here so that a future flag does not blind the observatory.
	nameSize := ne.Uint32(hb[4:])
	numDesc := ne.Uint32(hb[8:])
	idOff := ne.Uint32(hb[12:])
	descOff := ne.Uint32(hb[16:])
	dataOff := ne.Uint32(hb[20:])

	if nameSize < 2 || nameSize > maxStatsNameSize {
		return nil, badStats("name_size %d not in [2, %d]", nameSize, maxStatsNameSize)
	}
	if numDesc > maxStatsDescs {
		return nil, badStats("num_desc %d exceeds %d", numDesc, maxStatsDescs)
	}
	for _, o := range []struct {
		name string
		off  uint32
	}{{"id_offset", idOff}, {"desc_offset", descOff}, {"data_offset", dataOff}} {
		switch {
		case o.off < statsHeaderSize:
			return nil, badStats("%s %d overlaps the %d-byte header", o.name, o.off, statsHeaderSize)
		case o.off > maxStatsOffset:
			return nil, badStats("%s %#x beyond %#x", o.name, o.off, maxStatsOffset)
		case o.off%8 != 0:
			return nil, badStats("%s %d not 8-byte aligned", o.name, o.off)
		}
	}
	descLen := uint64(numDesc) * uint64(statsDescSize+nameSize)
	if overlaps(uint64(idOff), uint64(nameSize), uint64(descOff), descLen) {
		return nil, badStats("id block [%d,+%d) overlaps descriptor block [%d,+%d)", idOff, nameSize, descOff, descLen)
	}

	s := &StatsReader{r: r, dataOffset: int64(dataOff)}

	// The id string: which VM or vCPU this file belongs to.
	idBuf := make([]byte, nameSize)
	if err := readFull(r, idBuf, int64(idOff)); err != nil {
		return nil, fmt.Errorf("stats id string: %w", err)
	}
	id, err := cString(idBuf, true)
	if err != nil {
		return nil, badStats("id string: %v", err)
	}
	s.id = id

	// The descriptors, read in chunks so that a lying num_desc costs at
	// most one chunk before the short read is noticed.
	s.descs = make([]StatDesc, 0, min(numDesc, statsReadChunk/(statsDescSize+nameSize)))
	seen := make(map[string]bool)
	one := int(statsDescSize + nameSize)
	perChunk := max(1, statsReadChunk/one)
	buf := make([]byte, min(int(numDesc), perChunk)*one)
	var dataEnd uint64
	for i := 0; i < int(numDesc); {
		n := min(int(numDesc)-i, perChunk)
		chunk := buf[:n*one]
		if err := readFull(r, chunk, int64(descOff)+int64(i)*int64(one)); err != nil {
			return nil, fmt.Errorf("stats descriptor %d: %w", i, err)
		}
		for j := 0; j < n; j, i = j+1, i+1 {
			d, err := parseDesc(chunk[j*one : (j+1)*one])
			if err != nil {
				return nil, badStats("descriptor %d: %v", i, err)
			}
			if seen[d.Name] {
				return nil, badStats("descriptor %d: duplicate name %q", i, d.Name)
			}
			seen[d.Name] = true
			dataEnd = max(dataEnd, uint64(d.Offset)+8*uint64(d.Size))
			s.descs = append(s.descs, d)
		}
	}
	// parseDesc bounds every descriptor's values below maxStatsData.
	s.dataLen = int(dataEnd)
	if overlaps(uint64(dataOff), dataEnd, uint64(idOff), uint64(nameSize)) ||
		overlaps(uint64(dataOff), dataEnd, uint64(descOff), descLen) {
		return nil, badStats("data block [%d,+%d) overlaps the id or descriptor block", dataOff, dataEnd)
	}
	// Prove the data block is there now, rather than on the first Read.
	if _, err := s.readData(); err != nil {
		return nil, err
	}
	return s, nil
}

// parseDesc decodes one struct kvm_stats_desc followed by its name.
func parseDesc(b []byte) (StatDesc, error) {
	ne := binary.NativeEndian
	d := StatDesc{
		Flags:      ne.Uint32(b[0:]),
		Exponent:   int16(ne.Uint16(b[4:])),
		Size:       ne.Uint16(b[6:]),
		Offset:     ne.Uint32(b[8:]),
		BucketSize: ne.Uint32(b[12:]),
	}
	d.Type = d.Flags & 0xF
	d.Unit = (d.Flags >> 4) & 0xF
	d.Base = (d.Flags >> 8) & 0xF
	name, err := cString(b[statsDescSize:], false)
	if err != nil {
		return d, fmt.Errorf("name: %v", err)
	}
	d.Name = name
	switch {
	case d.Size == 0:
		return d, fmt.Errorf("%q has size 0", name)
	case d.Offset%8 != 0:
		return d, fmt.Errorf("%q: offset %d not 8-byte aligned", name, d.Offset)
	case uint64(d.Offset)+8*uint64(d.Size) > maxStatsData:
		return d, fmt.Errorf("%q: values [%d,+%d) beyond the %d-byte data limit", name, d.Offset, 8*uint64(d.Size), maxStatsData)
	}
	return d, nil
}

// cString returns the NUL-terminated string at the start of b. Names are C
// identifiers, and the id is "kvm-PID/vcpu-N", so anything outside
// printable ASCII is rejected rather than printed to a learner's terminal.
func cString(b []byte, allowEmpty bool) (string, error) {
	n := 0
	for n < len(b) && b[n] != 0 {
		c := b[n]
		if c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("byte %#02x at %d is not printable ASCII", c, n)
		}
		n++
	}
	if n == len(b) {
		return "", fmt.Errorf("not NUL-terminated within %d bytes", len(b))
	}
	if n == 0 && !allowEmpty {
		return "", errors.New("empty")
	}
	return string(b[:n]), nil
}

// overlaps reports whether [a, a+alen) and [b, b+blen) intersect.
func overlaps(a, alen, b, blen uint64) bool {
	if alen == 0 || blen == 0 {
		return false
	}
	return a < b+blen && b < a+alen
}

func badStats(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadStats, fmt.Sprintf(format, args...))
}

// readFull reads exactly len(p) bytes at off. io.ReaderAt may return io.EOF
// together with a full buffer; only a short read is an error, and one that
// ended at end of file means the header lied (ErrBadStats).
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	switch {
	case n == len(p):
		return nil
	case err == nil || errors.Is(err, io.EOF):
		// The header pointed past the end of the file.
		return fmt.Errorf("%w: short read, %d of %d bytes at offset %d", ErrBadStats, n, len(p), off)
	}
	return fmt.Errorf("reading %d bytes at offset %d: %w", len(p), off, err)
}

// ID is the id string of the file: "kvm-PID" for a VM, "kvm-PID/vcpu-N"
// for a vCPU.
func (s *StatsReader) ID() string { return s.id }

// Descriptors returns a copy of the descriptors, in file order.
func (s *StatsReader) Descriptors() []StatDesc {
	return append([]StatDesc(nil), s.descs...)
}

// Desc looks up a descriptor by name.
func (s *StatsReader) Desc(name string) (StatDesc, bool) {
	for _, d := range s.descs {
		if d.Name == name {
			return d, true
		}
	}
	return StatDesc{}, false
}

// readData preads the whole data block in one call, so that one snapshot's
// values come from (nearly) the same moment.
func (s *StatsReader) readData() ([]byte, error) {
	buf := make([]byte, s.dataLen)
	if err := readFull(s.r, buf, s.dataOffset); err != nil {
		return nil, fmt.Errorf("stats data: %w", err)
	}
	return buf, nil
}

// Read takes a snapshot: one value per statistic. A scalar (cumulative,
// instant or peak) statistic maps to its value; a histogram maps to the sum
// of its buckets, which is the number of samples it has recorded (use
// ReadValues for the buckets themselves).
func (s *StatsReader) Read() (map[string]uint64, error) {
	data, err := s.readData()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(s.descs))
	for _, d := range s.descs {
		var sum uint64
		for i := range int(d.Size) {
			sum += binary.NativeEndian.Uint64(data[int(d.Offset)+8*i:])
		}
		out[d.Name] = sum
	}
	return out, nil
}

// ReadValues takes a snapshot with every value of every statistic: one
// element for a scalar, one per bucket for a histogram.
func (s *StatsReader) ReadValues() (map[string][]uint64, error) {
	data, err := s.readData()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]uint64, len(s.descs))
	for _, d := range s.descs {
		v := make([]uint64, d.Size)
		for i := range v {
			v[i] = binary.NativeEndian.Uint64(data[int(d.Offset)+8*i:])
		}
		out[d.Name] = v
	}
	return out, nil
}

// Delta returns after-before for every statistic in after (one missing from
// before counts from 0). It is meant for cumulative counters, which only
// grow; a value that went down — an instant statistic, or a counter that
// was reset — is left out rather than wrapped around to a huge number.
// Zero deltas are kept, so a table of them has the same rows every time.
func Delta(before, after map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(after))
	for name, a := range after {
		b := before[name]
		if a >= b {
			out[name] = a - b
		}
	}
	return out
}

// CounterDelta is Delta restricted to the statistics for which a difference
// means "how many times did this happen in between": cumulative counters
// and histograms (whose sums count samples). Instant values and peaks are
// left out.
func (s *StatsReader) CounterDelta(before, after map[string]uint64) map[string]uint64 {
	d := Delta(before, after)
	for _, desc := range s.descs {
		if desc.Type != StatTypeCumulative && !desc.IsHistogram() {
			delete(d, desc.Name)
		}
	}
	return d
}

// statMeanings explains the statistics x86 KVM keeps (arch/x86/kvm/x86.c
// kvm_vcpu_stats_desc and kvm_vm_stats_desc, plus the generic ones from
// include/linux/kvm_host.h). "In the kernel" means KVM handled the event
// and re-entered the guest without KVM_RUN returning to kvmlab.
var statMeanings = map[string]string{
	// Exits: the guest left guest mode.
	"exits":               "every VM exit, however it was handled: the CPU left guest mode (VM-exit on Intel VT-x, #VMEXIT on AMD SVM) and KVM ran; most are handled in the kernel and re-enter the guest without KVM_RUN returning",
	"io_exits":            "IN/OUT (port I/O) instructions that trapped; devices KVM emulates itself (in-kernel PIC, PIT, ioeventfds) are handled in the kernel, the rest reach user space as KVM_EXIT_IO",
	"mmio_exits":          "accesses to guest-physical addresses with no memory slot and no in-kernel device, handed to user space as KVM_EXIT_MMIO",
	"halt_exits":          "HLT instructions (and other halts); with the in-kernel local APIC, as kvmlab uses, KVM puts the vCPU to sleep in the kernel until an interrupt arrives, so user space never sees them",
	"irq_exits":           "exits because a host hardware interrupt (timer tick, NIC, IPI) arrived while the guest ran; the host handles it and KVM re-enters the guest, all in the kernel",
	"signal_exits":        "KVM_RUN gave up because a signal was pending for the vCPU thread; it returns -EINTR (KVM_EXIT_INTR) to user space",
	"irq_window_exits":    "exits KVM asked for to learn when the guest can take an interrupt again (RFLAGS.IF set, no interrupt shadow), so it can inject a pending one; handled in the kernel",
	"nmi_window_exits":    "like irq_window_exits, but for injecting a pending NMI; handled in the kernel",
	"request_irq_exits":   "returns to user space with KVM_EXIT_IRQ_WINDOW_OPEN because user space asked to inject an interrupt (only with a user-space interrupt controller)",
	"notify_window_exits": "Intel notify VM exits: the guest stayed too long in a window where no interrupt could be delivered (a guard against guests hanging the CPU); handled in the kernel",

	// Work KVM does on the guest's behalf.
	"insn_emulation":            "instructions decoded and executed by KVM's x86 instruction emulator, e.g. the one that touched MMIO, string I/O, or real-mode code the CPU cannot run directly",
	"insn_emulation_fail":       "instructions KVM's emulator could not handle; usually fatal to the guest (KVM_EXIT_INTERNAL_ERROR)",
	"hypercalls":                "VMCALL/VMMCALL hypercalls from a paravirtualised guest; the ones KVM knows are handled in the kernel",
	"irq_injections":            "external interrupts KVM injected into the guest (e.g. from the in-kernel PIC, IOAPIC or LAPIC timer)",
	"nmi_injections":            "non-maskable interrupts KVM injected into the guest",
	"req_event":                 "times KVM re-evaluated pending interrupts/events before entering the guest (KVM_REQ_EVENT)",
	"host_state_reload":         "times the host's segment registers and MSRs were restored because the vCPU thread left KVM (returned to user space or was scheduled out)",
	"fpu_reload":                "times the guest's FPU state was swapped back out for the host thread's, once per return from KVM_RUN",
	"l1d_flush":                 "L1 data cache flushes before entering the guest, an L1TF/MDS side-channel mitigation",
	"nested_run":                "VMLAUNCH/VMRESUME/VMRUN executed by the guest itself, i.e. nested virtualisation",
	"guest_mode":                "1 while the vCPU is running a nested (L2) guest, else 0",
	"directed_yield_attempted":  "paravirtual sched-yield hypercalls in which this vCPU tried to give its time to a lock-holding vCPU",
	"directed_yield_successful": "the directed yields that succeeded",
	"preemption_reported":       "times KVM told the guest (via steal time) that this vCPU had been preempted",
	"preemption_other":          "times the vCPU was scheduled out but the preemption was not reported to the guest",

	// Memory: second-level (EPT/NPT) or shadow page faults.
	"pf_taken":             "page faults KVM's MMU took for the guest: with EPT/NPT, guest-physical memory not yet mapped in the second-level page tables, typically the first touch of each page; handled in the kernel",
	"pf_fixed":             "of pf_taken, those fixed by installing a mapping and re-entering the guest",
	"pf_emulate":           "of pf_taken, those whose instruction had to be emulated (MMIO, or a write to a write-protected guest page table)",
	"pf_spurious":          "of pf_taken, those already fixed by the time KVM looked (e.g. by another vCPU)",
	"pf_fast":              "page faults fixed on KVM's lockless fast path (e.g. a write to a page write-protected for dirty logging)",
	"pf_mmio_spte_created": "special \"MMIO\" page-table entries KVM installed for unbacked guest-physical pages, so later accesses are recognised as MMIO at once",
	"pf_guest":             "page faults KVM injected into the guest (the guest's own #PF, seen with shadow paging or during emulation)",
	"tlb_flush":            "guest TLB flushes KVM performed for this vCPU",
	"invlpg":               "INVLPG instructions intercepted (with shadow paging)",

	// Halting and halt polling (generic, all architectures).
	"halt_successful_poll":   "halts where KVM's halt polling saw a wakeup while still spinning, avoiding a sleep",
	"halt_attempted_poll":    "halts where KVM tried halt polling",
	"halt_poll_invalid":      "halt polls abandoned because the vCPU's state became invalid",
	"halt_wakeup":            "times a halted (sleeping) vCPU was woken up",
	"halt_poll_success_ns":   "time spent in halt polls that ended with a wakeup",
	"halt_poll_fail_ns":      "time spent in halt polls that ended without a wakeup",
	"halt_wait_ns":           "time the vCPU spent asleep in the kernel after a halt",
	"halt_poll_success_hist": "log histogram of successful halt poll durations",
	"halt_poll_fail_hist":    "log histogram of failed halt poll durations",
	"halt_wait_hist":         "log histogram of halt sleep durations",
	"blocking":               "1 while the vCPU is blocked (asleep) in the kernel, else 0",

	// VM-wide statistics (the VM's stats fd).
	"remote_tlb_flush":             "TLB flushes KVM performed on all vCPUs of the VM",
	"remote_tlb_flush_requests":    "requests for VM-wide TLB flushes",
	"mmu_shadow_zapped":            "shadow page-table pages KVM discarded",
	"mmu_pte_write":                "guest writes to page tables KVM shadows",
	"mmu_pde_zapped":               "shadow page-directory entries discarded because of guest writes",
	"mmu_flooded":                  "shadow pages unshadowed because the guest wrote to them too often",
	"mmu_recycled":                 "shadow pages reclaimed because the MMU page cache was full",
	"mmu_cache_miss":               "shadow page lookups that had to allocate a new page",
	"mmu_unsync":                   "shadow pages currently allowed to be out of sync with the guest's page tables",
	"pages_4k":                     "guest memory currently mapped with 4 KiB pages in the second-level page tables",
	"pages_2m":                     "guest memory currently mapped with 2 MiB pages",
	"pages_1g":                     "guest memory currently mapped with 1 GiB pages",
	"nx_lpage_splits":              "huge pages currently split because of the iTLB-multihit (NX huge page) mitigation",
	"max_mmu_rmap_size":            "largest reverse-map chain seen (peak)",
	"max_mmu_page_hash_collisions": "longest shadow-page hash chain seen (peak)",
}

// StatMeaning explains a statistic to a learner: what it counts and, for
// exits, whether KVM handles them in the kernel or returns to user space.
// It returns "" for a name it does not know (newer kernels add counters).
func StatMeaning(name string) string {
	return statMeanings[name]
}

// KnownStats lists the names StatMeaning explains, sorted.
func KnownStats() []string {
	names := make([]string, 0, len(statMeanings))
	for n := range statMeanings {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// FormatDelta renders a delta as "name value" lines, largest first, with
// the meaning of each non-zero counter: a quick report for a learner.
func FormatDelta(d map[string]uint64) string {
	names := make([]string, 0, len(d))
	for n, v := range d {
		if v != 0 {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if d[names[i]] != d[names[j]] {
			return d[names[i]] > d[names[j]]
		}
		return names[i] < names[j]
	})
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%-26s %12d", n, d[n])
		if m := StatMeaning(n); m != "" {
			fmt.Fprintf(&b, "  %s", m)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
