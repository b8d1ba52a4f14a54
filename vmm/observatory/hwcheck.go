package observatory

// The hardware layer, checked against the hardware.
//
// For an ordinary exit KVM does not tell user space which VT-x exit reason
// or SVM exit code made the CPU leave the guest, so kvmlab derives it from
// the KVM_EXIT_* reason and the vendor (package hwexit): a KVM_EXIT_IO is
// IO_INSTRUCTION (30) on Intel, VMEXIT_IOIO (0x7b) on AMD. The kernel does
// know, and says so in the kvm:kvm_exit tracepoint, which fires on every VM
// exit with the real reason. A second tracepoint, kvm:kvm_userspace_exit,
// fires each time KVM_RUN returns to the VMM. On one vCPU thread the last
// kvm_exit before a kvm_userspace_exit is the VM exit that led to that
// return, so each exit kvmlab handled can be paired with the one the
// hardware reported: the n-th exit kvmlab recorded on vCPU k with the n-th
// return KVM_RUN made on vCPU k's thread (KVM_RUN returns that failed, with
// EINTR for a signal, are neither kvmlab exits nor counted here). The KVM
// reasons of the two must then be the same, which shows the pairing holds;
// the hardware reasons are what is checked.
//
// An exit agrees when the tracepoint saw the hardware exit kvmlab named, or
// another one kvmlab's table lists for that KVM reason (hwexit.Beneath: a
// KVM_EXIT_MMIO on VT-x is an EPT_MISCONFIG, but an EPT_VIOLATION the first
// time the guest touches the page). Anything else is a disagreement, and a
// wrong table is what it would show.

import (
	"fmt"
	"io"
	"sort"
	"sync"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/hwexit"
	"kvmlab/vmm/trace"
	"kvmlab/vmm/tracepoint"
)

// maxRecorded bounds the exits kept for the check, as the collector bounds
// the returns it keeps.
const maxRecorded = tracepoint.MaxUserExits

// maxExamples is how many disagreements are listed one by one.
const maxExamples = 10

// derivedExit is what kvmlab said about one exit.
type derivedExit struct {
	seq   uint64
	code  uint32 // KVM_EXIT_*
	hw    trace.HW
	hasHW bool
	rip   uint64
}

// hwRecorder is a trace.Sink keeping each vCPU's exits in order.
type hwRecorder struct {
	mu      sync.Mutex
	byVCPU  map[int][]derivedExit
	n       int
	dropped uint64
}

func newHWRecorder() *hwRecorder { return &hwRecorder{byVCPU: map[int][]derivedExit{}} }

