package tests

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kvmlab/emuhost"
	"kvmlab/vmm"
)

const inHostEnv = "KVMLAB_IN_EMULATED_HOST"

// emulatedCPUEnv names the CPU vendor of the emulated host the tests run in:
// "amd" (QEMU, SVM) or "intel" (Bochs, VT-x). The runner sets it for the
// inner run; set to intel outside, it sends a -run selection to the Intel
// host instead of the AMD one.
const emulatedCPUEnv = "KVMLAB_EMULATED_CPU"

// emulatedCPU is the vendor of the emulated host this inner run is in, or ""
// on a real /dev/kvm (where the vendor is the machine's own).
func emulatedCPU() string {
	if os.Getenv(inHostEnv) != "1" {
		return ""
	}
	return os.Getenv(emulatedCPUEnv)
}

func TestMain(m *testing.M) {
	if os.Getenv(standInEnv) == "1" {
		// A stand-in process for TestStallReport: the emulated host
		// has no sleep(1). Unlike kvmlab run it takes no snapshots, but
		// it must survive being asked for them.
		signal.Ignore(syscall.SIGUSR1)
		fmt.Println(standInReady) // TestStallReport waits for this line
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	flag.Parse()
	if os.Getenv(inHostEnv) == "1" {
		os.Exit(m.Run())
	}
	if ok, why := emuhost.KVMUsable(); ok {
		fmt.Println("tests: /dev/kvm is usable: running guests directly")
		if os.Getenv("KVMLAB_DEBIAN_KERNEL") == "" {
			os.Setenv("KVMLAB_DEBIAN_KERNEL", distroKernel())
		}
		os.Exit(m.Run())
	} else {
		fmt.Printf("tests: %s: running the integration tests inside the emulated host\n", why)
	}
	// The tests run in the emulated host; this process then runs only
	// TestEmulatedHostSuite, which passes or fails with them, so that
	// `go test` reports their outcome as a test of its own.
	delegated, innerStatus = true, runInEmulatedHost()
	_ = flag.Set("test.run", "^TestEmulatedHostSuite$")
	_ = flag.Set("test.skip", "")
	_ = flag.Set("test.bench", "")
	os.Exit(m.Run())
}

var (
	delegated   bool
	innerStatus int
)

// TestEmulatedHostSuite stands for the tests that ran inside the emulated
// host: it fails when any of them failed.
func TestEmulatedHostSuite(t *testing.T) {
	if !delegated {
		t.Skip("the integration tests ran directly in this process")
	}
	if innerStatus != 0 {
		t.Fatalf("the integration tests inside the emulated host failed (exit status %d); their output is above", innerStatus)
	}
}

// runInEmulatedHost copies this test binary, kvmlab and the guest artifacts
// into the emulated host and runs the tests there.
func runInEmulatedHost() int {
	bin, guest := os.Getenv("KVMLAB_BIN"), os.Getenv("KVMLAB_GUEST_DIR")
	if bin == "" || guest == "" {
		fmt.Fprintln(os.Stderr, "tests: KVMLAB_BIN and KVMLAB_GUEST_DIR must be set: run 'make integration'")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	hk, err := emuhost.HostKernel(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tests: emulated host kernel: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tests: %v\n", err)
		return 1
	}
	if decompressed, err = warmDecompressed(filepath.Join(guest, "bzImage"), hk.Vmlinuz); err != nil {
		fmt.Fprintf(os.Stderr, "tests: %v\n", err)
		return 1
	}
	base := []string{"/kvmlab/tests.test", "-test.v", "-test.timeout=50m"}
	userSelected := false
	for _, name := range []string{"test.run", "test.skip", "test.count", "test.short", "test.bench", "test.benchtime", "test.benchmem"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != f.DefValue {
			base = append(base, "-"+name+"="+f.Value.String())
			if name == "test.run" || name == "test.skip" || name == "test.bench" {
				userSelected = true
			}
		}
	}
	group := func(g string) hostRun {
		return hostRun{args: append(append([]string{}, base...), "-test.run=^("+g+")$")}
	}
	if userSelected {
		// The selection runs in one emulated host: the AMD one, or the
		// Intel one when KVMLAB_EMULATED_CPU=intel.
		emu, err := emuhost.EmulatorFor(cmp.Or(os.Getenv(emulatedCPUEnv), "amd"))
		if err != nil {
			fmt.Fprintf(os.Stderr, "tests: %s: %v\n", emulatedCPUEnv, err)
			return 1
		}
		s := series{emu: emu, runs: []hostRun{{args: base}}, out: os.Stdout}
		return s.run(ctx, hk, self, bin, guest, base)
	}
	// Several shorter emulated-host runs instead of one long one: when
	// the emulated host itself fails (it is QEMU or Bochs emulating a CPU
	// in software, and nested KVM stresses it), only that group is
	// retried.
	amd := series{emu: emuhost.QEMUSVM, out: os.Stdout}
	var all []string
	for _, g := range testGroups {
		amd.runs = append(amd.runs, group(g))
		all = append(all, g)
	}
	amd.runs = append(amd.runs, hostRun{args: append(append([]string{}, base...), "-test.skip=^("+strings.Join(all, "|")+"|TestEmulatedHostSuite)$")})
	// The Intel groups run beside the AMD ones: Bochs is one thread and
	// QEMU's two vCPUs mostly take turns, so the two fill the two cores
	// of a CI runner. Whichever series runs out of groups first frees its
	// core for the other: a second emulated host of the other kind then
	// takes that series' groups not yet started. The lines of the Intel
	// hosts start with "intel| " and "intel2| ", those of a second AMD
	// host with "amd2| ".
	amdIdle, intelIdle := make(chan struct{}), make(chan struct{})
	amd.idle, amd.second = amdIdle, intelIdle
	amd.out2 = &prefixWriter{prefix: "amd2| ", w: os.Stdout}
	intel := series{emu: emuhost.BochsVMX, out: &prefixWriter{prefix: "intel| ", w: os.Stdout},
		second: amdIdle, idle: intelIdle, out2: &prefixWriter{prefix: "intel2| ", w: os.Stdout}}
	for _, g := range intelGroups {
		r := group(g.tests)
		r.hostAppend, r.proof = g.hostAppend, g.proof
		intel.runs = append(intel.runs, r)
	}
	intelDone := make(chan int, 1)
	go func() { intelDone <- intel.run(ctx, hk, self, bin, guest, base) }()
	worst := amd.run(ctx, hk, self, bin, guest, base)
	if code := <-intelDone; code != 0 {
		fmt.Printf("tests: the VT-x group(s) in the emulated Intel host failed (exit status %d); their output is above, each line starting \"intel| \" or \"intel2| \"\n", code)
		worst = code
	}
	return worst
}

// series is a list of emulated-host runs made one after the other in hosts
// of one kind, with their reruns.
type series struct {
	emu  emuhost.Emulator
	runs []hostRun
	out  io.Writer
	// second, when not nil, starts a second worker once it is closed,
	// writing to out2: the two then share the runs not yet started.
	second <-chan struct{}
	out2   io.Writer
	// idle, when not nil, is closed once the first worker finds no run
	// left to start: its emulated host is gone and its core is free.
	idle chan<- struct{}
}

// hostRun is one emulated-host run: the test binary's arguments, words for
// the host kernel's command line, and a line its console must show then.
type hostRun struct {
	args              []string
	hostAppend, proof string
}

// run makes the runs and returns the worst exit status.
func (s series) run(ctx context.Context, hk *emuhost.Kernel, self, bin, guest string, base []string) int {
	return shareRuns(ctx, len(s.runs), s.second, s.idle, func(i, worker int) int {
		out := s.out
		if worker == 2 {
			out = s.out2
		}
		return s.runOne(ctx, i, out, hk, self, bin, guest, base)
	})
}

// shareRuns calls do for runs 0 to n-1 in order, at most two at a time: a
// first worker starts at once, a second once second is closed (never when
// it is nil, and not at all once every run has started), and each takes
// the next run not yet started. When the first worker finds no run left it
// closes idle (if not nil). It returns the worst (last non-zero) status do
// returned.
func shareRuns(ctx context.Context, n int, second <-chan struct{}, idle chan<- struct{}, do func(i, worker int) int) int {
	var mu sync.Mutex
	next, worst := 0, 0
	allTaken := make(chan struct{})
	var takenOnce sync.Once
	work := func(worker int) {
		for {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			if i >= n {
				takenOnce.Do(func() { close(allTaken) })
				return
			}
			if code := do(i, worker); code != 0 {
				mu.Lock()
				worst = code
				mu.Unlock()
			}
		}
	}
	var wg sync.WaitGroup
	if second != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-second:
				work(2)
			case <-allTaken:
			case <-ctx.Done():
			}
		}()
	}
	work(1)
	if idle != nil {
		close(idle)
	}
	wg.Wait()
	return worst
}

