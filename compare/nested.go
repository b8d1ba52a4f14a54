package compare

// A container inside a VM: "VM platform security capabilities have been
// leveraged to isolate each container in a lightweight VM", as Kata
// Containers and Hyper-V isolation do. The fifth column boots the kvmlab
// guest and runs `kvmlab container` inside it, on the guest's kernel, with
// the same probe as every other column. The container then shares a kernel
// again, but the guest's, not the host's: its rows show the guest's kernel
// release and boot id, and when that kernel crashes under it, the VM ends
// and the host does not notice.
//
// # What the guest needs, and how it gets there
//
// The guest's userland already is the container's root (the same u-root
// initramfs), so the one thing missing is the runtime: this kvmlab binary.
// Linux unpacks every cpio archive it finds one after the other in the
// initrd (Documentation/driver-api/early-userspace/buffer-format.rst:
// "initramfs := ("\0" * 4 | cpio_archive | cpio_gzip_archive)*"), so the
// VM is handed the guest's initramfs followed by a second, small newc
// archive holding /nested/kvmlab (built with emuhost's CPIOWriter, on
// u-root's pkg/cpio). The guest image on disk stays as it is for every other
// run: the archive is made in memory for this boot only, and what it costs
// (its size, the time to build it, and how much later the guest reaches
// user space) is in the report's note on this column.
//
// The container's root inside the guest is not a second copy of the
// userland. The helper (nested_guest.go) makes /nested/root a tree of hard
// links to the guest's own files, which the kernel unpacked into its RAM at
// boot: no byte is copied, so the guest's RAM holds the userland once, and
// the root is ready in milliseconds. (Carrying the initramfs again as
// /nested/rootfs.cpio and unpacking it in the guest, as `kvmlab container
// --initrd` would, costs its size twice more in guest RAM and the time to
// copy it under nested virtualisation.)
//
// The guest's command line runs the helper through uinit (kvmlab.run=, the
// same way the VM column runs the probe), and asks the guest kernel to leave
// its cgroup controllers to cgroup v2 (cgroup_no_v1=all): u-root's init
// mounts a cgroup v1 hierarchy per controller it finds, and a controller
// bound to v1 cannot be used by v2. The helper mounts cgroup2 itself.

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode"

	"kvmlab/emuhost"
	"kvmlab/internal/cli"
	"kvmlab/internal/human"
	"kvmlab/vmm"
)

// NestedName is the column's name.
const NestedName = "container in VM"

// Where the nested side's files are in the guest.
const (
	nestedDir  = "/nested"
	nestedBin  = nestedDir + "/kvmlab"
	nestedRoot = nestedDir + "/root"
)

// NestedGuestCommand is the hidden kvmlab command the guest runs as its
// kvmlab.run (nested_guest.go): kvmlab's main calls NestedGuestMain for it.
const NestedGuestCommand = "compare-nested-guest"

// NestedMarker starts the line the helper prints in the guest once the
// probe in the container has reported: what it saw outside the container.
const NestedMarker = "KVMLAB-NESTED "

// maxNestedBinary bounds the kvmlab binary carried into the guest: it
// lives in guest RAM twice while the kernel unpacks it.
const maxNestedBinary = 256 << 20

// NestedInfo is what carrying the runtime into the guest cost, and what the
// helper saw in the guest outside the container.
type NestedInfo struct {
	// ArchiveBytes is the extra cpio archive appended to the initramfs
	// (the kvmlab binary), built in ArchiveMS on the host.
	ArchiveBytes uint64  `json:"archive_bytes"`
	ArchiveMS    float64 `json:"archive_ms"`
	// InitrdBytes is the whole initrd the VM was given.
	InitrdBytes uint64 `json:"initrd_bytes"`
	// Guest is the helper's report (NestedGuestReport).
	Guest *NestedGuestReport `json:"guest,omitempty"`
}

// NestedGuestReport is the helper's line after NestedMarker.
type NestedGuestReport struct {
	// UptimeSec is the guest kernel's uptime when the helper started:
	// how long the kernel and init took to reach user space with the
	// bigger initrd.
	UptimeSec float64 `json:"uptime_s"`
	// BootID is the guest kernel's boot id, read outside the container.
	BootID string `json:"boot_id"`
	// Cgroup is the cgroup version the runtime found ("v2"), and
	// MemoryPeak the container's memory.peak in bytes while the probe
	// waited.
	Cgroup     string `json:"cgroup"`
	MemoryPeak uint64 `json:"memory_peak_bytes"`
	// RootFiles entries were linked into the container's root in RootMS.
	RootFiles int     `json:"root_files"`
	RootMS    float64 `json:"root_ms"`
	// Error says why the helper gave up.
	Error string `json:"error,omitempty"`
}

var bootIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// check bounds what the guest (possibly hostile) reported: a boot id in
// the kernel's format, a known cgroup version, finite figures, and an
// error line a terminal can show as it is.
func (g *NestedGuestReport) check() error {
	switch {
	case g.BootID != "" && !bootIDPattern.MatchString(g.BootID):
		return fmt.Errorf("boot id %.40q is not a UUID", g.BootID)
	case g.Cgroup != "" && g.Cgroup != "v1" && g.Cgroup != "v2" && g.Cgroup != "none":
		return fmt.Errorf("cgroup version %.20q", g.Cgroup)
	case g.UptimeSec < 0 || g.UptimeSec > 1e7 || g.RootMS < 0 || g.RootMS > 1e9 || g.RootFiles < 0:
		return errors.New("figures out of range")
	case len(g.Error) > 500 || strings.ContainsFunc(g.Error, unicode.IsControl):
		return errors.New("an error line too long or with control characters")
	}
	return nil
}

// CheckNestedBinary says, in one line, why the kvmlab binary at path
// cannot run in the guest, or nil. The guest is a u-root userland with no C
// library, so kvmlab must be linked statically (CGO_ENABLED=0, as `make
// build` does): a dynamically linked ELF names its loader in a PT_INTERP
// program header.
func CheckNestedBinary(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF program kvmlab can carry into the guest: %w", path, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s: a %v %v program: the guest runs x86-64", path, f.Class, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (built with cgo) and the guest has no C library: build it with CGO_ENABLED=0 (make build)", path)
		}
	}
	if st, err := os.Stat(path); err == nil && st.Size() > maxNestedBinary {
		return fmt.Errorf("%s: %d MiB, more than the %d MiB kvmlab carries into the guest", path, st.Size()>>20, maxNestedBinary>>20)
	}
	return nil
}

// NestedMemNeed is the least guest RAM the nested side needs: the initrd
// (the guest's initramfs and the kvmlab binary) sits in RAM once as the
// archive and once unpacked until the kernel frees the archive, plus room
// for the kernel, the runtime and the probe.
func NestedMemNeed(initrdBytes, binaryBytes uint64) uint64 {
	return 2*(initrdBytes+binaryBytes) + 64<<20
}

// CheckNested refuses a --nested that cannot work, as a one-line usage
// error: a kvmlab binary the guest cannot run (CheckNestedBinary), or guest
// RAM (mem bytes) too small to hold the initramfs at initrd and the binary
// while the kernel unpacks them (NestedMemNeed).
func CheckNested(self, initrd string, mem uint64) error {
	if err := CheckNestedBinary(self); err != nil {
		return cli.Usagef("compare: --nested: %v", err)
	}
	isz, bsz := fileSize(initrd), fileSize(self)
	if need := NestedMemNeed(isz, bsz); mem < need {
		return cli.Usagef("compare: --nested: the guest holds its initramfs (%d MiB) and kvmlab (%d MiB) twice while unpacking them: give --mem %dM or more",
			isz>>20, bsz>>20, (need+(1<<20)-1)>>20)
	}
	return nil
}

