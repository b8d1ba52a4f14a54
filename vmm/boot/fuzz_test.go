package boot

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kvmlab/guestmem"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the seed corpus in testdata/fuzz/FuzzParse")

// fuzzSeeds are the inputs written to testdata/fuzz/FuzzParse. The valid
// ones are small enough to load into fuzzRAM, so the fuzzer starts from
// inputs that reach Load.
func fuzzSeeds() map[string][]byte {
	bz := defaultBz()
	bz.payload = 0x240
	bz.prefAddress = 0
	bz.initSize = 0x10000
	bz.kernelVersion = "6.1.0-fuzz"

	old := bz
	old.version = 0x020a

	elf := elfOpts{
		class: elfClass64, data: elfDataLSB, typ: etExec, machine: emX86_64,
		entry: 0xffffffff80200010,
		segs: []elfSeg{
			{typ: ptLoad, vaddr: 0xffffffff80200000, paddr: 0x200000, memsz: 0x80, data: []byte(strings.Repeat("\x90", 0x40))},
			{typ: ptLoad, vaddr: 0xffffffff80201000, paddr: 0x201000, memsz: 0x1000, data: []byte("data")},
		},
	}
	arm64 := make([]byte, 0x40)
	copy(arm64, "MZ")
	copy(arm64[0x38:], "ARM\x64")

	return map[string][]byte{
		"bzimage-minimal":   bz.build(),
		"bzimage-proto-210": old.build(),
		"elf-minimal":       elf.build(),
		"gzip":              []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
		"arm64-image":       arm64,
		"text":              []byte("#!/bin/sh\necho not a kernel\n"),
		"boot-sector":       bootSector([]byte{0xfa, 0xf4}, 512), // cli; hlt
	}
}

// validSeeds are the seeds that must parse and load.
var validSeeds = []string{"bzimage-minimal", "elf-minimal"}

func seedDir() string { return filepath.Join("testdata", "fuzz", "FuzzParse") }

func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds()
	if *updateSeeds {
		if err := os.MkdirAll(seedDir(), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(seedDir(), name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The checked-in corpus must match what the builders produce, so the
	// seeds stay valid when the builders change.
	for name, data := range seeds {
		got, err := os.ReadFile(filepath.Join(seedDir(), name))
		if err != nil {
			t.Fatalf("%v (run go test -run TestFuzzSeeds -update-seeds)", err)
		}
		if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data); string(got) != want {
			t.Errorf("seed %s is stale (run go test -run TestFuzzSeeds -update-seeds)", name)
		}
	}
	for _, name := range validSeeds {
		img, err := Parse(seeds[name])
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		if _, err := Load(fuzzMem(t), img, make([]byte, 0x2000), "console=ttyS0", 0xf0000); err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
	}
}

var fuzzRAM struct {
	once sync.Once
	mem  *guestmem.Memory
}

// fuzzMem is a small fake guest: 4 MiB at 0 and 64 KiB at 4 GiB, shared by
// all iterations of a fuzz worker (its contents do not matter).
func fuzzMem(t testing.TB) *guestmem.Memory {
	fuzzRAM.once.Do(func() { fuzzRAM.mem = newRAM(t, 4<<20, 64<<10, 0) })
	return fuzzRAM.mem
}

func FuzzParse(f *testing.F) {
	initrd := make([]byte, 0x2000)
	f.Fuzz(func(t *testing.T, kernel []byte) {
		img, err := Parse(kernel)
		if err != nil {
			var be *Error
			if !errors.As(err, &be) {
				t.Fatalf("Parse error %v is not a *boot.Error", err)
			}
			return
		}
		if img.Format == FormatBootSector { // bootsector.go: its own, smaller rules
			if img.EntryPoint != BootSectorAddr || len(img.Payload) > BootSectorMax || len(img.Payload) != len(kernel) {
				t.Fatalf("boot sector of %d bytes: entry %#x, payload %d bytes", len(kernel), img.EntryPoint, len(img.Payload))
			}
			if e, err := Load(fuzzMem(t), img, nil, "", 0); err == nil && (!e.RealMode || e.RIP != BootSectorAddr) {
				t.Fatalf("boot sector entry %+v", e)
			}
			return
		}
		if img.KernelStart < KernelAddr || img.KernelEnd > lowRAMLimit || img.KernelStart > img.KernelEnd {
			t.Fatalf("kernel range [%#x, %#x)", img.KernelStart, img.KernelEnd)
		}
		if img.EntryPoint < img.KernelStart || img.EntryPoint >= img.KernelEnd {
			t.Fatalf("entry %#x outside [%#x, %#x)", img.EntryPoint, img.KernelStart, img.KernelEnd)
		}
		mem := fuzzMem(t)
		e, err := Load(mem, img, initrd, "console=ttyS0", 0xf0000)
		if err != nil {
			return
		}
		if e.RIP != img.EntryPoint || e.InitrdAddr < img.KernelEnd {
			t.Fatalf("entry %+v for kernel [%#x, %#x)", e, img.KernelStart, img.KernelEnd)
		}
		var flag [2]byte
		if err := mem.ReadAt(flag[:], BootParamsAddr+offBootFlag); err != nil || flag != [2]byte{0x55, 0xaa} {
			t.Fatalf("boot_params boot flag % x, %v", flag, err)
		}
	})
}
