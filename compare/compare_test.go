package compare

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"kvmlab/guest/probe"
)

func fakeCompare(withRunc bool) *Report {
	host := &probe.Report{KernelRelease: "6.1.0-host", BootID: "aaaa-host", Processes: 90, PID1: "systemd", Mounts: 40, Interfaces: []string{"eth0", "lo"}, Modules: 120, DmesgReadable: true, DmesgLines: 800}
	vm := &probe.Report{KernelRelease: "6.1.0-kvmlab", BootID: "bbbb-guest", UptimeSec: 2.5, Hypervisor: true, CPUs: 1, MemTotalKB: 240 << 10,
		Processes: 3, PID1: "init", Mounts: 5, Interfaces: []string{"lo"}, Modules: -1, Devices: 20, DmesgReadable: true, DmesgLines: 90}
	ct := &probe.Report{KernelRelease: "6.1.0-host", BootID: "aaaa-host", UptimeSec: 5000, Processes: 2, PID1: "init", Mounts: 8, Interfaces: []string{"lo"}, Modules: 120, Devices: 7}
	rep := &Report{Where: "test", HostProbe: host,
		VM: Side{Name: "VM (kvmlab)", Probe: vm, StartupMS: 3200, FootprintBytes: 90 << 20, ImageBytes: 30 << 20,
			BoundaryKind: "vm-exits", Boundary: 5000, BoundaryUser: 700, Blast: "guest kernel panicked", HostSurvived: true},
		Container: Side{Name: "container (kvmlab)", Probe: ct, StartupMS: 60, FootprintBytes: 12 << 20, ImageBytes: 20 << 20,
			BoundaryKind: "syscalls", Boundary: 4200, BoundaryDetail: map[string]uint64{"write": 100, "read": 300},
			Blast: "refused: read-only file system", HostSurvived: true},
	}
	if withRunc {
		r := Side{Name: "container (runc)", Probe: ct, StartupMS: 120, ImageBytes: 20 << 20}
		rep.Runc = &r
	}
	rep.Rows = rows(rep)
	return rep
}

func TestCompareRows(t *testing.T) {
	rep := fakeCompare(false)
	want := map[string][3]string{ // fact -> host, VM, container
		"kernel release": {"6.1.0-host", "6.1.0-kvmlab", "6.1.0-host"},
		"same kernel instance as the host (boot id)":   {"aaaa-hos…", "no", "yes"},
		"start -> probe running":                       {"", "3200 ms", "60 ms"},
		"memory used":                                  {"", "90.0 MiB", "12.0 MiB"},
		"processes visible (PID 1)":                    {"90 (systemd)", "3 (init)", "2 (init)"},
		"kernel modules loaded":                        {"120", "none (no module support)", "120"},
		"VM exits / system calls into the host kernel": {"", "5000 VM exits (700 to kvmlab)", "4200 system calls"},
		"sysrq c (crash the kernel)":                   {"", "guest kernel panicked", "refused: read-only file system"},
		"host kernel still up afterwards":              {"", "yes", "yes"},
	}
	seen := 0
	for _, r := range rep.Rows {
		w, ok := want[r.Fact]
		if !ok {
			continue
		}
		seen++
		if got := [3]string{r.Host, r.VM, r.Container}; got != w {
			t.Errorf("row %q = %q, want %q", r.Fact, got, w)
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of the %d expected rows", seen, len(want))
	}
}

func TestCompareFailedSide(t *testing.T) {
	rep := fakeCompare(false)
	rep.VM = Side{Name: "VM (kvmlab)", Error: "the probe did not report"}
	for _, r := range rows(rep) {
		if r.Fact == "kernel release" && r.VM != "failed (see below)" {
			t.Errorf("failed VM side shows %q", r.VM)
		}
	}
}

func TestCompareOutputs(t *testing.T) {
	rep := fakeCompare(true)
	var txt bytes.Buffer
	rep.Print(&txt)
	for _, want := range []string{"container (runc)", "6.1.0-kvmlab", "read 300, write 100", "-- VMs boot in minutes"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, txt.String())
		}
	}
	var html bytes.Buffer
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<table id="compare">`, "<th>container (runc)</th>", "<svg", "3200 ms", "6.1.0-kvmlab"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if strings.Contains(html.String(), "<script") || strings.Contains(html.String(), "http://") || strings.Contains(html.String(), "https://") {
		t.Error("the HTML report must be self-contained: no scripts, no external resources")
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rows) != len(rep.Rows) || back.VM.Probe.KernelRelease != "6.1.0-kvmlab" {
		t.Errorf("JSON round trip: %v, %d rows", err, len(back.Rows))
	}
}

// TestJSONProbe: the probe's line as a VM console delivers it, with the
// guest kernel's printk landing around it (seen in CI: a warning between
// the JSON and its newline).
func TestJSONProbe(t *testing.T) {
	const report = `{"hostname":"kvmlab","cpus":2}`
	tests := []struct {
		name, line string
		wantErr    bool
	}{
		{"clean", ProbeMarker + report, false},
		{"printk after the JSON", ProbeMarker + report + "[   54.630669] random: crng init done", false},
		{"printk before the marker", "[    3.1] clocksource: Switched " + ProbeMarker + report, false},
		{"no marker", report, true},
		{"cut JSON", ProbeMarker + `{"hostname":"kvm`, true},
		{"printk inside the JSON", ProbeMarker + `{"hostname":[ 1.0] x"kvmlab"}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r probe.Report
			err := jsonProbe(tc.line, &r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("jsonProbe(%q) error %v, want error %v", tc.line, err, tc.wantErr)
			}
			if err == nil && (r.Hostname != "kvmlab" || r.CPUs != 2) {
				t.Fatalf("jsonProbe(%q) = %+v, want hostname kvmlab and 2 CPUs", tc.line, r)
			}
		})
	}
}
