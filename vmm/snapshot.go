package vmm

import (
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/vmm/kvm"
)

// Snapshots: what is the guest doing right now?
//
// A vCPU spends its life inside the KVM_RUN system call, and while it is
// there its registers belong to the kernel: KVM_GET_REGS from another
// thread waits for the vCPU's mutex, which KVM_RUN holds until the next
// exit to user space. A guest that spins on something the kernel handles
// without us (a timer interrupt, a nested page fault, the in-kernel PIT)
// may never exit to user space at all, and then nothing in the VMM moves:
// the console goes silent and the exit counters stand still. To look
// inside, the VMM has to bring the vCPU out: a signal delivered to its
// thread makes KVM_RUN return EINTR (api.rst, KVM_RUN: "the ioctl returns
// -EINTR if a signal is pending"), the vCPU reads its own registers and
// goes straight back in. Nothing about the guest changes; the guest cannot
// tell, beyond the time lost.
//
// KVM's binary statistics (KVM_GET_STATS_FD) are read without stopping
// anything and say what the kernel handled meanwhile: an "exits" counter
// that climbs while kvmlab saw no exit means a guest looping on exits the
// kernel handles, and one that stands still means a guest running without
// exiting at all (or a vCPU halted).
//
// Snapshot returns what it saw as data (a Snapshot with one VCPUSnapshot per
// vCPU); the caller decides how to show it (kvmlab run prints it on stderr,
// formatted by package observatory, vmm/observatory/snapshot.go).

// snapRequest is one vCPU's part of a snapshot: the vCPU answers on reply.
type snapRequest struct {
	reply chan snapAnswer
}

type snapAnswer struct {
	state       VCPUState
	exits       uint64 // user-space exits of this vCPU so far
	interrupted bool   // the request brought the vCPU out of KVM_RUN
}

// snapState is what the previous snapshot saw, for the differences.
type snapState struct {
	n      int
	at     time.Time
	exits  []uint64
	kernel []map[string]uint64
}

// SnapshotWait is how long Snapshot waits for a vCPU to answer. A vCPU
// answers within one exit; one that does not is stuck outside KVM_RUN,
// which is itself worth reporting.
const SnapshotWait = 2 * time.Second

// Snapshot is one look inside a running machine.
type Snapshot struct {
	N  int       // 1 for the machine's first snapshot
	At time.Time // when it was taken
	// Started says whether Run had started the vCPUs; SinceStart is how
	// long before At it did.
	Started    bool
	SinceStart time.Duration
	// Prev is the number of the previous snapshot (0: this is the
	// first), SincePrev how long before At it was taken. The
	// differences below are since that one, or since the start.
	Prev      int
	SincePrev time.Duration
	VCPUs     []VCPUSnapshot
	// KernelErr is why KVM's own counters could not be read (nil when
	// they were).
	KernelErr error
}

// VCPUSnapshot is what one vCPU said.
type VCPUSnapshot struct {
	ID int
	// Answered is false when the vCPU did not answer within
	// SnapshotWait: its thread is neither in KVM_RUN nor in the loop.
	// Nothing below is set then.
	Answered bool
	// Interrupted: the request brought the vCPU out of KVM_RUN (it was
	// inside); otherwise it was between exits.
	Interrupted bool
	// Exits is how many exits of this vCPU reached kvmlab so far, and
	// ExitsSincePrev how many since snapshot Prev (HasPrevExits false
	// when there is no previous count to subtract).
	Exits          uint64
	ExitsSincePrev uint64
	HasPrevExits   bool
	State          VCPUState
	// Kernel lists KVM's counters for this vCPU that moved since the
	// previous snapshot (or since the start), exit counters first, then
	// largest first. HasKernel is false when KVM has no counters for it.
	Kernel    []CounterDelta
	HasKernel bool
}

// VCPUState is where a vCPU was: its registers and the code at RIP.
type VCPUState struct {
	// Err is why the registers could not be read; nothing else is set.
	Err   error
	Regs  kvm.Regs
	Sregs kvm.Sregs
	// PC is RIP as a linear address (CS's base added: non-zero only in
	// real mode and some 32-bit guests), and Code up to 32 bytes read
	// there through the guest's page tables. CodeErr is why fewer (or
	// none) could be read.
	PC      uint64
	Code    []byte
	CodeErr error
}

// CounterDelta is how far one of KVM's counters moved.
type CounterDelta struct {
	Name  string
	Delta uint64
}

