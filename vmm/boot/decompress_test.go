package boot

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The files in testdata/payload are defaultELF().build() compressed by the
// command-line tools the way Linux's build does (scripts/Makefile.lib,
// scripts/xz_wrap.sh): xz --check=crc32 --x86 --lzma2, bzip2 -9,
// xz --format=lzma -9, lz4 -l -9 (the legacy frame), zstd -19, gzip -n -9.
var payloadFiles = []struct {
	file string
	c    Compression
}{
	{"vmlinux.gz", CompressGzip},
	{"vmlinux.bz2", CompressBzip2},
	{"vmlinux.lzma", CompressLZMA},
	{"vmlinux.xz", CompressXZ},
	{"vmlinux.lz4", CompressLZ4},
	{"vmlinux.zst", CompressZstd},
}

// bzWithStream builds a bzImage whose payload_offset/payload_length point
// at stream, followed by the 32-bit size trailer the kernel build appends
// (for gzip, the stream's own ISIZE is that trailer; appending it again
// would be wrong, so withTrailer is false there).
func bzWithStream(stream []byte, size uint32, withTrailer bool) []byte {
	body := append([]byte(nil), stream...)
	if withTrailer {
		body = binary.LittleEndian.AppendUint32(body, size)
	}
	o := defaultBz()
	const off = 0x400
	o.payload = (off + len(body) + 0x200 + 15) &^ 15
	k := o.build()
	setup := (int(o.setupSects) + 1) * 512
	binary.LittleEndian.PutUint32(k[offPayloadOffset:], off)
	binary.LittleEndian.PutUint32(k[offPayloadLength:], uint32(len(body)))
	copy(k[setup+off:], body)
	return k
}

func readPayload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "payload", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecompressFormats(t *testing.T) {
	want := defaultELF().build()
	for _, tc := range payloadFiles {
		t.Run(string(tc.c), func(t *testing.T) {
			k := bzWithStream(readPayload(t, tc.file), uint32(len(want)), tc.c != CompressGzip)
			img, err := Parse(k)
			if err != nil {
				t.Fatal(err)
			}
			c, _, err := PayloadCompression(img)
			if err != nil || c != tc.c {
				t.Fatalf("PayloadCompression = %q, %v; want %q", c, err, tc.c)
			}
			out, _, err := DecompressPayload(img)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("decompressed %d bytes, differ from the %d-byte ELF", len(out), len(want))
			}
			elf, err := Decompress(img)
			if err != nil {
				t.Fatal(err)
			}
			if elf.Format != FormatELF || elf.EntryPoint != 0x1000000 || len(elf.Segments) != 2 || elf.Setup != img.Setup {
				t.Fatalf("image: format %v, entry %#x, %d segments, setup kept %v", elf.Format, elf.EntryPoint, len(elf.Segments), elf.Setup == img.Setup)
			}
			// Loaded, the zero page carries the bzImage's header (its
			// cmdline_size, 2047), not the synthetic ELF one (2048).
			mem := newRAM(t, 64<<20, 0, 0xcc)
			if _, err := Load(mem, elf, []byte("initrd"), "console=ttyS0", 0); err != nil {
				t.Fatal(err)
			}
			if got := read32(t, mem, BootParamsAddr+offCmdlineSize); got != 2047 {
				t.Errorf("boot_params cmdline_size = %d, want the bzImage's 2047", got)
			}
			textOff := elfHeaderSize + 3*elfPhdrSize // defaultELF: three program headers, then the text
			if got := read(t, mem, 0x1000000, 16); !bytes.Equal(got, want[textOff:][:16]) {
				t.Errorf("text at 16 MiB = % x", got)
			}
		})
	}
}

func TestDecompressErrors(t *testing.T) {
	elf := defaultELF().build()
	xzStream := readPayload(t, "vmlinux.xz")
	gz := readPayload(t, "vmlinux.gz")
	garbage := bytes.Repeat([]byte{0xa5}, 64)
	tests := []struct {
		name string
		k    []byte
		want error
	}{
		{"trailer larger than the output", bzWithStream(xzStream, uint32(len(elf)+1), true), ErrCorrupt},
		{"trailer smaller than the output", bzWithStream(xzStream, uint32(len(elf)-1), true), ErrCorrupt},
		{"trailer zero", bzWithStream(xzStream, 0, true), ErrTooBig},
		{"trailer beyond the bound", bzWithStream(xzStream, MaxDecompressed+1, true), ErrTooBig},
		{"gzip with a damaged body", bzWithStream(append(append([]byte(nil), gz[:20]...), garbage...), 64, true), ErrCorrupt},
		{"xz with a damaged body", bzWithStream(append(append([]byte(nil), xzStream[:24]...), garbage...), uint32(len(elf)), true), ErrCorrupt},
		{"zstd header then garbage", bzWithStream(append([]byte("\x28\xb5\x2f\xfd"), garbage...), 4096, true), ErrCorrupt},
		{"lzo: no Go decoder", bzWithStream(append([]byte("\x89LZO\x00\r\n\x1a\n"), garbage...), 4096, true), ErrNoHostDecompress},
		{"unknown magic", bzWithStream(garbage, 4096, true), ErrNoHostDecompress},
		{"decompresses to text, not ELF", bzWithStream(mustGzip(t, []byte("hello, not a kernel\n")), 0, false), ErrBadELF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Parse(tc.k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decompress(img); !errors.Is(err, tc.want) {
				t.Fatalf("Decompress: %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("payload past the file", func(t *testing.T) {
		k := bzWithStream(xzStream, uint32(len(elf)), true)
		binary.LittleEndian.PutUint32(k[offPayloadLength:], 1<<30)
		img, err := Parse(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decompress(img); !errors.Is(err, ErrTruncated) {
			t.Fatalf("Decompress: %v, want ErrTruncated", err)
		}
	})
	t.Run("not a bzImage", func(t *testing.T) {
		img, err := Parse(elf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decompress(img); !errors.Is(err, ErrInvalidImage) {
			t.Fatalf("Decompress(ELF): %v, want ErrInvalidImage", err)
		}
	})
}

func mustGzip(t testing.TB, b []byte) []byte {
	t.Helper()
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

// FuzzDecompress feeds arbitrary compressed payloads, behind each format's
// magic, through a valid bzImage header. Whatever the bytes, Decompress
// returns an error or an ELF image, never panics, and never produces more
// than MaxDecompressed (the corpus in testdata/fuzz/FuzzDecompress starts
// from the real streams in testdata/payload).
func FuzzDecompress(f *testing.F) {
	for _, p := range payloadFiles {
		b, err := os.ReadFile(filepath.Join("testdata", "payload", p.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint32(len(defaultELF().build())))
	}
	f.Fuzz(func(t *testing.T, stream []byte, size uint32) {
		// Keep the fuzzer's own memory in check: a trailer may promise
		// up to the real bound, but a fuzz worker need not try 256 MiB
		// bombs on every input.
		size %= 4 << 20
		img, err := Parse(bzWithStream(stream, size, len(stream) < 2 || stream[0] != 0x1f))
		if err != nil {
			t.Fatalf("Parse of the wrapper: %v", err)
		}
		out, _, err := DecompressPayload(img)
		if err != nil {
			return
		}
		if len(out) > MaxDecompressed || (size != 0 && len(out) != int(size) && stream[0] != 0x1f) {
			t.Fatalf("decompressed %d bytes, trailer %d", len(out), size)
		}
		if elf, err := WithDecompressed(img, out); err == nil && (elf.Format != FormatELF || elf.Setup != img.Setup) {
			t.Fatalf("image %+v", elf)
		}
	})
}
