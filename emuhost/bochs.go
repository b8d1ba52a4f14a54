package emuhost

// The Intel VT-x host: Bochs.
//
// QEMU's TCG emulates AMD SVM but not Intel VMX, so the VT-x half of kvmlab
// (KVM_SET_TSS_ADDR and the identity map, VMX exit reasons, single-step and
// breakpoints through VMX) needs another emulator. Bochs is an interpreter:
// it decodes and executes every x86 instruction in C++, VMX ones included
// (VMXON, VMLAUNCH, the VMCS, EPT, VPID, unrestricted guest), so Linux's
// kvm_intel loads inside it and gives kvmlab a real /dev/kvm on VT-x:
//
//	real machine (no KVM)
//	└── bochs, cpu: model=corei7_haswell_4770   (an interpreter, one thread)
//	    └── BIOS → ISOLINUX from a CD image → Debian's kernel, kvm_intel.ko
//	        └── /dev/kvm works here, on emulated VT-x
//	            └── kvmlab, a test program, and the guest it boots
//
// The host runs the same kernel, modules and hostinit payload as the QEMU
// one; only the way in differs. Bochs has no -kernel option (its own Linux
// loader is for old 32-bit kernels), so the kernel and the initramfs go on an
// El Torito CD image that ISOLINUX boots (see the Syslinux wiki, "ISOLINUX",
// and the El Torito specification); xorriso writes the image.
//
// What the Debian 12 build of Bochs 2.7 needs (found by trying it; see issue
// 13):
//   - it has no "nogui" display library: the rfb (VNC) one, told not to wait
//     for a client (timeout=0), stands in. It listens on TCP port 5900 or the
//     next free one, so Bochs runs in a network namespace of its own where
//     it can (no one can reach that port, and two hosts never compete);
//   - its debugger is compiled in and stops at a prompt before the first
//     instruction, so it is started with -rc FILE holding "c" (continue) and
//     "quit";
//   - it exits with status 1 even after a clean power-off (it reports the
//     ACPI soft-off as a panic), so a run is judged by its console alone;
//   - corei7_haswell_4770 is the model that boots Debian's kernel with VMX
//     and EPT (the Ice Lake and Tiger Lake models hang early in boot;
//     Skylake-X makes the kernel disable XSAVE);
//   - "RDMSR: Unknown register" errors from the kernel's probing fill its
//     log unless errors are ignored.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// BochsVMX is Bochs emulating an Intel Core i7 (Haswell) with VT-x, EPT,
// VPID and unrestricted guest: the emulated host loads kvm_intel. One
// emulated CPU (Bochs runs it on one thread) and at most 2 GiB of memory.
const BochsVMX Emulator = "bochs-vmx"

// EmulatorFor returns the emulator whose CPU is of the given vendor: "amd"
// (QEMUSVM) or "intel" (BochsVMX).
func EmulatorFor(vendor string) (Emulator, error) {
	switch vendor {
	case "amd":
		return QEMUSVM, nil
	case "intel":
		return BochsVMX, nil
	}
	return "", fmt.Errorf("emulated CPU %q: use amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x)", vendor)
}

// Vendor is the CPU vendor the emulator's host offers: "amd" or "intel".
func (e Emulator) Vendor() string {
	if e == BochsVMX {
		return "intel"
	}
	return "amd"
}

const (
	bochsBinary   = "bochs"
	bochsCPUModel = "corei7_haswell_4770"
	// bochsMaxMemMB is the most memory the Bochs host gets: 2 GiB is what
	// was verified to boot (Spec.MemMB above it is lowered to it).
	bochsMaxMemMB = 2048
	// bochsIPS is the emulated instructions per emulated second. With
	// clock sync=none, Bochs's clocks advance with the instructions it
	// executes, not with the wall clock, so the guest sees a steady
	// machine however loaded this one is (the kernel's timer checks
	// never fail), and this figure sets how fast emulated time passes.
	bochsIPS = 100_000_000
	// bochsSilence is how long a Bochs host may print nothing at all
	// after starting: the BIOS and ISOLINUX (which announces itself on
	// the serial port) take a few seconds.
	bochsSilence = 3 * time.Minute
)

// Files Bochs boots from, and the Debian packages that install them.
var (
	bochsBIOS     = pkgFile{"/usr/share/bochs/BIOS-bochs-latest", "bochsbios"}
	bochsVGABIOS  = pkgFile{"/usr/share/vgabios/vgabios.bin", "vgabios"}
	isolinuxBin   = pkgFile{"/usr/lib/ISOLINUX/isolinux.bin", "isolinux"}
	isolinuxLdlnx = pkgFile{"/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"}
)

