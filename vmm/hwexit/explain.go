package hwexit

// Plain-words explanations of exits, for the exit observatory: why the CPU
// left the guest, which VT-x or SVM exit that was, what KVM did with it, and
// what kvmlab's device made of it. And the other half of the story: the many
// exits KVM handles itself, which kvmlab never sees.

import (
	"encoding/hex"
	"fmt"
	"strings"

	"kvmlab/vmm/exits"
	"kvmlab/vmm/trace"
)

// Explain writes a short paragraph (3-6 sentences) about one traced exit for
// a learner. v is the host's vendor. The hardware exit is ev.HW when the
// event records one (and then its vendor wins over v, since it is what the
// machine actually ran on), else the one Beneath derives for v; with no
// vendor known at all, both vendors' exits are named.
func Explain(ev *trace.Event, v Vendor) string {
	if ev == nil {
		return ""
	}
	if ev.HW != nil && (ev.HW.Vendor == string(VMX) || ev.HW.Vendor == string(SVM)) {
		v = Vendor(ev.HW.Vendor)
	}
	r := exits.Reason(ev.Code)
	if r == exits.Unknown && ev.Reason != "" {
		if p, ok := exits.ParseReason(ev.Reason); ok {
			r = p
		}
	}
	x := explainer{ev: ev, v: v, r: r}
	var s []string
	switch r {
	case exits.IO:
		s = x.io()
	case exits.MMIO:
		s = x.mmio()
	case exits.HLT:
		s = []string{
			"The guest executed HLT to wait for an interrupt.",
			fmt.Sprintf("%s made the CPU leave the guest as %s.", x.pick("HLT exiting", "The HLT intercept", "HLT exiting (VT-x) or the HLT intercept (SVM)"), x.hw()),
			"KVM returns KVM_EXIT_HLT only when user space emulates the local APIC; with the in-kernel irqchip that kvmlab creates, KVM keeps this exit and simply sleeps the vCPU thread until an interrupt is due, so kvmlab normally never sees it.",
		}
	case exits.Shutdown:
		s = []string{
			"The guest hit a fault while the CPU was delivering a double fault: a triple fault, which puts a bare x86 processor into the shutdown state (a PC's chipset then resets it).",
			fmt.Sprintf("It left the guest as %s%s.", x.hw(), x.pick(", which VT-x reports directly", ", because KVM intercepts the shutdown event", "")),
			"KVM cannot resume a guest in that state, so it returned KVM_EXIT_SHUTDOWN and left the decision to user space: kvmlab stops the machine and prints a register dump" + x.rip(", taken at RIP %#x") + ".",
		}
	case exits.Debug:
		s = []string{
			"The guest stopped on a debug exception" + x.rip(" at RIP %#x") + ": a single-step trap or hardware breakpoint (#DB, vector 1) or an INT3 breakpoint (#BP, vector 3).",
			fmt.Sprintf("Because kvmlab turned on guest debugging with KVM_SET_GUEST_DEBUG, KVM intercepts those vectors (%s), and the CPU left the guest as %s.",
				x.pick("the exception bitmap; the vector is in the VM-exit interruption information", "exception intercepts, one exit code per vector", "the exception bitmap on VT-x, exception intercepts on SVM"), x.hw()),
			"KVM saw that the exception belongs to the debugger, not to the guest, so instead of injecting it into the guest it returned KVM_EXIT_DEBUG with the RIP and DR6/DR7.",
			"kvmlab's stepper stops here, before the vCPU re-enters the guest.",
		}
	case exits.Intr:
		s = []string{
			"kvmlab sent the vCPU thread a signal (its kick, used to stop, step or inspect the machine).",
			fmt.Sprintf("The kernel delivers it with an IPI to the CPU running the guest, and a host interrupt always takes the CPU out of guest mode: %s.", x.hw()),
			"KVM let the host handle the interrupt, saw the pending signal and returned from KVM_RUN with KVM_EXIT_INTR (errno EINTR) instead of re-entering the guest; had the signal arrived before entry, KVM_RUN would have returned without any hardware exit.",
			"There is nothing to emulate: kvmlab handles its request and runs the vCPU again.",
		}
	case exits.IRQWindowOpen:
		s = []string{
			"User space had an interrupt to inject but the guest was not accepting interrupts (RFLAGS.IF was 0, or an STI or MOV SS had just executed), so it set request_interrupt_window in kvm_run.",
			fmt.Sprintf("KVM armed %s, and the CPU left the guest at the first instruction boundary where an interrupt can be taken, as %s.",
				x.pick("interrupt-window exiting", "a virtual interrupt (V_IRQ) with the VINTR intercept", "interrupt-window exiting (VT-x) or a virtual interrupt with the VINTR intercept (SVM)"), x.hw()),
			"KVM returned KVM_EXIT_IRQ_WINDOW_OPEN so user space can inject the interrupt with KVM_INTERRUPT; with kvmlab's in-kernel irqchip KVM does this itself.",
		}
	case exits.X86RDMSR, exits.X86WRMSR:
		op := "RDMSR"
		if r == exits.X86WRMSR {
			op = "WRMSR"
		}
		s = []string{
			fmt.Sprintf("The guest executed %s on a model-specific register that KVM was told to forward to user space (KVM_CAP_X86_USER_SPACE_MSR or an MSR filter).", op),
			fmt.Sprintf("The %s traps that MSR, and the CPU left the guest as %s.", x.pick("MSR bitmap", "MSR permission map (MSRPM)", "MSR bitmap (VT-x) or MSR permission map (SVM)"), x.hw()),
			"KVM put the MSR index (and the value, for a write) in kvm_run.msr and returned; user space answers with the value read, or an error that becomes a #GP in the guest.",
		}
	case exits.Hypercall:
		s = []string{
			fmt.Sprintf("The guest executed %s to ask the hypervisor for a service.", x.pick("VMCALL", "VMMCALL", "VMCALL (Intel) or VMMCALL (AMD)")),
			fmt.Sprintf("That instruction always leaves the guest: %s.", x.hw()),
			"KVM handles its own paravirtual hypercalls in the kernel and forwards only the ones user space asked for (KVM_CAP_EXIT_HYPERCALL), with the number and arguments in kvm_run.hypercall.",
		}
	case exits.FailEntry:
		first := "VM entry itself failed: the processor refused to run the guest, usually because a guest register breaks an architectural consistency check " +
			x.pick("(Intel SDM Vol. 3C, \"Checks on Guest-State Area\")", "(AMD APM Vol. 2 §15.5, \"VMRUN\")", "(Intel SDM Vol. 3C \"Checks on Guest-State Area\", AMD APM Vol. 2 §15.5)") + "."
		if h := x.ev.HW; h != nil && strings.HasPrefix(h.Name, vmInsnErrPrefix) {
			// VMfailValid: VMLAUNCH/VMRESUME stopped before looking at
			// the guest at all.
			first = "VM entry itself failed: VMLAUNCH/VMRESUME refused to start because the VMCS's control or host-state fields failed the processor's checks (Intel SDM Vol. 3C, \"Checks on VMX Controls and Host-State Area\"), so no exit reason was produced, only a VM-instruction error."
		}
		s = []string{
			first,
			fmt.Sprintf("The hardware reported %s.", x.hw()),
			"KVM cannot repair that on its own, so it passed the raw value up in kvm_run.fail_entry; kvmlab stops the machine and dumps the registers so the bad value can be found.",
		}
	case exits.Unknown:
		s = []string{
			fmt.Sprintf("KVM met a hardware exit it has no handler for: %s.", x.hw()),
			"It returned KVM_EXIT_UNKNOWN with the raw reason in kvm_run.hw, and kvmlab stops the machine.",
		}
	case exits.InternalError:
		s = []string{
			"KVM gave up on the guest: most often its instruction emulator met an instruction it cannot emulate (say, a vector instruction touching MMIO), or an exit happened while the CPU was delivering an event to the guest.",
		}
		if x.hwList() != nil {
			s = append(s, fmt.Sprintf("The hardware exit that led there was %s.", x.hw()))
		} else {
			s = append(s, "The event does not say which hardware exit led there; the suberror and data in kvm_run.internal do.")
		}
		s = append(s, "kvmlab stops the machine and dumps the registers; the instruction at RIP"+x.rip(" %#x")+" is the place to look.")
	case exits.SystemEvent:
		s = []string{
			"The guest asked the platform for a shutdown, reset or crash report through a paravirtual interface (on x86, typically a confidential guest's termination request), and KVM passed the request to user space as a system event.",
		}
		if x.hwList() != nil {
			s = append(s, fmt.Sprintf("The request arrived as %s.", x.hw()))
		} else {
			s = append(s, "No single hardware exit stands for it.")
		}
		s = append(s, "kvmlab powers off or resets the machine accordingly.")
	default:
		s = []string{fmt.Sprintf("KVM returned %s to user space.", r)}
		if x.hwList() != nil {
			s = append(s, fmt.Sprintf("Beneath it the CPU left the guest as %s.", x.hw()))
		}
	}
	if d := x.device(); d != "" {
		s = append(s, d)
	}
	return strings.Join(s, " ")
}

