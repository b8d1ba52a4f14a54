package tests

import (
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A quiet command line keeps the emulated host's slow console short.
const quietCmdline = "console=ttyS0 panic=-1"

const (
	bootTimeout = 4 * time.Minute
	cmdTimeout  = 60 * time.Second
)

// TestBootDefaultGuest boots the kvmlab kernel and u-root with 1 and 2 vCPUs,
// types at the shell, and powers off.
func TestBootDefaultGuest(t *testing.T) {
	for _, cpus := range []int{1, 2} {
		t.Run(strconv.Itoa(cpus)+"cpu", func(t *testing.T) {
			g := bootToShell(t, "run", "--quiet",
				"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
				"--mem", "512M", "--cpus", strconv.Itoa(cpus), "--append", quietCmdline)

			if rel := g.value("REL", "uname -r", cmdTimeout); !regexp.MustCompile(`^6\.1\.\d+`).MatchString(rel) {
				t.Errorf("uname -r = %q, want the kvmlab 6.1 kernel", rel)
			}
			if n := g.value("NCPU", "grep -c ^processor /proc/cpuinfo", cmdTimeout); n != strconv.Itoa(cpus) {
				t.Errorf("/proc/cpuinfo lists %q processors, want %d", n, cpus)
			}
			// The DSDT's PCI root bridge lets Linux enumerate bus 0 and
			// find kvmlab's host bridge through configuration mechanism #1.
			if v := g.value("PCI", "cat /sys/bus/pci/devices/0000:00:00.0/vendor", cmdTimeout); v != "0x8086" {
				t.Errorf("PCI host bridge 00:00.0 vendor = %q, want 0x8086", v)
			}
			g.send("echo kvmlab-was-here > /tmp/f\n")
			if v := g.value("FILE", "cat /tmp/f", cmdTimeout); v != "kvmlab-was-here" {
				t.Errorf("read back %q from /tmp/f", v)
			}
			// The guest clock runs on kvm-clock, uncalibrated: it must be
			// the host's date (CMOS RTC) and advance at the real rate.
			// Unless the vCPU's TSC is invariant (constant_tsc and
			// nonstop_tsc, as KVM_GET_SUPPORTED_CPUID reports for the
			// emulated Intel host's Haswell): then Linux lowers kvm-clock's
			// rating below the TSC's and runs on the TSC
			// (arch/x86/kernel/kvmclock.c, kvmclock_init).
			src := g.value("CLK", "cat /sys/devices/system/clocksource/clocksource0/current_clocksource", cmdTimeout)
			invariant := g.value("CTSC", "grep -c constant_tsc /proc/cpuinfo", cmdTimeout) != "0" &&
				g.value("NSTSC", "grep -c nonstop_tsc /proc/cpuinfo", cmdTimeout) != "0"
			if src != "kvm-clock" && !(src == "tsc" && invariant) {
				t.Errorf("guest clocksource = %q (invariant TSC: %v), want kvm-clock, or tsc with an invariant TSC", src, invariant)
			}
			g.send("poweroff\n")
			if code := g.wait(cmdTimeout); code != 0 {
				t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
			}
		})
	}
}

// TestBootDebianKernel boots Debian's stock kernel (the emulated host's own
// vmlinuz) with the same initramfs.
func TestBootDebianKernel(t *testing.T) {
	k := os.Getenv("KVMLAB_DEBIAN_KERNEL")
	if k == "" {
		t.Fatal("KVMLAB_DEBIAN_KERNEL is not set (the emulated-host runner sets it)")
	}
	g := bootToShell(t, "run", "--quiet", "--kernel", k,
		"--initrd", guestFile(t, "initramfs.cpio"), "--mem", "512M", "--append", quietCmdline)
	want, err := kernelVersion(k)
	if err != nil {
		t.Fatal(err)
	}
	if rel := g.value("REL", "uname -r", cmdTimeout); rel == "" || !strings.HasPrefix(want, rel) {
		t.Errorf("uname -r = %q, want the release of %s (%q)", rel, k, want)
	}
	g.send("poweroff\n")
	if code := g.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
	}
}

// TestMem4G checks RAM above the PCI hole reaches the guest.
func TestMem4G(t *testing.T) {
	g := bootToShell(t, "run", "--quiet",
		"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "4G", "--append", quietCmdline)
	v := g.value("MEM", "grep MemTotal /proc/meminfo", cmdTimeout)
	f := strings.Fields(v)
	if len(f) < 2 {
		t.Fatalf("MemTotal line %q", v)
	}
	kb, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatalf("MemTotal line %q: %v", v, err)
	}
	// The kernel keeps some for itself; 4 GiB of RAM must show as more
	// than 3.8 GiB (it would be under 3 GiB if the part above the hole
	// were lost).
	if kb < 3800*1024 || kb > 4096*1024 {
		t.Errorf("MemTotal = %d kB, want about 4 GiB", kb)
	}
	g.send("poweroff\n")
	if code := g.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d, want 0", code)
	}
}

// TestRebootAndPanic: reboot ends the VMM with 0; so does a kernel panic with
// panic=-1 (the kernel reboots at once), and its message reaches the console.
func TestRebootAndPanic(t *testing.T) {
	t.Run("reboot", func(t *testing.T) {
		g := bootToShell(t, "run",
			"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
			"--mem", "256M", "--append", quietCmdline)
		g.send("reboot\n")
		if code := g.wait(cmdTimeout); code != 0 {
			t.Fatalf("kvmlab exited %d after guest reboot, want 0", code)
		}
		if !strings.Contains(g.stderr(), "reboot") {
			t.Errorf("kvmlab did not report the reboot: %q", g.stderr())
		}
	})
	t.Run("panic", func(t *testing.T) {
		g := bootToShell(t, "run",
			"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
			"--mem", "256M", "--append", quietCmdline)
		g.send("echo c > /proc/sysrq-trigger\n")
		g.expect(regexp.MustCompile(`Kernel panic`), cmdTimeout)
		if code := g.wait(cmdTimeout); code != 0 {
			t.Fatalf("kvmlab exited %d after a panic with panic=-1, want 0 (the kernel reboots)", code)
		}
	})
}

// kernelVersion reads the version string a bzImage carries in its setup
// header (boot.rst: kernel_version at 0x20e points to a NUL-terminated string,
// relative to 0x200).
func kernelVersion(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(b) < 0x210 {
		return "", fmt.Errorf("%s: too short for a bzImage", path)
	}
	off := int(binary.LittleEndian.Uint16(b[0x20e:])) + 0x200
	if off >= len(b) {
		return "", fmt.Errorf("%s: kernel_version offset outside the file", path)
	}
	end := off
	for end < len(b) && b[end] != 0 && b[end] != ' ' {
		end++
	}
	return string(b[off:end]), nil
}

// TestBootELF boots the kvmlab kernel from its ELF vmlinux (the second
// kernel format) instead of the bzImage.
func TestBootELF(t *testing.T) {
	g := bootToShell(t, "run", "--quiet",
		"--kernel", guestFile(t, "vmlinux"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "256M", "--append", quietCmdline)
	if rel := g.value("REL", "uname -r", cmdTimeout); !regexp.MustCompile(`^6\.1\.\d+`).MatchString(rel) {
		t.Errorf("uname -r = %q, want the kvmlab 6.1 kernel", rel)
	}
	g.send("poweroff\n")
	if code := g.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
	}
}
