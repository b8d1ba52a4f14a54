package vmm

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kvmlab/vmm/inspect"
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

// snapRequest is one vCPU's part of a snapshot: the vCPU answers on reply.
type snapRequest struct {
	sym   *inspect.Symbols
	reply chan snapAnswer
}

type snapAnswer struct {
	text        string
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

// snapshotWait is how long Snapshot waits for a vCPU to answer. A vCPU
// answers within one exit; one that does not is stuck outside KVM_RUN,
// which is itself worth reporting.
const snapshotWait = 2 * time.Second

// Snapshot writes, for every vCPU, where the guest is (mode, RIP with its
// symbol and the instructions there, the registers), how many exits
// reached kvmlab, and what KVM handled in the kernel, both as the
// difference from the previous snapshot. It is safe to call from any
// goroutine while the machine runs (kvmlab run calls it on SIGUSR1); the
// guest only loses the time of one extra exit per vCPU. sym, if not nil,
// names guest kernel addresses.
func (m *Machine) Snapshot(w io.Writer, sym *inspect.Symbols) {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	now := time.Now()
	prev := m.snapPrev
	cur := snapState{n: prev.n + 1, at: now, exits: make([]uint64, len(m.vcpus))}
	var b strings.Builder
	fmt.Fprintf(&b, "kvmlab: snapshot %d", cur.n)
	if !m.started.IsZero() {
		fmt.Fprintf(&b, ", %.2f s after the vCPUs started", now.Sub(m.started).Seconds())
	}
	if prev.n > 0 {
		fmt.Fprintf(&b, ", %.2f s after snapshot %d", now.Sub(prev.at).Seconds(), prev.n)
	}
	b.WriteString("\n")

	reqs := make([]*snapRequest, len(m.vcpus))
	pid := unix.Getpid()
	for i, v := range m.vcpus {
		reqs[i] = &snapRequest{sym: sym, reply: make(chan snapAnswer, 1)}
		v.snap.Store(reqs[i])
		// The same kick as kickAll, without immediate_exit: the vCPU
		// comes out once, answers at the top of its loop, and goes on.
		if tid := v.tid.Load(); tid > 0 {
			_ = unix.Tgkill(pid, int(tid), unix.SIGURG)
		}
	}
	kernel, kerr := m.KernelStats()
	cur.kernel = kernel
	deadline := time.After(snapshotWait)
	for i, v := range m.vcpus {
		var a snapAnswer
		select {
		case a = <-reqs[i].reply:
		case <-deadline:
			// Withdraw the request, unless the vCPU took it just now.
			if v.snap.CompareAndSwap(reqs[i], nil) {
				fmt.Fprintf(&b, "  vCPU %d: no answer within %v: its thread is not in KVM_RUN or the loop (stopped, or blocked in a device)\n", v.ID, snapshotWait)
				continue
			}
			a = <-reqs[i].reply
		}
		cur.exits[i] = a.exits
		where := "between exits"
		if a.interrupted {
			where = "inside KVM_RUN (the request interrupted it)"
		}
		fmt.Fprintf(&b, "  vCPU %d: was %s; exits to kvmlab: %d", v.ID, where, a.exits)
		if prev.n > 0 && i < len(prev.exits) {
			fmt.Fprintf(&b, ", +%d since snapshot %d", a.exits-prev.exits[i], prev.n)
		}
		b.WriteString("\n")
		b.WriteString(indent(a.text, "    "))
		switch {
		case kerr != nil:
			fmt.Fprintf(&b, "    KVM's own counters: %v\n", kerr)
		case i < len(kernel):
			var before map[string]uint64
			if i < len(prev.kernel) {
				before = prev.kernel[i]
			}
			fmt.Fprintf(&b, "    KVM's own counters%s: %s\n", sinceWhat(prev.n), kernelCounterDelta(kernel[i], before))
		}
	}
	m.snapPrev = cur
	_, _ = io.WriteString(w, b.String())
}

func sinceWhat(n int) string {
	if n == 0 {
		return " so far"
	}
	return fmt.Sprintf(" since snapshot %d", n)
}

// kernelCounterDelta lists the counters that moved, largest first; the
// exit counters lead because they say the most about a silent guest.
func kernelCounterDelta(now, before map[string]uint64) string {
	type kv struct {
		name string
		d    uint64
	}
	var moved []kv
	for k, v := range now {
		d := v - before[k]
		if before != nil && v < before[k] {
			d = 0 // a gauge that went down
		}
		if d > 0 {
			moved = append(moved, kv{k, d})
		}
	}
	if len(moved) == 0 {
		return "none moved (the vCPU neither exited nor was interrupted: halted, or not run)"
	}
	sort.Slice(moved, func(i, j int) bool {
		ei, ej := strings.HasSuffix(moved[i].name, "exits"), strings.HasSuffix(moved[j].name, "exits")
		if ei != ej {
			return ei
		}
		if moved[i].d != moved[j].d {
			return moved[i].d > moved[j].d
		}
		return moved[i].name < moved[j].name
	})
	const most = 10
	var parts []string
	for i, c := range moved {
		if i == most {
			parts = append(parts, fmt.Sprintf("(%d more)", len(moved)-most))
			break
		}
		parts = append(parts, fmt.Sprintf("%s +%d", c.name, c.d))
	}
	return strings.Join(parts, ", ")
}

func indent(s, pre string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return pre + strings.Join(lines, "\n"+pre) + "\n"
}

// answerSnapshot runs on the vCPU's own goroutine, outside KVM_RUN, when a
// snapshot was requested: it reads the registers and the code at RIP.
func (m *Machine) answerSnapshot(v *vcpu, r *snapRequest, interrupted bool) {
	r.reply <- snapAnswer{text: m.describeVCPU(v, r.sym), exits: v.exits, interrupted: interrupted}
}

// describeVCPU renders a vCPU's mode, the instructions at RIP and its
// registers; it must run on the vCPU's goroutine.
func (m *Machine) describeVCPU(v *vcpu, sym *inspect.Symbols) string {
	regs, err := v.GetRegs()
	if err != nil {
		return "registers unavailable: " + err.Error()
	}
	sregs, err := v.GetSregs()
	if err != nil {
		return "registers unavailable: " + err.Error()
	}
	var b strings.Builder
	mode := inspect.CPUMode(sregs)
	fmt.Fprintf(&b, "%s, CPL %d\n", mode.Name, mode.CPL)
	c := &Control{m: m, v: v}
	// RIP is a linear address once CS's base is added (non-zero only in
	// real mode and some 32-bit guests).
	pc := regs.RIP + sregs.CS.Base
	if code, err := c.ReadVirt(pc, 32); len(code) > 0 {
		b.WriteString(inspect.FormatLines(inspect.Disassemble(code, pc, mode.Bits, 3), pc, sym))
		b.WriteString("\n")
	} else if err != nil {
		fmt.Fprintf(&b, "code at %#x unreadable: %v\n", pc, err)
	}
	b.WriteString(FormatRegs(regs, sregs))
	return b.String()
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
