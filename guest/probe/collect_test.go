package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary stand in for the probe when the workload
// starts its children: they run /proc/self/exe, which here is this binary,
// with NoopArg.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == NoopArg {
		os.Exit(0)
	}
	if os.Getenv(asMainEnv) == "1" {
		// The probe command itself, for tests that must signal it.
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// tree is a fake root: file contents by path; a path ending in "/" is an
// empty directory.
type tree map[string]string

func (tr tree) write(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range tr {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// gone, as a change in tree.with, removes the path.
const gone = "\x00gone"

// with returns a copy of tr with changes applied.
func (tr tree) with(changes tree) tree {
	out := tree{}
	for p, c := range tr {
		out[p] = c
	}
	for p, c := range changes {
		if c == gone {
			delete(out, p)
			continue
		}
		out[p] = c
	}
	return out
}

const (
	cpuinfoVM = `processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC Processor
flags		: fpu vme de pse tsc msr pae hypervisor lahf_lm
bogomips	: 4000.00

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC Processor
flags		: fpu vme de pse tsc msr pae hypervisor lahf_lm

`
	cpuinfoHost = `processor	: 0
model name	: Intel(R) Xeon(R) CPU @ 2.20GHz
flags		: fpu vme de pse tsc msr pae vmx
processor	: 1
model name	: Intel(R) Xeon(R) CPU @ 2.20GHz
flags		: fpu vme de pse tsc msr pae vmx
processor	: 2
model name	: Intel(R) Xeon(R) CPU @ 2.20GHz
flags		: fpu vme de pse tsc msr pae vmx
processor	: 3
model name	: Intel(R) Xeon(R) CPU @ 2.20GHz
flags		: fpu vme de pse tsc msr pae vmx
`
	mountinfo = `1 1 0:2 / / rw - rootfs rootfs rw
15 1 0:4 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
16 1 0:5 / /dev rw,nosuid master:2 - devtmpfs devtmpfs rw,size=118888k
17 1 0:6 / /my\040dir rw - tmpfs tmpfs rw
`
)

// vmTree looks like the kvmlab guest: its own kernel, no modules file.
var vmTree = tree{
	"proc/uptime":                    "2.51 1.90\n",
	"proc/sys/kernel/random/boot_id": "0f6d3c36-3c3a-4c5e-9a0e-6a4b3f0f1e11\n",
	"proc/cpuinfo":                   cpuinfoVM,
	"proc/meminfo":                   "MemTotal:         245760 kB\nMemFree:          200000 kB\n",
	"proc/1/comm":                    "init\n",
	"proc/2/comm":                    "kthreadd\n",
	"proc/57/comm":                   "uinit\n",
	"proc/self/mountinfo":            mountinfo,
	"proc/self/cgroup":               "0::/\n",
	"proc/sysrq-trigger":             "",
	"proc/self/":                     "",
	"proc/sys/":                      "",
	"sys/class/net/lo/":              "",
	"dev/console":                    "",
	"dev/null":                       "",
	"dev/ttyS0":                      "",
	"dev/pts/":                       "",
}

// hostTree looks like a host seen from a container-less process.
var hostTree = tree{
	"proc/uptime":                    "86400.00 300000.00\n",
	"proc/sys/kernel/random/boot_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n",
	"proc/cpuinfo":                   cpuinfoHost,
	"proc/meminfo":                   "MemTotal:       16384000 kB\n",
	"proc/1/comm":                    "systemd\n",
	"proc/300/comm":                  "sshd\n",
	"proc/4000/comm":                 "bash\n",
	"proc/self/mountinfo":            mountinfo,
	"proc/self/cgroup":               "0::/user.slice/user-1000.slice/session-2.scope\n",
	"proc/modules":                   "kvm_amd 155648 0 - Live 0x0000000000000000\nkvm 1064960 1 kvm_amd, Live 0x0000000000000000\nccp 110592 1 kvm_amd, Live 0x0000000000000000\n",
	"proc/sysrq-trigger":             "",
	"sys/class/net/lo/":              "",
	"sys/class/net/eth0/":            "",
	"dev/null":                       "",
	"dev/zero":                       "",
}

// fakeSys answers the probe's system calls with fixed values.
type fakeSys struct {
	release, version, node string
	cpus                   int // in the affinity mask; 0: sched_getaffinity fails
	klog                   string
	klogErr                error // from syslog(2)
}

func (f fakeSys) syscalls() *Syscalls {
	return &Syscalls{
		Uname: func(u *unix.Utsname) error {
			copy(u.Release[:], f.release)
			copy(u.Version[:], f.version)
			copy(u.Nodename[:], f.node)
			return nil
		},
		Klogctl: func(typ int, buf []byte) (int, error) {
			if f.klogErr != nil {
				return 0, f.klogErr
			}
			switch typ {
			case unix.SYSLOG_ACTION_SIZE_BUFFER:
				return 1 << 17, nil
			case unix.SYSLOG_ACTION_READ_ALL:
				return copy(buf, f.klog), nil
			}
			return 0, unix.EINVAL
		},
		SchedGetaffinity: func(pid int, set *unix.CPUSet) error {
			if f.cpus == 0 {
				return unix.ENOSYS
			}
			set.Zero()
			for i := range f.cpus {
				set.Set(i)
			}
			return nil
		},
		ClockGettime: func(clockid int32, ts *unix.Timespec) error {
			if clockid != unix.CLOCK_MONOTONIC {
				return unix.EINVAL
			}
			*ts = unix.Timespec{Sec: 2, Nsec: 5}
			return nil
		},
	}
}

var (
	vmSys   = fakeSys{release: "6.1.0-kvmlab", version: "#1 SMP PREEMPT_DYNAMIC", node: "(none)", cpus: 2, klog: "[    0.000000] Linux version 6.1.0\n[    0.1] two\n[    0.2] three"}
	hostSys = fakeSys{release: "6.8.0-host", version: "#40-Ubuntu SMP", node: "host", cpus: 3, klogErr: unix.EPERM}
)

var wantMounts = []string{"/ rootfs", "/dev devtmpfs", "/my\\040dir tmpfs", "/proc proc"}

func TestCollect(t *testing.T) {
	vm := Report{
		Hostname: "(none)", KernelRelease: "6.1.0-kvmlab", KernelVersion: "#1 SMP PREEMPT_DYNAMIC",
		UptimeSec: 2.51, BootID: "0f6d3c36-3c3a-4c5e-9a0e-6a4b3f0f1e11", MonotonicNS: 2_000_000_005,
		CPUModel: "AMD EPYC Processor", CPUs: 2, Hypervisor: true, MemTotalKB: 245760,
		PID1: "init", PID: os.Getpid(), Processes: 3, ProcessList: []string{"init", "kthreadd", "uinit"},
		Mounts: 4, MountList: wantMounts, Interfaces: []string{"lo"}, Modules: -1, Devices: 4, Cgroup: "0::/",
		DmesgReadable: true, DmesgLines: 3, SysrqWritable: true,
	}
	host := Report{
		Hostname: "host", KernelRelease: "6.8.0-host", KernelVersion: "#40-Ubuntu SMP",
		UptimeSec: 86400, BootID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", MonotonicNS: 2_000_000_005,
		CPUModel: "Intel(R) Xeon(R) CPU @ 2.20GHz", CPUs: 3, MemTotalKB: 16384000,
		PID1: "systemd", PID: os.Getpid(), Processes: 3, ProcessList: []string{"bash", "sshd", "systemd"},
		Mounts: 4, MountList: wantMounts, Interfaces: []string{"eth0", "lo"}, Modules: 3, Devices: 2,
		Cgroup:        "0::/user.slice/user-1000.slice/session-2.scope",
		SysrqWritable: true, // EPERM from syslog(2): not readable, and no error
	}
	edit := func(r Report, fn func(*Report)) Report { fn(&r); return r }

	tests := []struct {
		name     string
		tree     tree
		sys      fakeSys
		want     Report
		wantErrs []string // each must match one error, in order, by substring
	}{
		{name: "vm", tree: vmTree, sys: vmSys, want: vm},
		{name: "host", tree: hostTree, sys: hostSys, want: host},
		{name: "no hypervisor bit", tree: vmTree.with(tree{"proc/cpuinfo": cpuinfoHost}), sys: vmSys,
			want: edit(vm, func(r *Report) { r.Hypervisor = false; r.CPUModel = host.CPUModel })},
		{name: "affinity fails: cpuinfo's processors", tree: hostTree, sys: fakeSys{release: "6.8.0-host", version: "#40-Ubuntu SMP", node: "host", klogErr: unix.EPERM},
			want: edit(host, func(r *Report) { r.CPUs = 4 })},
		{name: "affinity and cpuinfo both fail", tree: hostTree.with(tree{"proc/cpuinfo": gone}),
			sys:      fakeSys{release: "6.8.0-host", version: "#40-Ubuntu SMP", node: "host", klogErr: unix.EPERM},
			want:     edit(host, func(r *Report) { r.CPUs = 0; r.CPUModel = "" }),
			wantErrs: []string{"cpuinfo: open ", "cpus: sched_getaffinity: function not implemented, and /proc/cpuinfo lists no processor"}},
		{name: "missing uptime", tree: vmTree.with(tree{"proc/uptime": gone}), sys: vmSys,
			want: edit(vm, func(r *Report) { r.UptimeSec = 0 }), wantErrs: []string{"uptime: open "}},
		{name: "uptime not a number", tree: vmTree.with(tree{"proc/uptime": "NaN 1\n"}), sys: vmSys,
			want: edit(vm, func(r *Report) { r.UptimeSec = 0 }), wantErrs: []string{`uptime: "NaN" is not a time since boot`}},
		{name: "missing boot id and pid 1", tree: vmTree.with(tree{"proc/sys/kernel/random/boot_id": gone, "proc/1/comm": gone, "proc/1/": ""}), sys: vmSys,
			want: edit(vm, func(r *Report) {
				r.BootID, r.PID1 = "", ""
				r.Processes = 3 // /proc/1 is still there, only its comm is gone
				r.ProcessList = []string{"kthreadd", "uinit"}
			}),
			wantErrs: []string{"boot id: open ", "pid 1: open "}},
		{name: "unreadable modules file", tree: hostTree.with(tree{"proc/modules": gone, "proc/modules/": ""}), sys: hostSys,
			want: edit(host, func(r *Report) { r.Modules = -1 }), wantErrs: []string{"modules: "}},
		{name: "no meminfo, mountinfo, cgroup, net, dev, sysrq",
			tree: vmTree.with(tree{"proc/meminfo": gone, "proc/self/mountinfo": gone, "proc/self/cgroup": gone, "sys/class/net/lo/": gone,
				"dev/console": gone, "dev/null": gone, "dev/ttyS0": gone, "dev/pts/": gone, "proc/sysrq-trigger": gone}),
			sys: vmSys,
			want: edit(vm, func(r *Report) {
				r.MemTotalKB, r.Mounts, r.MountList, r.Cgroup, r.Interfaces, r.Devices, r.SysrqWritable = 0, 0, nil, "", nil, 0, false
			}),
			wantErrs: []string{"meminfo: open ", "mounts: open ", "interfaces: open ", "devices: open ", "cgroup: open "}},
		{name: "meminfo without MemTotal", tree: vmTree.with(tree{"proc/meminfo": "MemFree: 1 kB\n"}), sys: vmSys,
			want: edit(vm, func(r *Report) { r.MemTotalKB = 0 }), wantErrs: []string{"proc/meminfo: no MemTotal line"}},
		{name: "malformed mountinfo line", tree: vmTree.with(tree{"proc/self/mountinfo": mountinfo + "garbage line\n"}), sys: vmSys,
			want: edit(vm, func(r *Report) { r.Mounts = 5 }), wantErrs: []string{"mountinfo: 1 of 5 lines malformed"}},
		{name: "sysrq-trigger not a file", tree: vmTree.with(tree{"proc/sysrq-trigger": gone, "proc/sysrq-trigger/": ""}), sys: vmSys,
			want: edit(vm, func(r *Report) { r.SysrqWritable = false }), wantErrs: []string{"sysrq: open "}},
		{name: "syslog fails otherwise", tree: vmTree, sys: func() fakeSys { s := vmSys; s.klogErr = unix.ENOSYS; return s }(),
			want: edit(vm, func(r *Report) { r.DmesgReadable, r.DmesgLines = false, 0 }), wantErrs: []string{"dmesg: function not implemented"}},
		{name: "empty root", tree: tree{}, sys: vmSys,
			want: Report{Hostname: "(none)", KernelRelease: "6.1.0-kvmlab", KernelVersion: "#1 SMP PREEMPT_DYNAMIC", MonotonicNS: 2_000_000_005,
				CPUs: 2, PID: os.Getpid(), Modules: -1, DmesgReadable: true, DmesgLines: 3},
			wantErrs: []string{"uptime", "boot id", "cpuinfo", "meminfo", "processes", "mounts", "interfaces", "devices", "cgroup"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Collect(Options{Root: tt.tree.write(t), Sys: tt.sys.syscalls()})
			errs := got.Errors
			got.Errors = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Collect:\n got %+v\nwant %+v", got, tt.want)
			}
			checkErrors(t, errs, tt.wantErrs)
		})
	}
}

// checkErrors wants one error per entry of want, in order, each containing
// its entry.
func checkErrors(t *testing.T, errs, want []string) {
	t.Helper()
	if len(errs) != len(want) {
		t.Errorf("errors %q: want %d, matching %q", errs, len(want), want)
		return
	}
	for i, e := range errs {
		if !strings.HasPrefix(e, want[i]) && !strings.Contains(e, want[i]) {
			t.Errorf("error %q: want one containing %q", e, want[i])
		}
	}
}

func TestCollectCaps(t *testing.T) {
	tr := vmTree.with(nil)
	for i := range 100 {
		tr[fmt.Sprintf("proc/%d/comm", 1000+i)] = fmt.Sprintf("p%03d\n", 99-i)
	}
	for i := range 70 {
		tr[fmt.Sprintf("sys/class/net/veth%02d/", i)] = ""
	}
	var mi strings.Builder
	for i := range 80 {
		fmt.Fprintf(&mi, "%d 1 0:%d / /m%02d rw - tmpfs tmpfs rw\n", 100+i, 100+i, 79-i)
	}
	tr["proc/self/mountinfo"] = mi.String()
	got := Collect(Options{Root: tr.write(t), Sys: vmSys.syscalls()})
	if len(got.Errors) != 0 {
		t.Errorf("errors: %q", got.Errors)
	}
	if got.Processes != 103 || len(got.ProcessList) != maxList || got.ProcessList[0] != "init" || got.ProcessList[63] != "p061" {
		t.Errorf("processes %d, list %d: %q", got.Processes, len(got.ProcessList), got.ProcessList)
	}
	if len(got.Interfaces) != maxList || got.Interfaces[0] != "lo" || got.Interfaces[63] != "veth62" {
		t.Errorf("interfaces %d: %q", len(got.Interfaces), got.Interfaces)
	}
	if got.Mounts != 80 || len(got.MountList) != maxList || got.MountList[0] != "/m00 tmpfs" || got.MountList[63] != "/m63 tmpfs" {
		t.Errorf("mounts %d, list %d: %q", got.Mounts, len(got.MountList), got.MountList)
	}
}

// TestCollectClips: strings from files are bounded and valid UTF-8.
func TestCollectClips(t *testing.T) {
	long := strings.Repeat("é", 300) // 600 bytes
	tr := vmTree.with(tree{"proc/1/comm": long, "proc/sys/kernel/random/boot_id": "\xff\xfeid"})
	got := Collect(Options{Root: tr.write(t), Sys: vmSys.syscalls()})
	if len(got.PID1) > maxString || got.PID1 != strings.Repeat("é", maxString/2) {
		t.Errorf("pid1 %d bytes: %q", len(got.PID1), got.PID1)
	}
	if got.BootID != "\uFFFDid" {
		t.Errorf("boot id %q", got.BootID)
	}
}

// TestCollectHere runs the probe on this machine: no fact may be missing
// on a Linux host with /proc and /sys mounted.
func TestCollectHere(t *testing.T) {
	got := Collect(Options{})
	for _, e := range got.Errors {
		t.Errorf("error: %s", e)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if got.KernelRelease != unix.ByteSliceToString(u.Release[:]) {
		t.Errorf("kernel release %q", got.KernelRelease)
	}
	if got.PID != os.Getpid() || got.CPUs < 1 || got.MemTotalKB == 0 || got.UptimeSec <= 0 || got.MonotonicNS <= 0 ||
		got.BootID == "" || got.PID1 == "" || got.Processes < 1 || got.Mounts < 1 || len(got.Interfaces) < 1 || got.Devices < 1 {
		t.Errorf("implausible: %+v", got)
	}
	if got.Workload != (WorkloadResult{}) {
		t.Errorf("workload ran without being asked: %+v", got.Workload)
	}
}

func TestCollectSysrqNeverWrites(t *testing.T) {
	root := vmTree.write(t)
	p := filepath.Join(root, "proc", "sysrq-trigger")
	if err := os.WriteFile(p, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := Collect(Options{Root: root, Sys: vmSys.syscalls()})
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "untouched" || !got.SysrqWritable {
		t.Errorf("sysrq-trigger now %q (%v), writable %v", b, err, got.SysrqWritable)
	}
}

func TestCollectSysrqFIFO(t *testing.T) {
	// A FIFO with no reader: opening it to write must not wait.
	root := vmTree.with(tree{"proc/sysrq-trigger": gone}).write(t)
	if err := unix.Mkfifo(filepath.Join(root, "proc", "sysrq-trigger"), 0o600); err != nil {
		t.Skip(err)
	}
	got := Collect(Options{Root: root, Sys: vmSys.syscalls()})
	if got.SysrqWritable || len(got.Errors) != 1 || !strings.HasPrefix(got.Errors[0], "sysrq: ") || !strings.Contains(got.Errors[0], unix.ENXIO.Error()) {
		t.Errorf("writable %v, errors %q", got.SysrqWritable, got.Errors)
	}
}