type pkgFile struct{ path, pkg string }

// bochsPackages is the install line every missing piece names.
const bochsPackages = "apt-get install bochs bochsbios vgabios isolinux syslinux-common xorriso (or bash tests/deps.sh)"

// CheckBochs tells whether the Intel emulated host can run here: Bochs 2.7
// or newer with the corei7_haswell_4770 CPU model (VT-x with EPT), its
// BIOS, xorriso and ISOLINUX. Its error is one line naming the fix.
func CheckBochs(ctx context.Context) error {
	bochs, err := exec.LookPath(bochsBinary)
	if err != nil {
		return fmt.Errorf("bochs not found: the emulated Intel host needs Bochs 2.7 or newer: %s", bochsPackages)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bochs, "--help", "cpu")
	cmd.Dir = os.TempDir()         // not where a stray .bochsrc may lie
	out, _ := cmd.CombinedOutput() // it exits 0 or 1 by version; judge the text
	if err := checkBochsHelp(string(out)); err != nil {
		return fmt.Errorf("%s: %w", bochs, err)
	}
	for _, f := range []pkgFile{bochsBIOS, bochsVGABIOS, isolinuxBin, isolinuxLdlnx} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s is missing (the emulated Intel host boots from it): apt-get install %s", f.path, f.pkg)
		}
	}
	if _, err := exec.LookPath("xorriso"); err != nil {
		return errors.New("xorriso not found: the emulated Intel host boots from a CD image it writes: apt-get install xorriso")
	}
	return nil
}

var bochsBanner = regexp.MustCompile(`Bochs x86 Emulator (\d+)\.(\d+)`)

// checkBochsHelp checks the output of `bochs --help cpu`: the banner's
// version and the list of CPU models.
func checkBochsHelp(out string) error {
	m := bochsBanner.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("`bochs --help cpu` printed no \"Bochs x86 Emulator\" banner: reinstall it: %s", bochsPackages)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 2 || major == 2 && minor < 7 {
		return fmt.Errorf("version %d.%d is too old for the emulated Intel host (2.7 or newer emulates VT-x with EPT well enough): install a newer bochs", major, minor)
	}
	if !regexp.MustCompile(`(?m)^\s*` + bochsCPUModel + `\s*$`).MatchString(out) {
		return fmt.Errorf("this Bochs lacks the CPU model %s (VT-x with EPT): it was built without VMX or x86-64 support: install Debian's bochs package", bochsCPUModel)
	}
	return nil
}

// kvmIntelFailed matches hostinit's line when kvm_intel refused to load
// (hostinit/main.go, loadModules): "hostinit: FAILED: loading module
// /harness/ko/kvm-intel.ko: <errno text>...".
var kvmIntelFailed = regexp.MustCompile(`(?m)^hostinit: FAILED: loading module \S*kvm-intel\.ko: ([^\n]*)$`)

// bochsHostVerdict reads the console of a finished Bochs host and returns
// one line naming the fix when the host could not offer VT-x at all: its
// kvm_intel refused to load. That happens when the emulated CPU has no
// VMX (no vmx flag in the host's /proc/cpuinfo: a Bochs built without
// --enable-vmx, whose corei7_haswell_4770 then lacks it; the kernel says
// "no hardware support for 'kvm_intel'") or when VMX is off in
// IA32_FEATURE_CONTROL ("disabled by bios": BIOS-bochs-latest turns it on,
// an older or another BIOS image may not). The errno that reaches hostinit
// does not tell the two apart (Linux 6.1's kvm_arch_init returns
// EOPNOTSUPP for both), so the kernel's own line decides. A host that ran
// its command returns nil, whatever the command's exit status.
func bochsHostVerdict(output string) error {
	m := kvmIntelFailed.FindStringSubmatch(output)
	if m == nil {
		return nil
	}
	why := strings.TrimSpace(m[1])
	if strings.Contains(output, "disabled by bios") {
		return fmt.Errorf("kvm_intel did not load in the emulated Intel host (%s): its BIOS left VMX disabled (IA32_FEATURE_CONTROL): Bochs must boot %s, which enables it: apt-get install --reinstall bochsbios", why, bochsBIOS.path)
	}
	return fmt.Errorf("kvm_intel did not load in the emulated Intel host (%s): the emulated CPU has no VMX (no vmx flag in the host's /proc/cpuinfo): this Bochs was built without VT-x: install Debian 12's bochs 2.7 (apt-get install bochs), or build Bochs with --enable-vmx=2 --enable-x86-64", why)
}