type explainer struct {
	ev *trace.Event
	v  Vendor
	r  exits.Reason
}

// pick chooses the vendor's wording; other is for an unknown vendor.
func (x explainer) pick(vmx, svm, other string) string {
	switch x.v {
	case VMX:
		return vmx
	case SVM:
		return svm
	}
	return other
}

func (x explainer) rip(format string) string {
	if x.ev.RIP == 0 {
		return ""
	}
	return fmt.Sprintf(format, x.ev.RIP)
}

// hwList is the event's own hardware exit if it has one, else the derived
// ones for the known vendor, else nil.
func (x explainer) hwList() []trace.HW {
	if x.ev.HW != nil {
		return []trace.HW{*x.ev.HW}
	}
	ex := &exits.Exit{Reason: x.r}
	return Beneath(x.r, x.v, ex)
}

// hw names the hardware exit(s) in words: "VT-x exit reason IO_INSTRUCTION
// (30)". With no vendor known it names both vendors' candidates.
func (x explainer) hw() string {
	if hs := x.hwList(); len(hs) > 0 {
		return describeHW(hs[0])
	}
	vmx, svm := Beneath(x.r, VMX, &exits.Exit{Reason: x.r}), Beneath(x.r, SVM, &exits.Exit{Reason: x.r})
	switch {
	case len(vmx) > 0 && len(svm) > 0:
		return describeHW(vmx[0]) + " on Intel, " + describeHW(svm[0]) + " on AMD"
	case len(vmx) > 0:
		return describeHW(vmx[0])
	case len(svm) > 0:
		return describeHW(svm[0])
	}
	return "a hardware exit this explanation cannot name"
}

