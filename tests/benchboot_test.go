package tests

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bootLine is the bench's line for one boot of kvmlab that got through.
var bootLine = regexp.MustCompile(`^kvmlab bench: run \d+ kvmlab +user space `)

// TestBenchBoot runs `kvmlab bench` on kvmlab alone, once with the guest
// writing through the serial tty and once through /dev/kmsg (the path gokvm
// needs), and checks that each figure the bench reports is there and
// plausible. The markers must really have come the way asked: with the
// kernel log's timestamp through /dev/kmsg, without it through the tty. The
// exits to user space (counted by the kernel's histogram on
// kvm:kvm_userspace_exit) must account for the console bytes: at least one
// port write per byte, and, through the tty, few more: the 8250 driver
// fills the 16-byte FIFO after each transmit interrupt, and the UART raises
// one interrupt per FIFO load, not per byte (an interrupt per byte would
// add an IIR and an LSR read to every byte). Two boots each, so that one
// guest lost to the emulated host (a triple fault, a stall) still leaves a
// figure.
func TestBenchBoot(t *testing.T) {
	const bytes = 2048
	for _, c := range []struct {
		via, path  string
		minPerByte float64
		maxPerByte float64
	}{
		{"tty", "[through the tty]", 1, 1.6},
		// Through the kernel log each 64-byte line gains a timestamp of
		// about 15 characters, and the console driver reads the status
		// register once per FIFO load.
		{"kmsg", "[through the kernel log]", 1, 2.5},
	} {
		t.Run(c.via, func(t *testing.T) {
			stdout, stderr, rc := runKvmlab(t, 8*time.Minute, "bench", "--vmms", "kvmlab", "--runs", "2", "--warmup", "0",
				"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
				"--console-bytes", strconv.Itoa(bytes), "--console-via", c.via, "--exit-loop", "0", "--timeout", "3m", "--json")
			if rc != 0 {
				t.Fatalf("kvmlab bench: exit status %d\n%s", rc, stderr)
			}
			t.Logf("bench's log:\n%s", stderr)
			var rep struct {
				Figures []struct {
					VMM    string  `json:"vmm"`
					Figure string  `json:"figure"`
					N      int     `json:"n"`
					Median float64 `json:"median"`
				} `json:"figures"`
				ViaKmsg []string `json:"console_via_kmsg"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("bench --json printed no report: %v\n%s", err, stdout)
			}
			fig := map[string]float64{}
			for _, f := range rep.Figures {
				if f.VMM == "kvmlab" && f.N > 0 {
					fig[f.Figure] = f.Median
				}
			}
			for _, want := range []struct {
				name     string
				min, max float64
			}{
				{"start -> user space", 0.5, 180},
				{"start -> VMM exit after poweroff", 0.5, 180},
				{"console write", 1, 120_000},
				{"RSS outside guest RAM", 1, 16},
				{"guest RAM resident", 8, 512},
				{"exits during boot (all)", 1000, 10_000_000},
				{"exits to user space during boot", 100, 1_000_000},
			} {
				v, ok := fig[want.name]
				if !ok || v < want.min || v > want.max {
					t.Errorf("%s = %v (reported: %v), want %v to %v", want.name, v, ok, want.min, want.max)
				}
			}
			booted := 0
			for _, l := range strings.Split(stderr, "\n") {
				if bootLine.MatchString(l) {
					booted++
					if !strings.HasSuffix(l, c.path) {
						t.Errorf("with --console-via %s, a boot's line does not end in %q: %s", c.via, c.path, l)
					}
				}
			}
			if booted == 0 {
				t.Errorf("no boot line in the bench's log")
			}
			// The port histogram (kvm:kvm_pio): kvmlab's boot is mostly
			// the kernel's console on COM1. On a slow or loaded host the
			// PIT can lead instead: until the TSC is calibrated the kernel
			// keeps time by reading PIT channel 0, and the slower the host,
			// the more reads a wait takes (seen with Bochs beside QEMU:
			// 0x40 PIT 3434, 0x3f8 COM1 1402). Either way COM1 is named.
			hist := regexp.MustCompile(`kvmlab +port accesses during boot: \d+ \((0x3f[8-9a-f] COM1 \d+|0x4[0-3] PIT \d+.*0x3f8 COM1 \d+)`)
			if !hist.MatchString(stderr) {
				t.Errorf("no port histogram led by COM1 (or the PIT) and naming COM1 in the bench's log")
			}
			u, ok := fig["exits to user space, console write"]
			if !ok || u < c.minPerByte*bytes || u > c.maxPerByte*bytes {
				t.Errorf("exits to user space for %d console bytes through %s = %v (reported: %v), want %v to %v per byte",
					bytes, c.via, u, ok, c.minPerByte, c.maxPerByte)
			}
			if kmsg := strings.Join(rep.ViaKmsg, ","); (c.via == "kmsg") != (kmsg == "kvmlab") {
				t.Errorf("report says %q went through /dev/kmsg, with --console-via %s", kmsg, c.via)
			}
		})
	}
}
