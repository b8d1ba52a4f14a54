package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCompare runs `kvmlab compare --json` end to end: the guest booted as a
// VM and its root file system as a container (and under runc when it is
// installed), the same probe in both, on this host's kernel and KVM (the
// emulated host's in CI). Each row of the report is checked against what
// must hold: the VM's own kernel and boot id, the container's shared ones,
// the PID and network namespaces, the counted boundary crossings, and a
// guest kernel panic that leaves the host up while the container cannot
// even open the sysrq trigger.
func TestCompare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kvmlab compare needs root (the container side): run the tests as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmlabBin(t), "compare", "--json", "--kernel", guestFile(t, "bzImage"),
		"--initrd", guestFile(t, "initramfs.cpio"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kvmlab compare: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	var rep struct {
		Rows []struct{ Fact, Host, VM, Container, Runc, Restored string }
		VM   struct {
			BoundaryKind string `json:"boundary_kind"`
			Boundary     uint64
			Error        string
		}
		Container struct {
			BoundaryKind   string            `json:"boundary_kind"`
			Boundary       uint64            `json:"boundary"`
			BoundaryDetail map[string]uint64 `json:"boundary_detail"`
			Error          string
		}
		Runc     *struct{ Error string }
		Restored *struct {
			Error      string
			StartupMS  float64 `json:"startup_ms"`
			ImageBytes uint64  `json:"image_bytes"`
		}
		SnapshotNote string `json:"snapshot_note"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("compare --json: %v\n%s", err, stdout.String())
	}
	t.Logf("kvmlab compare stderr:\n%s", stderr.String())
	if rep.VM.Error != "" || rep.Container.Error != "" {
		t.Fatalf("a side failed: VM %q, container %q", rep.VM.Error, rep.Container.Error)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	hostRelease := unix.ByteSliceToString(uts.Release[:])
	row := map[string][3]string{}
	for _, r := range rep.Rows {
		row[r.Fact] = [3]string{r.Host, r.VM, r.Container}
		t.Logf("%-45s | %-20s | %-40s | %-40s | %-40s | %s", r.Fact, r.Host, r.VM, r.Container, r.Runc, r.Restored)
	}
	check := func(fact string, ok func(host, vm, ctr string) bool, why string) {
		t.Helper()
		r, found := row[fact]
		if !found {
			t.Errorf("no row %q", fact)
			return
		}
		if !ok(r[0], r[1], r[2]) {
			t.Errorf("row %q: host %q, VM %q, container %q: want %s", fact, r[0], r[1], r[2], why)
		}
	}
	check("kernel release", func(h, vm, c string) bool {
		return h == hostRelease && c == hostRelease && vm != "" && vm != hostRelease
	},
		"the container on the host's kernel ("+hostRelease+"), the VM on its own")
	check("same kernel instance as the host (boot id)", func(h, vm, c string) bool { return vm == "no" && c == "yes" },
		"the VM's boot id differs, the container's is the host's")
	check("CPUID hypervisor bit / CPUs / memory", func(h, vm, c string) bool { return strings.HasPrefix(vm, "yes / 1 / ") },
		"the VM sees the hypervisor bit and its 1 vCPU")
	check("start -> probe running", func(h, vm, c string) bool { return strings.HasSuffix(vm, " ms") && strings.HasSuffix(c, " ms") },
		"both measured in ms")
	check("processes visible (PID 1)", func(h, vm, c string) bool { return strings.HasPrefix(c, "2 (") && !strings.HasPrefix(vm, "2 (") },
		"the container sees only its init and the probe")
	check("network interfaces", func(h, vm, c string) bool { return c == "lo" }, "only lo in the container's network namespace")
	check("kernel modules loaded", func(h, vm, c string) bool { return vm == "none (no module support)" && c == h },
		"the VM's kernel has no modules; the container lists the host's")
	check("VM exits / system calls into the host kernel", func(h, vm, c string) bool {
		return strings.Contains(vm, "VM exits") && strings.HasSuffix(c, "system calls")
	}, "VM exits for the VM, system calls for the container")
	check("sysrq c (crash the kernel)", func(h, vm, c string) bool {
		return strings.Contains(vm, "Kernel panic") && strings.HasPrefix(c, "refused:") && strings.Contains(c, "read-only")
	}, "a guest kernel panic in the VM; a read-only refusal in the container")
	check("host kernel still up afterwards", func(h, vm, c string) bool { return vm == "yes" && c == "yes" }, "the host unharmed")
	if rep.VM.BoundaryKind != "vm-exits" || rep.VM.Boundary == 0 {
		t.Errorf("VM boundary %q %d, want VM exits > 0", rep.VM.BoundaryKind, rep.VM.Boundary)
	}
	if rep.Container.Boundary == 0 || rep.Container.BoundaryDetail["execve"] == 0 {
		t.Errorf("container system calls %d (execve %d), want > 0 with the probe's execve counted",
			rep.Container.Boundary, rep.Container.BoundaryDetail["execve"])
	}
	// The VM restored from a snapshot taken at its shell runs the same
	// guest kernel as the VM column, and its snapshot is on disk.
	if r := rep.Restored; r == nil || r.Error != "" || r.StartupMS <= 0 || r.ImageBytes == 0 {
		t.Errorf("the restored VM's column is missing or failed: %+v", r)
	} else {
		t.Logf("%s; restored start -> probe %.0f ms", rep.SnapshotNote, r.StartupMS)
		for _, x := range rep.Rows {
			switch {
			case x.Fact == "kernel release" && x.Restored != x.VM:
				t.Errorf("restored VM kernel release %q, want the VM's %q", x.Restored, x.VM)
			case x.Fact == "same kernel instance as the host (boot id)" && x.Restored != "no":
				t.Errorf("restored VM shares the host's kernel instance: %q", x.Restored)
			}
		}
	}
	if _, err := exec.LookPath("runc"); err == nil {
		if rep.Runc == nil || rep.Runc.Error != "" {
			t.Errorf("runc is installed but its column is missing or failed: %+v", rep.Runc)
		} else {
			for _, x := range rep.Rows {
				if x.Fact == "kernel release" && x.Runc != hostRelease {
					t.Errorf("runc column kernel release %q, want the host's %q", x.Runc, hostRelease)
				}
			}
		}
	}
}