func describeHW(h trace.HW) string {
	switch Vendor(h.Vendor) {
	case VMX:
		if n, ok := strings.CutPrefix(h.Name, vmInsnErrPrefix); ok {
			if _, m, ok := VMInstructionError(uint32(h.Code)); ok {
				return fmt.Sprintf("VT-x VM-instruction error %d (%s: %s)", h.Code, n, m)
			}
			return fmt.Sprintf("VT-x VM-instruction error %d", h.Code)
		}
		return fmt.Sprintf("VT-x exit reason %s (%d)", h.Name, h.Code)
	case SVM:
		code := fmt.Sprintf("%#x", h.Code)
		if h.Code >= svmLastNegative {
			code = fmt.Sprintf("-%d", ^h.Code+1)
		}
		return fmt.Sprintf("SVM exit code %s (%s)", h.Name, code)
	}
	return fmt.Sprintf("%s (%d)", h.Name, h.Code)
}

func (x explainer) io() []string {
	io := x.ev.IO
	if io == nil {
		return []string{
			"The guest executed an IN or OUT instruction on an I/O port.",
			fmt.Sprintf("KVM makes every port access trap, and this one left the guest as %s; no in-kernel device claimed the port, so KVM returned KVM_EXIT_IO.", x.hw()),
		}
	}
	insn, dir := "IN", "from"
	if io.Dir == "out" {
		insn, dir = "OUT", "to"
	}
	if io.Count > 1 {
		insn = "REP " + insn + "S"
	}
	first := fmt.Sprintf("The guest executed a %d-byte %s %s I/O port %#x", io.Size, insn, dir, io.Port)
	if io.Count > 1 {
		first += fmt.Sprintf(" (%d elements)", io.Count)
	}
	if io.Dir == "out" && io.Data != "" {
		first += ", writing " + showData(io.Data)
	}
	s := []string{first + "."}
	s = append(s, fmt.Sprintf("Port I/O is privileged in a VM: %s, so it left the guest as %s, with the port, width and direction in %s.",
		x.pick("KVM turns on the \"unconditional I/O exiting\" VM-execution control (rather than the per-port I/O bitmaps) and every IN/OUT traps",
			"KVM sets every bit of the I/O permission map (IOPM, AMD APM Vol. 2 §15.10) and every IN/OUT traps",
			"KVM makes every IN/OUT trap (I/O exiting on Intel, the I/O permission map on AMD)"),
		x.hw(),
		x.pick("the exit qualification", "EXITINFO1", "the exit information")))
	kvm := fmt.Sprintf("KVM offered port %#x to its in-kernel devices (PIC, PIT, ioeventfds); none claimed it, so KVM filled kvm_run.io", io.Port)
	if io.Dir == "out" {
		kvm += ", copied the data into the run page"
	}
	kvm += " and returned from KVM_RUN with KVM_EXIT_IO, because only user space can emulate this device"
	if io.Dir == "in" {
		kvm += "; on the next KVM_RUN it loads the value kvmlab left in the run page into the guest's register"
	}
	if io.Count > 1 {
		kvm += " (string I/O goes through KVM's instruction emulator first)"
	}
	return append(s, kvm+".")
}

