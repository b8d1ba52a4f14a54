package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kvmlab/compare"
)

// TestCompareNested runs `kvmlab compare --nested --json --html`: beside the
// VM and the container, the guest booted with the kvmlab binary carried in
// runs `kvmlab container` with the probe, on the guest's kernel, and then
// crashes that kernel under the running container. Every cell of the new
// column is checked against the measurements in the same report: the
// guest's kernel release and boot id (which the helper read outside the
// container) rather than the host's, the container's own namespaces inside
// the guest, the VM exits while it ran, a guest panic with the host and
// the container run after it unharmed, and the column in the HTML page.
// It needs a guest kernel built from kernel-config/kvmlab.config with the
// IPC namespace and the memory and pids cgroup controllers.
func TestCompareNested(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kvmlab compare needs root (the container side): run the tests as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	bin, kernel, initrd := kvmlabBin(t), guestFile(t, "bzImage"), guestFile(t, "initramfs.cpio")
	page := filepath.Join(t.TempDir(), "compare.html")
	cmd := exec.CommandContext(ctx, bin, "compare", "--json", "--nested", "--no-runc", "--html", page, "--kernel", kernel, "--initrd", initrd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kvmlab compare --nested: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	t.Logf("kvmlab compare stderr:\n%s", stderr.String())
	var rep compare.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("compare --json: %v\n%s", err, stdout.String())
	}
	n, info := rep.Nested, rep.NestedInfo
	if n == nil || info == nil {
		t.Fatalf("no nested side in the report:\n%s", stdout.String())
	}
	if n.Error != "" || n.Probe == nil {
		t.Fatalf("the nested side failed: %s", n.Error)
	}
	// The sides around it ran: the host's container after the guest
	// kernel under the nested one crashed.
	if rep.VM.Error != "" || rep.VM.Probe == nil || rep.Container.Error != "" || rep.Container.Probe == nil {
		t.Fatalf("a side failed: VM %q, container %q", rep.VM.Error, rep.Container.Error)
	}
	g := info.Guest
	if g == nil {
		t.Fatal("no report from the helper in the guest")
	}
	t.Logf("nested: start -> probe %.0f ms, VMM RSS %.1f MiB (VM %.0f ms, %.1f MiB; container %.0f ms, %.1f MiB); guest cgroup %s peak %.1f MiB; helper at %.2f s uptime, probe at %.2f s (VM's probe at %.2f s); archive %d bytes in %.0f ms; root %d links in %.0f ms",
		n.StartupMS, mib(n.FootprintBytes), rep.VM.StartupMS, mib(rep.VM.FootprintBytes), rep.Container.StartupMS, mib(rep.Container.FootprintBytes),
		g.Cgroup, mib(g.MemoryPeak), g.UptimeSec, n.Probe.UptimeSec, rep.VM.Probe.UptimeSec, info.ArchiveBytes, info.ArchiveMS, g.RootFiles, g.RootMS)
	// What the helper saw outside the container: the kernel under it.
	host := rep.HostProbe
	switch {
	case g.BootID == "" || g.BootID != n.KernelBootID || n.Probe.BootID != g.BootID:
		t.Errorf("boot ids: the container's %q, its guest kernel's %q (side %q): want the same", n.Probe.BootID, g.BootID, n.KernelBootID)
	case n.Probe.BootID == host.BootID || n.Probe.BootID == rep.VM.Probe.BootID:
		t.Errorf("the container in the VM has boot id %q: the host's is %q, the VM column's %q: want a kernel of its own", n.Probe.BootID, host.BootID, rep.VM.Probe.BootID)
	}
	if g.Cgroup != "v2" || g.MemoryPeak == 0 || g.RootFiles == 0 {
		t.Errorf("in the guest: cgroup %q, memory peak %d, root of %d entries: want v2, a peak, a root", g.Cgroup, g.MemoryPeak, g.RootFiles)
	}
	if g.UptimeSec <= 0 || g.UptimeSec > n.Probe.UptimeSec {
		t.Errorf("the helper ran at %.2f s of guest uptime, the probe at %.2f s: the helper starts the container", g.UptimeSec, n.Probe.UptimeSec)
	}
	size := func(p string) uint64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(st.Size())
	}
	if info.ArchiveBytes < size(bin) || info.InitrdBytes != (size(initrd)+3)/4*4+info.ArchiveBytes {
		t.Errorf("archive %d bytes, initrd %d: want the kvmlab binary (%d bytes) after the initramfs (%d)", info.ArchiveBytes, info.InitrdBytes, size(bin), size(initrd))
	}
	if want := size(kernel) + size(initrd) + size(bin); n.ImageBytes != want {
		t.Errorf("image on disk %d bytes, want kernel + initramfs + kvmlab = %d", n.ImageBytes, want)
	}
	short := func(id string) string { return id[:8] + "…" }
	row := map[string]compare.Row{}
	for _, r := range rep.Rows {
		row[r.Fact] = r
		t.Logf("%-45s | %-12s | %-30s | %-30s | %s", r.Fact, r.Host, r.VM, r.Container, r.Nested)
	}
	want := map[string]func(r compare.Row) bool{
		"kernel release": func(r compare.Row) bool {
			return r.Nested == r.VM && r.Nested == n.Probe.KernelRelease && r.Nested != r.Host && r.Container == r.Host
		},
		"kernel build": func(r compare.Row) bool { return r.Nested == r.VM && r.Nested != "" },
		"same kernel instance as the host (boot id)": func(r compare.Row) bool { return r.Nested == "no" && r.Container == "yes" },
		"boot id of the kernel under the workload": func(r compare.Row) bool {
			return r.Nested == short(g.BootID)+" (its VM's kernel)" && r.Host == short(host.BootID) && r.Container == r.Host && r.VM == short(rep.VM.Probe.BootID)
		},
		"kernel uptime when the probe ran":     func(r compare.Row) bool { return r.Nested == fmt.Sprintf("%.1f s", n.Probe.UptimeSec) },
		"CPUID hypervisor bit / CPUs / memory": func(r compare.Row) bool { return strings.HasPrefix(r.Nested, "yes / 1 / ") },
		"start -> probe running":               func(r compare.Row) bool { return n.StartupMS > 0 && r.Nested == fmt.Sprintf("%.0f ms", n.StartupMS) },
		"memory used": func(r compare.Row) bool {
			return n.FootprintBytes > 0 && r.Nested == fmt.Sprintf("%.1f MiB", mib(n.FootprintBytes))
		},
		"image on disk":             func(r compare.Row) bool { return r.Nested == fmt.Sprintf("%.1f MiB", mib(n.ImageBytes)) },
		"processes visible (PID 1)": func(r compare.Row) bool { return strings.HasPrefix(r.Nested, "2 (") },
		// Its own network namespace in the guest: the loopback, and
		// the fallback devices a built-in tunnel driver of the guest
		// kernel (IPv6-in-IPv4: sit0) adds to every namespace; no
		// device of the VM's own.
		"network interfaces": func(r compare.Row) bool {
			names := strings.Fields(r.Nested)
			return slices.Contains(names, "lo") && !slices.ContainsFunc(names, func(n string) bool { return n != "lo" && !fallbackTunnels[n] })
		},
		"entries in /dev":       func(r compare.Row) bool { return r.Nested == r.Container },
		"kernel modules loaded": func(r compare.Row) bool { return r.Nested == "none (no module support)" && r.Container == r.Host },
		// The guest kernel is built without
		// CONFIG_SECURITY_DMESG_RESTRICT: kernel.dmesg_restrict is 0
		// there and any process reads its log, capabilities or not.
		"kernel log (dmesg) readable": func(r compare.Row) bool {
			return strings.HasPrefix(r.Nested, "yes, ") && strings.HasPrefix(r.VM, "yes, ")
		},
		"VM exits / system calls into the host kernel": func(r compare.Row) bool {
			return n.BoundaryKind == "vm-exits" && n.Boundary > 0 && r.Nested == fmt.Sprintf("%d VM exits (%d to kvmlab)", n.Boundary, n.BoundaryUser)
		},
		"sysrq c (crash the kernel)": func(r compare.Row) bool {
			return r.Nested == n.Blast && strings.HasPrefix(r.Nested, "guest kernel panicked under the running container") && strings.Contains(r.Nested, "Kernel panic")
		},
		"host kernel still up afterwards": func(r compare.Row) bool { return r.Nested == "yes" && r.Container == "yes" && r.VM == "yes" },
	}
	for fact, ok := range want {
		r, found := row[fact]
		switch {
		case !found:
			t.Errorf("no row %q", fact)
		case !ok(r):
			t.Errorf("row %q: host %q, VM %q, container %q, container in VM %q: not what the report's figures say", fact, r.Host, r.VM, r.Container, r.Nested)
		}
	}
	for _, r := range rep.Rows {
		if r.Nested == "" {
			t.Errorf("row %q has no cell for the container in the VM", r.Fact)
		}
	}
	// The same figures in the HTML page, in the table's new column.
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<th>container in VM</th>", "<td>" + html.EscapeString(short(g.BootID)+" (its VM's kernel)") + "</td>",
		fmt.Sprintf("<td>%.0f ms</td>", n.StartupMS), "Container in VM: its VM got", `<text x="0" y="` /* a bar per side */} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
}

// fallbackTunnels are the devices tunnel drivers built into a kernel create
// in every network namespace (net.core.fb_tunnels_only_for_init_net 0).
var fallbackTunnels = map[string]bool{"sit0": true, "tunl0": true, "ip6tnl0": true, "ip6gre0": true, "gre0": true,
	"gretap0": true, "erspan0": true, "ip_vti0": true, "ip6_vti0": true}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