// bochsConfig is what goes into the bochsrc file.
type bochsConfig struct {
	MemMB int
	// ISO, Log and Console are paths relative to Bochs's working
	// directory (the attempt's temporary directory), which keeps
	// commas, spaces and quotes of TMPDIR out of the file's syntax.
	ISO, Log string
	// ConsoleMode is "file" (the serial port's output goes to Console)
	// or "term" (Console is a terminal Bochs reads input from too).
	ConsoleMode, Console string
	// Outputs are the files COM2 and COM3 write to (none: the two ports
	// are not wired), for a command's stdout and stderr (Spec.Stdout).
	Outputs []string
}

// bochsrc renders the configuration (the bochsrc(5) format: one
// "option: key=value, ..." a line).
func (c bochsConfig) bochsrc() string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# Written by kvmlab/emuhost for one run of the emulated Intel host.")
	line("megs: %d", c.MemMB)
	line("romimage: file=%s", bochsBIOS.path)
	line("vgaromimage: file=%s", bochsVGABIOS.path)
	// One CPU. Bochs's SMP works (Debian's build has it: "SMP support:
	// yes" in its log): tried with count=2 (issue 13), Debian's 6.1
	// kernel booted on both CPUs, kvm_intel loaded, and
	// TestBootDefaultGuest passed with its 1- and 2-vCPU guests. But
	// Bochs emulates every CPU on its one thread, and that run cost
	// about twice the CPU time per emulated second (354 s of CPU for
	// the 86 s its host lived, against 366 s for 187 s with one CPU;
	// the host reached /dev/kvm after 41 s of emulated time instead of
	// 24 s), so every Intel group would take about twice as long in
	// wall time. A 2-vCPU guest needs no second host CPU:
	// TestBootDefaultGuest/2cpu runs both vCPU threads on the one; a
	// second would add only KVM's own cross-CPU paths (a VMCS moving
	// between CPUs, IPIs to a running vCPU), none of kvmlab's.
	//
	// A triple fault of the host itself ends Bochs (a panic) instead of
	// resetting it: as with QEMU's -no-reboot, a broken host is never
	// booted twice by one attempt.
	line("cpu: model=%s, count=1, ips=%d, reset_on_triple_fault=0", bochsCPUModel, bochsIPS)
	line("clock: sync=none")
	line("ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14")
	line("ata0-master: type=cdrom, path=%s, status=inserted", c.ISO)
	line("boot: cdrom")
	line("com1: enabled=1, mode=%s, dev=%s", c.ConsoleMode, c.Console)
	// COM2 (0x2f8, IRQ 3) and COM3 (0x3e8, IRQ 4), the legacy addresses
	// the host kernel's 8250 driver probes as ttyS1 and ttyS2, as QEMU's
	// second and third -serial are.
	for i, out := range c.Outputs {
		line("com%d: enabled=1, mode=file, dev=%s", i+2, out)
	}
	line("display_library: rfb, options=\"timeout=0\"")
	line("mouse: enabled=0")
	// No sound: the PC speaker's ALSA output aborts Bochs ("buffer
	// overflow detected") on a machine without a sound card.
	line("speaker: enabled=0")
	line("sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy")
	line("log: %s", c.Log)
	// Bochs's own messages: panics end it (the ACPI power-off is one),
	// and the kernel's probing of MSRs Bochs does not model would fill
	// the log with errors.
	line("panic: action=fatal")
	line("error: action=ignore")
	line("info: action=ignore")
	line("debug: action=ignore")
	return b.String()
}

// bochsDebuggerScript is the -rc file: continue at the debugger's first
// prompt, and leave if it ever prompts again.
const bochsDebuggerScript = "c\nquit\n"

// isolinuxCfg is the ISOLINUX configuration: boot the one entry at once,
// telling the serial port (0, 115200 baud) too, so that the console shows
// the boot loader's progress.
func isolinuxCfg(cmdline string) string {
	return "SERIAL 0 115200\nDEFAULT host\nPROMPT 0\nTIMEOUT 0\nLABEL host\n  KERNEL /vmlinuz\n  INITRD /initrd\n  APPEND " + cmdline + "\n"
}