// nestedArchive is the newc archive appended to the guest's initramfs:
// /nested and /nested/kvmlab, the binary at self.
func nestedArchive(self string) ([]byte, error) {
	var b bytes.Buffer
	w := emuhost.NewCPIOWriter(&b)
	if err := w.Dir(nestedDir, 0o755); err != nil {
		return nil, err
	}
	if err := w.FileFrom(nestedBin, 0o755, self); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// appendArchive returns initrd followed by extra, with the zero padding
// that starts extra on a 4-byte boundary (buffer-format.rst: archives
// begin aligned; the kernel skips zeros between them).
func appendArchive(initrd, extra []byte) []byte {
	pad := (4 - len(initrd)%4) % 4
	out := make([]byte, 0, len(initrd)+pad+len(extra))
	out = append(out, initrd...)
	out = append(out, make([]byte, pad)...)
	return append(out, extra...)
}

// nestedCmdline runs the helper with the container's memory limit (in KiB,
// which `kvmlab container --mem` reads exactly: a plain number would be
// MiB).
func nestedCmdline(memBytes uint64) string {
	return fmt.Sprintf("console=ttyS0 panic=-1 quiet cgroup_no_v1=all kvmlab.run=%s,%s,--mem=%dK",
		nestedBin, NestedGuestCommand, memBytes>>10)
}

// nestedSide boots the VM with the runtime carried in, and measures the
// probe run by `kvmlab container` inside it: start-up from before the
// archive is built to the probe's report, the VMM's memory then, and the
// VM exits while the probe ran. The helper then crashes the guest kernel
// under the still running container (sysrq c), and the side's Blast says
// what became of the VM.
func nestedSide(ctx context.Context, o *Options) (Side, *NestedInfo) {
	s := Side{Name: NestedName, BoundaryKind: "vm-exits",
		BoundaryNote: "VM exits while the probe ran in the container inside the guest (KVM statistics); the part kvmlab handled in user space beside"}
	info := &NestedInfo{}
	start := time.Now()
	extra, err := nestedArchive(o.Self)
	if err != nil {
		s.Error = "building the archive for the guest: " + err.Error()
		return s, info
	}
	info.ArchiveBytes, info.ArchiveMS = uint64(len(extra)), float64(time.Since(start).Microseconds())/1000
	s.ImageBytes = fileSize(o.Kernel) + fileSize(o.Initrd) + fileSize(o.Self)
	p := vmProbe{s: &s, start: start}
	var crashing bool
	var panicked, guestLine string
	out, tail, err := bootVMExtra(ctx, o, nestedCmdline(o.MemBytes), extra, func(m *vmm.Machine, line string, at time.Time) {
		if p.see(m, line, at) {
			return
		}
		switch {
		case strings.Contains(line, NestedMarker) && guestLine == "":
			guestLine = line
		case strings.Contains(line, nestedCrashLine):
			crashing = true
		case strings.Contains(line, "Kernel panic") && panicked == "":
			panicked = strings.TrimSpace(line[strings.Index(line, "Kernel panic"):])
		}
	})
	info.InitrdBytes = (fileSize(o.Initrd)+3)/4*4 + uint64(len(extra))
	if err != nil {
		s.Error = err.Error()
		return s, info
	}
	if guestLine != "" {
		var g NestedGuestReport
		if err := decodeMarked(guestLine, NestedMarker, &g); err != nil {
			s.Error = "the helper's report: " + err.Error()
		} else if err := g.check(); err != nil {
			s.Error = "the helper's report: " + err.Error()
		} else {
			info.Guest = &g
			s.KernelBootID = g.BootID
			if g.Error != "" && s.Error == "" {
				s.Error = "in the guest: " + g.Error
			}
			if g.MemoryPeak > 0 {
				s.FootprintNote += fmt.Sprintf("; inside the guest, the container's cgroup %s peak %.1f MiB", g.Cgroup, human.MiB(g.MemoryPeak))
			}
		}
	}
	if !p.got && s.Error == "" {
		s.Error = fmt.Sprintf("the probe in the container did not report (%s); console: %s", out.Detail, tail)
	}
	switch {
	case panicked != "" && crashing:
		s.Blast = fmt.Sprintf("guest kernel panicked under the running container (%q); the VM ended (%s); the host kernel carried on", panicked, out.Detail)
	case panicked != "":
		s.Blast = fmt.Sprintf("guest kernel panicked (%q) before the helper crashed it; the VM ended (%s)", panicked, out.Detail)
	default:
		s.Blast = fmt.Sprintf("no panic seen (%s); console: %s", out.Detail, tail)
	}
	return s, info
}

// note is the line under the table on what the nested column cost: the
// archive carried in, how much later its guest reached user space than
// the VM column's, and the container's root and memory inside the guest.
func (n *NestedInfo) note(vm *Side) string {
	if n == nil {
		return ""
	}
	s := fmt.Sprintf("its VM got the guest's initramfs plus a %.1f MiB archive with the kvmlab binary (%.1f MiB initrd in all, archive built in %.0f ms)",
		human.MiB(n.ArchiveBytes), human.MiB(n.InitrdBytes), n.ArchiveMS)
	if g := n.Guest; g != nil {
		s += fmt.Sprintf("; its guest reached the helper at %.2f s of kernel uptime", g.UptimeSec)
		if vm != nil && vm.Probe != nil {
			s += fmt.Sprintf(" (the VM column's probe ran at %.2f s)", vm.Probe.UptimeSec)
		}
		if g.RootFiles > 0 {
			s += fmt.Sprintf("; the container's root: %d hard links to the guest's own files, made in %.0f ms", g.RootFiles, g.RootMS)
		}
	}
	return s
}

// nestedLine is how the helper's report goes out, for NestedGuestMain.
func nestedLine(g *NestedGuestReport) string {
	b, err := json.Marshal(g)
	if err != nil {
		return NestedMarker + `{"error":"encoding the report"}`
	}
	return NestedMarker + string(b)
}
