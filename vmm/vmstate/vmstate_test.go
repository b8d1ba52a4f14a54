package vmstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// machineRAM is two regions like guestmem's (low RAM and RAM above the
// MMIO hole) with a few pages written.
func machineRAM() []Region {
	low := make([]byte, 64*PageSize)
	high := make([]byte, 16*PageSize)
	copy(low[0:], "page zero")
	copy(low[PageSize:], "page one") // a run of two pages with page zero
	low[10*PageSize+PageSize-1] = 0xff
	copy(high[3*PageSize:], "high")
	return []Region{{GPA: 0, Data: low}, {GPA: 1 << 32, Data: high}}
}

func freshRAM() []Region {
	return []Region{{GPA: 0, Data: make([]byte, 64*PageSize)}, {GPA: 1 << 32, Data: make([]byte, 16*PageSize)}}
}

func write(t *testing.T, desc []byte, ram []Region) ([]byte, Info) {
	t.Helper()
	var b bytes.Buffer
	info, err := Write(&b, desc, ram)
	if err != nil {
		t.Fatal(err)
	}
	if info.FileBytes != int64(b.Len()) {
		t.Fatalf("Info.FileBytes = %d, wrote %d", info.FileBytes, b.Len())
	}
	return b.Bytes(), info
}

func TestRoundTrip(t *testing.T) {
	desc := []byte(`{"vcpus":[{"rip":1048576}]}`)
	file, info := write(t, desc, machineRAM())
	// Two runs: pages 0-10 (pages 2-9, zeros, bridge the gap: MaxGap)
	// and high page 3. The zero pages after them are not saved.
	if info.Runs != 2 || info.SavedBytes != 12*PageSize || info.RAMBytes != 80*PageSize {
		t.Fatalf("info = %+v, want 2 runs, 12 pages saved of 80", info)
	}
	f, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Description, desc) {
		t.Errorf("description = %q", f.Description)
	}
	ram := freshRAM()
	if err := f.LoadRAM(ram); err != nil {
		t.Fatal(err)
	}
	for i, want := range machineRAM() {
		if !bytes.Equal(ram[i].Data, want.Data) {
			t.Errorf("region %d differs after the round trip", i)
		}
	}
}

// TestRunsBridgeGaps: a gap of MaxGap pages or fewer between two saved
// pages of one region is saved with them (one run, one mmap at restore), a
// longer gap is not, and no run spans two regions.
func TestRunsBridgeGaps(t *testing.T) {
	for _, tc := range []struct {
		name        string
		gap         int // pages of zeros between two pages of data
		runs, saved int
	}{
		{"adjacent", 0, 1, 2},
		{"one page", 1, 1, 3},
		{"MaxGap pages", MaxGap, 1, MaxGap + 2},
		{"one more than MaxGap", MaxGap + 1, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			low := make([]byte, (tc.gap+4)*PageSize)
			low[0] = 1
			low[(tc.gap+1)*PageSize] = 2
			// The next region starts where low ends, two pages after
			// its last page of data: a run of its own all the same.
			high := make([]byte, 4*PageSize)
			high[0] = 3
			hi := uint64(len(low))
			ram := []Region{{GPA: 0, Data: low}, {GPA: hi, Data: high}}
			runs, _ := findRuns(ram)
			if len(runs) != tc.runs+1 || runs[len(runs)-1] != (Run{GPA: hi, Len: PageSize}) {
				t.Fatalf("runs %+v: want %d in the low region and the high page alone", runs, tc.runs)
			}
			var saved uint64
			for _, r := range runs[:tc.runs] {
				saved += r.Len
			}
			if saved != uint64(tc.saved)*PageSize {
				t.Errorf("runs %+v save %d pages of the low region, want %d", runs, saved/PageSize, tc.saved)
			}
		})
	}
}

func TestResidentPagesSkipped(t *testing.T) {
	ram := machineRAM()
	ram[0].Resident = make([]bool, 64)
	ram[0].Resident[10] = true // pages 0 and 1 are "not resident": left out
	_, info := write(t, nil, ram)
	if info.Runs != 2 || info.SavedBytes != 2*PageSize {
		t.Fatalf("info = %+v, want 2 runs of one page", info)
	}
}

