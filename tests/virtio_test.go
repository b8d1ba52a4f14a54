package tests

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// tool finds a host program; inside the emulated host the test runner
// copied them in (see virtioTools).
func tool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name, "/usr/bin/" + name} {
		if q, err := exec.LookPath(p); err == nil {
			return q
		}
	}
	t.Fatalf("%s not found: install e2fsprogs and iproute2", name)
	return ""
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ext4Image makes a 16 MiB ext4 image holding files. No journal: a
// journal would hold the guest's last metadata until replayed, and the
// host reads the image back with debugfs, which does not replay it.
func ext4Image(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-d", src, img)
	return img
}

// debugfsCat reads a file out of an ext4 image on the host side.
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command(tool(t, "debugfs"), "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func fileHash(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestVirtioDisk boots the kvmlab guest with a read-write ext4 disk, a
// read-only disk and virtio-rng. The guest mounts /dev/vda, reads the file
// the host put there, writes one of its own and powers off; the host reads
// that back from the image. The read-only disk refuses a write and is left
// unchanged; /dev/hwrng gives bytes.
func TestVirtioDisk(t *testing.T) {
	for _, mode := range []string{"eventfds", "no-eventfds"} {
		t.Run(mode, func(t *testing.T) {
			rw := ext4Image(t, map[string]string{"hello.txt": "hello-from-host\n"})
			ro := ext4Image(t, map[string]string{"ro.txt": "read-only\n"})
			roHash := fileHash(t, ro)
			args := []string{"run", "--quiet", "--stats", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
				"--mem", "512M", "--append", quietCmdline, "--disk", rw, "--disk", ro + ",ro", "--rng"}
			if mode == "no-eventfds" {
				args = append(args, "--no-eventfds")
			}
			g := bootToShell(t, args...)
			// PCI enumeration: vendor 0x1af4, device 0x1040 + type.
			if v := g.value("IDS", "cat /sys/bus/pci/devices/0000:00:01.0/device /sys/bus/pci/devices/0000:00:02.0/device /sys/bus/pci/devices/0000:00:03.0/device", cmdTimeout); v != "0x1042 0x1042 0x1044" {
				t.Errorf("virtio PCI device IDs = %q, want 0x1042 0x1042 0x1044 (blk, blk, rng)", v)
			}
			if v := g.value("SERIAL", "cat /sys/block/vda/serial", cmdTimeout); v != "kvmlab-disk.img" {
				t.Errorf("vda serial (GET_ID) = %q, want kvmlab-disk.img", v)
			}
			if v := g.value("SIZE", "cat /sys/block/vda/size", cmdTimeout); v != "32768" {
				t.Errorf("vda size = %q sectors, want 32768 (16 MiB)", v)
			}
			g.send("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt\n")
			if v := g.value("HELLO", "cat /mnt/hello.txt", cmdTimeout); v != "hello-from-host" {
				t.Errorf("guest read %q from /mnt/hello.txt, want hello-from-host", v)
			}
			g.send("echo written-by-guest > /mnt/guest.txt && sync\n")
			if v := g.value("RO", "cat /sys/block/vdb/ro", cmdTimeout); v != "1" {
				t.Errorf("/sys/block/vdb/ro = %q, want 1 (VIRTIO_BLK_F_RO)", v)
			}
			// The guest kernel knows the disk is read-only
			// (VIRTIO_BLK_F_RO) and refuses the write with EPERM before
			// it reaches the device; the device would answer IOERR
			// (unit-tested in devices/virtio/blk).
			if v := g.value("ROW", "dd if=/dev/zero of=/dev/vdb bs=512 count=1 >/dev/null 2>&1; echo $?", cmdTimeout); v == "0" || v == "" {
				t.Errorf("writing to the read-only /dev/vdb returned status %q, want an error", v)
			}
			if v := g.value("RNG", "cat /sys/class/misc/hw_random/rng_current", cmdTimeout); !strings.HasPrefix(v, "virtio_rng") {
				t.Errorf("rng_current = %q, want virtio_rng.N", v)
			}
			if v := g.value("HWRNG", "dd if=/dev/hwrng bs=64 count=1 2>/dev/null | md5sum", cmdTimeout); len(v) < 32 || strings.HasPrefix(v, "d41d8cd98f00b204") {
				t.Errorf("md5 of 64 bytes of /dev/hwrng = %q: no bytes came", v)
			}
			g.send("umount /mnt && poweroff\n")
			if code := g.wait(cmdTimeout); code != 0 {
				t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
			}
			if got := debugfsCat(t, rw, "/guest.txt"); got != "written-by-guest\n" {
				t.Errorf("host read %q from the image's /guest.txt, want written-by-guest", got)
			}
			if fileHash(t, ro) != roHash {
				t.Errorf("the read-only image changed")
			}
			st := g.stderr()
			if !regexp.MustCompile(`virtio-blk at 00:01.0: \d+ notifications`).MatchString(st) {
				t.Errorf("--stats printed no virtio-blk line:\n%s", st)
			}
			// The driver reaches the devices' registers through MMIO
			// BARs: those exits sit on the nested-paging exit of the
			// CPU this runs on (EPT on VT-x, NPF on SVM).
			if want := hwRow(emulatedCPU(), "mmio"); !regexp.MustCompile(want).MatchString(st) {
				t.Errorf("--stats hardware table has no row matching %q:\n%s", want, st)
			}
			// The point of ioeventfd: doorbells never reach user space.
			exitNotes := regexp.MustCompile(`virtio-blk at 00:01.0: \d+ notifications \((\d+) as MMIO exits\)`).FindStringSubmatch(st)
			if exitNotes != nil {
				if mode == "eventfds" && exitNotes[1] != "0" {
					t.Errorf("with ioeventfds, %s doorbells still exited to user space", exitNotes[1])
				}
				if mode == "no-eventfds" && exitNotes[1] == "0" {
					t.Errorf("without ioeventfds, no doorbell exited to user space")
				}
			}
			t.Logf("virtio stats:\n%s", grepLines(st, "virtio-"))
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestVirtioDiskSurvivesKill: the guest writes and fsyncs, prints a marker,
// and kvmlab is killed with SIGKILL at that marker; the data is in the
// image.
func TestVirtioDiskSurvivesKill(t *testing.T) {
	img := ext4Image(t, map[string]string{"x": "x\n"})
	g := bootToShell(t, "run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "512M", "--append", quietCmdline, "--disk", img)
	g.send("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && echo durable-data > /mnt/durable.txt && sync && echo SYNC''ED\n")
	g.expect(regexp.MustCompile(`SYNCED`), cmdTimeout)
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g.done
	if got := debugfsCat(t, img, "/durable.txt"); got != "durable-data\n" {
		t.Errorf("after SIGKILL the image's /durable.txt holds %q, want durable-data", got)
	}
}

// tapWithServer makes network namespace ns with TAP tap at 10.0.2.2/24 and
// an HTTP server there that answers every request with body; kvmlab run
// inside ns (ip netns exec) can attach a guest to the TAP.
func tapWithServer(t *testing.T, ns, tap string, body []byte) {
	t.Helper()
	runTool(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command(tool(t, "ip"), "netns", "del", ns).Run() })
	for _, c := range [][]string{
		{"tuntap", "add", tap, "mode", "tap"},
		{"addr", "add", "10.0.2.2/24", "dev", tap},
		{"link", "set", tap, "up"},
		{"link", "set", "lo", "up"},
	} {
		runTool(t, "ip", append([]string{"-n", ns}, c...)...)
	}
	var ln net.Listener
	inNetns(t, "/run/netns/"+ns, func() {
		var err error
		if ln, err = net.Listen("tcp", "10.0.2.2:8080"); err != nil {
			t.Errorf("listen in the namespace: %v", err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// inNetns runs f on a thread switched into the network namespace at path
// (sockets it creates stay in that namespace).
func inNetns(t *testing.T, path string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not unlocked: it dies with the goroutine rather
		// than going back to the pool in the wrong namespace.
		ns, err := os.Open(path)
		if err != nil {
			t.Errorf("open %s: %v", path, err)
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns %s: %v", path, err)
			return
		}
		f()
	}()
	<-done
}

// TestVirtioNet puts a TAP in a network namespace of its own with the host
// side at 10.0.2.2, runs an HTTP server there, and boots the guest with
// --net on that TAP: the guest takes 10.0.2.15, pings the host and fetches
// a file.
func TestVirtioNet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestVirtioNet needs root (network namespace and TAP); the emulated host runs it as root")
	}
	ns := fmt.Sprintf("kvmlab%d", os.Getpid())
	body := bytes.Repeat([]byte("kvmlab-net "), 100) // 1100 bytes: more than one small frame
	tapWithServer(t, ns, "kvmtap0", body)

	// kvmlab runs inside the namespace so it can open the TAP there.
	g := bootToShellCmd(t, []string{tool(t, "ip"), "netns", "exec", ns, kvmlabBin(t)}, "run", "--quiet", "--stats",
		"--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "512M", "--append", quietCmdline, "--net", "tap=kvmtap0,mac=52:54:00:12:34:56")
	if v := g.value("MAC", "cat /sys/class/net/eth0/address", cmdTimeout); v != "52:54:00:12:34:56" {
		t.Errorf("guest eth0 MAC = %q, want 52:54:00:12:34:56", v)
	}
	g.send("ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up\n")
	g.send("ping -c 1 10.0.2.2\n")
	g.expect(regexp.MustCompile(`(?i)(bytes from 10\.0\.2\.2|1 packets received|time=)`), 2*cmdTimeout)
	if v := g.value("SUM", "wget -O /tmp/f http://10.0.2.2:8080/f >/dev/null 2>&1; md5sum /tmp/f", 2*cmdTimeout); !strings.HasPrefix(v, fmt.Sprintf("%x", md5sum(body))) {
		t.Errorf("md5sum of the fetched file = %q, want %x", v, md5sum(body))
	}
	g.send("poweroff\n")
	if code := g.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
	}
	t.Logf("virtio stats:\n%s", grepLines(g.stderr(), "virtio-"))
}

// TestVirtioDebian: Debian's stock kernel enumerates the same devices, disk,
// network and entropy (its virtio drivers are modules that u-root does not
// load, so this checks PCI enumeration and IDs).
func TestVirtioDebian(t *testing.T) {
	k := os.Getenv("KVMLAB_DEBIAN_KERNEL")
	if k == "" {
		t.Fatal("KVMLAB_DEBIAN_KERNEL is not set (the emulated-host runner sets it)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("TestVirtioDebian needs root (a TAP for the network device); the emulated host runs it as root")
	}
	// A TAP in the emulated host's own namespace: nothing is sent on it,
	// the guest only has to find the device behind it.
	const tap = "kvmdeb0"
	runTool(t, "ip", "tuntap", "add", tap, "mode", "tap")
	t.Cleanup(func() { _ = exec.Command(tool(t, "ip"), "tuntap", "del", tap, "mode", "tap").Run() })
	img := ext4Image(t, nil)
	g := bootToShell(t, "run", "--quiet", "--kernel", k, "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "512M", "--append", quietCmdline, "--disk", img, "--net", "tap="+tap, "--rng")
	// Slots in the order kvmlab adds them: disks, networks, entropy.
	const ids = "cat /sys/bus/pci/devices/0000:00:01.0/vendor /sys/bus/pci/devices/0000:00:01.0/device " +
		"/sys/bus/pci/devices/0000:00:02.0/device /sys/bus/pci/devices/0000:00:03.0/device"
	if v := g.value("IDS", ids, cmdTimeout); v != "0x1af4 0x1042 0x1041 0x1044" {
		t.Errorf("Debian kernel sees virtio PCI IDs %q, want 0x1af4 0x1042 0x1041 0x1044 (blk, net, rng)", v)
	}
	g.send("poweroff\n")
	if code := g.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d after guest poweroff, want 0", code)
	}
}

func md5sum(b []byte) [16]byte { return md5.Sum(b) }
