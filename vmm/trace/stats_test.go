package trace

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func TestStatsMinAvgMax(t *testing.T) {
	s := NewStats()
	add := func(v int, reason string, ns int64) {
		s.Add(&Event{VCPU: v, Reason: reason, HandleNS: ns})
	}
	add(0, "KVM_EXIT_IO", 100)
	add(0, "KVM_EXIT_IO", 300)
	add(0, "KVM_EXIT_IO", 200)
	add(1, "KVM_EXIT_IO", 1000)
	add(1, "KVM_EXIT_HLT", 50)
	add(1, "KVM_EXIT_MMIO", 7)
	add(0, "KVM_EXIT_MMIO", 9)

	tests := []struct {
		vcpu int
		want []Row
	}{
		{0, []Row{
			{Name: "KVM_EXIT_IO", Count: 3, TotalNS: 600, MinNS: 100, MaxNS: 300},
			{Name: "KVM_EXIT_MMIO", Count: 1, TotalNS: 9, MinNS: 9, MaxNS: 9},
		}},
		{1, []Row{ // ties by name
			{Name: "KVM_EXIT_HLT", Count: 1, TotalNS: 50, MinNS: 50, MaxNS: 50},
			{Name: "KVM_EXIT_IO", Count: 1, TotalNS: 1000, MinNS: 1000, MaxNS: 1000},
			{Name: "KVM_EXIT_MMIO", Count: 1, TotalNS: 7, MinNS: 7, MaxNS: 7},
		}},
		{AllVCPUs, []Row{
			{Name: "KVM_EXIT_IO", Count: 4, TotalNS: 1600, MinNS: 100, MaxNS: 1000},
			{Name: "KVM_EXIT_MMIO", Count: 2, TotalNS: 16, MinNS: 7, MaxNS: 9},
			{Name: "KVM_EXIT_HLT", Count: 1, TotalNS: 50, MinNS: 50, MaxNS: 50},
		}},
		{7, []Row{}},
	}
	for _, tt := range tests {
		if got := s.Reasons(tt.vcpu); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Reasons(%d) =\n %+v\nwant\n %+v", tt.vcpu, got, tt.want)
		}
	}
	if r := s.Reasons(AllVCPUs)[0]; r.AvgNS() != 400 {
		t.Errorf("avg %d, want 400", r.AvgNS())
	}
	if r := s.Reasons(AllVCPUs)[1]; r.AvgNS() != 8 {
		t.Errorf("avg %d, want 8", r.AvgNS())
	}
	if s.Total() != 7 || !reflect.DeepEqual(s.VCPUs(), []int{0, 1}) {
		t.Errorf("Total %d VCPUs %v", s.Total(), s.VCPUs())
	}
}

func TestStatsHardwareAndDevices(t *testing.T) {
	s := NewStats()
	for _, ev := range sampleEvents() {
		s.Add(&ev)
	}
	wantHW := []Row{
		{Name: "svm VMEXIT_IOIO (0x7b)", Derived: true, Count: 2, TotalNS: 4000, MinNS: 1500, MaxNS: 2500},
		{Name: "(none)", Count: 1},
		{Name: "vmx EPT_MISCONFIG (49)", Derived: true, Count: 1, TotalNS: 4200, MinNS: 4200, MaxNS: 4200},
		{Name: "vmx HLT (12)", Derived: true, Count: 1, TotalNS: 300, MinNS: 300, MaxNS: 300},
		{Name: "vmx INVALID_STATE (33)", Count: 1, TotalNS: 12000, MinNS: 12000, MaxNS: 12000},
		{Name: "vmx IO_INSTRUCTION (30)", Derived: true, Count: 1, TotalNS: 800, MinNS: 800, MaxNS: 800},
	}
	if got := s.Hardware(AllVCPUs); !reflect.DeepEqual(got, wantHW) {
		t.Errorf("Hardware =\n %+v\nwant\n %+v", got, wantHW)
	}
	if got := s.Hardware(1); len(got) != 2 || got[0].Name != "vmx EPT_MISCONFIG (49)" {
		t.Errorf("Hardware(1) = %+v", got)
	}

	devs := s.Devices()
	byName := map[string]DeviceRow{}
	var order []string
	for _, d := range devs {
		byName[d.Name] = d
		order = append(order, d.Name)
	}
	if want := []string{NoDevice, "COM1", "IOAPIC", Unclaimed}; !reflect.DeepEqual(order, want) {
		t.Errorf("device order %v, want %v", order, want)
	}
	tests := []struct {
		dev     string
		count   uint64
		targets []Top
		actions []Top
	}{
		{"COM1", 2, []Top{{"0x3f8 out", 1}, {"0x3fd in", 1}},
			[]Top{{"COM1 LSR read: THR empty, line idle", 1}, {"COM1 THR write 'H'", 1}}},
		{"IOAPIC", 1, []Top{{"0xfec00000 write", 1}},
			[]Top{{"IOAPIC IOREGSEL = 0x10 (redirection entry 0, low)", 1}}},
		{Unclaimed, 1, []Top{{"0x80 out", 1}}, []Top{{"unclaimed port 0x80 out (reads as all ones)", 1}}},
		{NoDevice, 3, []Top{{"FAIL_ENTRY", 1}, {"HLT", 1}, {"SHUTDOWN", 1}}, []Top{{evFail.Action, 1}}},
	}
	for _, tt := range tests {
		d := byName[tt.dev]
		if d.Count != tt.count || !reflect.DeepEqual(d.Targets, tt.targets) || !reflect.DeepEqual(d.Actions, tt.actions) {
			t.Errorf("%s = %+v\nwant count %d targets %v actions %v", tt.dev, d, tt.count, tt.targets, tt.actions)
		}
	}
}

