package tests

import (
	"os"
	"strings"
	"testing"
)

// TestBootFastPaths checks, on Debian's stock kernel, the two things kvmlab
// does so that a stock kernel boots faster (issue 19; docs/boot.md):
//
//   - by default the bzImage is decompressed on the host and the kernel ELF
//     entered at startup_64: no decompressor ran, so no KASLR either, and
//     the kernel's text sits at its link address, 0xffffffff81000000
//     (/proc/kallsyms, read as root). With --guest-decompress the guest's
//     decompressor runs and, Debian's kernel being built with
//     CONFIG_RANDOMIZE_BASE, moves it;
//   - the vCPU's CPUID offers the TSC-deadline timer, so the guest's local
//     APIC timer runs in that mode ("lapic-deadline") and its frequency
//     never needs calibrating.
func TestBootFastPaths(t *testing.T) {
	k := os.Getenv("KVMLAB_DEBIAN_KERNEL")
	if k == "" {
		t.Fatal("KVMLAB_DEBIAN_KERNEL is not set (the emulated-host runner sets it)")
	}
	const linkText = "ffffffff81000000"
	for _, c := range []struct {
		name     string
		flags    []string
		atLinked bool
	}{
		{"host-decompress", nil, true},
		{"guest-decompress", []string{"--guest-decompress"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--quiet"}, c.flags...)
			args = append(args, "--kernel", k, "--initrd", guestFile(t, "initramfs.cpio"), "--mem", "512M", "--append", quietCmdline)
			g := bootToShell(t, args...)
			text := g.value("TEXT", "grep ' _text$' /proc/kallsyms", cmdTimeout)
			addr, _, _ := strings.Cut(text, " ")
			if addr == "" || strings.Trim(addr, "0") == "" {
				t.Fatalf("/proc/kallsyms _text line %q: no address", text)
			}
			if got := addr == linkText; got != c.atLinked {
				t.Errorf("_text at %s; at the link address %s: %v, want %v", addr, linkText, got, c.atLinked)
			}
			if n := g.value("TSCDL", "grep -c tsc_deadline_timer /proc/cpuinfo", cmdTimeout); n == "0" || n == "" {
				t.Errorf("/proc/cpuinfo has no tsc_deadline_timer flag (%q)", n)
			}
			if d := g.value("CEVT", "cat /sys/devices/system/clockevents/clockevent0/current_device", cmdTimeout); d != "lapic-deadline" {
				t.Errorf("clock event device %q, want lapic-deadline", d)
			}
			g.send("poweroff\n")
			if code := g.wait(cmdTimeout); code != 0 {
				t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
			}
			if strings.Contains(g.stderr(), "decompress") {
				t.Errorf("kvmlab's stderr mentions decompression: %q", g.stderr())
			}
		})
	}
}
