package guestmem

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// TestMapFile: a file mapped over RAM reads as the file, a write to RAM
// does not reach the file (copy-on-write), and after the file is truncated
// a read of RAM is a fault IsRAMFault recognises, recoverable on a
// goroutine that asked for panics on faults.
func TestMapFile(t *testing.T) {
	m, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := filepath.Join(t.TempDir(), "ram")
	content := bytes.Repeat([]byte("snapshot"), 8192/8) // two pages
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.MapFile(0x4000, 8192, f, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if err := m.ReadAt(got, 0x4000); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("RAM at 0x4000 after MapFile: %q..., err %v", got[:16], err)
	}
	if err := m.WriteAt([]byte("guest"), 0x4000); err != nil {
		t.Fatal(err)
	}
	if disk, _ := os.ReadFile(path); !bytes.Equal(disk, content) {
		t.Fatal("a write to RAM reached the file")
	}
	for _, bad := range []struct {
		gpa GPA
		n   uint64
		off int64
	}{{0x4001, 4096, 0}, {0x4000, 100, 0}, {0x4000, 4096, 10}, {1 << 20, 4096, 0}, {0x4000, 0, 0}} {
		if err := m.MapFile(bad.gpa, bad.n, f, bad.off); err == nil {
			t.Errorf("MapFile(%#x, %d, off %d) accepted", bad.gpa, bad.n, bad.off)
		}
	}

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	faulted := make(chan bool)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() { faulted <- m.IsRAMFault(recover()) }()
		_ = m.ReadAt(got, 0x5000) // the second page: never copied, now gone
	}()
	if !<-faulted {
		t.Fatal("reading RAM mapped from a truncated file was not a fault IsRAMFault recognised")
	}
	if m.IsRAMFault("not a fault") || m.IsRAMFault(nil) {
		t.Error("IsRAMFault recognised something that is not a fault")
	}
}