// The tables must count exactly what the trace holds: the same events go
// to a JSONWriter and to Stats, and the lines of the trace, counted per
// reason and vCPU, must equal the Stats counts.
func TestStatsMatchTrace(t *testing.T) {
	var buf bytes.Buffer
	jw := NewJSONWriter(&buf)
	st := NewStats()
	sink := Multi(jw, nil, Nop{}, st)
	const goroutines, per = 4, 2_500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per + g*10 { // different counts per vCPU
				ev := synth(g, i, uint64(g*100_000+i+1))
				sink.Record(&ev)
			}
		}()
	}
	wg.Wait()
	if err := jw.Close(); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(buf.Bytes(), []byte("\n"))
	evs, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(lines) != st.Total() || len(evs) != lines {
		t.Fatalf("trace has %d lines (%d events), stats total %d", lines, len(evs), st.Total())
	}
	type key struct {
		reason string
		vcpu   int
	}
	fromTrace := map[key]uint64{}
	for _, ev := range evs {
		fromTrace[key{ev.Reason, ev.VCPU}]++
		fromTrace[key{ev.Reason, AllVCPUs}]++
	}
	for k, n := range fromTrace {
		if got := st.Count(k.reason, k.vcpu); got != n {
			t.Errorf("Count(%s, %d) = %d, trace has %d", k.reason, k.vcpu, got, n)
		}
	}
	var sum uint64
	for _, r := range st.Reasons(AllVCPUs) {
		sum += r.Count
	}
	if sum != uint64(lines) {
		t.Errorf("reason rows sum to %d, want %d", sum, lines)
	}
	var devSum uint64
	for _, d := range st.Devices() {
		devSum += d.Count
	}
	if devSum != uint64(lines) {
		t.Errorf("device rows sum to %d, want %d", devSum, lines)
	}
}

func TestStatsConcurrentAdd(t *testing.T) {
	const goroutines, per = 8, 10_000
	s := NewStats()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ev := synth(g, i, 0)
				s.Add(&ev)
			}
		}()
	}
	// Reading while adding must be safe too.
	for range 10 {
		_ = s.Reasons(AllVCPUs)
		_ = s.Devices()
	}
	wg.Wait()
	if s.Total() != goroutines*per {
		t.Fatalf("Total = %d", s.Total())
	}
	for g := range goroutines {
		// synth: i%4 in {0,1} IO, 2 MMIO, 3 HLT
		if io, hlt := s.Count("KVM_EXIT_IO", g), s.Count("KVM_EXIT_HLT", g); io != per/2 || hlt != per/4 {
			t.Errorf("vCPU %d: IO %d HLT %d", g, io, hlt)
		}
	}
	r := s.Reasons(AllVCPUs)[0]
	if r.Name != "KVM_EXIT_IO" || r.MinNS != 1000 || r.MaxNS != 1600 {
		t.Errorf("IO row %+v", r)
	}
}

func TestStatsDistinctCap(t *testing.T) {
	s := NewStats()
	for i := range maxDistinct + 50 {
		s.Add(&Event{Reason: "KVM_EXIT_MMIO", Action: fmt.Sprint("probe ", i),
			MMIO: &MMIO{Addr: 0xd0000000 + uint64(i)*4, Len: 4}})
	}
	d := s.Devices()[0]
	if len(d.Targets) != maxDistinct+1 || d.Targets[0] != (Top{"(other)", 50}) {
		t.Errorf("%d targets, first %v", len(d.Targets), d.Targets[0])
	}
	if len(d.Actions) != maxDistinct+1 || d.Actions[0] != (Top{"(other)", 50}) {
		t.Errorf("%d actions, first %v", len(d.Actions), d.Actions[0])
	}
}

