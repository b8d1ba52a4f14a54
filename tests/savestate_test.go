package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvmlab/vmm/vmstate"
)

// Snapshots (issue 14): kvmlab run --control SOCK, kvmlab control SOCK
// snapshot FILE, kvmlab run --restore FILE.

// snapshotVia asks the kvmlab behind sock for a snapshot into file and
// returns kvmlab control's output.
func snapshotVia(t *testing.T, sock, file string, extra ...string) string {
	t.Helper()
	args := append([]string{"control", sock, "snapshot", file}, extra...)
	out, err := exec.Command(kvmlabBin(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kvmlab %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// killGuest ends a kvmlab the hard way: what a snapshot must survive.
func killGuest(t *testing.T, g *guestConsole) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g.done
}

// TestSnapshotRestore: a guest at its shell, counting on its console, is
// snapshotted, killed, and restored twice. Each clone's counter goes on
// from where the snapshot caught it (not from 1), and each clone's shell
// runs a new command.
func TestSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	sock, snap := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "guest.snap")
	g := bootToShell(t, "run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "256M", "--append", quietCmdline, "--control", sock)
	// A counter in the background, one line every 0.2 s.
	g.send("i=0; while true; do i=$((i+1)); echo tick-$i-; sleep 0.2; done &\n")
	tick := regexp.MustCompile(`tick-(\d+)-`)
	g.expect(tick, cmdTimeout)
	g.expect(tick, cmdTimeout)
	// --paused: the guest stays stopped after the snapshot, so the last
	// tick on the console is the last one the snapshot holds (give the
	// console a moment to pass on what the guest wrote before it stopped).
	out := snapshotVia(t, sock, snap, "--paused")
	t.Logf("kvmlab control: %s", strings.TrimSpace(out))
	time.Sleep(time.Second)
	last := lastTick(g.output(), tick)
	killGuest(t, g)
	st, err := os.Stat(snap)
	if err != nil {
		t.Fatalf("no snapshot file: %v", err)
	}
	t.Logf("snapshot %d bytes, last tick before it %d", st.Size(), last)
	describeSnapshot(t, snap)

	for clone := 1; clone <= 2; clone++ {
		args := []string{"run", "--restore", snap}
		if clone == 2 {
			// KVM's counters for the clone's life: pf_taken counts the
			// guest-physical pages mapped into the second-level page
			// tables again, one 4 KiB page of the file at a time
			// (docs/snapshot.md).
			args = append(args, "--stats")
		}
		c := startGuestCmd(t, bootTimeout, []string{kvmlabBin(t)}, args...)
		// The command is typed at once, as a user at a restored shell
		// would: the time to its answer is "restore to a running shell".
		if v := c.value("ANSWER", "echo $((6*7))", cmdTimeout); v != "42" {
			t.Errorf("clone %d: the shell answered %q, want 42", clone, v)
		}
		answered := time.Since(c.start)
		c.expect(tick, cmdTimeout)
		// The counter goes on with the next tick, or the one after when
		// the last was cut off on its way out; never from the start.
		n := firstTick(c.output(), tick)
		if n < last || n > last+3 {
			t.Errorf("clone %d's first tick is %d, want the count to go on from %d", clone, n, last)
		}
		c.mu.Lock()
		firstByte := c.first.Sub(c.start)
		c.mu.Unlock()
		t.Logf("clone %d: first console byte after %v, the shell answered after %v, first tick %d; %s", clone, firstByte.Round(time.Millisecond), answered.Round(time.Millisecond), n,
			regexp.MustCompile(`kvmlab: restored [^\r\n]*`).FindString(c.stderr()))
		c.send("poweroff\n")
		if code := c.wait(cmdTimeout); code != 0 {
			t.Errorf("clone %d: kvmlab exited %d after poweroff, want 0\n%s", clone, code, c.stderr())
		}
		if clone == 2 {
			pf := regexp.MustCompile(`(?m)^\s*(exits|pf_taken)\s.*$`).FindAllString(c.stderr(), -1)
			if len(pf) != 2 {
				t.Errorf("clone 2 ran with --stats, but KVM's exits and pf_taken counters are not in its report:\n%s", c.stderr())
			}
			t.Logf("clone 2, from restore to poweroff, KVM counted:\n%s", strings.Join(pf, "\n"))
		}
	}
}

// describeSnapshot checks that the file holds the layers docs/snapshot.md
// lists, and logs the size of each (the figures in that document).
func describeSnapshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sf, err := vmstate.OpenFile(f)
	if err != nil {
		t.Fatalf("the snapshot does not read back: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(sf.Description, &top); err != nil {
		t.Fatalf("description: %v", err)
	}
	var devices, vcpus map[string]json.RawMessage
	var cpuList []map[string]json.RawMessage
	_ = json.Unmarshal(top["devices"], &devices)
	_ = json.Unmarshal(top["vcpus"], &cpuList)
	if len(cpuList) > 0 {
		vcpus = cpuList[0]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "file %d bytes: description %d bytes (JSON), RAM %d of %d bytes in %d runs\n", sf.FileBytes, sf.Info.Description, sf.SavedBytes, sf.RAMBytes, sf.Info.Runs)
	for _, layer := range []struct {
		name string
		m    map[string]json.RawMessage
	}{{"description", top}, {"vCPU 0", vcpus}, {"devices", devices}} {
		keys := make([]string, 0, len(layer.m))
		for k := range layer.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "  %s:", layer.name)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s %d,", k, len(layer.m[k]))
		}
		b.WriteString("\n")
	}
	t.Logf("snapshot layers (JSON bytes):\n%s", b.String())
	for _, k := range []string{"config", "vm", "vcpus", "devices", "vendor"} {
		if _, ok := top[k]; !ok {
			t.Errorf("the description has no %q", k)
		}
	}
	for _, k := range []string{"Regs", "Sregs", "XSAVE", "LAPIC", "MSRs", "Events"} {
		if _, ok := vcpus[k]; !ok {
			t.Errorf("vCPU 0's state has no %q", k)
		}
	}
	for _, k := range []string{"com1", "i8042", "cmos", "acpi_pm", "pci"} {
		if _, ok := devices[k]; !ok {
			t.Errorf("the devices have no %q", k)
		}
	}
}

