package vmm

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr string // substring of the error; "" means success
	}{
		{"512M", 512 << 20, ""},
		{"4G", 4 << 30, ""},
		{"512", 512 << 20, ""}, // a bare number is MiB, as in QEMU's -m
		{"1048576", 1 << 40, ""},
		{"1048576B", 1 << 20, ""}, // B alone: bytes
		{"512b", 512, ""},
		{"2GiB", 2 << 30, ""},
		{"2gib", 2 << 30, ""},
		{"512MB", 512 << 20, ""},
		{"64k", 64 << 10, ""},
		{"64KiB", 64 << 10, ""},
		{"1T", 1 << 40, ""},
		{" 256M ", 256 << 20, ""},
		{"1", 1 << 20, ""},
		{"8388608T", 1 << 63, ""},      // 2^23 TiB is exactly the limit
		{"8796093022208", 1 << 63, ""}, // 2^43 MiB
		{"9223372036854775808B", 1 << 63, ""},
		{"1.5G", 0, "not a size"},
		{"0", 0, "not a size"},
		{"0M", 0, "not a size"},
		{"", 0, "not a size"},
		{"M", 0, "not a size"},
		{"B", 0, "not a size"},
		{"MiB", 0, "not a size"},
		{"1iB", 0, "not a size"},
		{"1I", 0, "not a size"},
		{"lots", 0, "not a size"},
		{"-1M", 0, "not a size"},
		{"4 G", 0, "not a size"},
		{"1GG", 0, "not a size"},
		{"0x1000", 0, "not a size"},
		{"99999999999T", 0, "too large"},
		{"8388609T", 0, "too large"},
		{"9223372036854775809B", 0, "too large"},
		{"8796093022209", 0, "too large"},
		{"9223372036854775808", 0, "too large"},   // MiB
		{"18446744073709551616", 0, "not a size"}, // does not fit in 64 bits at all
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseMemSize(tc.in)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Errorf("ParseMemSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseMemSize(%q) = %d, %v; want an error saying %q", tc.in, got, err, tc.wantErr)
			}
			if got != 0 {
				t.Errorf("ParseMemSize(%q) returned %d alongside an error", tc.in, got)
			}
		})
	}
}

func TestMinGuestMem(t *testing.T) {
	const mib = 1 << 20
	t.Run("fixed margin with nothing to load", func(t *testing.T) {
		if got := MinGuestMem(0, 0); got != 48*mib {
			t.Errorf("MinGuestMem(0, 0) = %d MiB, want 48", got/mib)
		}
	})
	t.Run("kernel counts four times, initrd twice", func(t *testing.T) {
		if got := MinGuestMem(10*mib, 20*mib); got != (40+40+48)*mib {
			t.Errorf("MinGuestMem(10 MiB, 20 MiB) = %d MiB, want 128", got/mib)
		}
	})
	t.Run("a typical guest fits in the default 512M", func(t *testing.T) {
		def, err := ParseMemSize("512M")
		if err != nil {
			t.Fatal(err)
		}
		if got := MinGuestMem(12*mib, 30*mib); got > def {
			t.Errorf("MinGuestMem(12 MiB kernel, 30 MiB initrd) = %d MiB, more than the default --mem", got/mib)
		}
	})
	t.Run("never decreases as the kernel or initrd grows", func(t *testing.T) {
		sizes := []int{0, 1, 4095, 4096, 1 * mib, 8 * mib, 64 * mib, 512 * mib, 1 << 31}
		for i, k := range sizes {
			for j, r := range sizes {
				m := MinGuestMem(k, r)
				if i+1 < len(sizes) {
					if bigger := MinGuestMem(sizes[i+1], r); bigger < m {
						t.Errorf("MinGuestMem(%d, %d) = %d > MinGuestMem(%d, %d) = %d", k, r, m, sizes[i+1], r, bigger)
					}
				}
				if j+1 < len(sizes) {
					if bigger := MinGuestMem(k, sizes[j+1]); bigger < m {
						t.Errorf("MinGuestMem(%d, %d) = %d > MinGuestMem(%d, %d) = %d", k, r, m, k, sizes[j+1], bigger)
					}
				}
			}
		}
	})
}
