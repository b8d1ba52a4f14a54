package observatory

// Snapshots of a running machine: `kill -USR1` on kvmlab run asks where
// each vCPU is now. vmm.Machine.Snapshot gathers the data (registers, the
// code at RIP, exits and KVM's counters since the last one); this file
// writes it for people, with the kernel's symbol names when they can be
// found.

import (
	"fmt"
	"io"
	"os"
	"strings"

	"kvmlab/vmm"
	"kvmlab/vmm/inspect"
)

// Snapshots writes a snapshot of m (FormatSnapshot) to w for each request
// (kill -USR1 on kvmlab run) until requests is closed. The files the
// guest kernel's symbols can come from (next to kernel, the path it was
// loaded from) are opened now, before the seccomp filter, which allows no
// open; they are read at the first snapshot, not before: a kernel's
// System.map is about 2.5 MiB of live heap (and the Go runtime's metadata
// for it), which would more than double the VMM's own memory for a feature
// most runs never use.
func Snapshots(requests <-chan os.Signal, m *vmm.Machine, kernel string, w io.Writer) {
	sources := inspect.SymbolSources(kernel)
	go func() {
		var sym *inspect.Symbols
		loaded := false
		for range requests {
			if !loaded {
				sym, loaded = inspect.FirstSymbols(sources), true
			}
			_, _ = io.WriteString(w, FormatSnapshot(m.Snapshot(), sym))
		}
	}()
}

// FormatSnapshot renders what vmm.Machine.Snapshot saw (kill -USR1 on a
// running kvmlab; vmm returns the data, this formats it): a heading with the snapshot's number and age, then for
// every vCPU where it was, its exits to kvmlab, the code at RIP
// disassembled (named with sym when not nil), the registers, and KVM's
// own counters that moved. tests/snapshot_test.go and tests/stall_test.go
// read this text.
func FormatSnapshot(s vmm.Snapshot, sym *inspect.Symbols) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kvmlab: snapshot %d", s.N)
	if s.Started {
		fmt.Fprintf(&b, ", %.2f s after the vCPUs started", s.SinceStart.Seconds())
	}
	if s.Prev > 0 {
		fmt.Fprintf(&b, ", %.2f s after snapshot %d", s.SincePrev.Seconds(), s.Prev)
	}
	b.WriteString("\n")
	for _, v := range s.VCPUs {
		if !v.Answered {
			fmt.Fprintf(&b, "  vCPU %d: no answer within %v: its thread is not in KVM_RUN or the loop (stopped, or blocked in a device)\n", v.ID, vmm.SnapshotWait)
			continue
		}
		where := "between exits"
		if v.Interrupted {
			where = "inside KVM_RUN (the request interrupted it)"
		}
		fmt.Fprintf(&b, "  vCPU %d: was %s; exits to kvmlab: %d", v.ID, where, v.Exits)
		if v.HasPrevExits {
			fmt.Fprintf(&b, ", +%d since snapshot %d", v.ExitsSincePrev, s.Prev)
		}
		b.WriteString("\n")
		b.WriteString(indent(formatVCPUState(v.State, sym), "    "))
		switch {
		case s.KernelErr != nil:
			fmt.Fprintf(&b, "    KVM's own counters: %v\n", s.KernelErr)
		case v.HasKernel:
			fmt.Fprintf(&b, "    KVM's own counters%s: %s\n", sinceWhat(s.Prev), formatCounterDeltas(v.Kernel))
		}
	}
	return b.String()
}

// formatVCPUState renders a vCPU's mode, the instructions at RIP and its
// registers.
func formatVCPUState(st vmm.VCPUState, sym *inspect.Symbols) string {
	if st.Err != nil {
		return "registers unavailable: " + st.Err.Error()
	}
	var b strings.Builder
	mode := inspect.CPUMode(st.Sregs)
	fmt.Fprintf(&b, "%s, CPL %d\n", mode.Name, mode.CPL)
	if len(st.Code) > 0 {
		b.WriteString(inspect.FormatLines(inspect.Disassemble(st.Code, st.PC, mode.Bits, 3), st.PC, sym))
		b.WriteString("\n")
	} else if st.CodeErr != nil {
		fmt.Fprintf(&b, "code at %#x unreadable: %v\n", st.PC, st.CodeErr)
	}
	b.WriteString(vmm.FormatRegs(st.Regs, st.Sregs))
	return b.String()
}

func sinceWhat(n int) string {
	if n == 0 {
		return " so far"
	}
	return fmt.Sprintf(" since snapshot %d", n)
}

// formatCounterDeltas lists the counters that moved, in the order given,
// at most ten of them.
func formatCounterDeltas(moved []vmm.CounterDelta) string {
	if len(moved) == 0 {
		return "none moved (the vCPU neither exited nor was interrupted: halted, or not run)"
	}
	const most = 10
	var parts []string
	for i, c := range moved {
		if i == most {
			parts = append(parts, fmt.Sprintf("(%d more)", len(moved)-most))
			break
		}
		parts = append(parts, fmt.Sprintf("%s +%d", c.Name, c.Delta))
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
