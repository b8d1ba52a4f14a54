package emuhost

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEmulatorFor(t *testing.T) {
	tests := []struct {
		vendor  string
		want    Emulator
		wantErr string
	}{
		{"amd", QEMUSVM, ""},
		{"intel", BochsVMX, ""},
		{"Intel", "", "use amd (QEMU, AMD SVM) or intel (Bochs, Intel VT-x)"},
		{"", "", `emulated CPU ""`},
	}
	for _, tt := range tests {
		got, err := EmulatorFor(tt.vendor)
		if got != tt.want || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("EmulatorFor(%q) = %q, %v; want %q, an error containing %q", tt.vendor, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.Vendor() != tt.vendor {
			t.Errorf("%q.Vendor() = %q, want %q", got, got.Vendor(), tt.vendor)
		}
	}
}

// TestEmulatorModules: each host loads its own vendor module, after kvm,
// and never the other vendor's (which refuses to load and would end the
// host's /init).
func TestEmulatorModules(t *testing.T) {
	tests := []struct {
		e           Emulator
		want, never string
	}{
		{QEMUSVM, "irqbypass ccp kvm kvm-amd tun", "kvm-intel"},
		{"", "irqbypass ccp kvm kvm-amd tun", "kvm-intel"},
		{BochsVMX, "irqbypass kvm kvm-intel tun", "kvm-amd"},
	}
	for _, tt := range tests {
		got := strings.Join(tt.e.modules(), " ")
		if got != tt.want || strings.Contains(" "+got+" ", " "+tt.never+" ") {
			t.Errorf("%q.modules() = %q, want %q", tt.e, got, tt.want)
		}
		for _, m := range tt.e.modules() {
			k := &Kernel{Dir: "d"}
			for _, n := range KVMModules {
				k.Modules = append(k.Modules, "d/"+n+".ko")
			}
			if p, err := k.module(m); err != nil || p != "d/"+m+".ko" {
				t.Errorf("module(%s) = %q, %v", m, p, err)
			}
		}
	}
	if _, err := (&Kernel{Dir: "d"}).module("kvm"); err == nil {
		t.Error("module of a kernel with no modules cached: no error")
	}
}

const bochsHelpOK = `00000000000i[      ] LTDL_LIBRARY_PATH not set. using compile time default '/usr/lib/x86_64-linux-gnu/bochs/plugins'
Supported CPU models:

bx_generic
corei7_haswell_4770
corei7_icelake_u

00000000000i[SIM   ] quit_sim called with exit code 0
========================================================================
                        Bochs x86 Emulator 2.7
              Built from SVN snapshot on August  1, 2021
========================================================================
`

func TestCheckBochsHelp(t *testing.T) {
	tests := []struct {
		name, out, wantErr string
	}{
		{"debian 12", bochsHelpOK, ""},
		{"newer", strings.Replace(bochsHelpOK, "Emulator 2.7", "Emulator 3.0", 1), ""},
		{"too old", strings.Replace(bochsHelpOK, "Emulator 2.7", "Emulator 2.6", 1), "version 2.6 is too old"},
		{"no model", strings.Replace(bochsHelpOK, "corei7_haswell_4770\n", "", 1), "lacks the CPU model corei7_haswell_4770"},
		{"model as a prefix only", strings.Replace(bochsHelpOK, "corei7_haswell_4770\n", "corei7_haswell_4770x\n", 1), "lacks the CPU model"},
		{"no banner", "bochs: error while loading shared libraries\n", "no \"Bochs x86 Emulator\" banner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkBochsHelp(tt.out)
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("checkBochsHelp: %v, want an error containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// TestCheckBochsMissing: without Bochs, the error names the packages.
func TestCheckBochsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := CheckBochs(context.Background())
	if err == nil || !strings.Contains(err.Error(), "apt-get install bochs bochsbios vgabios isolinux syslinux-common xorriso") {
		t.Errorf("CheckBochs without bochs: %v", err)
	}
	if _, err := Run(context.Background(), Spec{Emulator: BochsVMX, Argv: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "bochs not found") {
		t.Errorf("Run without bochs: %v", err)
	}
}

func TestBochsrc(t *testing.T) {
	common := []string{
		"\nmegs: 2048\n",
		"\ncpu: model=corei7_haswell_4770, count=1, ips=100000000, reset_on_triple_fault=0\n",
		"\nclock: sync=none\n",
		"\nata0-master: type=cdrom, path=host.iso, status=inserted\n",
		"\nboot: cdrom\n",
		"\ncom1: enabled=1, mode=file, dev=/dev/fd/3\n",
		"\ndisplay_library: rfb, options=\"timeout=0\"\n",
		"\nlog: bochs.log\n",
		"\nerror: action=ignore\n",
		"\nromimage: file=/usr/share/bochs/BIOS-bochs-latest\n",
	}
	tests := []struct {
		name    string
		outputs []string
		want    []string
		notWant []string
	}{
		{"console only", nil, nil, []string{"com2:", "com3:"}},
		{"command streams (--exec)", []string{"/dev/fd/4", "/dev/fd/5"},
			[]string{"\ncom2: enabled=1, mode=file, dev=/dev/fd/4\n", "\ncom3: enabled=1, mode=file, dev=/dev/fd/5\n"}, []string{"com4:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := bochsConfig{MemMB: 2048, ISO: "host.iso", Log: "bochs.log", ConsoleMode: "file", Console: "/dev/fd/3", Outputs: tt.outputs}.bochsrc()
			for _, want := range append(common, tt.want...) {
				if !strings.Contains(rc, want) {
					t.Errorf("bochsrc lacks %q:\n%s", want, rc)
				}
			}
			for _, no := range tt.notWant {
				if strings.Contains(rc, no) {
					t.Errorf("bochsrc has %q:\n%s", no, rc)
				}
			}
		})
	}
}

func TestBochsStopLine(t *testing.T) {
	tests := []struct {
		line string
		stop bool
	}{
		{"[    3.100000] Kernel panic - not syncing: VFS: Unable to mount root fs", true},
		{"    guest: Kernel panic - not syncing: a guest's own panic", false},
		{"        [    1.5] Kernel panic - not syncing: a guest's, in a test log", false},
		{"hostinit: power off failed (no such device), trying restart", true},
		// Bochs ends itself at a power-off; a guest's inside a
		// test's log (seen) must not stop the host.
		{"[   60.2] reboot: Power down", false},
		{"        [   10.052172] reboot: Power down", false},
		{"KVMLAB-HOST-EXIT 0", false},
		{"hostinit: running /kvmlab/tests.test", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := bochsStopLine(tt.line) > 0; got != tt.stop {
			t.Errorf("bochsStopLine(%q) stops: %v, want %v", tt.line, got, tt.stop)
		}
	}
}

// TestWriteISO writes a CD image with xorriso and ISOLINUX (tests/deps.sh
// installs both) and checks its structure: an ISO 9660 volume, an El
// Torito boot record, and the kernel, the initramfs and the ISOLINUX
// configuration on it.
func TestWriteISO(t *testing.T) {
	if err := CheckBochs(context.Background()); err != nil {
		t.Fatalf("%v (run bash tests/deps.sh)", err)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "k")
	initrd := filepath.Join(dir, "i")
	if err := os.WriteFile(kernel, []byte("KERNEL-BYTES-4c1b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, bytes.Repeat([]byte("INITRD-BYTES-77e0"), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	iso, err := writeISO(context.Background(), dir, kernel, initrd, "console=ttyS0 rdinit=/init")
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	const sector = 2048
	if len(img) < 18*sector {
		t.Fatalf("image of %d bytes", len(img))
	}
	// ECMA-119: the primary volume descriptor at sector 16; El Torito:
	// the boot record volume descriptor at sector 17.
	if pvd := img[16*sector:]; pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		t.Errorf("no primary volume descriptor: % x", pvd[:8])
	}
	if br := img[17*sector:]; br[0] != 0 || string(br[1:6]) != "CD001" || !bytes.HasPrefix(br[7:], []byte("EL TORITO SPECIFICATION")) {
		t.Errorf("no El Torito boot record: %q", br[:40])
	}
	for _, want := range []string{"KERNEL-BYTES-4c1b", strings.Repeat("INITRD-BYTES-77e0", 1000), "APPEND console=ttyS0 rdinit=/init\n", "ISOLINUX"} {
		if !bytes.Contains(img, []byte(want)) {
			t.Errorf("image lacks %.40q", want)
		}
	}
}

// TestEmulatedIntelHost boots the Bochs host for real (a minute or two of
// one core) and runs the probe on its /dev/kvm, which must be kvm_intel with
// EPT. Set KVMLAB_SKIP_EMULATED=1 to skip it.
func TestEmulatedIntelHost(t *testing.T) {
	if os.Getenv("KVMLAB_SKIP_EMULATED") == "1" {
		t.Skip("KVMLAB_SKIP_EMULATED=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	probe := filepath.Join(t.TempDir(), "kvmprobe")
	if err := GoBuild(ctx, "kvmlab/emuhost/testdata/kvmprobe", probe); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := Run(ctx, Spec{
		Emulator: BochsVMX,
		Files:    []File{{HostPath: probe, Path: "/bin/kvmprobe"}},
		Argv:     []string{"kvmprobe"},
		Timeout:  10 * time.Minute,
		Output:   &lineLogger{t: t, start: start},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("exit code %d after %d attempt(s), %s in Bochs", res.ExitCode, res.Attempts, res.Duration.Round(time.Millisecond))
	for _, want := range []string{"kvm ok api=12", "kvm vendor module kvm_intel ept=Y"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("output lacks %q:\n%s", want, res.Output)
		}
	}
	if res.ExitCode != 0 {
		t.Errorf("ExitCode = %d, want 0", res.ExitCode)
	}
}

func TestForwardKeys(t *testing.T) {
	tests := []struct {
		name, in, want string
		quit           bool
	}{
		{"plain", "ls -l\r", "ls -l\r", false},
		{"ctrl-a x quits", "echo\r\x01xmore", "echo\r", true},
		{"ctrl-a X quits", "\x01X", "", true},
		{"ctrl-a ctrl-a sends one", "a\x01\x01b", "a\x01b", false},
		{"ctrl-a then a key sends the key", "\x01c", "c", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			quit := false
			forwardKeys(strings.NewReader(tt.in), &out, func() { quit = true })
			if out.String() != tt.want || quit != tt.quit {
				t.Errorf("forwarded %q, quit %v; want %q, %v", out.String(), quit, tt.want, tt.quit)
			}
		})
	}
}

// TestOpenPTY: bytes written to the master come out of the slave unchanged
// (raw mode: no echo, no CR/LF translation), and back.
func TestOpenPTY(t *testing.T) {
	master, slave, err := openPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	if !strings.HasPrefix(slave.Name(), "/dev/pts/") {
		t.Errorf("slave %q", slave.Name())
	}
	for _, c := range []struct {
		from, to *os.File
		msg      string
	}{{master, slave, "to the host\n"}, {slave, master, "from the host\n"}} {
		if _, err := c.from.Write([]byte(c.msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.to.Read(buf)
		if err != nil || string(buf[:n]) != c.msg {
			t.Errorf("read %q, %v; want %q", buf[:n], err, c.msg)
		}
	}
}

// TestRunMachineBochsRules checks the attempt rules the Bochs host needs,
// with /bin/sh standing in for Bochs: the console on fd 3 apart from the
// emulator's chatter, an exit status that says nothing, and a stop a moment
// after a line that says the host is dead.
func TestRunMachineBochsRules(t *testing.T) {
	m := func(script string) machine {
		return machine{path: "/bin/sh", args: []string{"-c", script}, consoleFD3: true, exitStatusMeaningless: true,
			stopAfter: func(line string) time.Duration {
				if strings.HasPrefix(line, "[") && strings.Contains(line, "Kernel panic") {
					return 100 * time.Millisecond
				}
				return 0
			}}
	}
	lim := limits{total: time.Minute}

	// Exit status 1 after a clean run: judged by the console alone.
	res, err := runMachineAttempts(context.Background(), m(`echo chatter; echo "hostinit: up" >&3; echo "KVMLAB-HOST-EXIT 7" >&3; exit 1`), lim, &syncWriter{})
	if err != nil || res.ExitCode != 7 || res.Attempts != 1 {
		t.Fatalf("clean run: %+v, %v; want exit code 7 in one attempt", res, err)
	}
	if strings.Contains(res.Output, "chatter") {
		t.Errorf("the emulator's stdout reached the console: %q", res.Output)
	}

	// A host kernel panic: the emulator is stopped soon after, not at
	// the timeout, and the attempt is judged like a crash.
	start := time.Now()
	a := runMachine(context.Background(), m(`echo "hostinit: up" >&3; echo "[    9.1] Kernel panic - not syncing: Attempted to kill init!" >&3; sleep 30`), lim, &syncWriter{})
	if a.err != nil || a.hung != "" {
		t.Fatalf("panic: hung=%q err=%v; want a stopped attempt", a.hung, a.err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("stopped after %s", d)
	}
	if hostCrash(a.output) == "" {
		t.Errorf("no host crash found in %q", a.output)
	}

	// An emulator that dies before the host printed anything: an error
	// with its own words, at once (a bad configuration, not a hang).
	a = runMachine(context.Background(), m(`echo "bochsrc: unknown option" >&2; exit 1`), lim, &syncWriter{})
	if a.err == nil || !strings.Contains(a.err.Error(), "bochsrc: unknown option") {
		t.Errorf("early exit: err = %v, want one carrying the emulator's stderr", a.err)
	}
}