// runOne makes run i, with its reruns, writing to out, and returns its exit
// status.
func (s series) runOne(ctx context.Context, i int, out io.Writer, hk *emuhost.Kernel, self, bin, guest string, base []string) int {
	r := s.runs[i]
	args := r.args
	host := ""
	if r.hostAppend != "" {
		host = " (host: " + r.hostAppend + ")"
	}
	fmt.Fprintf(out, "tests: emulated-host run %d of %d (%s, %s%s): %s\n", i+1, len(s.runs), s.emu, s.emu.Vendor(), host, strings.Join(args[1:], " "))
	code, console := runOnce(ctx, s.emu, r.hostAppend, out, hk, self, bin, guest, args)
	for rerun := 1; rerun <= maxReruns; rerun++ {
		failed := emulatorFault(console)
		if code == 0 || len(failed) == 0 {
			break
		}
		// See emulatorFault: rerun just those tests in a fresh
		// emulated host, and say so loudly.
		fmt.Fprintf(out, "tests: RERUN %d of %d: %s failed after a guest triple fault, a guest stalled inside KVM or an oops of the emulated host's kernel (%s, a software CPU; see emulatorFault); running them again in a fresh emulated host\n",
			rerun, maxReruns, strings.Join(failed, ", "), s.emu)
		args := append(append([]string{}, base...), "-test.run=^("+strings.Join(failed, "|")+")$")
		code, console = runOnce(ctx, s.emu, r.hostAppend, out, hk, self, bin, guest, args)
	}
	if r.proof != "" && code == 0 && !strings.Contains(console, r.proof) {
		// The tests passed, but not in the host they were meant
		// for: the command line did not take.
		fmt.Fprintf(out, "tests: the host's console lacks %q: %s did not take effect\n", r.proof, r.hostAppend)
		code = 1
	}
	return code
}