// lastTick is the highest counter value in out.
// firstTick is the first counter value in out (0: none).
func firstTick(out string, re *regexp.Regexp) int {
	if m := re.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func lastTick(out string, re *regexp.Regexp) int {
	last := 0
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if n, _ := strconv.Atoi(m[1]); n > last {
			last = n
		}
	}
	return last
}

// TestSnapshotDisk: a guest with a virtio disk mounted writes a file and
// syncs; it is snapshotted mid-use, killed and restored; the restored guest
// reads its file back, writes another, unmounts, and the host's e2fsck
// finds the file system clean.
func TestSnapshotDisk(t *testing.T) {
	dir := t.TempDir()
	sock, snap := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "disk.snap")
	img := ext4Image(t, map[string]string{"hello.txt": "hello\n"})
	g := bootToShell(t, "run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "256M", "--append", quietCmdline, "--disk", img, "--control", sock)
	g.send("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && echo before-snapshot > /mnt/a.txt && sync && echo SYNC''ED\n")
	g.expect(regexp.MustCompile(`SYNCED`), cmdTimeout)
	snapshotVia(t, sock, snap)
	killGuest(t, g)

	c := startGuestCmd(t, bootTimeout, []string{kvmlabBin(t)}, "run", "--quiet", "--restore", snap)
	if v := c.value("A", "cat /mnt/a.txt", cmdTimeout); v != "before-snapshot" {
		t.Errorf("the restored guest read %q from /mnt/a.txt, want before-snapshot", v)
	}
	c.send("echo after-restore > /mnt/b.txt && sync && umount /mnt && echo UMOUNT''ED\n")
	c.expect(regexp.MustCompile(`UMOUNTED`), cmdTimeout)
	c.send("poweroff\n")
	if code := c.wait(cmdTimeout); code != 0 {
		t.Fatalf("kvmlab exited %d after poweroff, want 0\n%s", code, c.stderr())
	}
	if out, err := exec.Command(tool(t, "e2fsck"), "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on the image after the restore: %v\n%s", err, out)
	}
	if got := debugfsCat(t, img, "/b.txt"); got != "after-restore\n" {
		t.Errorf("the image's /b.txt holds %q, want after-restore", got)
	}
	// Without its disk image the snapshot is refused in one line.
	if err := os.Rename(img, img+".moved"); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runKvmlab(t, time.Minute, "run", "--restore", snap)
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "its disk "+img) {
		t.Errorf("restore without the disk image: exit %d, stderr %q: want exit 2 and one line naming the disk", code, stderr)
	}
}

