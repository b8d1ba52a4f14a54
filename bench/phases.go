package bench

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Boot phases: where a Linux boot's time goes, read from the guest's own
// log. With a command line without "quiet", the kernel prints its log on the
// serial console as it goes, each line stamped with the kernel's clock
// (CONFIG_PRINTK_TIME, "[    1.234567] "). The bench notes, for a few
// milestone lines that every x86-64 Linux 6.x boot prints, the stamp, the
// host time since the VMM started and KVM's exit count for the VM at that
// moment; consecutive milestones bound the phases below. The console
// output itself costs time (every byte is a port write), so a boot
// measured this way is slower than a quiet one: the phases say where the
// time goes, the quiet bench says how long a boot takes.
//
// The milestones, in the order start_kernel and kernel_init reach them
// (init/main.c, arch/x86/kernel/time.c and apic/, Linux 6.1):
//
//   - the kernel clock's zero: the log's first stamp. Before it: the VMM's
//     own set-up, the firmware (QEMU q35: SeaBIOS; microvm: qboot; kvmlab:
//     none), the bzImage's decompressor, and the kernel's earliest set-up,
//     until kvm-clock starts the clock. Read as the host time of the
//     "Run /init" line minus its stamp.
//   - "APIC: Switch to symmetric I/O mode": setup_arch, memory, ACPI
//     tables, IRQ set-up are done; the timers are next (x86_late_time_init).
//   - "Calibrating delay loop": the IO-APIC timer check, the TSC and the
//     local APIC timer calibration are done.
//   - "pid_max:": the delay loop is calibrated (or skipped: "(skipped)").
//   - "devtmpfs: initialized": the scheduler, SMP bring-up and early
//     set-up are done; the initcalls start (do_basic_setup).
//   - "Freeing unused kernel image": the initcalls are done, the
//     initramfs unpacked (populate_rootfs, an initcall, overlaps them).
//   - "Run /init as init process": the first user-space instruction is
//     next.
//   - the bench's user-space marker: the init program's first line.
//
// "Trying to unpack rootfs" and "Freeing initrd memory" bound the initramfs
// unpacking, reported on its own since it overlaps the initcalls.
var bootMilestones = []struct {
	key, text string
}{
	{"setup", "APIC: Switch to symmetric I/O mode"},
	{"timers", "Calibrating delay loop"},
	{"delay", "pid_max:"},
	{"early", "devtmpfs: initialized"},
	{"unpack-start", "Trying to unpack rootfs"},
	{"unpack-end", "Freeing initrd memory"},
	{"initcalls", "Freeing unused kernel image"},
	{"init", "Run /init as init process"},
}

// phaseDefs are the phases the report shows: each from one milestone to
// the next. "" as from is the kernel clock's zero.
var phaseDefs = []struct {
	name, from, to string
}{
	{"phase: early set-up (clock zero -> APIC set-up)", "", "setup"},
	{"phase: timers and clock calibration", "setup", "timers"},
	{"phase: delay-loop calibration", "timers", "delay"},
	{"phase: scheduler, SMP, early init", "delay", "early"},
	{"phase: initcalls", "early", "initcalls"},
	{"phase: initramfs unpack (within the initcalls)", "unpack-start", "unpack-end"},
	{"phase: free init memory -> Run /init", "initcalls", "init"},
}

// mark is one milestone seen on a boot's console.
type mark struct {
	stamp float64       // the kernel's clock, seconds
	host  time.Duration // since the VMM started
	exits uint64        // KVM's exit count for the VM then (0: unknown)
}

// stampRe reads a printk stamp: "[   12.345678] text".
var stampRe = regexp.MustCompile(`^\[\s*(\d+\.\d+)\] (.*)$`)

// parseMilestone returns the milestone key a console line is, and its
// stamp; ok is false for any other line.
func parseMilestone(line string) (key string, stamp float64, ok bool) {
	m := stampRe.FindStringSubmatch(strings.TrimRight(line, "\r"))
	if m == nil {
		return "", 0, false
	}
	for _, ms := range bootMilestones {
		if strings.Contains(m[2], ms.text) {
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				return "", 0, false
			}
			return ms.key, v, true
		}
	}
	return "", 0, false
}

// phaseTimes turns a boot's milestones into phase durations (seconds),
// the time from the VMM's start to the kernel clock's zero, and the time
// from "Run /init" to the user-space marker, with KVM exits per phase
// (keys "exits: " + the phase name). A phase whose ends were not both
// seen is absent.
func phaseTimes(marks map[string]mark, toUser time.Duration) map[string]float64 {
	out := map[string]float64{}
	zero := mark{}
	if in, ok := marks["init"]; ok {
		// The host time at which the kernel clock read zero.
		zero.host = in.host - time.Duration(in.stamp*float64(time.Second))
		if zero.host > 0 {
			out["phase: VMM start -> kernel clock zero (firmware, decompressor, earliest set-up)"] = zero.host.Seconds()
		}
		if toUser > in.host {
			out["phase: Run /init -> user-space marker"] = (toUser - in.host).Seconds()
		}
	}
	for _, p := range phaseDefs {
		to, ok := marks[p.to]
		if !ok {
			continue
		}
		from := zero
		if p.from != "" {
			if from, ok = marks[p.from]; !ok {
				continue
			}
		}
		if d := to.stamp - from.stamp; d >= 0 {
			out[p.name] = d
		}
		if p.from != "" && from.exits > 0 && to.exits >= from.exits {
			out["exits: "+p.name] = float64(to.exits - from.exits)
		}
	}
	return out
}

// phaseOrder lists the phase figures in boot order, for the report.
func phaseOrder() []string {
	names := []string{"phase: VMM start -> kernel clock zero (firmware, decompressor, earliest set-up)"}
	for _, p := range phaseDefs {
		names = append(names, p.name)
	}
	names = append(names, "phase: Run /init -> user-space marker")
	for _, p := range phaseDefs[1:] {
		names = append(names, "exits: "+p.name)
	}
	return names
}

// addPhaseFigures adds the phase figures to rep, when some boot logged its
// milestones (a command line without "quiet").
func addPhaseFigures(rep *Report, all []sample, names []string) {
	per := make([]map[string]float64, len(all))
	any := false
	for i, s := range all {
		if s.failure == "" && len(s.marks) > 0 {
			per[i] = phaseTimes(s.marks, s.toUser)
			any = true
		}
	}
	if !any {
		return
	}
	for _, ph := range phaseOrder() {
		unit := "s"
		if strings.HasPrefix(ph, "exits: ") {
			unit = "exits"
		}
		rep.addFigures(ph, unit, names, func(peer string) []float64 {
			var v []float64
			for i, s := range all {
				if x, ok := per[i][ph]; ok && s.peer == peer {
					v = append(v, x)
				}
			}
			return v
		})
	}
}