func (x explainer) mmio() []string {
	m := x.ev.MMIO
	if m == nil {
		return []string{
			"The guest accessed a guest-physical address with no memory behind it.",
			fmt.Sprintf("The nested page walk failed and the CPU left the guest as %s; KVM decoded the instruction and returned KVM_EXIT_MMIO.", x.hw()),
		}
	}
	op, prep := "read", "from"
	if m.Write {
		op, prep = "wrote", "to"
	}
	first := fmt.Sprintf("The guest %s %d byte%s %s guest-physical address %#x", op, m.Len, plural(m.Len), prep, m.Addr)
	if m.Write && m.Data != "" {
		first += " (" + showData(m.Data) + ")"
	}
	s := []string{first + "."}
	switch x.v {
	case VMX:
		s = append(s, fmt.Sprintf("No memory slot backs that page, so the EPT walk cannot complete: KVM marks such pages with a deliberately misconfigured EPT entry, and the access left the guest as %s (the very first access to the page finds no entry at all and exits as EPT_VIOLATION (48), which is when KVM installs the marker; Intel SDM Vol. 3C, \"EPT-Induced VM Exits\").", x.hw()))
	case SVM:
		s = append(s, fmt.Sprintf("No memory slot backs that page, so the nested page walk faults: the access left the guest as %s, with the guest-physical address in EXITINFO2 (AMD APM Vol. 2 §15.25.6); KVM marks MMIO pages with reserved bits in the nested page table so it can tell them from RAM it has not mapped yet.", x.hw()))
	default:
		s = append(s, fmt.Sprintf("No memory slot backs that page, so the second-level (nested) page walk fails and the CPU left the guest: %s.", x.hw()))
	}
	kvm := fmt.Sprintf("KVM ran its instruction emulator to decode the faulting instruction (which register, how many bytes), found no in-kernel device (local APIC, IOAPIC, ioeventfd) at %#x, filled kvm_run.mmio and returned from KVM_RUN with KVM_EXIT_MMIO", m.Addr)
	if !m.Write {
		kvm += "; on the next KVM_RUN the emulator completes the load with the value kvmlab put in the run page"
	}
	return append(s, kvm+".")
}

