// Package acpipm models the ACPI PM1a event and control register blocks:
// the fixed hardware through which an ACPI operating system turns the
// machine off.
//
// # The hardware
//
// ACPI splits power management between tables the firmware provides and a
// few registers at fixed, table-announced addresses. The FADT (ACPI 6.4
// §5.2.9) gives the I/O port of PM1a_EVT_BLK and PM1a_CNT_BLK and their
// lengths; the registers in them are specified in ACPI 6.4 §4.8.4.1 "PM1
// Event Grouping" and §4.8.4.2 "PM1 Control Grouping" (§4.8.3.x in ACPI
// 6.0), Tables 4.11-4.13:
//
//	PM1_STS (event block, first half), write 1 to clear:
//	  bit 0 TMR_STS  bit 4 BM_STS  bit 5 GBL_STS  bit 8 PWRBTN_STS
//	  bit 9 SLPBTN_STS  bit 10 RTC_STS  bit 14 PCIEXP_WAKE_STS
//	  bit 15 WAK_STS (set by hardware when the machine has woken up)
//	PM1_EN (event block, second half), read/write: the matching enables
//	  bit 0 TMR_EN  bit 5 GBL_EN  bit 8 PWRBTN_EN  bit 9 SLPBTN_EN
//	  bit 10 RTC_EN  bit 14 PCIEXP_WAKE_DIS
//	PM1_CNT (control block):
//	  bit 0 SCI_EN   power management events raise an SCI (ACPI mode)
//	                 rather than an SMI (legacy, firmware-owned mode)
//	  bit 1 BM_RLD   bit 2 GBL_RLS (write-only)
//	  bits 10-12 SLP_TYP  which sleep state SLP_EN enters
//	  bit 13 SLP_EN  write-only: enter the state in SLP_TYP now
//
// "Write 1 to clear" means writing a 1 to a status bit clears it and writing
// 0 leaves it alone, so software can acknowledge one event without racing
// against another that arrives meanwhile.
//
// SLP_TYP values are not fixed by the specification: each board picks its
// own, and the DSDT tells the OS which value means which state through the
// \_S1-\_S5 objects (ACPI 6.4 §7.4.2 "\_Sx (System States)"; the sleeping
// sequence is §16.1). To power off, Linux evaluates \_S5, then writes
// SLP_TYP first without and then with SLP_EN (ACPICA's
// acpi_hw_legacy_sleep), so the off switch is the second write. kvmlab's
// DSDT must declare \_S5 with SlpTypS5.
//
// # What is modelled
//
// SCI_EN always reads 1 and cannot be cleared: the machine starts in ACPI
// mode, so the FADT needs no SMI command port and ACPICA never tries the
// legacy-to-ACPI handshake (§4.8.3.4 "Legacy/ACPI Select and the SCI
// Interrupt" in ACPI 6.4). Writing SLP_EN with SLP_TYP = SlpTypS5 calls the
// poweroff callback. Any other sleep type is refused (Write returns an
// error) and the machine "wakes" at once: WAK_STS is set, because ACPICA
// spins on WAK_STS after writing SLP_EN and would otherwise hang.
//
// PM1_STS holds what the device sets (PWRBTN_STS via PowerButton, WAK_STS
// as above) until the guest clears it. PM1_EN holds the defined enable bits;
// reserved bits read 0. When an SCI line is given (SetSCI), the SCI is a
// level interrupt asserted while SCI_EN is set and some status bit is set
// with its enable bit (ACPI 6.4 §4.8.3.4 again), so pressing the power button
// lets an ACPI guest shut down cleanly. There is no PM timer here and no
// GPE block.
//
// The registers are 16 bits wide and ACPICA accesses them 16 bits at a
// time, but byte accesses work too (the specification allows byte and word
// access), including one to the high byte of PM1_CNT at offset 5, which
// alone carries SLP_TYP and SLP_EN. A 4-byte access is split by register.
package acpipm

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"kvmlab/devices/irq"
)

// Where kvmlab places the block, and the FADT values that describe it.
const (
	Base     = 0x600 // first port of the range the VMM registers
	Size     = 6     // PM1_STS, PM1_EN, PM1_CNT, 16 bits each
	EvtBlk   = 0x600 // FADT PM1a_EVT_BLK
	EvtLen   = 4     // FADT PM1_EVT_LEN: PM1_STS + PM1_EN
	CntBlk   = 0x604 // FADT PM1a_CNT_BLK
	CntLen   = 2     // FADT PM1_CNT_LEN
	SlpTypS5 = 5     // the SLP_TYP value the DSDT's \_S5 must name
)

// Register offsets inside the range.
const (
	OffSts = 0
	OffEn  = 2
	OffCnt = 4
)

