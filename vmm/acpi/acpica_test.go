package acpi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// These tests hand the tables to the ACPICA tools (package acpica-tools:
// iasl, acpiexec), the same ACPI implementation that runs inside Linux. They
// are skipped where the tools are not installed.

// lookTool returns the path of an ACPICA tool or skips the test.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not on PATH (apt-get install acpica-tools)", name)
	}
	return p
}

// run runs a tool in dir and returns its combined output.
func run(t *testing.T, dir, tool string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(tool), strings.Join(args, " "), err, out)
	}
	return string(out)
}

var spaces = regexp.MustCompile(`\s+`)

// squash collapses runs of white space, so that expectations do not depend
// on iasl's column alignment.
func squash(s string) string { return spaces.ReplaceAllString(s, " ") }

// writeTables writes each table of a default 2-CPU build to dir as
// <sig>.dat and returns the file names by signature.
func writeTables(t *testing.T, dir string) map[string]string {
	t.Helper()
	blob, rsdp, err := Build(DefaultConfig(2))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for sig, tab := range walk(t, blob, rsdp) {
		if sig == "RSDP" { // not a table iasl can read on its own
			continue
		}
		name := strings.ToLower(sig) + ".dat"
		if err := os.WriteFile(filepath.Join(dir, name), tab.data, 0o644); err != nil {
			t.Fatal(err)
		}
		files[sig] = name
	}
	return files
}

// TestIaslDisassemble disassembles every table with iasl -d and checks that
// it decodes them without complaint and to the values we meant.
func TestIaslDisassemble(t *testing.T) {
	iasl := lookTool(t, "iasl")
	dir := t.TempDir()
	files := writeTables(t, dir)

	want := map[string][]string{
		"FACP": {
			`Signature : "FACP"`,
			"Revision : 06",
			"FACS Address : 000E",
			"SCI Interrupt : 0009",
			"SMI Command Port : 00000000",
			"PM1A Event Block Address : 00000600",
			"PM1A Control Block Address : 00000604",
			"PM1 Event Block Length : 04",
			"PM1 Control Block Length : 02",
			"PM Timer Block Length : 00",
			"Value to cause reset : FE",
			"Address : 0000000000000064",
			"Address : 0000000000000600",
			"Address : 0000000000000604",
		},
		"APIC": {
			`Signature : "APIC"`,
			"Local Apic Address : FEE00000",
			"PC-AT Compatibility : 1",
			"Local Apic ID : 00",
			"Local Apic ID : 01",
			"I/O Apic ID : 02",
			"Address : FEC00000",
			"[Interrupt Source Override]",
			"Source : 09",
			"Interrupt : 00000009",
			"Flags (decoded below) : 000D",
		},
		"DSDT": {
			`DefinitionBlock ("", "DSDT", 2, "KVMLAB", "KVMLAB ", 0x00000001)`,
			"Name (_S5, Package (0x04) // _S5_: S5 System State { 0x05, 0x05, Zero, Zero })",
			`Scope (\_SB) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03") /* PCI Bus */)`,
			"Name (_UID, Zero)", "Name (_SEG, Zero)", "Name (_BBN, Zero)",
			"WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, // Range Minimum 0x00FF,",
			"IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length",
			"WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity 0x0000, // Range Minimum 0x0CF7,",
			"WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity 0x0D00, // Range Minimum 0xFFFF,",
			"DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, // Granularity 0xC0000000, // Range Minimum 0xFEBFFFFF, // Range Maximum 0x00000000, // Translation Offset 0x3EC00000, // Length",
		},
		"FACS": {`Signature : "FACS"`, "Length : 00000040", "Version : 02"},
		"XSDT": {`Signature : "XSDT"`, "ACPI Table Address 0 : 00000000000E", "ACPI Table Address 1 : 00000000000E"},
		"RSDT": {`Signature : "RSDT"`, "ACPI Table Address 0 : 000E", "ACPI Table Address 1 : 000E"},
	}
	for sig, name := range files {
		t.Run(sig, func(t *testing.T) {
			log := run(t, dir, iasl, "-d", name)
			dslName := strings.TrimSuffix(name, ".dat") + ".dsl"
			dsl, err := os.ReadFile(filepath.Join(dir, dslName))
			if err != nil {
				t.Fatalf("%v\n%s", err, log)
			}
			text := squash(string(dsl))
			for _, bad := range []string{"Incorrect checksum", "Invalid", "Error", "Warning", "Unknown"} {
				if strings.Contains(text, bad) || strings.Contains(log, bad) {
					t.Errorf("iasl output mentions %q:\n%s\n%s", bad, log, dsl)
				}
			}
			for _, w := range want[sig] {
				if !strings.Contains(text, squash(w)) {
					t.Errorf("disassembly lacks %q:\n%s", w, dsl)
				}
			}
		})
	}
}