// device says what kvmlab's device model did with the exit.
func (x explainer) device() string {
	ev := x.ev
	switch {
	case ev.Device != "" && ev.Action != "":
		return fmt.Sprintf("kvmlab's bus routed it to the %s device: %s.", ev.Device, strings.TrimSuffix(ev.Action, "."))
	case ev.Device != "":
		return fmt.Sprintf("kvmlab's bus routed it to the %s device.", ev.Device)
	case x.r == exits.IO && ev.IO != nil:
		if ev.IO.Dir == "in" {
			return fmt.Sprintf("No kvmlab device claims port %#x, so the read returned all ones (%s), as on a real bus where nothing drives the data lines.", ev.IO.Port, allOnes(uint32(ev.IO.Size)))
		}
		return fmt.Sprintf("No kvmlab device claims port %#x, so the write was dropped.", ev.IO.Port)
	case x.r == exits.MMIO && ev.MMIO != nil:
		if !ev.MMIO.Write {
			return fmt.Sprintf("No kvmlab device claims address %#x, so the read returned all ones (%s), as on a real bus where nothing drives the data lines.", ev.MMIO.Addr, allOnes(ev.MMIO.Len))
		}
		return fmt.Sprintf("No kvmlab device claims address %#x, so the write was dropped.", ev.MMIO.Addr)
	case ev.Action != "":
		return "kvmlab: " + strings.TrimSuffix(ev.Action, ".") + "."
	}
	return ""
}

// showData renders trace hex data: one byte as 0x48 'H', more as bytes in
// guest memory order.
func showData(h string) string {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) == 0 {
		return h
	}
	if len(b) == 1 {
		if b[0] >= 0x20 && b[0] < 0x7f {
			return fmt.Sprintf("the byte %#02x '%c'", b[0], b[0])
		}
		return fmt.Sprintf("the byte %#02x", b[0])
	}
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return "the bytes " + strings.Join(parts, " ")
}

func allOnes(size uint32) string {
	if size == 0 || size > 8 {
		return "0xff..."
	}
	return "0x" + strings.Repeat("ff", int(size))
}

func plural(n uint32) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// In-kernel exits.
//
// A learner who traces kvmlab sees a few kinds of exits: port I/O, MMIO, the
// odd signal. The processor leaves the guest far more often than that; KVM
// handles the great majority inside the kernel and re-enters the guest
// without user space hearing about it (perf kvm stat, or the kvm:kvm_exit
// tracepoint, shows them all). KernelHandled lists the common ones and why
// each stays in the kernel.

// KernelExit is a hardware exit KVM normally handles without user space.
type KernelExit struct {
	Vendor Vendor
	Code   uint64 // VT-x basic exit reason or SVM exit code
	Name   string
	Why    string // why it stays in the kernel
}

type kernelWhy struct {
	code uint64
	why  string
}

var vmxKernel = []kernelWhy{
	{1, "a host interrupt: KVM lets the host kernel service it and re-enters the guest; only a pending signal turns it into KVM_EXIT_INTR"},
	{0, "NMIs and machine checks go to the host; guest exceptions KVM intercepts (#PF with shadow paging, #UD to emulate VMMCALL) are handled and reflected into the guest"},
	{7, "the in-kernel local APIC has an interrupt waiting, and KVM injects it itself"},
	{8, "an NMI waits for the guest to unblock NMIs; KVM injects it itself"},
	{10, "CPUID always exits; KVM answers from the table user space set once with KVM_SET_CPUID2"},
	{12, "with the in-kernel irqchip KVM knows when the next interrupt is due and sleeps the vCPU thread until then"},
	{13, "INVD is treated as a no-op"},
	{14, "only intercepted with shadow paging, where KVM drops its shadow entry; with EPT the guest flushes its own TLB"},
	{15, "KVM's virtual PMU answers performance-counter reads"},
	{18, "KVM's own paravirtual hypercalls (wake a halted vCPU, yield to a preempted one) are served in the kernel"},
	{28, "KVM tracks CR0/CR3/CR4 writes to keep its view of the guest's paging mode in sync"},
	{29, "KVM switches debug registers lazily: after the first access it lets the guest use them directly"},
	{30, "ports of in-kernel devices (PIC 0x20/0xa0, PIT 0x40-0x43, ELCR, ioeventfds) are emulated in the kernel; only the rest reach kvmlab"},
	{31, "KVM emulates most MSRs (EFER, PAT, APIC base, TSC deadline, MTRRs), and lets the guest touch some without any exit"},
	{32, "as for reads: KVM emulates most MSR writes in the kernel"},
	{36, "MWAIT is emulated as a no-op, so a guest cannot idle the physical CPU"},
	{39, "MONITOR is emulated as a no-op"},
	{40, "a vCPU spinning on a lock: KVM gives the physical CPU to a vCPU that may hold it (pause-loop exiting)"},
	{44, "the local APIC is emulated in the kernel; APICv virtualises most accesses without exiting at all"},
	{45, "end-of-interrupt for a level-triggered vector: the in-kernel IOAPIC needs to know"},
	{48, "the first touch of a RAM page: KVM finds the host page behind the memory slot and builds the EPT entry"},
	{49, "MMIO to an in-kernel device or an ioeventfd (such as a virtio doorbell) completes without leaving the kernel"},
	{52, "KVM uses the preemption timer to emulate the local APIC timer cheaply"},
	{54, "KVM flushes caches only when the guest has non-coherent DMA, otherwise skips the instruction"},
	{55, "KVM checks the new XCR0 against what the guest's CPUID allows and loads it"},
	{56, "a write to a virtual-APIC register whose side effects KVM's in-kernel APIC emulates"},
	{62, "dirty-page logging for migration: KVM drains the CPU's log into its dirty bitmap"},
}

