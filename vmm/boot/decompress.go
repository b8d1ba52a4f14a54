package boot

// Decompressing a bzImage on the host.
//
// A bzImage's protected-mode part is a small decompressor
// (arch/x86/boot/compressed/) followed by the real kernel, compressed: the
// setup header's payload_offset and payload_length (boot.rst, protocol
// 2.08+) say where that compressed stream lies, counted from the start of
// the protected-mode part. Decompressed, it is vmlinux.bin: the kernel's
// ELF file with its debug sections stripped (objcopy -S), followed, on
// relocatable kernels, by the relocation table (vmlinux.relocs) the
// decompressor uses for KASLR. The kernel build appends the decompressed
// size, 32 bits little-endian, after every compressed stream
// (scripts/Makefile.lib, size_append; gzip's own trailer ends with the same
// ISIZE field).
//
// Booting the bzImage, the guest spends its first seconds running that
// decompressor. Doing the work here and entering the ELF kernel at its
// 64-bit entry (startup_64, with RSI = boot_params), as the decompressor
// itself does when it is done, skips that work: the protocol allows it,
// it is what Firecracker and QEMU's PVH boot do with an uncompressed
// vmlinux. What the guest then loses is what the decompressor does besides
// decompressing: KASLR (the kernel runs at its link address, as with any
// ELF vmlinux; kvmlab's ELF path already does this) and, on SEV guests,
// its early memory-encryption set-up, which kvmlab does not offer.
//
// The formats are those Linux can build (CONFIG_KERNEL_GZIP, _BZIP2,
// _LZMA, _XZ, _LZO, _LZ4, _ZSTD). The decoders are Go's standard library
// and the libraries u-root's pkg/boot/bzimage already uses for the same
// job (they are in kvmlab's module graph through u-root): no decoder is
// written here. Linux's xz streams carry the x86 BCJ filter (xz --x86,
// scripts/xz_wrap.sh), which github.com/ulikunitz/xz does not decode and
// github.com/therootcompany/xz (a port of XZ Embedded, the decoder Linux
// itself uses) does. LZO has no such library: an LZO kernel stays on the
// guest-decompression path.
//
// The file is the user's and may be hostile: the decompressed size is
// read from the trailer, must be at most MaxDecompressed, and the decoder
// is stopped one byte past it, so a small file cannot make kvmlab allocate
// without bound; the result must then parse as an x86-64 ELF kernel.

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/therootcompany/xz"
	"github.com/ulikunitz/xz/lzma"
)

// MaxDecompressed bounds the decompressed kernel (vmlinux.bin plus its
// relocations). Debian 12's 6.1 kernel decompresses to 66 MB; kvmlab's
// own to 21 MB.
const MaxDecompressed = 256 << 20

// ErrNoHostDecompress is wrapped when a bzImage's payload is in a format
// kvmlab cannot decompress on the host (LZO, or unknown): the caller boots
// the bzImage as it is and the guest decompresses it.
var ErrNoHostDecompress = errors.New("no host decompressor for this payload")

// ErrCorrupt is the Kind of an error about a compressed payload that does
// not decode, or decodes to another size than its trailer says.
var ErrCorrupt = errors.New("corrupt compressed kernel")

// Compression names a bzImage payload's format.
type Compression string

// The payload formats, recognised by their first bytes.
const (
	CompressGzip  Compression = "gzip"
	CompressBzip2 Compression = "bzip2"
	CompressLZMA  Compression = "lzma"
	CompressXZ    Compression = "xz"
	CompressLZO   Compression = "lzo"
	CompressLZ4   Compression = "lz4"
	CompressZstd  Compression = "zstd"
)

// payloadMagic lists each format's leading bytes. LZ4 kernels use the
// legacy frame (lz4 -l, magic 0x184C2102), not the current one. LZMA
// ("lzma_alone") has no magic: its first byte is the properties byte,
// 0x5d for the default lc=3 lp=0 pb=2, followed by the dictionary size.
var payloadMagic = []struct {
	c     Compression
	magic string
}{
	{CompressGzip, "\x1f\x8b"},
	{CompressBzip2, "BZh"},
	{CompressLZMA, "\x5d\x00\x00"},
	{CompressXZ, "\xfd7zXZ\x00"},
	{CompressLZO, "\x89LZO\x00\r\n\x1a\n"},
	{CompressLZ4, "\x02\x21\x4c\x18"},
	{CompressZstd, "\x28\xb5\x2f\xfd"},
}

// PayloadCompression returns the compressed kernel inside a bzImage (the
// stream, without the size trailer) and its format.
func PayloadCompression(img *Image) (Compression, []byte, error) {
	if img == nil || img.Format != FormatBzImage || img.Setup == nil {
		return "", nil, errorf(ErrInvalidImage, "not a bzImage: nothing to decompress")
	}
	h := img.Setup
	if h.Version < 0x0208 {
		return "", nil, errorf(ErrProtocol, "protocol %s has no payload_offset (2.08+)", h.VersionString())
	}
	off, n := uint64(h.PayloadOffset), uint64(h.PayloadLength)
	if off > uint64(len(img.Payload)) || n > uint64(len(img.Payload))-off {
		return "", nil, errorf(ErrTruncated, "compressed kernel (%d bytes at offset %#x) runs past the %d-byte protected-mode part", n, off, len(img.Payload))
	}
	stream := img.Payload[off : off+n]
	for _, m := range payloadMagic {
		if bytes.HasPrefix(stream, []byte(m.magic)) {
			if m.c == CompressLZO { // no Go decoder among the allowed libraries
				return m.c, stream, fmt.Errorf("lzo: %w", ErrNoHostDecompress)
			}
			return m.c, stream, nil
		}
	}
	return "", stream, fmt.Errorf("payload starts % x: %w", stream[:min(len(stream), 6)], ErrNoHostDecompress)
}

