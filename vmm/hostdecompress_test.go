package vmm

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"kvmlab/vmm/boot"
)

// testELF is a minimal x86-64 kernel ELF: one PT_LOAD of 16 bytes at
// physical 16 MiB, entered there.
func testELF() []byte {
	le := binary.LittleEndian
	b := make([]byte, 64+56+16)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], 0x1000000) // e_entry
	le.PutUint64(b[32:], 64)        // e_phoff
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], 1)
	ph := b[64:]
	le.PutUint32(ph[0:], 1)   // PT_LOAD
	le.PutUint64(ph[8:], 120) // p_offset
	le.PutUint64(ph[16:], 0xffffffff81000000)
	le.PutUint64(ph[24:], 0x1000000)
	le.PutUint64(ph[32:], 16)
	le.PutUint64(ph[40:], 0x1000)
	copy(b[120:], "\x90\x90\xf4kvmlab-kernel")
	return b
}

// testBzImage wraps payload (a compressed stream with its trailer) in a
// protocol 2.15 bzImage header (boot.rst), as arch/x86/boot/tools/build.c
// lays one out: one setup sector, then the protected-mode part.
func testBzImage(payload []byte) []byte {
	le := binary.LittleEndian
	const setup, off = 2 * 512, 0x200
	pm := (off + len(payload) + 0x200 + 15) &^ 15
	k := make([]byte, setup+pm)
	k[0x1f1] = 1
	le.PutUint32(k[0x1f4:], uint32(pm/16))
	le.PutUint16(k[0x1fe:], 0xaa55)
	k[0x200], k[0x201] = 0xeb, 0x6a
	copy(k[0x202:], "HdrS")
	le.PutUint16(k[0x206:], 0x020f)
	k[0x211] = 1 // LOADED_HIGH
	le.PutUint32(k[0x22c:], 0x7fffffff)
	le.PutUint32(k[0x230:], 0x200000)
	k[0x234] = 1
	le.PutUint16(k[0x236:], 1) // XLF_KERNEL_64
	le.PutUint32(k[0x238:], 2047)
	le.PutUint32(k[0x248:], off)
	le.PutUint32(k[0x24c:], uint32(len(payload)))
	le.PutUint64(k[0x258:], 0x1000000)
	le.PutUint32(k[0x260:], 0x100000)
	copy(k[setup+off:], payload)
	return k
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	z := gzip.NewWriter(&buf)
	if _, err := z.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHostDecompress(t *testing.T) {
	kernel := testBzImage(gz(t, testELF()))
	img, err := boot.Parse(kernel)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var log strings.Builder

	t.Run("guest decompression asked for", func(t *testing.T) {
		if got := hostDecompress(img, kernel, "", &log); got != img {
			t.Fatalf("dir \"\": got a %v, want the bzImage itself", got.Format)
		}
	})
	t.Run("first boot decompresses and caches", func(t *testing.T) {
		got := hostDecompress(img, kernel, dir, &log)
		if got.Format != boot.FormatELF || got.EntryPoint != 0x1000000 || got.Setup != img.Setup {
			t.Fatalf("got format %v entry %#x", got.Format, got.EntryPoint)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.vmlinux"))
		if len(files) != 1 {
			t.Fatalf("cache holds %v, want one .vmlinux", files)
		}
		if b, _ := os.ReadFile(files[0]); !bytes.Equal(b, testELF()) {
			t.Fatalf("cached %d bytes, not the kernel ELF", len(b))
		}
	})
	t.Run("a later boot reads the cache", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.vmlinux"))
		// Mark the cached copy (a byte inside the segment): the image
		// must come from the file, not from decoding again.
		b, _ := os.ReadFile(files[0])
		b[121] = 0xcc
		if err := os.WriteFile(files[0], b, 0o644); err != nil {
			t.Fatal(err)
		}
		got := hostDecompress(img, kernel, dir, &log)
		if got.Format != boot.FormatELF || got.Segments[0].Data[1] != 0xcc {
			t.Fatalf("image did not come from the cache: % x", got.Segments[0].Data[:4])
		}
	})
	t.Run("a damaged cache file is decoded again", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.vmlinux"))
		if err := os.WriteFile(files[0], []byte("not an ELF"), 0o644); err != nil {
			t.Fatal(err)
		}
		got := hostDecompress(img, kernel, dir, &log)
		if got.Format != boot.FormatELF || got.Segments[0].Data[1] != 0x90 {
			t.Fatalf("got %v", got.Format)
		}
		if b, _ := os.ReadFile(files[0]); !bytes.Equal(b, testELF()) {
			t.Fatal("the damaged cache file was not replaced")
		}
	})
	if log.Len() != 0 {
		t.Errorf("log: %q, want nothing", log.String())
	}
	t.Run("corrupt payload: the guest decompresses, said once", func(t *testing.T) {
		bad := gz(t, testELF())
		bad[len(bad)-1] ^= 0xff // ISIZE now promises far too much
		k := testBzImage(bad)
		im, err := boot.Parse(k)
		if err != nil {
			t.Fatal(err)
		}
		var l strings.Builder
		if got := hostDecompress(im, k, t.TempDir(), &l); got != im {
			t.Fatalf("got %v, want the bzImage", got.Format)
		}
		if !strings.Contains(l.String(), "the guest decompresses its kernel") {
			t.Errorf("log %q", l.String())
		}
	})
	t.Run("lzo: the guest decompresses, silently", func(t *testing.T) {
		k := testBzImage(append([]byte("\x89LZO\x00\r\n\x1a\n"), make([]byte, 32)...))
		im, err := boot.Parse(k)
		if err != nil {
			t.Fatal(err)
		}
		var l strings.Builder
		if got := hostDecompress(im, k, t.TempDir(), &l); got != im || l.Len() != 0 {
			t.Fatalf("got %v, log %q", got.Format, l.String())
		}
	})
}

// TestReadCachedRefusesSpecialFiles: a FIFO or a symbolic link in the cache
// is refused at once (a FIFO would otherwise block the open for ever).
func TestReadCachedRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.vmlinux")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.vmlinux")
	if err := os.Symlink("/etc/hostname", link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, link, filepath.Join(dir, "missing.vmlinux")} {
		if b, err := readCached(p); err == nil {
			t.Errorf("readCached(%s) = %d bytes, want an error", filepath.Base(p), len(b))
		}
	}
}