// TestRefused: every damaged file is refused with ErrFormat and a message
// naming what is wrong, at Open or at LoadRAM, never with a panic.
func TestRefused(t *testing.T) {
	good, _ := write(t, []byte(`{}`), machineRAM())
	descEnd := headerSize + 2
	tests := []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"empty", func([]byte) []byte { return nil }, "too short"},
		{"not a snapshot", func(b []byte) []byte { return bytes.Repeat([]byte("x"), len(b)) }, "does not start with"},
		{"newer version", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], Version+1); return b }, fmt.Sprintf("format version %d,", Version+1)},
		{"older version", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], Version-1); return b }, fmt.Sprintf("format version %d,", Version-1)},
		{"flags", func(b []byte) []byte { b[12] |= 2; return b }, "unknown flags"},
		{"huge description", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 1<<62); return b }, "more than the file holds"},
		{"description damaged", func(b []byte) []byte { b[headerSize] ^= 1; return b }, "description's checksum"},
		{"huge run count", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[descEnd+4+8:], 1<<40); return b }, "RAM runs claimed"},
		{"run not whole pages", func(b []byte) []byte { b[descEnd+4+16] |= 1; return b }, "not whole pages"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-100] }, "truncated"},
		{"end magic", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, "does not end with"},
		{"RAM damaged", func(b []byte) []byte { b[len(b)-20] ^= 1; return b }, "RAM's checksum"},
		{"RAM size differs", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[descEnd+4:], 81*PageSize); return b }, "the machine has"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(append([]byte(nil), good...))
			err := load(b)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want ErrFormat and %q", err, tc.want)
			}
		})
	}
}

func load(b []byte) error {
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	return f.LoadRAM(freshRAM())
}

// TestEveryTruncation: a file cut at any byte is refused.
func TestEveryTruncation(t *testing.T) {
	good, _ := write(t, []byte(`{"a":1}`), machineRAM())
	for n := 0; n < len(good); n += 97 {
		if load(good[:n]) == nil {
			t.Fatalf("a file cut to %d of %d bytes was accepted", n, len(good))
		}
	}
}

// FuzzOpen: any bytes given as a snapshot are refused or loaded, never a
// panic, never a write outside the regions (the fuzzer's RAM is fixed).
func FuzzOpen(f *testing.F) {
	var b bytes.Buffer
	_, _ = Write(&b, []byte(`{"x":1}`), machineRAM())
	f.Add(b.Bytes())
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = load(data)
		if f, err := Open(bytes.NewReader(data), int64(len(data))); err == nil {
			ram := freshRAM()
			_ = f.MapRAM(ram, func(r Run, off int64) error {
				if off < 0 || off+int64(r.Len) > int64(len(data)) {
					t.Fatalf("run %+v maps file bytes %d.. outside the %d-byte file", r, off, len(data))
				}
				copy(slice(ram, r), data[off:])
				return nil
			})
			_ = f.VerifyMapped(ram)
		}
	})
}

// TestMapAndVerify: every run's bytes start on a page of the file (so they
// can be mapped over RAM), map to the right data, and VerifyMapped catches a
// damaged byte that Open cannot see.
func TestMapAndVerify(t *testing.T) {
	file, _ := write(t, []byte(`{}`), machineRAM())
	f, err := Open(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	want := machineRAM()
	mapped := freshRAM()
	err = f.MapRAM(mapped, func(r Run, off int64) error {
		if off%PageSize != 0 {
			t.Errorf("run at %#x starts at file offset %d, not on a page", r.GPA, off)
		}
		if got := file[off : off+int64(r.Len)]; !bytes.Equal(got, slice(want, r)) {
			t.Errorf("run at %#x: the file's bytes at %d are not the RAM's", r.GPA, off)
		}
		copy(slice(mapped, r), file[off:off+int64(r.Len)]) // what mmap would do
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.VerifyMapped(mapped); err != nil {
		t.Fatalf("VerifyMapped on a good file: %v", err)
	}
	bad := append([]byte(nil), file...)
	bad[len(bad)-20] ^= 1
	g, err := Open(bytes.NewReader(bad), int64(len(bad)))
	if err != nil {
		t.Fatalf("Open saw the damage in RAM (it should not read RAM): %v", err)
	}
	bmapped := freshRAM()
	_ = g.MapRAM(bmapped, func(r Run, off int64) error {
		copy(slice(bmapped, r), bad[off:off+int64(r.Len)])
		return nil
	})
	if err := g.VerifyMapped(bmapped); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("VerifyMapped on damaged RAM: %v", err)
	}
}

// TestEitherRAMChecksum: a file whose RAM part carries either CRC, as the
// writer's machine chose (ramCRC), reads back whole, says which in its
// flags, and is refused when one byte of its RAM changes.
func TestEitherRAMChecksum(t *testing.T) {
	saved := ramCRC
	t.Cleanup(func() { ramCRC = saved })
	for _, flags := range []uint32{0, FlagCastagnoli} {
		t.Run(fmt.Sprintf("flags %d", flags), func(t *testing.T) {
			ramCRC = func() uint32 { return flags }
			file, _ := write(t, []byte(`{}`), machineRAM())
			if got := binary.LittleEndian.Uint32(file[12:]); got != flags {
				t.Fatalf("header flags %#x, want %#x", got, flags)
			}
			if err := load(file); err != nil {
				t.Fatalf("load: %v", err)
			}
			// The last byte of RAM in the file: just before the
			// checksum and the end magic.
			file[len(file)-4-8-1] ^= 0x40
			if err := load(file); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "RAM's checksum does not match") {
				t.Errorf("a changed RAM byte: %v", err)
			}
		})
	}
}
