package emuhost

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelFromDirOverride(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz not installed")
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := t.TempDir()
	// An unpacked-package layout: boot/vmlinuz-*, modules somewhere below,
	// two of them xz-compressed.
	write := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("boot/vmlinuz-6.9-test", "not really a kernel")
	mods := "lib/modules/6.9-test/kernel/"
	write(mods+"virt/lib/irqbypass.ko", "irqbypass module")
	write(mods+"drivers/crypto/ccp/ccp.ko", "ccp module")
	write(mods+"drivers/net/tun.ko", "tun module")
	write(mods+"arch/x86/kvm/kvm-intel.ko", "module kvm-intel.ko")
	for _, m := range []string{"arch/x86/kvm/kvm.ko", "arch/x86/kvm/kvm-amd.ko"} {
		p := write(mods+m, "module "+filepath.Base(m))
		if out, err := exec.Command("xz", p).CombinedOutput(); err != nil {
			t.Fatalf("xz: %v\n%s", err, out)
		}
	}
	t.Setenv(HostKernelDirEnv, dir)
	k, err := HostKernel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !k.CompressedModules {
		t.Error("CompressedModules = false")
	}
	if filepath.Base(k.Vmlinuz) != "vmlinuz-6.9-test" || k.Vmlinux != "" {
		t.Errorf("Vmlinuz %q, Vmlinux %q", k.Vmlinuz, k.Vmlinux)
	}
	want := []string{"irqbypass module", "ccp module", "module kvm.ko", "module kvm-amd.ko", "module kvm-intel.ko", "tun module"}
	if len(k.Modules) != len(want) {
		t.Fatalf("modules %v", k.Modules)
	}
	for i, p := range k.Modules {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want[i] || !strings.HasSuffix(p, ".ko") {
			t.Errorf("module %d at %s: %q, %v; want %q", i, p, b, err, want[i])
		}
	}

	// A missing module is an error naming it.
	os.Remove(filepath.Join(dir, mods+"drivers/crypto/ccp/ccp.ko"))
	if _, err := HostKernel(context.Background()); err == nil || !strings.Contains(err.Error(), "ccp.ko") {
		t.Errorf("err = %v, want one naming ccp.ko", err)
	}
}

func TestBzImagePayload(t *testing.T) {
	img := make([]byte, 4096)
	img[0x1F1] = 3 // setup_sects: protected-mode code at 4*512
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20F)
	binary.LittleEndian.PutUint32(img[0x248:], 100) // payload_offset
	binary.LittleEndian.PutUint32(img[0x24C:], 6)   // payload_length
	copy(img[2048+100:], "\xFD7zXZ\x00")
	p, err := bzImagePayload(img)
	if err != nil || !bytes.Equal(p, []byte("\xFD7zXZ\x00")) {
		t.Errorf("payload %q, %v", p, err)
	}
	binary.LittleEndian.PutUint32(img[0x24C:], 5000)
	if _, err := bzImagePayload(img); err == nil {
		t.Error("payload past the end accepted")
	}
	if _, err := bzImagePayload([]byte("short")); err == nil {
		t.Error("non-bzImage accepted")
	}
}

func TestHasPVHNoteOnOrdinaryELF(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	ok, err := hasPVHNote(exe)
	if err != nil || ok {
		t.Errorf("hasPVHNote(test binary) = %v, %v; want false, nil", ok, err)
	}
}
