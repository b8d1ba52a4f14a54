package boot

import (
	"bytes"
	"errors"
	"testing"
)

// bootSector returns a boot sector image of n bytes (n >= 512) starting
// with code, with the signature at 510.
func bootSector(code []byte, n int) []byte {
	b := make([]byte, n)
	copy(b, code)
	b[510], b[511] = 0x55, 0xaa
	return b
}

func TestParseBootSector(t *testing.T) {
	hlt := []byte{0xfa, 0xf4} // cli; hlt
	bz := defaultBz().build()
	for _, tc := range []struct {
		name   string
		k      []byte
		format Format
		err    error
	}{
		{"one sector", bootSector(hlt, 512), FormatBootSector, nil},
		{"several pages", bootSector(hlt, 5*4096), FormatBootSector, nil},
		{"the most that fits", bootSector(hlt, BootSectorMax), FormatBootSector, nil},
		{"one byte too many", bootSector(hlt, BootSectorMax+1), 0, ErrTooBig},
		// A bzImage carries the boot signature too, and "HdrS" after it.
		{"a bzImage is not a boot sector", bz, FormatBzImage, nil},
		// Without the signature it is no boot sector, and too short for a bzImage.
		{"no signature", append(bootSector(hlt, 512)[:510], 0, 0), 0, ErrTooShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Parse(tc.k)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse: %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || img.Format != tc.format {
				t.Fatalf("Parse: %v, %v; want format %v", img, err, tc.format)
			}
			if tc.format == FormatBootSector && (img.EntryPoint != BootSectorAddr || !bytes.Equal(img.Payload, tc.k)) {
				t.Errorf("entry %#x, payload of %d bytes; want 0x7c00 and the whole file", img.EntryPoint, len(img.Payload))
			}
		})
	}
}

// TestLoadBootSector: the whole image lands at 0x7c00, nothing else is
// written (no zero page, no page tables), and the entry is real mode.
func TestLoadBootSector(t *testing.T) {
	k := bootSector([]byte{0xfa, 0xf4}, 1024)
	k[600] = 0x42 // past the first sector: loaded too
	img := mustParse(t, k)
	mem := newRAM(t, 16<<20, 0, 0xee)
	e, err := Load(mem, img, nil, "console=ttyS0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !e.RealMode || e.RIP != 0x7c00 || e.RSP != 0x7c00 {
		t.Errorf("entry %+v, want real mode at 0000:7C00 with SP 0x7c00", e)
	}
	if got := read(t, mem, BootSectorAddr, len(k)); !bytes.Equal(got, k) {
		t.Errorf("guest memory at 0x7c00 differs from the image")
	}
	for _, addr := range []uint64{PML4Addr, BootParamsAddr, GDTAddr, CmdlineAddr} {
		if b := read(t, mem, addr, 1)[0]; b != 0xee {
			t.Errorf("%#x was written (%#x): a boot sector gets nothing but itself", addr, b)
		}
	}
	if _, err := Load(mem, img, []byte("initrd"), "", 0); !errors.Is(err, ErrLayout) {
		t.Errorf("Load with an initrd: %v, want ErrLayout", err)
	}
}