// isoArgs is xorriso's command line (in its mkisofs emulation) writing an
// El Torito CD image that ISOLINUX boots with no disk emulation: the
// kernel and the initramfs are grafted onto the image where ISOLINUX looks
// for them, without copying them first; -boot-info-table makes xorriso
// patch the image's copy of isolinux.bin with the layout it needs.
func isoArgs(out, kernel, initrd, cfg string) []string {
	return []string{
		"-as", "mkisofs", "-quiet",
		"-o", out,
		"-V", "KVMLAB_HOST",
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
		"-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-graft-points",
		"/isolinux/isolinux.bin=" + isolinuxBin.path,
		"/isolinux/ldlinux.c32=" + isolinuxLdlnx.path,
		"/isolinux/isolinux.cfg=" + cfg,
		"/vmlinuz=" + kernel,
		"/initrd=" + initrd,
	}
}

// writeISO writes the CD image dir/host.iso booting kernel with initrd
// and cmdline.
func writeISO(ctx context.Context, dir, kernel, initrd, cmdline string) (string, error) {
	cfg := filepath.Join(dir, "isolinux.cfg")
	if err := os.WriteFile(cfg, []byte(isolinuxCfg(cmdline)), 0o644); err != nil {
		return "", err
	}
	iso := filepath.Join(dir, "host.iso")
	cmd := exec.CommandContext(ctx, "xorriso", isoArgs(iso, kernel, initrd, cfg)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("writing the emulated Intel host's CD image: `%s` failed: %v\n%s", strings.Join(cmd.Args, " "), err, tail(out.String(), 2000))
	}
	return iso, nil
}

// bochsMachine prepares one Bochs run in dir (the bochsrc, the -rc script,
// the CD image) and returns how to start it. COM1 is in consoleMode on
// console: "file" on "/dev/fd/3" (a pipe Bochs inherits: its own stdout
// carries its banner and debugger prompts), or "term" on a terminal.
func bochsMachine(ctx context.Context, dir string, k *Kernel, initrd string, spec Spec, consoleMode, console string) (machine, error) {
	bochs, err := exec.LookPath(bochsBinary)
	if err != nil {
		return machine{}, err
	}
	if _, err := writeISO(ctx, dir, k.Vmlinuz, initrd, hostCmdline(spec)); err != nil {
		return machine{}, err
	}
	cfg := bochsConfig{
		MemMB: min(spec.MemMB, bochsMaxMemMB),
		ISO:   "host.iso", Log: "bochs.log",
		ConsoleMode: consoleMode, Console: console,
	}
	var outputs []*streamOut
	if spec.Stdout != nil {
		// The pipes runMachine hands Bochs after the console's fd 3
		// (machine.outputs); Bochs opens /dev/fd/N, for a pipe the
		// same pipe, as it does for the console.
		cfg.Outputs = []string{"/dev/fd/4", "/dev/fd/5"}
		outputs = []*streamOut{{w: spec.Stdout}, {w: spec.Stderr}}
	}
	if err := os.WriteFile(filepath.Join(dir, "bochsrc"), []byte(cfg.bochsrc()), 0o644); err != nil {
		return machine{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "debugger.rc"), []byte(bochsDebuggerScript), 0o644); err != nil {
		return machine{}, err
	}
	return machine{
		path:       bochs,
		args:       []string{"-q", "-f", "bochsrc", "-rc", "debugger.rc"},
		dir:        dir,
		consoleFD3: consoleMode == "file",
		// Bochs exits 1 after a clean power-off: the console decides.
		exitStatusMeaningless: true,
		ownNetNS:              true,
		logFile:               filepath.Join(dir, "bochs.log"),
		silence:               bochsSilence,
		stopAfter:             bochsStopLine,
		outputs:               outputs,
	}, nil
}

// bochsStopLine tells after which console lines Bochs is stopped if it has
// not stopped by itself a moment later. Bochs has no -no-reboot: a host
// kernel that panics (panic=-1 asks for a reboot) would boot again from the
// CD and run the command a second time; so would a host whose power-off
// failed (hostinit then restarts it). Only the host's own lines count: its
// kernel's start at the beginning of the line with the printk time (as in
// hostCrash), hostinit's with "hostinit: "; a guest's console inside a test's
// log is indented. A clean power-off needs no rule: Bochs ends itself.
func bochsStopLine(line string) time.Duration {
	switch {
	case strings.HasPrefix(line, "[") && strings.Contains(line, "Kernel panic - not syncing"):
		return 3 * time.Second // long enough for the rest of the report
	case strings.HasPrefix(line, hostinitPrefix+"power off failed"):
		return time.Second
	}
	return 0
}