// prefixWriter writes each line with a prefix, so that two emulated hosts
// can share one output. Each line goes out in one write, as the other
// series' lines do (emuhost streams the console line by line), so lines
// interleave whole.
type prefixWriter struct {
	prefix  string
	w       io.Writer
	partial []byte
}

var outputMu sync.Mutex

func (p *prefixWriter) Write(b []byte) (int, error) {
	outputMu.Lock()
	defer outputMu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.partial[:i]); err != nil {
			return 0, err
		}
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

// maxReruns is how many fresh emulated hosts a group's failed tests get
// when every failure is the emulator's (emulatorFault). Once one nested
// guest has gone wrong, its emulated host tends to go on failing (in CI,
// two stalled guests in one host; here, a stalled guest and then the
// host's own kernel crashing), so the rerun is always in a fresh one; two
// cover the rare case of two bad hosts in a row.
const maxReruns = 2

var (
	failLine   = regexp.MustCompile(`(?m)^--- FAIL: (Test\w+)`)
	tripleLine = "triple fault (KVM_EXIT_SHUTDOWN)"
	// hostOops matches the emulated host's own kernel reporting a bug
	// of its own on the console (lines start with its printk time).
	hostOops = regexp.MustCompile(`(?m)^\[\s*\d+\.\d+\] (BUG: |Oops: |general protection fault|kernel BUG at|stack guard page)`)
)

