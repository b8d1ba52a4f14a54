package vmm

import (
	"fmt"
	"os"
	"testing"
)

// TestSelfFileRereads checks what a seccomp-confined VMM relies on: one
// descriptor of /proc/self/statm, read again from offset 0, gives the
// figures of that moment, not those of the first read.
func TestSelfFileRereads(t *testing.T) {
	sf := &SelfFile{name: "/proc/self/statm"}
	if err := sf.Open(); err != nil {
		t.Fatal(err)
	}
	rss := func() uint64 {
		b, err := sf.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var size, pages uint64
		if _, err := fmt.Sscan(string(b), &size, &pages); err != nil {
			t.Fatalf("statm %q: %v", b, err)
		}
		return pages * uint64(os.Getpagesize())
	}
	before := rss()
	big := make([]byte, 64<<20)
	for i := 0; i < len(big); i += 4096 {
		big[i] = 1
	}
	after := rss()
	if after < before+32<<20 {
		t.Errorf("RSS read through the same descriptor: %d MiB before touching 64 MiB, %d MiB after", before>>20, after>>20)
	}
	_ = big[len(big)-1]

	missing := &SelfFile{name: "/proc/self/no-such-file"}
	if _, err := missing.ReadAll(); err == nil {
		t.Error("a missing file read without error")
	}
}