// TestIaslCompileMatchesEncoder compiles ASL with iasl and checks that our
// AML encoder produces the same bytes, including multi-byte PkgLengths.
func TestIaslCompileMatchesEncoder(t *testing.T) {
	iasl := lookTool(t, "iasl")
	dir := t.TempDir()

	// WRDS: 40 words, a two-byte PkgLength. BIGP: 255 packages of two
	// quad words, a three-byte PkgLength.
	words := strings.Repeat("0x1234, ", 39) + "0x1234"
	inner := strings.Repeat("Package () {0x123456789ABCDEF0, 0x0FEDCBA987654321}, ", 254) +
		"Package () {0x123456789ABCDEF0, 0x0FEDCBA987654321}"
	asl := `DefinitionBlock ("", "DSDT", 2, "KVMLAB", "KVMLAB", 1)
{
    Name (_S5, Package (0x04) {5, 5, 0, 0})
    Name (WRDS, Package () {` + words + `})
    Name (BIGP, Package () {` + inner + `})
}
`
	if err := os.WriteFile(filepath.Join(dir, "t.asl"), []byte(asl), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, iasl, "-p", "t", "t.asl")
	compiled, err := os.ReadFile(filepath.Join(dir, "t.aml"))
	if err != nil {
		t.Fatal(err)
	}

	var ours []byte
	s5, err := s5Object(5)
	if err != nil {
		t.Fatal(err)
	}
	ours = append(ours, s5...)
	var w [][]byte
	for i := 0; i < 40; i++ {
		w = append(w, amlInteger(0x1234))
	}
	ours = append(ours, mustAML(t)(amlName("WRDS", mustAML(t)(amlPackage(w...))))...)
	pair := mustAML(t)(amlPackage(amlInteger(0x123456789ABCDEF0), amlInteger(0x0FEDCBA987654321)))
	var big [][]byte
	for i := 0; i < 255; i++ {
		big = append(big, pair)
	}
	ours = append(ours, mustAML(t)(amlName("BIGP", mustAML(t)(amlPackage(big...))))...)

	if len(compiled) < 36 || !bytes.Equal(compiled[36:], ours) {
		t.Errorf("iasl AML (%d bytes) differs from ours (%d bytes)\niasl: % x\nours: % x",
			len(compiled)-36, len(ours), head(compiled[36:]), head(ours))
	}
}

// TestIaslCompilePCIRoot compiles the ASL that pciRootObject documents and
// checks that the encoder produces the same bytes. -on keeps iasl from
// shortening \_SB to _SB_ (equivalent at the root, but different bytes).
func TestIaslCompilePCIRoot(t *testing.T) {
	iasl := lookTool(t, "iasl")
	dir := t.TempDir()
	asl := `DefinitionBlock ("", "DSDT", 2, "KVMLAB", "KVMLAB", 1)
{
    Scope (\_SB)
    {
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, 0)
            Name (_SEG, 0)
            Name (_BBN, 0)
            Name (_CRS, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0x00, 0xFF, 0, 0x100)
                IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x0000, 0x0CF7, 0, 0x0CF8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x0D00, 0xFFFF, 0, 0xF300)
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                    0, 0xC0000000, 0xFEBFFFFF, 0, 0x3EC00000)
            })
        }
    }
}
`
	if err := os.WriteFile(filepath.Join(dir, "pci.asl"), []byte(asl), 0o644); err != nil {
		t.Fatal(err)
	}
	log := run(t, dir, iasl, "-on", "-p", "pci", "pci.asl")
	if !strings.Contains(log, "0 Errors, 0 Warnings, 0 Remarks") {
		t.Errorf("iasl complains about the ASL:\n%s", log)
	}
	compiled, err := os.ReadFile(filepath.Join(dir, "pci.aml"))
	if err != nil {
		t.Fatal(err)
	}
	ours := mustAML(t)(pciRootObject())
	if len(compiled) < 36 || !bytes.Equal(compiled[36:], ours) {
		t.Errorf("iasl AML differs from ours\niasl: % x\nours: % x", compiled[36:], ours)
	}
}

func mustAML(t *testing.T) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func head(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// TestAcpiexec loads FADT, FACS, DSDT and MADT into ACPICA's interpreter and
// evaluates \_S5_, which is what Linux does before powering off, and the PCI
// root bridge's _HID and _CRS, which Linux's acpi_pci_root driver reads.
func TestAcpiexec(t *testing.T) {
	acpiexec := lookTool(t, "acpiexec")
	dir := t.TempDir()
	files := writeTables(t, dir)
	out := run(t, dir, acpiexec, "-b", `evaluate \_S5_; evaluate \_SB.PCI0._HID; evaluate \_SB.PCI0._CRS`,
		files["FACP"], files["FACS"], files["DSDT"], files["APIC"])
	text := squash(out)
	for _, w := range []string{
		"[Package] Contains 4 Elements:",
		"[Integer] = 0000000000000005 [Integer] = 0000000000000005 [Integer] = 0000000000000000 [Integer] = 0000000000000000",
		"Evaluation of \\_SB.PCI0._HID returned object",
		"[Integer] = 00000000030AD041",
		"Evaluation of \\_SB.PCI0._CRS returned object",
		"[Buffer] Length 54 = 0000: 88 0D 00 02 0C 00 00 00 00 00 FF 00 00 00 00 01",
		"0050: C0 3E 79 00",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("acpiexec output lacks %q:\n%s", w, out)
		}
	}
	// ACPICA warns about inconsistent FADT fields (32-bit vs X_ forms,
	// register widths) with "Warning"; checksum problems are errors.
	for _, line := range strings.Split(out, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "warning") || strings.Contains(l, "mismatch") || strings.Contains(l, "checksum") || strings.Contains(l, "error") {
			t.Errorf("acpiexec: %s", line)
		}
	}
}
