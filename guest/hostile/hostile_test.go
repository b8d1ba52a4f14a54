package hostile

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"kvmlab/devices/pci"
)

func TestPagemapPhys(t *testing.T) {
	entry := func(v uint64) (e [8]byte) { binary.LittleEndian.PutUint64(e[:], v); return }
	tests := []struct {
		name    string
		v       uint64
		want    uint64
		wantErr string
	}{
		{"present", 1<<63 | 0x1234, 0x1234 * pageSize, ""},
		{"present, soft-dirty and exclusive bits ignored", 1<<63 | 1<<56 | 1<<55 | 0x42, 0x42 * pageSize, ""},
		{"not present", 0x1234, 0, "not present"},
		{"frame number hidden", 1 << 63, 0, "CAP_SYS_ADMIN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pagemapPhys(entry(tc.v))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("pagemapPhys(%#x) = %#x, %v; want an error containing %q", tc.v, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("pagemapPhys(%#x) = %#x, %v; want %#x", tc.v, got, err, tc.want)
			}
		})
	}
}

func TestFindCap(t *testing.T) {
	space := func(links ...[3]int) []byte { // {offset, id, next}
		b := make([]byte, pci.ConfigSize)
		if len(links) > 0 {
			b[pci.RegCapPointer] = byte(links[0][0])
		}
		for _, l := range links {
			b[l[0]], b[l[0]+1] = byte(l[1]), byte(l[2])
		}
		return b
	}
	tests := []struct {
		name  string
		space []byte
		want  int
	}{
		{"second in the list", space([3]int{0x40, pci.CapVendor, 0x50}, [3]int{0x50, pci.CapMSIX, 0}), 0x50},
		{"absent", space([3]int{0x40, pci.CapVendor, 0}), 0},
		{"empty list", space(), 0},
		{"loop", space([3]int{0x40, pci.CapVendor, 0x44}, [3]int{0x44, pci.CapVendor, 0x40}), 0},
		{"pointer into the header", space([3]int{0x40, pci.CapVendor, 0x10}), 0},
		{"short space", make([]byte, 0x20), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := findCap(tc.space, pci.CapMSIX); got != tc.want {
				t.Errorf("findCap = %#x, want %#x", got, tc.want)
			}
		})
	}
}

func TestMainRefusesBadArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no attack", nil, "no attack named"},
		{"unknown attack", []string{"fuzz"}, `unknown attack "fuzz"`},
		{"bad count", []string{"-n", "0", "flood"}, "want a positive count"},
		{"bad flag", []string{"-x"}, "usage"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(tc.args, &out, &errb); code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.want)
			}
		})
	}
}

func TestExpandAll(t *testing.T) {
	got, err := expand([]string{"all", "rebind"})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]string{}, Attacks...), "rebind")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("expand(all rebind) = %v, want %v", got, want)
	}
}