// emulatorFault returns the top-level tests that failed in an emulated-host
// run's output when the emulated machine, not the code under test, is to
// blame, and nil otherwise. Two signs count:
//
//   - the emulated host's kernel oopsed during the run (seen in CI: "BUG:
//     TASK stack guard page was hit" in exc_general_protection, in the
//     context of a kvmlab process): a user-space program cannot do that
//     to a kernel; after it every failure in that host is suspect;
//   - every failed test failed on a guest triple fault, or on a guest that
//     stopped dead inside KVM (stallReport: its console silent for a minute
//     or more while the test waited, and no exit reaching kvmlab between two
//     snapshots while its vCPU thread burned CPU; seen in CI mid-line in
//     early boot, for a u-root and a Debian guest in the same run, with the
//     vCPU's KVM_RUN not returning for four minutes).
//
// Why a rerun at all: nested virtualisation under QEMU's TCG occasionally
// corrupts a nested guest, and more often when the machine running QEMU is
// busy. In CI a u-root or Debian guest triple-faulted (early in boot, or
// minutes into a session) on code and inputs that were green several times
// before and after, and twice the emulated host's own kernel crashed. On
// SVM, KVM's shutdown intercept resets the vCPU, so no guest state survives
// to tell more. A failure with any other cause, a test that expects a triple
// fault (TestTinyGuestTripleFault), or a failure in the last rerun still
// fails the suite; on a real /dev/kvm nothing is rerun.
func emulatorFault(out string) []string {
	var failed []string
	for _, m := range failLine.FindAllStringSubmatch(out, -1) {
		failed = append(failed, m[1])
	}
	if len(failed) == 0 {
		return nil
	}
	if hostOops.MatchString(out) {
		return failed
	}
	for _, name := range failed {
		if name == "TestTinyGuestTripleFault" {
			return nil
		}
		// The test's own output runs from its RUN line to its FAIL line.
		start := strings.Index(out, "=== RUN   "+name+"\n")
		end := strings.Index(out, "--- FAIL: "+name+" ")
		if start < 0 || end < start || !(strings.Contains(out[start:end], tripleLine) || strings.Contains(out[start:end], stallInKVM)) {
			return nil
		}
	}
	return failed
}

// testGroups partitions the integration tests into emulated-host runs; tests
// not named here run in a final group of their own. Each group is a fresh
// emulated host of a minute or two: when QEMU's software SVM brings that
// host's kernel down (it does, now and then, under any QEMU tried), only
// that group is booted again, so small groups lose little.
var testGroups = []string{
	// Longest first (their times in a loaded CI run, in minutes): a
	// second emulated host that joins once the Intel series is done
	// (shareRuns) then picks up short groups at the end, and the two
	// finish close together.
	"TestBadInput|TestCheck|TestTinyGuestTripleFault|TestExitLoopGuests|TestSnapshot|TestDocsKVM", // 7: 15 doc blocks
	"TestLabVMOrContainer", // 6: a whole kvmlab compare
	"TestExec",             // 6: eight guests, one command each
	"TestCompareDensity|TestCompareWorkload|TestCompareNested",                     // 6
	"TestBootDefaultGuest|TestBootELF|TestBenchBoot",                               // 5
	"TestHostileGuest|TestHostileTinyGuests",                                       // 5
	"TestContainer|TestCompare|TestCompareInterrupted",                             // 5
	"TestLabs|TestLabFewerExits",                                                   // 4
	"TestBootDebianKernel|TestMem4G|TestBootFastPaths",                             // 4
	"TestSnapshotRestore|TestSnapshotDisk|TestSnapshotFileRefused|TestSnapshotNet", // 4
	"TestVirtioDisk|TestVirtioDiskSurvivesKill",                                    // 4
	"TestKVMExitTracepoint|TestStepScript|TestStepDebug|TestGDB",                   // 4
	"TestTraceAndStat|TestChromeTrace|TestStats",                                   // 3
	"TestRebootAndPanic|TestInteractiveTerminal|TestControl",                       // 3
	"TestVirtioNet|TestVirtioDebian|TestVirtioIOWorkload",                          // 2.5
}