func TestStatsWrite(t *testing.T) {
	s := NewStats()
	for _, ev := range sampleEvents() {
		s.Add(&ev)
	}
	for i := range 20 { // make COM1 output dominate
		ev := evCOM1Out
		ev.HandleNS = 2_000 + int64(i)*100
		s.Add(&ev)
	}
	var buf bytes.Buffer
	if err := s.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("\n%s", out)
	// Rows as regular expressions: name, count, share, time%, min, avg, max, total.
	rows := []string{
		`^27 exits to user space on 3 vCPUs, 80\.30µs handling them \(2\.97µs on average\)$`,
		`^  all vCPUs +COUNT +SHARE +TIME% +MIN +AVG +MAX +TOTAL$`,
		`^  KVM_EXIT_IO +23 +85\.19% +79\.45% +0\.80µs +2\.77µs +3\.90µs +63\.80µs$`,
		`^  KVM_EXIT_FAIL_ENTRY +1 +3\.70% +14\.94% +12\.00µs +12\.00µs +12\.00µs +12\.00µs$`,
		`^  KVM_EXIT_SHUTDOWN +1 +3\.70% +0\.00% +0\.00µs`,
		`^  vCPU 0 +COUNT`,
		`^  vCPU 2 +COUNT`,
		`^  KVM_EXIT_SHUTDOWN +1 +100\.00% +0\.00%`, // vCPU 2's section
		`^  svm VMEXIT_IOIO \(0x7b\) \* +22 `,
		`^  vmx INVALID_STATE \(33\) +1 `, // reported: no star
		`^\* derived from the KVM exit reason`,
		`^  DEVICE +COUNT`,
		`^  COM1 +22 +81\.48% `,
		`^      at: 0x3f8 out ×21, 0x3fd in ×1$`,
		`^      did: "COM1 THR write 'H'" ×21, "COM1 LSR read: THR empty, line idle" ×1$`,
		`^  \(no device\) +3 +11\.11% +15\.32% +0\.00µs +4\.10µs +12\.00µs +12\.30µs$`,
		`^      at: FAIL_ENTRY ×1, HLT ×1, SHUTDOWN ×1$`,
		`^  unclaimed +1 `,
		`^      at: 0x80 out ×1$`,
	}
	for _, re := range rows {
		if !regexp.MustCompile("(?m)" + re).MatchString(out) {
			t.Errorf("no line matches %s", re)
		}
	}
	// Sorted by count: IO before FAIL_ENTRY before HLT (ties by name).
	io, fail, hlt := strings.Index(out, "KVM_EXIT_IO "), strings.Index(out, "KVM_EXIT_FAIL_ENTRY"), strings.Index(out, "KVM_EXIT_HLT")
	if io >= fail || fail >= hlt {
		t.Errorf("rows out of order: IO %d FAIL_ENTRY %d HLT %d", io, fail, hlt)
	}
}

func TestStatsWriteEmptyAndErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := NewStats().Write(&buf); err != nil || buf.String() != "0 exits to user space on 0 vCPUs, 0.00µs handling them\n" {
		t.Errorf("empty: %q %v", buf.String(), err)
	}
	s := NewStats()
	s.Add(&evCOM1Out)
	if err := s.Write(&failWriter{}); !errors.Is(err, errDiskFull) {
		t.Errorf("Write to a failing writer = %v", err)
	}
	var nilStats *Stats
	nilStats.Add(&evCOM1Out) // typed nil is harmless
}

func TestFormatUnits(t *testing.T) {
	for _, tt := range []struct {
		ns           int64
		micro, total string
	}{
		{0, "0.00µs", "0.00µs"},
		{1_234, "1.23µs", "1.23µs"},
		{999_999, "1000.00µs", "1000.00µs"},
		{1_500_000, "1500.00µs", "1.50ms"},
		{2_250_000_000, "2250000.00µs", "2.25s"},
	} {
		if m, tot := fmtMicros(tt.ns), fmtTotal(tt.ns); m != tt.micro || tot != tt.total {
			t.Errorf("%d ns: %s %s, want %s %s", tt.ns, m, tot, tt.micro, tt.total)
		}
	}
}