// PM1_STS bits.
const (
	StsTmr        = 1 << 0
	StsBM         = 1 << 4
	StsGbl        = 1 << 5
	StsPwrBtn     = 1 << 8
	StsSlpBtn     = 1 << 9
	StsRTC        = 1 << 10
	StsPCIExpWake = 1 << 14
	StsWak        = 1 << 15
)

// PM1_EN bits.
const (
	EnTmr           = 1 << 0
	EnGbl           = 1 << 5
	EnPwrBtn        = 1 << 8
	EnSlpBtn        = 1 << 9
	EnRTC           = 1 << 10
	EnPCIExpWakeDis = 1 << 14
	enMask          = EnTmr | EnGbl | EnPwrBtn | EnSlpBtn | EnRTC | EnPCIExpWakeDis
)

// PM1_CNT bits.
const (
	CntSCIEn     = 1 << 0
	CntBMRld     = 1 << 1
	CntGblRls    = 1 << 2
	CntSlpTypSh  = 10
	CntSlpTyp    = 7 << CntSlpTypSh
	CntSlpEn     = 1 << 13
	cntStoreMask = CntBMRld | CntSlpTyp // bits that read back what was written
)

// sciEvents are the status bits that have an enable bit in PM1_EN at the
// same position and so can raise the SCI.
const sciEvents = StsTmr | StsGbl | StsPwrBtn | StsSlpBtn | StsRTC

// ErrSleepType is returned by Write when the guest asks for a sleep state
// other than S5.
var ErrSleepType = errors.New("acpipm: unsupported sleep type")

// PM is the PM1a register set. Its methods are safe for concurrent use.
type PM struct {
	mu       sync.Mutex
	poweroff func()
	sci      irq.Line

	// lineMu serialises driving the SCI (see syncSCI); it is taken
	// before mu, never while holding it.
	lineMu   sync.Mutex
	sciLevel bool // what the SCI was last driven to

	sts uint16
	en  uint16
	cnt uint16 // BM_RLD and SLP_TYP as last written
}

// New returns the registers at reset: no status, nothing enabled, SCI_EN
// set. poweroff is called (outside the device's lock) each time the guest
// enters S5; it may be nil.
func New(poweroff func()) *PM {
	return &PM{poweroff: poweroff, sci: irq.Nop{}}
}

// SetSCI wires the System Control Interrupt (the FADT's SCI_INT). Without
// it the device raises no interrupt, which is all poweroff needs.
func (p *PM) SetSCI(l irq.Line) {
	if l == nil {
		l = irq.Nop{}
	}
	p.lineMu.Lock()
	p.mu.Lock()
	p.sci, p.sciLevel = l, false
	p.mu.Unlock()
	p.lineMu.Unlock()
	p.syncSCI()
}

// PowerButton presses the fixed-hardware power button: PWRBTN_STS is set,
// and an ACPI guest that enabled PWRBTN_EN gets an SCI and shuts down. The
// FADT must not set PWR_BUTTON (flag bit 4), which would mean "no fixed
// power button".
func (p *PM) PowerButton() {
	p.mu.Lock()
	p.sts |= StsPwrBtn
	p.mu.Unlock()
	p.syncSCI()
}

// sciWanted says whether the SCI should be asserted.
func (p *PM) sciWanted() bool { return p.sts&p.en&sciEvents != 0 }

// syncSCI drives the SCI line to its level if that changed. It runs after
// every change of the registers, outside mu so a Line may take its time, but
// under lineMu, so that levels computed by concurrent accesses reach the
// line in the order they were computed and the last change's view wins.
func (p *PM) syncSCI() {
	p.lineMu.Lock()
	defer p.lineMu.Unlock()
	p.mu.Lock()
	want := p.sciWanted()
	changed := want != p.sciLevel
	p.sciLevel = want
	l := p.sci
	p.mu.Unlock()
	if changed {
		// An interrupt line error is the VMM's to report, not the
		// guest's.
		_ = l.Set(want)
	}
}

func (p *PM) cntValue() uint16 { return p.cnt&cntStoreMask | CntSCIEn }

func (p *PM) reg(i int) uint16 {
	switch i {
	case 0:
		return p.sts
	case 1:
		return p.en
	}
	return p.cntValue()
}

// check accepts 1-, 2- and 4-byte accesses inside the range.
func check(offset uint64, data []byte) error {
	n := uint64(len(data))
	if (n == 1 || n == 2 || n == 4) && offset < Size && offset+n <= Size {
		return nil
	}
	return fmt.Errorf("acpipm: %d-byte access at offset %d outside the 6-byte PM1a block", len(data), offset)
}