// TestSnapshotFileRefused: a truncated, damaged, wrong-version or foreign
// file given to --restore gets one line and exit 2, before the guest runs.
func TestSnapshotFileRefused(t *testing.T) {
	dir := t.TempDir()
	sock, snap := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "good.snap")
	g := bootToShell(t, "run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "128M", "--append", quietCmdline, "--control", sock)
	snapshotVia(t, sock, snap)
	killGuest(t, g)
	good, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flip := func(off int) []byte {
		b := append([]byte(nil), good...)
		b[off] ^= 0x40
		return b
	}
	version := append([]byte(nil), good...)
	version[8] = 9
	tests := []struct{ name, path, want string }{
		{"truncated", write("trunc.snap", good[:len(good)/2]), "truncated"},
		{"RAM damaged", write("ram.snap", flip(len(good)-4096)), "checksum"},
		{"description damaged", write("desc.snap", flip(40)), "checksum"},
		{"newer version", write("v9.snap", version), "version 9"},
		{"not a snapshot", write("kernel.snap", []byte(strings.Repeat("MZ", 4096))), "does not start with"},
		{"missing", filepath.Join(dir, "nope.snap"), "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runKvmlab(t, time.Minute, "run", "--restore", tc.path)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q (stdout %q): want exit 2 and one line containing %q", code, stderr, stdout, tc.want)
			}
		})
	}
}

// TestSnapshotNet: a guest whose virtio-net interface is up fetches a file
// from the host, is snapshotted, killed and restored on the same TAP; the
// restored guest fetches it again without configuring anything: its
// address, routes and driver state came back with its RAM and the device.
func TestSnapshotNet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestSnapshotNet needs root (network namespace and TAP); the emulated host runs it as root")
	}
	ns := fmt.Sprintf("kvmlabsnap%d", os.Getpid())
	body := bytes.Repeat([]byte("kvmlab-snapshot-net "), 100)
	tapWithServer(t, ns, "snaptap0", body)
	want := fmt.Sprintf("%x", md5sum(body))
	fetch := func(g *guestConsole, what string) {
		t.Helper()
		if v := g.value("SUM", "wget -O /tmp/f http://10.0.2.2:8080/f >/dev/null 2>&1; md5sum /tmp/f", 2*cmdTimeout); !strings.HasPrefix(v, want) {
			t.Errorf("%s: md5sum of the fetched file = %q, want %s", what, v, want)
		}
	}

	dir := t.TempDir()
	sock, snap := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "net.snap")
	inNS := []string{tool(t, "ip"), "netns", "exec", ns, kvmlabBin(t)}
	g := bootToShellCmd(t, inNS, "run", "--quiet", "--kernel", guestFile(t, "bzImage"), "--initrd", guestFile(t, "initramfs.cpio"),
		"--mem", "256M", "--append", quietCmdline, "--net", "tap=snaptap0,mac=52:54:00:12:34:57", "--control", sock)
	g.send("ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up\n")
	fetch(g, "before the snapshot")
	snapshotVia(t, sock, snap)
	killGuest(t, g)

	c := startGuestCmd(t, bootTimeout, inNS, "run", "--quiet", "--restore", snap)
	fetch(c, "after the restore")
	if v := c.value("MAC", "cat /sys/class/net/eth0/address", cmdTimeout); v != "52:54:00:12:34:57" {
		t.Errorf("restored guest's eth0 MAC = %q", v)
	}
	c.send("poweroff\n")
	if code := c.wait(cmdTimeout); code != 0 {
		t.Errorf("kvmlab exited %d after poweroff, want 0\n%s", code, c.stderr())
	}
}