// intelGroups run in the emulated Intel host (Bochs emulating VT-x, issue
// 13), beside the AMD groups, on every run: existing tests, so that the VT-x
// half of the VMM (KVM_SET_TSS_ADDR and the identity map, VMX exit reasons,
// single-step and breakpoints through VMX) is exercised by the same
// assertions as the SVM half, and vendor-aware where a test names hardware
// exit reasons (emulatedCPU). Bochs interprets every instruction on one
// thread: a guest boot in it takes tens of seconds of emulated time (two to
// three times that in wall time), a Debian kernel's over a minute, and each
// group's host two minutes to boot, so the groups stay few and small.
//
// The first group runs on kvm_intel's defaults (EPT, VPID, unrestricted
// guest), as on any recent Intel CPU.
//
// The second runs with kvm_intel.unrestricted_guest=0 and EPT on: real mode
// runs in vm86 mode on the TSS that KVM_SET_TSS_ADDR placed, and code with
// paging off runs on the identity map that KVM_SET_IDENTITY_MAP_ADDR placed
// (the only configuration that uses it), as a second vCPU's startup after
// INIT and SIPI does (TestBootDefaultGuest/2cpu). Debian's stock kernel
// runs there: its vCPU starts in long mode, so it takes the same VT-x paths
// as in the first group (EPT, the same exit reasons) while sharing this
// host's boot instead of adding one.
//
// The third runs with kvm_intel.ept=0: KVM on shadow page tables, and without
// unrestricted guest (which needs EPT), so real-mode code runs in vm86 mode
// on the TSS: the oldest VT-x path, and still the one on CPUs without EPT.
// Reboot and a guest panic (TestRebootAndPanic) run there, on shadow paging.
//
// The longest group comes first: it runs beside the AMD series, and the
// other two share the two cores once that is done (series.second).
//
// To run a group by hand, select its tests and put its hostAppend in
// KVMLAB_HOST_APPEND (emuhost.HostAppendEnv), e.g.
//
//	KVMLAB_EMULATED_CPU=intel KVMLAB_HOST_APPEND=kvm_intel.unrestricted_guest=0 \
//	  go test ./tests/ -run '^(TestBootDefaultGuest|TestBootDebianKernel)$'
//
// and look for the group's proof line in the output (a selection does not
// check it).
var intelGroups = []hostGroup{
	{tests: "TestCheck|TestTinyGuestTripleFault|TestExitLoopGuests|TestBootDefaultGuest|TestStats|TestKVMExitTracepoint|TestStepScript|TestStepDebug|TestVirtioDisk"},
	// The labs' guests in real mode, protected and long mode, and the
	// quiz's VT-x answers (lab 2), graded on VT-x.
	{tests: "TestLabs"},
	{tests: "TestBootDefaultGuest|TestBootDebianKernel|TestSnapshotRestore", hostAppend: "kvm_intel.unrestricted_guest=0", proof: "hostinit: module kvm_intel: unrestricted_guest=0"},
	{tests: "TestTinyGuestTripleFault|TestBootDefaultGuest|TestRebootAndPanic", hostAppend: "kvm_intel.ept=0", proof: "hostinit: module kvm_intel: ept=0"},
}

// hostGroup is a group of tests for one emulated host, and what is special
// about that host.
type hostGroup struct {
	tests string
	// hostAppend goes on the host kernel's command line
	// (emuhost.Spec.HostAppend); proof is a line of the host's console
	// that shows it took effect.
	hostAppend, proof string
}

// hostTools are host programs the tests run inside the emulated host, which
// has none of them: e2fsprogs to make and read ext4 images and iproute2 for
// the TAP and the network namespace (virtio tests), runc for the container
// comparison, GNU as and ld for the guests of labs 1 to 3 (TestLabs). They
// travel in with their libraries.
var hostTools = []string{"mkfs.ext4", "debugfs", "e2fsck", "ip", "runc", "as", "ld"}