// Read implements bus.Device. Registers are little-endian.
func (p *PM) Read(offset uint64, data []byte) error {
	if err := check(offset, data); err != nil {
		for i := range data {
			data[i] = 0xff
		}
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range data {
		o := offset + uint64(i)
		data[i] = byte(p.reg(int(o/2)) >> (8 * (o % 2)))
	}
	return nil
}

// Write implements bus.Device. Each register touched is written with the
// bytes of the access that fall in it, and only those bytes.
func (p *PM) Write(offset uint64, data []byte) error {
	if err := check(offset, data); err != nil {
		return err
	}
	var vals, masks [3]uint16
	for i, b := range data {
		o := offset + uint64(i)
		sh := 8 * (o % 2)
		vals[o/2] |= uint16(b) << sh
		masks[o/2] |= 0xff << sh
	}
	var off bool
	var err error
	p.mu.Lock()
	if masks[0] != 0 {
		// Write 1 to clear, only in the bytes written.
		p.sts &^= vals[0] & masks[0]
	}
	if masks[1] != 0 {
		p.en = (p.en&^masks[1] | vals[1]&masks[1]) & enMask
	}
	if masks[2] != 0 {
		p.cnt = p.cnt&^masks[2] | vals[2]&masks[2]&cntStoreMask
		if vals[2]&masks[2]&CntSlpEn != 0 {
			if typ := (p.cnt & CntSlpTyp) >> CntSlpTypSh; typ == SlpTypS5 {
				off = true
			} else {
				// Not supported: wake up at once so the guest's
				// wait for WAK_STS ends.
				p.sts |= StsWak
				err = fmt.Errorf("%w: SLP_TYP=%d (only %d, S5, is implemented); woke at once", ErrSleepType, typ, SlpTypS5)
			}
		}
	}
	fn := p.poweroff
	p.mu.Unlock()
	p.syncSCI()
	if off && fn != nil {
		fn()
	}
	return err
}

// Describe implements bus.Describer: "ACPI PM1a_CNT write 0x3400 (SLP_TYP=5
// SLP_EN: S5 soft-off)". A byte access is shown as the part of the register
// it covers.
func (p *PM) Describe(offset uint64, write bool, data []byte) string {
	if check(offset, data) != nil {
		return fmt.Sprintf("ACPI PM1a bad %d-byte access at offset %d", len(data), offset)
	}
	dir := "read"
	if write {
		dir = "write"
	}
	var parts []string
	for r := 0; r < 3; r++ {
		var v, mask uint16
		for i, b := range data {
			o := offset + uint64(i)
			if int(o/2) == r {
				v |= uint16(b) << (8 * (o % 2))
				mask |= 0xff << (8 * (o % 2))
			}
		}
		if mask == 0 {
			continue
		}
		name := [3]string{"PM1a_STS", "PM1a_EN", "PM1a_CNT"}[r]
		var s string
		switch mask {
		case 0xffff:
			s = fmt.Sprintf("ACPI %s %s %#04x", name, dir, v)
		case 0x00ff:
			s = fmt.Sprintf("ACPI %s %s low byte %#02x", name, dir, v)
		default:
			s = fmt.Sprintf("ACPI %s %s high byte %#02x", name, dir, v>>8)
		}
		if bits := explain(r, write, v&mask); bits != "" {
			s += " (" + bits + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func explain(r int, write bool, v uint16) string {
	names := func(bits []struct {
		m uint16
		n string
	}) []string {
		var out []string
		for _, b := range bits {
			if v&b.m != 0 {
				out = append(out, b.n)
			}
		}
		return out
	}
	type bit = struct {
		m uint16
		n string
	}
	switch r {
	case 0:
		out := names([]bit{{StsTmr, "TMR"}, {StsBM, "BM"}, {StsGbl, "GBL"}, {StsPwrBtn, "PWRBTN"},
			{StsSlpBtn, "SLPBTN"}, {StsRTC, "RTC"}, {StsPCIExpWake, "PCIEXP_WAKE"}, {StsWak, "WAK"}})
		if len(out) == 0 {
			return ""
		}
		if write {
			return "clear " + strings.Join(out, " ")
		}
		return strings.Join(out, " ")
	case 1:
		return strings.Join(names([]bit{{EnTmr, "TMR_EN"}, {EnGbl, "GBL_EN"}, {EnPwrBtn, "PWRBTN_EN"},
			{EnSlpBtn, "SLPBTN_EN"}, {EnRTC, "RTC_EN"}, {EnPCIExpWakeDis, "PCIEXP_WAKE_DIS"}}), " ")
	}
	out := names([]bit{{CntSCIEn, "SCI_EN"}, {CntBMRld, "BM_RLD"}, {CntGblRls, "GBL_RLS"}})
	typ := (v & CntSlpTyp) >> CntSlpTypSh
	if typ != 0 || v&CntSlpEn != 0 {
		out = append(out, fmt.Sprintf("SLP_TYP=%d", typ))
	}
	s := strings.Join(out, " ")
	if write && v&CntSlpEn != 0 {
		if typ == SlpTypS5 {
			s += " SLP_EN: S5 soft-off"
		} else {
			s += " SLP_EN: unsupported sleep type, ignored"
		}
	}
	return s
}
