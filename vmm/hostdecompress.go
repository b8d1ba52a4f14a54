package vmm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"kvmlab/vmm/boot"
)

// Host decompression (package boot, decompress.go, says what and why): a
// bzImage whose payload kvmlab can decode is booted as the ELF kernel
// inside it, entered at its 64-bit entry, so the guest skips its own
// decompressor.
//
// Decoding in Go costs about as much as the guest's decompressor does
// (Go's xz and the kernel's XZ Embedded are both byte-at-a-time range
// decoders; measured here: 0.9 s for kvmlab's kernel, 3.6 s for Debian's),
// so doing it on every boot would only move the time from the guest to
// the host. The result is therefore kept in a cache directory, named by
// the SHA-256 of the bzImage: the first boot of a kernel pays, every
// later one reads the file. A cached file is parsed and checked like any
// kernel (boot.WithDecompressed), so a damaged one is decoded again.

// decompressCacheMax bounds what a cache file may hold before it is read.
const decompressCacheMax = boot.MaxDecompressed

// hostDecompress returns the image to load: img's ELF kernel when it can be
// decoded on the host (from dir's cache when there), else img itself with a
// note in log saying why the guest decompresses. dir "" means the caller
// asked for guest decompression.
func hostDecompress(img *boot.Image, kernel []byte, dir string, log io.Writer) *boot.Image {
	if dir == "" || img.Format != boot.FormatBzImage {
		return img
	}
	c, _, err := boot.PayloadCompression(img)
	if err != nil {
		// LZO, or a payload kvmlab does not recognise: the bzImage boots
		// as it is, as with --guest-decompress. Said only when it is
		// not simply a format without a Go decoder.
		if !errors.Is(err, boot.ErrNoHostDecompress) {
			logLine(log, "kvmlab: the guest decompresses its kernel: %v", err)
		}
		return img
	}
	path := cachePath(dir, kernel)
	if out, err := readCached(path); err == nil {
		if elf, err := boot.WithDecompressed(img, out); err == nil {
			return elf
		}
	}
	out, _, err := boot.DecompressPayload(img)
	var elf *boot.Image
	if err == nil {
		elf, err = boot.WithDecompressed(img, out)
	}
	if err != nil {
		logLine(log, "kvmlab: the guest decompresses its kernel: host %s decompression failed: %v", c, err)
		return img
	}
	if err := writeCached(dir, path, out); err != nil {
		logLine(log, "kvmlab: decompressed kernel not cached: %v", err)
	}
	return elf
}

// cachePath is where kernel's decompressed ELF is kept in dir.
func cachePath(dir string, kernel []byte) string {
	sum := sha256.Sum256(kernel)
	return filepath.Join(dir, hex.EncodeToString(sum[:16])+".vmlinux")
}

// WarmDecompressCache makes sure dir's cache holds the decompressed kernel
// of the bzImage kernel, as a boot with DecompressCache dir would leave it,
// and returns the cache file's path. An emulated host starts with an empty
// cache: its test harness warms the cache here and copies the file in, so
// that no kvmlab inside spends minutes of emulated CPU on decoding again.
func WarmDecompressCache(kernel []byte, dir string) (string, error) {
	img, err := boot.Parse(kernel)
	if err != nil {
		return "", err
	}
	if img.Format != boot.FormatBzImage {
		return "", errors.New("not a bzImage: nothing to decompress")
	}
	if _, _, err := boot.PayloadCompression(img); err != nil {
		return "", err
	}
	path := cachePath(dir, kernel)
	if out, err := readCached(path); err == nil {
		if _, err := boot.WithDecompressed(img, out); err == nil {
			return path, nil
		}
	}
	out, _, err := boot.DecompressPayload(img)
	if err == nil {
		_, err = boot.WithDecompressed(img, out)
	}
	if err != nil {
		return "", err
	}
	if err := writeCached(dir, path, out); err != nil {
		return "", err
	}
	return path, nil
}

// readCached reads a cache file, refusing one too big to be a kernel or
// not a regular file: O_NONBLOCK so that a FIFO put there cannot hang the
// open, O_NOFOLLOW so that a symbolic link is not followed out of the cache.
func readCached(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > decompressCacheMax {
		return nil, errors.New("not a regular file of kernel size")
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

// writeCached stores the decompressed kernel atomically: a temporary file
// in dir, renamed, so a concurrent boot never reads half a kernel.
func writeCached(dir, path string, raw []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".vmlinux-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename: no such file, fine
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("caching the decompressed kernel: %w", err)
	}
	return nil
}

func logLine(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