var svmKernel = []kernelWhy{
	{0x60, "a host interrupt: KVM lets the host kernel service it and re-enters the guest; only a pending signal turns it into KVM_EXIT_INTR"},
	{0x61, "a host NMI: KVM hands it to the host kernel"},
	{0x64, "the in-kernel local APIC has an interrupt waiting, and KVM injects it once the guest can take it"},
	{0x46, "#UD is intercepted to emulate VMCALL and VMMCALL across vendors"},
	{0x4e, "page faults are only intercepted with shadow paging; with NPT the guest handles its own"},
	{0x10, "KVM tracks CR0 writes to keep its view of the guest's paging mode in sync"},
	{0x14, "KVM checks CR4 writes against the features the guest may use"},
	{0x37, "KVM switches debug registers lazily: after the first access it lets the guest use them directly"},
	{0x6f, "KVM's virtual PMU answers performance-counter reads"},
	{0x72, "KVM answers from the CPUID table user space set once with KVM_SET_CPUID2"},
	{0x76, "INVD is treated as a no-op"},
	{0x77, "a vCPU spinning on a lock: KVM gives the physical CPU to a vCPU that may hold it (pause filter)"},
	{0x78, "with the in-kernel irqchip KVM knows when the next interrupt is due and sleeps the vCPU thread until then"},
	{0x79, "only intercepted with shadow paging, where KVM drops its shadow entry"},
	{0x7b, "ports of in-kernel devices (PIC 0x20/0xa0, PIT 0x40-0x43, ELCR, ioeventfds) are emulated in the kernel; only the rest reach kvmlab"},
	{0x7c, "KVM emulates most MSRs (EFER, PAT, APIC base, TSC deadline, MTRRs), and lets the guest touch some without any exit"},
	{0x81, "KVM's own paravirtual hypercalls (wake a halted vCPU, yield to a preempted one) are served in the kernel"},
	{0x89, "KVM flushes caches only when the guest has non-coherent DMA, otherwise skips the instruction"},
	{0x8a, "MONITOR is emulated as a no-op"},
	{0x8b, "MWAIT is emulated as a no-op, so a guest cannot idle the physical CPU"},
	{0x8d, "KVM checks the new XCR0 against what the guest's CPUID allows and loads it"},
	{0x400, "the first touch of a RAM page (KVM builds the nested page-table entry), or MMIO to an in-kernel device or ioeventfd"},
	{0x401, "AVIC could not deliver an IPI to a vCPU that is not running; KVM wakes it"},
	{0x402, "an APIC register AVIC does not accelerate; the in-kernel local APIC emulates it"},
}

// KernelHandled lists the common hardware exits that KVM handles itself on a
// host of vendor v (nil for an unknown vendor), each with a one-line reason
// it never reaches kvmlab.
func KernelHandled(v Vendor) []KernelExit {
	var list []kernelWhy
	switch v {
	case VMX:
		list = vmxKernel
	case SVM:
		list = svmKernel
	default:
		return nil
	}
	out := make([]KernelExit, len(list))
	for i, k := range list {
		var name string
		if v == VMX {
			name = vmxName(uint32(k.code))
		} else {
			name = svmName(k.code)
		}
		out[i] = KernelExit{Vendor: v, Code: k.code, Name: name, Why: k.why}
	}
	return out
}
