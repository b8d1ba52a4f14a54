package tests

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tinyELF wraps raw x86-64 code in the smallest ELF64 executable kvmlab's
// loader accepts: one PT_LOAD segment at 1 MiB, entered in 64-bit mode.
func tinyELF(code []byte) []byte {
	const base = 0x100000
	const off = 0x1000
	b := make([]byte, off+len(code))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base) // e_entry
	le.PutUint64(b[32:], 64)   // e_phoff
	le.PutUint16(b[52:], 64)   // e_ehsize
	le.PutUint16(b[54:], 56)   // e_phentsize
	le.PutUint16(b[56:], 1)    // e_phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1)   // PT_LOAD
	le.PutUint32(ph[4:], 5)   // R+X
	le.PutUint64(ph[8:], off) // p_offset
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	le.PutUint64(ph[48:], 0x1000)
	copy(b[off:], code)
	return b
}

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
	if err := os.WriteFile(path, tinyELF(prog), 0o644); err != nil {
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
