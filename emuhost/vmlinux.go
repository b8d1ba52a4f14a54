package emuhost

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Booting faster: a bzImage (vmlinuz) is a small real-mode/decompressor
// stub plus the compressed kernel. Under TCG the emulated CPU spends several
// seconds just decompressing it (Debian uses xz), on every boot. The
// compressed payload is the plain kernel ELF file (vmlinux); Linux kernels
// built with CONFIG_PVH carry a "PVH entry point" ELF note, and QEMU's
// -kernel boots such an ELF file directly, skipping the decompressor. So
// HostKernel decompresses the payload once, when it fills the cache.

const (
	vmlinuxFile        = "vmlinux"
	vmlinuxUnavailable = "vmlinux.unavailable"
	// xenElfNotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY, the PVH entry
	// point note (owner "Xen").
	xenElfNotePhys32Entry = 18
)

// payloadDecompressors maps the magic bytes starting a bzImage payload to
// the command that decompresses it from stdin.
var payloadDecompressors = []struct {
	magic []byte
	cmd   []string
}{
	{[]byte{0xFD, '7', 'z', 'X', 'Z', 0x00}, []string{"xz", "-dc", "--single-stream"}},
	{[]byte{0x1F, 0x8B}, []string{"gzip", "-dc"}},
	{[]byte{0x28, 0xB5, 0x2F, 0xFD}, []string{"zstd", "-dcq"}},
}

// bzImagePayload returns the compressed kernel inside a bzImage, located
// with the boot protocol's setup header (Documentation/x86/boot.rst):
// setup_sects at 0x1F1, the "HdrS" magic at 0x202, the version at 0x206,
// payload_offset and payload_length at 0x248 and 0x24C (protocol 2.08+),
// the offset counting from the protected-mode code, which follows the
// (setup_sects+1) 512-byte sectors of real-mode code.
func bzImagePayload(img []byte) ([]byte, error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS setup header)")
	}
	if v := binary.LittleEndian.Uint16(img[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields (needs 2.08)", v)
	}
	setupSects := int(img[0x1F1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(img[0x248:]))
	n := int(binary.LittleEndian.Uint32(img[0x24C:]))
	if start < 0 || n <= 0 || start+n > len(img) {
		return nil, fmt.Errorf("payload %d+%d outside the %d-byte image", start, n, len(img))
	}
	return img[start : start+n], nil
}

// hasPVHNote reports whether the ELF file at path has a PVH entry point.
func hasPVHNote(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return false, err
		}
		// Each note: namesz, descsz, type (4 bytes each), then the name
		// and the descriptor, each padded to 4 bytes.
		for len(data) >= 12 {
			namesz := int(f.ByteOrder.Uint32(data[0:]))
			descsz := int(f.ByteOrder.Uint32(data[4:]))
			typ := f.ByteOrder.Uint32(data[8:])
			nameEnd := 12 + (namesz+3)&^3
			end := nameEnd + (descsz+3)&^3
			if namesz < 0 || descsz < 0 || end > len(data) {
				break
			}
			name := strings.TrimRight(string(data[12:12+namesz]), "\x00")
			if name == "Xen" && typ == xenElfNotePhys32Entry {
				return true, nil
			}
			data = data[end:]
		}
	}
	return false, nil
}

// extractVmlinux decompresses the kernel ELF out of the bzImage at vmlinuz
// into dst, and checks that it can be booted through PVH.
func extractVmlinux(ctx context.Context, vmlinuz, dst string) error {
	img, err := os.ReadFile(vmlinuz)
	if err != nil {
		return err
	}
	payload, err := bzImagePayload(img)
	if err != nil {
		return err
	}
	var decomp []string
	for _, d := range payloadDecompressors {
		if bytes.HasPrefix(payload, d.magic) {
			decomp = d.cmd
		}
	}
	if decomp == nil {
		return fmt.Errorf("unsupported payload compression (magic % x)", payload[:min(6, len(payload))])
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".vmlinux-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, decomp[0], decomp[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("command `%s` (on the payload of %s) failed: %v\n%s", strings.Join(cmd.Args, " "), vmlinuz, err, tail(stderr.String(), 1000))
	}
	ok, err := hasPVHNote(tmp)
	if err != nil {
		return fmt.Errorf("decompressed kernel: %w", err)
	}
	if !ok {
		return errors.New("the kernel has no PVH entry point (CONFIG_PVH)")
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// ensureVmlinux makes sure dir holds a bootable vmlinux extracted from
// vmlinuz, or a vmlinux.unavailable file saying why there is none, and
// returns the vmlinux path or "".
func ensureVmlinux(ctx context.Context, vmlinuz, dir string) string {
	p := filepath.Join(dir, vmlinuxFile)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if _, err := os.Stat(filepath.Join(dir, vmlinuxUnavailable)); err == nil {
		return ""
	}
	if err := extractVmlinux(ctx, vmlinuz, p); err != nil {
		if ctx.Err() == nil {
			_ = os.WriteFile(filepath.Join(dir, vmlinuxUnavailable), []byte(err.Error()+"\n"), 0o644)
		}
		return ""
	}
	return p
}
