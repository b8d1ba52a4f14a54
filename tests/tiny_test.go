package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmlab/guest/tiny"
)

// TestTinyGuestTripleFault is the KVM smoke test: a few hand-assembled bytes
// write "Hi" to COM1 and then execute UD2 with no IDT, which escalates to a
// triple fault (#UD -> #GP -> #DF -> shutdown). kvmlab must print the
// guest's output, report the triple fault with a register dump and exit
// non-zero.
func TestTinyGuestTripleFault(t *testing.T) {
	prog := []byte{
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'H', 0xee, // mov al, 'H'; out dx, al
		0xb0, 'i', 0xee, // mov al, 'i'; out dx, al
		0xb0, '\n', 0xee, // mov al, '\n'; out dx, al
		0x0f, 0x0b, // ud2
	}
	path := filepath.Join(t.TempDir(), "tiny.elf")
	if err := os.WriteFile(path, tiny.ELF(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runKvmlab(t, 60*time.Second, "run", "--kernel", path, "--mem", "64M")
	if stdout != "Hi\n" {
		t.Errorf("guest output %q, want %q", stdout, "Hi\n")
	}
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	e := stderr
	for _, want := range []string{"triple fault", "KVM_EXIT_SHUTDOWN", "RIP=", "CR0="} {
		if !strings.Contains(e, want) {
			t.Errorf("stderr lacks %q:\n%s", want, e)
		}
	}
}