// Record keeps one exit (the Sink contract: copy what is kept).
func (r *hwRecorder) Record(ev *trace.Event) {
	d := derivedExit{seq: ev.Seq, code: ev.Code, rip: ev.RIP}
	if ev.HW != nil {
		d.hw, d.hasHW = *ev.HW, true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n >= maxRecorded {
		r.dropped++
		return
	}
	r.n++
	r.byVCPU[ev.VCPU] = append(r.byVCPU[ev.VCPU], d)
}

// hwPair is one row of the check's table: the KVM reason, what kvmlab
// derived, what the tracepoint saw.
type hwPair struct {
	kvm, derived, seen string
	verdict            string // "agree", "agree, listed", "DISAGREE"
}

// hwCheck is the result of pairing kvmlab's exits with the tracepoint's.
type hwCheck struct {
	vendor      hwexit.Vendor
	total       uint64 // exits that reached kvmlab
	agree       uint64 // the tracepoint saw a reason kvmlab derived
	listed      uint64 // of agree: not the one named, another listed
	disagree    uint64 // a different reason, or the pairing broke
	notChecked  uint64 // no return seen for it, or no reason derived
	extraTP     uint64 // returns the tracepoint saw that kvmlab did not record
	reused      uint64 // no new VM exit since the previous return
	ripNear     uint64 // the tracepoint's RIP is at, or up to 15 bytes before, kvmlab's
	ripFar      uint64
	pairs       map[hwPair]uint64
	examples    []string
	lost        uint64
	malformed   uint64
	unavailable string // why no check was possible
}

// checkHardware pairs rec's exits with the returns tp saw, vCPU by vCPU.
func checkHardware(rec *hwRecorder, tp tracepoint.Check) *hwCheck {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	c := &hwCheck{pairs: map[hwPair]uint64{}, lost: tp.Lost, malformed: tp.Malformed}
	c.total = uint64(rec.n) + rec.dropped
	c.notChecked = rec.dropped
	if !tp.Available {
		c.unavailable = tp.Why
		c.notChecked = c.total
		return c
	}
	seen := map[int][]tracepoint.UserExit{}
	for _, u := range tp.Exits {
		if u.VCPU < 0 {
			// A return with no VM exit ever before it on its thread:
			// nothing to pair it by.
			c.extraTP++
			continue
		}
		seen[u.VCPU] = append(seen[u.VCPU], u)
	}
	vcpus := make([]int, 0, len(rec.byVCPU))
	for id := range rec.byVCPU {
		vcpus = append(vcpus, id)
	}
	sort.Ints(vcpus)
	for _, id := range vcpus {
		mine, theirs := rec.byVCPU[id], seen[id]
		n := min(len(mine), len(theirs))
		for i := 0; i < n; i++ {
			c.one(id, mine[i], theirs[i])
		}
		if len(mine) > n {
			// Lost or dropped by the tracepoint: nothing to compare.
			c.notChecked += uint64(len(mine) - n)
		}
		if len(theirs) > n && tp.Dropped == 0 {
			c.extraTP += uint64(len(theirs) - n)
		}
		delete(seen, id)
	}
	for _, rest := range seen {
		c.extraTP += uint64(len(rest))
	}
	if tp.Dropped > 0 {
		c.extraTP = 0 // kvmlab's exits past the collector's bound were counted above
	}
	// A return kvmlab never recorded means the two lists do not match:
	// it counts against the check.
	c.disagree += c.extraTP
	return c
}

// one compares one exit kvmlab handled with the return the tracepoint saw.
func (c *hwCheck) one(vcpu int, d derivedExit, u tracepoint.UserExit) {
	kvmName := exits.Reason(d.code).String()
	if !d.hasHW || d.hw.Vendor == "" {
		// kvmlab names no hardware exit for this KVM reason (e.g. a
		// KVM_EXIT_SYSTEM_EVENT of its own making): nothing to check.
		c.notChecked++
		return
	}
	v := hwexit.Vendor(d.hw.Vendor)
	if c.vendor == "" {
		c.vendor = v
	}
	if !u.Fresh {
		c.reused++
	}
	if r := d.rip - u.RIP; r <= 15 {
		c.ripNear++
	} else {
		c.ripFar++
	}
	derived := trace.HWName(&d.hw)
	if d.hw.Derived {
		derived += " *"
	}
	p := hwPair{kvm: kvmName, derived: derived}
	bad := func(seen, why string) {
		p.seen, p.verdict = seen, "DISAGREE"
		c.pairs[p]++
		c.disagree++
		if len(c.examples) < maxExamples {
			c.examples = append(c.examples, fmt.Sprintf("#%d vCPU%d %s at rip %#x: kvmlab derived %s, %s",
				d.seq, vcpu, kvmName, d.rip, trace.HWName(&d.hw), why))
		}
	}
	if u.KVMReason != d.code {
		// The pairing itself broke: a return kvmlab did not see, or
		// the other way round.
		bad("(out of step)", fmt.Sprintf("but the tracepoint's return at this place was %s: the two lists are out of step",
			exits.Reason(u.KVMReason)))
		return
	}
	if u.HW == "" {
		bad("(no VM exit)", "but the tracepoint saw no VM exit on this vCPU before it")
		return
	}
	hw, ok := hwexit.FromTracepoint(v, u.HW)
	if !ok {
		bad(fmt.Sprintf("%q", u.HW), fmt.Sprintf("the tracepoint says %q, which kvmlab's %s table does not name", u.HW, v.Technology()))
		return
	}
	p.seen = trace.HWName(&hw)
	if hw.Code == d.hw.Code {
		p.verdict = "agree"
		c.pairs[p]++
		c.agree++
		return
	}
	for _, alt := range hwexit.Beneath(exits.Reason(d.code), v, nil) {
		if alt.Code == hw.Code {
			p.verdict = "agree, listed"
			c.pairs[p]++
			c.agree++
			c.listed++
			return
		}
	}
	bad(p.seen, "the tracepoint saw "+p.seen)
}

// write prints the check for a learner: the pairs, the disagreements one by
// one (the first few), and one line with the verdict.
func (c *hwCheck) write(w io.Writer) {
	if c.unavailable != "" {
		fmt.Fprintf(w, "\nhardware layer check: not done: %s\n", c.unavailable)
		return
	}
	fmt.Fprintln(w, "\n=== The hardware layer checked against the hardware: kvmlab's derived reason and the kvm:kvm_exit tracepoint ===")
	rows := make([]hwPair, 0, len(c.pairs))
	for p := range c.pairs {
		rows = append(rows, p)
	}
	sort.Slice(rows, func(i, j int) bool {
		if a, b := c.pairs[rows[i]], c.pairs[rows[j]]; a != b {
			return a > b
		}
		a, b := rows[i], rows[j]
		return a.kvm+a.derived+a.seen < b.kvm+b.derived+b.seen
	})
	if len(rows) > 0 {
		fmt.Fprintf(w, "  %-22s %-30s %-30s %8s\n", "KVM exit", "kvmlab derived", "the tracepoint saw", "exits")
	}
	for i, p := range rows {
		if i == 40 {
			fmt.Fprintf(w, "  ... and %d more rows\n", len(rows)-i)
			break
		}
		fmt.Fprintf(w, "  %-22s %-30s %-30s %8d  %s\n", p.kvm, p.derived, p.seen, c.pairs[p], p.verdict)
	}
	if c.listed > 0 {
		fmt.Fprintf(w, "  (%d agree with another hardware exit kvmlab's table lists for the KVM reason, not the one it names first:\n"+
			"   on VT-x a KVM_EXIT_MMIO is an EPT_VIOLATION the first time the guest touches the page, EPT_MISCONFIG after)\n", c.listed)
	}
	if c.reused > 0 {
		fmt.Fprintf(w, "  %d returned with no new VM exit since the previous return: KVM went on with the same instruction\n"+
			"  after kvmlab answered (the next element of a string I/O instruction, REP INS/OUTS)\n", c.reused)
	}
	if checked := c.ripNear + c.ripFar; checked > 0 {
		fmt.Fprintf(w, "  the guest RIP kvm_exit recorded is kvmlab's RIP, or the instruction just before it, for %d of %d\n", c.ripNear, checked)
	}
	if c.lost > 0 {
		fmt.Fprintf(w, "  the kernel's ring buffer dropped %d events: after a loss the pairing may be out of step\n", c.lost)
	}
	if c.malformed > 0 {
		fmt.Fprintf(w, "  %d lines of the trace could not be read\n", c.malformed)
	}
	if c.extraTP > 0 {
		fmt.Fprintf(w, "  DISAGREE the tracepoint saw %d returns of KVM_RUN that kvmlab did not record\n", c.extraTP)
	}
	for _, e := range c.examples {
		fmt.Fprintf(w, "  DISAGREE %s\n", e)
	}
	if c.disagree > uint64(len(c.examples)) && len(c.examples) > 0 {
		fmt.Fprintf(w, "  (the first %d disagreements are listed; the table counts them all)\n", len(c.examples))
	}
	fmt.Fprintf(w, "hardware layer check: %d of %d exits to kvmlab: the derived %s reason matches the kvm_exit tracepoint (%d disagree, %d not checked)\n",
		c.agree, c.total, c.vendor.Technology(), c.disagree, c.notChecked)
}