// Decompress returns the ELF kernel inside a bzImage, ready for Load: its
// segments go at their link addresses and it is entered at startup_64.
// It keeps the bzImage's setup header, so the zero page carries the
// kernel's own limits (cmdline_size, initrd_addr_max) as with the bzImage.
// The returned Image's slices alias a new buffer, not img's.
func Decompress(img *Image) (*Image, error) {
	out, c, err := DecompressPayload(img)
	if err != nil {
		return nil, err
	}
	elf, err := WithDecompressed(img, out)
	if err != nil {
		return nil, fmt.Errorf("decompressed %s payload: %w", c, err)
	}
	return elf, nil
}

// DecompressPayload returns the decompressed payload of a bzImage (the
// bytes WithDecompressed takes) and its format.
func DecompressPayload(img *Image) ([]byte, Compression, error) {
	c, stream, err := PayloadCompression(img)
	if err != nil {
		return nil, c, err
	}
	out, err := decompressStream(c, stream)
	return out, c, err
}

// WithDecompressed is Decompress's result from the decompressed bytes (a
// cached copy, say): out must parse as an x86-64 ELF kernel, and the
// Image gets img's setup header. out is checked as any user file is, so a
// stale or tampered cache is an error, not a bad boot.
func WithDecompressed(img *Image, out []byte) (*Image, error) {
	if img == nil || img.Format != FormatBzImage || img.Setup == nil {
		return nil, errorf(ErrInvalidImage, "not a bzImage")
	}
	if len(out) > MaxDecompressed {
		return nil, errorf(ErrTooBig, "decompressed kernel of %d bytes, more than %d MiB", len(out), MaxDecompressed>>20)
	}
	if !bytes.HasPrefix(out, []byte(elfMagic)) {
		return nil, errorf(ErrBadELF, "the decompressed payload is not an ELF file (it starts % x)", out[:min(len(out), 4)])
	}
	elf, err := parseELF(out)
	if err != nil {
		return nil, err
	}
	elf.Setup = img.Setup
	return elf, nil
}

// decompressStream decodes a payload of format c, checking its length
// against the size trailer.
func decompressStream(c Compression, stream []byte) ([]byte, error) {
	if len(stream) < 8 {
		return nil, errorf(ErrTruncated, "%s payload of %d bytes: too short", c, len(stream))
	}
	want := uint64(le32(stream, len(stream)-4))
	if want == 0 || want > MaxDecompressed {
		return nil, errorf(ErrTooBig, "%s payload says it decompresses to %d bytes; kvmlab decompresses at most %d MiB on the host", c, want, MaxDecompressed>>20)
	}
	body := stream
	if c != CompressGzip { // gzip's trailer is part of the gzip stream
		body = stream[:len(stream)-4]
	}
	r, closeFn, err := decoder(c, bytes.NewReader(body))
	if errors.Is(err, ErrNoHostDecompress) {
		return nil, err
	}
	if err != nil {
		return nil, errorf(ErrCorrupt, "%s payload: %v", c, err)
	}
	defer closeFn()
	// Grow only as real output arrives, one byte past the promise: a
	// trailer that lies cannot make us allocate more than MaxDecompressed.
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, int64(want)+1))
	if err != nil {
		return nil, errorf(ErrCorrupt, "%s payload: %v after %d bytes", c, err, n)
	}
	if uint64(n) != want {
		return nil, errorf(ErrCorrupt, "%s payload decompressed to %d bytes or more, its trailer says %d", c, n, want)
	}
	return buf.Bytes(), nil
}

// decoder opens the library decoder for format c.
func decoder(c Compression, r io.Reader) (io.Reader, func(), error) {
	nop := func() {}
	switch c {
	case CompressGzip:
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, nop, err
		}
		z.Multistream(false)
		return z, nop, nil
	case CompressBzip2:
		return bzip2.NewReader(r), nop, nil
	case CompressLZMA:
		z, err := lzma.NewReader(r)
		return z, nop, err
	case CompressXZ:
		// Linux builds with a dictionary of at most 32 MiB
		// (scripts/xz_wrap.sh); the decoder refuses larger ones.
		z, err := xz.NewReader(r, 32<<20)
		if err != nil {
			return nil, nop, err
		}
		z.Multistream(false)
		return z, nop, nil
	case CompressLZ4:
		return lz4.NewReader(r), nop, nil
	case CompressZstd:
		// Linux compresses with zstd -22 --ultra, a window of up to
		// 128 MiB (scripts/Makefile.lib, cmd_zstd22).
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20), zstd.WithDecoderMaxMemory(MaxDecompressed+1))
		if err != nil {
			return nil, nop, err
		}
		return z, z.Close, nil
	}
	return nil, nop, fmt.Errorf("%s: %w", c, ErrNoHostDecompress)
}