// Snapshot brings every vCPU out of KVM_RUN once and returns where the
// guest is (registers and the code at RIP), how many exits reached kvmlab,
// and what KVM handled in the kernel, both as the difference from the
// previous snapshot. It is safe to call from any goroutine while the
// machine runs (kvmlab run calls it on SIGUSR1); the guest only loses the
// time of one extra exit per vCPU.
func (m *Machine) Snapshot() Snapshot {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	now := time.Now()
	prev := m.snapPrev
	cur := snapState{n: prev.n + 1, at: now, exits: make([]uint64, len(m.vcpus))}
	started := m.started.Load()
	out := Snapshot{N: cur.n, At: now, Started: started != nil, VCPUs: make([]VCPUSnapshot, 0, len(m.vcpus))}
	if out.Started {
		out.SinceStart = now.Sub(*started)
	}
	if prev.n > 0 {
		out.Prev, out.SincePrev = prev.n, now.Sub(prev.at)
	}

	reqs := make([]*snapRequest, len(m.vcpus))
	pid := unix.Getpid()
	for i, v := range m.vcpus {
		reqs[i] = &snapRequest{reply: make(chan snapAnswer, 1)}
		v.snap.Store(reqs[i])
		// The same kick as kickAll, without immediate_exit: the vCPU
		// comes out once, answers at the top of its loop, and goes on.
		if tid := v.tid.Load(); tid > 0 {
			_ = unix.Tgkill(pid, int(tid), unix.SIGURG)
		}
	}
	kernel, kerr := m.KernelStats()
	cur.kernel = kernel
	out.KernelErr = kerr
	deadline := time.After(SnapshotWait)
	for i, v := range m.vcpus {
		vs := VCPUSnapshot{ID: v.ID}
		var a snapAnswer
		select {
		case a = <-reqs[i].reply:
		case <-deadline:
			// Withdraw the request, unless the vCPU took it just now.
			if v.snap.CompareAndSwap(reqs[i], nil) {
				out.VCPUs = append(out.VCPUs, vs)
				continue
			}
			a = <-reqs[i].reply
		}
		cur.exits[i] = a.exits
		vs.Answered, vs.Interrupted, vs.Exits, vs.State = true, a.interrupted, a.exits, a.state
		if prev.n > 0 && i < len(prev.exits) {
			vs.ExitsSincePrev, vs.HasPrevExits = a.exits-prev.exits[i], true
		}
		if kerr == nil && i < len(kernel) {
			var before map[string]uint64
			if i < len(prev.kernel) {
				before = prev.kernel[i]
			}
			vs.Kernel, vs.HasKernel = KernelCounterDeltas(kernel[i], before), true
		}
		out.VCPUs = append(out.VCPUs, vs)
	}
	m.snapPrev = cur
	return out
}

// KernelCounterDeltas lists the counters in now that moved since before
// (everything non-zero when before is nil), exit counters first because
// they say the most about a silent guest, then largest first. A counter
// that went down is a gauge, not a count, and is left out.
func KernelCounterDeltas(now, before map[string]uint64) []CounterDelta {
	var moved []CounterDelta
	for k, v := range now {
		d := v - before[k]
		if before != nil && v < before[k] {
			d = 0 // a gauge that went down
		}
		if d > 0 {
			moved = append(moved, CounterDelta{k, d})
		}
	}
	sort.Slice(moved, func(i, j int) bool {
		ei, ej := strings.HasSuffix(moved[i].Name, "exits"), strings.HasSuffix(moved[j].Name, "exits")
		if ei != ej {
			return ei
		}
		if moved[i].Delta != moved[j].Delta {
			return moved[i].Delta > moved[j].Delta
		}
		return moved[i].Name < moved[j].Name
	})
	return moved
}

// answerSnapshot runs on the vCPU's own goroutine, outside KVM_RUN, when a
// snapshot was requested: it reads the registers and the code at RIP.
func (m *Machine) answerSnapshot(v *vcpu, r *snapRequest, interrupted bool) {
	r.reply <- snapAnswer{state: m.vcpuState(v), exits: v.exits, interrupted: interrupted}
}

// vcpuState reads a vCPU's registers and the instructions at RIP; it must
// run on the vCPU's goroutine.
func (m *Machine) vcpuState(v *vcpu) VCPUState {
	var st VCPUState
	var err error
	if st.Regs, err = v.GetRegs(); err != nil {
		return VCPUState{Err: err}
	}
	if st.Sregs, err = v.GetSregs(); err != nil {
		return VCPUState{Err: err}
	}
	c := &Control{m: m, v: v}
	// RIP is a linear address once CS's base is added (non-zero only in
	// real mode and some 32-bit guests).
	st.PC = st.Regs.RIP + st.Sregs.CS.Base
	st.Code, st.CodeErr = c.ReadVirt(st.PC, 32)
	return st
}

// snapPending returns the snapshot request waiting for this vCPU, if any.
// The vCPU loop calls it once per exit, so the common case is one atomic
// load and no write.
func (v *vcpu) snapPending() *snapRequest {
	if v.snap.Load() == nil {
		return nil
	}
	return v.snap.Swap(nil)
}