// runOnce runs one emulated-host run and returns its exit status and the
// inner run's console output.
func runOnce(ctx context.Context, emu emuhost.Emulator, hostAppend string, stdout io.Writer, hk *emuhost.Kernel, self, bin, guest string, args []string) (int, string) {
	var console bytes.Buffer
	timeout := 10 * time.Minute // a group takes 1-2 min; a hung emulated host is retried
	if emu == emuhost.BochsVMX {
		// Bochs boots in about two minutes, and each guest takes tens
		// of seconds in it.
		timeout = 30 * time.Minute
	}
	spec := emuhost.Spec{
		Emulator:   emu,
		HostAppend: hostAppend,
		Files: []emuhost.File{
			{HostPath: self, Path: "/kvmlab/tests.test", Mode: 0o755},
			{HostPath: bin, Path: "/kvmlab/kvmlab", Mode: 0o755},
			{HostPath: filepath.Join(guest, "bzImage"), Path: "/kvmlab/guest/bzImage", Mode: 0o644},
			{HostPath: filepath.Join(guest, "initramfs.cpio"), Path: "/kvmlab/guest/initramfs.cpio", Mode: 0o644},
			{HostPath: filepath.Join(guest, "vmlinux"), Path: "/kvmlab/guest/vmlinux", Mode: 0o644},
			{HostPath: filepath.Join(guest, "System.map"), Path: "/kvmlab/guest/System.map", Mode: 0o644},
			{HostPath: hk.Vmlinuz, Path: "/kvmlab/debian/vmlinuz", Mode: 0o644},
		},
		Argv: args,
		Env: []string{inHostEnv + "=1", emulatedCPUEnv + "=" + emu.Vendor(), "KVMLAB_BIN=/kvmlab/kvmlab", "KVMLAB_GUEST_DIR=/kvmlab/guest",
			"KVMLAB_DEBIAN_KERNEL=/kvmlab/debian/vmlinuz", "KVMLAB_DEBIAN_VERSION=" + hk.Version},
		Dir:     "/kvmlab",
		Timeout: timeout,
		Output:  io.MultiWriter(stdout, &console),
	}
	tools, err := hostFiles(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tests: %v: install them (bash tests/deps.sh)\n", err)
		return 1, ""
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		// mke2fs reads its defaults from here.
		tools = append(tools, emuhost.File{HostPath: "/etc/mke2fs.conf", Path: "/etc/mke2fs.conf", Mode: 0o644})
	}
	spec.Files = append(spec.Files, tools...)
	spec.Files = append(spec.Files, decompressed...)
	res, err := emuhost.Run(ctx, spec)
	if err != nil {
		fmt.Fprintf(stdout, "tests: emulated host (%s): %v\n", emu, err)
		return 1, ""
	}
	fmt.Fprintf(stdout, "tests: emulated host (%s) finished in %v (%d attempt(s)), inner exit status %d\n", emu, res.Duration.Round(time.Second), res.Attempts, res.ExitCode)
	if res.ExitCode == 0 && !strings.Contains(res.Output, "\nPASS") && !strings.HasPrefix(res.Output, "PASS") {
		fmt.Fprintf(stdout, "tests: the inner run in %s exited 0 without printing PASS\n", emu)
		return 1, ""
	}
	return res.ExitCode, strings.ReplaceAll(console.String(), "\r", "")
}

// decompressed are the guest kernels' decompressed ELF files, placed in the
// emulated host's kvmlab cache (warmDecompressed).
var decompressed []emuhost.File

// warmDecompressed decompresses the bzImages the tests boot (kvmlab's and
// Debian's) here, once, into this machine's kvmlab cache, and returns them
// as files for the same place in the emulated host's: kvmlab run decodes a
// bzImage on the host the first time it boots it (vmm/hostdecompress.go),
// and an emulated host starts with an empty cache. Without this, every
// kvmlab inside would decode Debian's xz kernel again at the emulated
// CPU's speed: minutes in Bochs, enough to miss a test's boot timeout.
func warmDecompressed(kernels ...string) ([]emuhost.File, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, fmt.Errorf("decompressing the guest kernels ahead: %w", err)
	}
	dir := filepath.Join(cache, "kvmlab", "vmlinux")
	var files []emuhost.File
	for _, k := range kernels {
		b, err := os.ReadFile(k)
		if err != nil {
			return nil, fmt.Errorf("decompressing the guest kernels ahead: %w", err)
		}
		path, err := vmm.WarmDecompressCache(b, dir)
		if err != nil {
			// Not decodable on the host (LZO, say): kvmlab inside
			// boots it as it is, as it would here.
			fmt.Printf("tests: %s is not decompressed ahead: %v\n", k, err)
			continue
		}
		// hostinit runs the tests with HOME=/root and no
		// XDG_CACHE_HOME: kvmlab's cache is /root/.cache/kvmlab.
		files = append(files, emuhost.File{HostPath: path, Path: "/root/.cache/kvmlab/vmlinux/" + filepath.Base(path), Mode: 0o644})
	}
	return files, nil
}

// distroKernel finds a stock distribution kernel to boot when running on
// /dev/kvm directly: Debian's (the emulated host's, fetched with apt), or else
// the running host's own /boot/vmlinuz.
func distroKernel() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if hk, err := emuhost.HostKernel(ctx); err == nil {
		return hk.Vmlinuz
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		p := "/boot/vmlinuz-" + strings.TrimSpace(string(b))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/boot/vmlinuz"
}
