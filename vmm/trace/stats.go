package trace

// Exit statistics, in the manner of `perf kvm stat report`.
//
// On a Linux host, `perf kvm stat record` samples the kvm:kvm_exit and
// kvm:kvm_entry tracepoints inside the kernel, and `perf kvm stat report`
// prints one row per hardware exit reason: how many exits (Samples), their
// share of all exits (Samples%), their share of the time spent handling
// exits (Time%), and the min, max and average handling time. It is the
// first thing to look at when a guest is slow: a guest that takes 100,000
// EPT_MISCONFIG exits per second (MMIO) is slow for a different reason than
// one with a few very slow IO_INSTRUCTION exits.
//
// perf sees every exit, including the many that KVM handles in the kernel
// and the guest never notices (external interrupts, most page faults).
// These tables show only the exits that reached the VMM, which are the
// expensive ones: each costs a return to user space and back. They come in
// three views:
//
//   - by KVM exit reason (KVM_EXIT_IO, KVM_EXIT_MMIO, ...), what the VMM sees;
//   - by hardware exit reason (VT-x basic exit reason or SVM exit code),
//     mostly derived from the KVM reason, and marked so;
//   - by device, with the ports and addresses it was reached through and
//     what the accesses meant.
//
// The time measured is handle_ns: from KVM_RUN's return to the event being
// recorded, the VMM's share of the exit. It does not include the kernel's
// part of the round trip (perf's figure does).
//
// Add runs on the exit path when `--stats` is on, on several vCPUs at once.
// It takes a lock, but one of 16 shards chosen by vCPU index, so with up to
// 16 vCPUs no two vCPUs ever contend and the lock costs an uncontended
// atomic; the work inside is a few lookups in small maps (about 60ns in
// all, BenchmarkStatsAdd). Reading the tables merges the shards.

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// AllVCPUs selects rows summed over all vCPUs.
const AllVCPUs = -1

// Device rows for exits that no device handled.
const (
	Unclaimed = "unclaimed"   // a port or MMIO access no device claimed
	NoDevice  = "(no device)" // an exit that is not a device access (HLT, SHUTDOWN...)
)

// maxDistinct bounds how many distinct ports/addresses and actions a device
// keeps per shard; the rest are counted as "(other)".
const maxDistinct = 256

const nShards = 16

// Stats aggregates exits. The zero value is ready to use; it is a Sink.
type Stats struct {
	shards [nShards]statShard
}

// The maps are keyed by plain strings rather than structs holding strings:
// Go hashes a struct key field by field, while a string-keyed map with up
// to 8 entries finds a key by comparing, without hashing at all, and these
// maps are that small. With the string-free target key below, this took Add
// from about 150ns to 60ns (BenchmarkStatsAdd).
type statShard struct {
	mu    sync.Mutex
	vcpus []*vcpuStats // the vCPUs whose index maps to this shard: usually one
	dev   map[string]*devAgg
	_     [64]byte // keep the next shard's lock off this cache line
}

type vcpuStats struct {
	id  int
	kvm map[string]*agg     // by KVM reason
	hw  map[string][]*hwAgg // by hardware reason name, then vendor, code, derived
}

type hwAgg struct {
	agg
	vendor  string // "" when the event had no hardware reason
	code    uint64
	derived bool
}

func (sh *statShard) vcpu(id int) *vcpuStats {
	for _, v := range sh.vcpus {
		if v.id == id {
			return v
		}
	}
	v := &vcpuStats{id: id, kvm: map[string]*agg{}, hw: map[string][]*hwAgg{}}
	sh.vcpus = append(sh.vcpus, v)
	return v
}

func (v *vcpuStats) hwAgg(hw *HW) *hwAgg {
	var h HW
	if hw != nil {
		h = *hw
	}
	list := v.hw[h.Name]
	for _, a := range list {
		if a.vendor == h.Vendor && a.code == h.Code && a.derived == h.Derived {
			return a
		}
	}
	a := &hwAgg{vendor: h.Vendor, code: h.Code, derived: h.Derived}
	v.hw[h.Name] = append(list, a)
	return a
}

// agg is count and handling time of a group of exits.
type agg struct {
	n             uint64
	sum, min, max int64
}

func (a *agg) add(ns int64) {
	if a.n == 0 || ns < a.min {
		a.min = ns
	}
	if a.n == 0 || ns > a.max {
		a.max = ns
	}
	a.n++
	a.sum += ns
}

func (a *agg) merge(b *agg) {
	if b.n == 0 {
		return
	}
	if a.n == 0 || b.min < a.min {
		a.min = b.min
	}
	if a.n == 0 || b.max > a.max {
		a.max = b.max
	}
	a.n += b.n
	a.sum += b.sum
}

// target is where an access went: a port or an MMIO address. It has no
// strings, so hashing it is cheap (a string in a struct key makes the map
// hash the struct field by field, which costs more than the rest of Add).
type target struct {
	kind  uint8
	write bool
	addr  uint64
}

const (
	targetIO uint8 = iota
	targetMMIO
	targetOverflow
)

func (t target) String() string {
	switch t.kind {
	case targetIO:
		if t.write {
			return fmt.Sprintf("%#x out", t.addr)
		}
		return fmt.Sprintf("%#x in", t.addr)
	case targetMMIO:
		if t.write {
			return fmt.Sprintf("%#x write", t.addr)
		}
		return fmt.Sprintf("%#x read", t.addr)
	}
	return "(other)"
}

type devAgg struct {
	agg
	targets map[target]*uint64 // port and MMIO accesses
	others  map[string]*uint64 // other exits, by KVM reason
	actions map[string]*uint64
}

// count increments m[k], or m[overflow] once m has maxDistinct keys.
func count[K comparable](m map[K]*uint64, k, overflow K) {
	if n := m[k]; n != nil {
		*n++
		return
	}
	if len(m) >= maxDistinct {
		k = overflow
		if n := m[k]; n != nil {
			*n++
			return
		}
	}
	n := uint64(1)
	m[k] = &n
}

// NewStats returns an empty Stats.
func NewStats() *Stats { return &Stats{} }

// Record is Add, making Stats a Sink.
func (s *Stats) Record(ev *Event) { s.Add(ev) }

// Add counts ev. It is safe for concurrent use and keeps nothing ev points
// to (only its strings).
func (s *Stats) Add(ev *Event) {
	if s == nil || ev == nil {
		return
	}
	sh := &s.shards[uint(ev.VCPU)%nShards]
	ns := ev.HandleNS

	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.dev == nil {
		sh.dev = map[string]*devAgg{}
	}
	v := sh.vcpu(ev.VCPU)
	a := v.kvm[ev.Reason]
	if a == nil {
		a = new(agg)
		v.kvm[ev.Reason] = a
	}
	a.add(ns)
	v.hwAgg(ev.HW).add(ns)
	dev := ev.Device
	if dev == "" {
		dev = NoDevice
		if ev.IO != nil || ev.MMIO != nil {
			dev = Unclaimed
		}
	}
	d := sh.dev[dev]
	if d == nil {
		d = &devAgg{targets: map[target]*uint64{}, others: map[string]*uint64{}, actions: map[string]*uint64{}}
		sh.dev[dev] = d
	}
	d.add(ns)
	switch {
	case ev.IO != nil:
		t := target{kind: targetIO, addr: uint64(ev.IO.Port), write: ev.IO.Dir == "out"}
		count(d.targets, t, target{kind: targetOverflow})
	case ev.MMIO != nil:
		t := target{kind: targetMMIO, addr: ev.MMIO.Addr, write: ev.MMIO.Write}
		count(d.targets, t, target{kind: targetOverflow})
	default:
		count(d.others, ev.Reason, "(other)")
	}
	if ev.Action != "" {
		count(d.actions, ev.Action, "(other)")
	}
}

// Row is one line of a table.
type Row struct {
	Name    string
	Derived bool // hardware rows: inferred from the KVM reason, not reported
	Count   uint64
	TotalNS int64 // sum of handle_ns
	MinNS   int64
	MaxNS   int64
}

// AvgNS is the mean handling time.
func (r Row) AvgNS() int64 {
	if r.Count == 0 {
		return 0
	}
	return r.TotalNS / int64(r.Count)
}

// Top is a name and how often it occurred.
type Top struct {
	Name  string
	Count uint64
}

// DeviceRow is a device's line: its exits and where and what they were.
type DeviceRow struct {
	Row           // Name is the device, or "unclaimed"
	Targets []Top // ports ("0x3f8 out") and MMIO addresses, most frequent first
	Actions []Top // the events' Action strings, most frequent first
}

func rowOf(name string, derived bool, a *agg) Row {
	return Row{Name: name, Derived: derived, Count: a.n, TotalNS: a.sum, MinNS: a.min, MaxNS: a.max}
}

// sortRows orders by count, most first, then by name.
func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return cmpBool(a.Derived, b.Derived)
	})
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func sortTops(t []Top) {
	slices.SortFunc(t, func(a, b Top) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

// each calls f on every shard, locked.
func (s *Stats) each(f func(sh *statShard)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		f(sh)
		sh.mu.Unlock()
	}
}

// Total is the number of events added.
func (s *Stats) Total() uint64 {
	var n uint64
	s.each(func(sh *statShard) {
		for _, v := range sh.vcpus {
			for _, a := range v.kvm {
				n += a.n
			}
		}
	})
	return n
}

// VCPUs lists the vCPUs that had exits, in order.
func (s *Stats) VCPUs() []int {
	var out []int
	s.each(func(sh *statShard) {
		for _, v := range sh.vcpus {
			out = append(out, v.id)
		}
	})
	slices.Sort(out)
	return out
}

// Count is how many exits with this KVM reason vcpu took (AllVCPUs: all).
func (s *Stats) Count(reason string, vcpu int) uint64 {
	var n uint64
	s.each(func(sh *statShard) {
		for _, v := range sh.vcpus {
			if a := v.kvm[reason]; a != nil && (vcpu == AllVCPUs || v.id == vcpu) {
				n += a.n
			}
		}
	})
	return n
}

// Reasons is the table by KVM exit reason for one vCPU or AllVCPUs, sorted
// by count, most first, then by name.
func (s *Stats) Reasons(vcpu int) []Row {
	m := map[string]*agg{}
	s.each(func(sh *statShard) {
		for _, v := range sh.vcpus {
			if vcpu != AllVCPUs && v.id != vcpu {
				continue
			}
			for reason, a := range v.kvm {
				mergeInto(m, reason, a)
			}
		}
	})
	rows := make([]Row, 0, len(m))
	for name, a := range m {
		rows = append(rows, rowOf(name, false, a))
	}
	sortRows(rows)
	return rows
}

// HWName is a hardware reason's row name: vendor, name and code as the
// manuals list it, "vmx IO_INSTRUCTION (30)" (Intel SDM Vol. 3D, Appendix C,
// decimal) or "svm VMEXIT_IOIO (0x7b)" (AMD APM Vol. 2, Appendix C, hex).
// A nil hw, an event without a hardware reason, is "(none)".
func HWName(hw *HW) string {
	if hw == nil || (hw.Vendor == "" && hw.Name == "") {
		return "(none)"
	}
	code := strconv.FormatUint(hw.Code, 10)
	if hw.Vendor == "svm" {
		code = "0x" + strconv.FormatUint(hw.Code, 16)
	}
	return strings.TrimSpace(hw.Vendor+" "+hw.Name) + " (" + code + ")"
}

// Hardware is the table by hardware exit reason (see HWName) for one vCPU
// or AllVCPUs. A reason seen both derived and reported has two rows.
func (s *Stats) Hardware(vcpu int) []Row {
	type key struct {
		name    string
		derived bool
	}
	m := map[key]*agg{}
	s.each(func(sh *statShard) {
		for _, v := range sh.vcpus {
			if vcpu != AllVCPUs && v.id != vcpu {
				continue
			}
			for name, list := range v.hw {
				for _, a := range list {
					hw := &HW{Vendor: a.vendor, Name: name, Code: a.code}
					kk := key{HWName(hw), a.derived}
					if m[kk] == nil {
						m[kk] = new(agg)
					}
					m[kk].merge(&a.agg)
				}
			}
		}
	})
	rows := make([]Row, 0, len(m))
	for k, a := range m {
		rows = append(rows, rowOf(k.name, k.derived, a))
	}
	sortRows(rows)
	return rows
}

// Devices is the table by device, over all vCPUs, with every target and
// action counted. Exits without a device are in the rows Unclaimed (port and
// MMIO accesses) and NoDevice (the others).
func (s *Stats) Devices() []DeviceRow {
	type dev struct {
		agg
		targets map[string]uint64
		actions map[string]uint64
	}
	m := map[string]*dev{}
	s.each(func(sh *statShard) {
		for name, d := range sh.dev {
			x := m[name]
			if x == nil {
				x = &dev{targets: map[string]uint64{}, actions: map[string]uint64{}}
				m[name] = x
			}
			x.merge(&d.agg)
			for t, n := range d.targets {
				x.targets[t.String()] += *n
			}
			for r, n := range d.others {
				x.targets[ShortReason(r)] += *n
			}
			for a, n := range d.actions {
				x.actions[a] += *n
			}
		}
	})
	tops := func(m map[string]uint64) []Top {
		out := make([]Top, 0, len(m))
		for k, n := range m {
			out = append(out, Top{k, n})
		}
		sortTops(out)
		return out
	}
	rows := make([]DeviceRow, 0, len(m))
	for name, d := range m {
		rows = append(rows, DeviceRow{Row: rowOf(name, false, &d.agg), Targets: tops(d.targets), Actions: tops(d.actions)})
	}
	slices.SortFunc(rows, func(a, b DeviceRow) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return rows
}

func mergeInto(m map[string]*agg, name string, a *agg) {
	if m[name] == nil {
		m[name] = new(agg)
	}
	m[name].merge(a)
}

// topShown is how many targets and actions Write prints per device.
const topShown = 3

// Write prints the tables: by KVM reason and by hardware reason, each for
// all vCPUs and then (with more than one) for each vCPU, and by device. It
// returns the first write error. It may run while exits are still being
// added; the tables are then read one after another and may differ by the
// exits added in between.
func (s *Stats) Write(w io.Writer) error {
	ew := &errWriter{w: w}
	total := s.Reasons(AllVCPUs)
	var n uint64
	var ns int64
	for _, r := range total {
		n += r.Count
		ns += r.TotalNS
	}
	vcpus := s.VCPUs()
	fmt.Fprintf(ew, "%d exits to user space on %d vCPU%s, %s handling them", n, len(vcpus), plural(len(vcpus)), fmtTotal(ns))
	if n > 0 {
		fmt.Fprintf(ew, " (%s on average)", fmtMicros(ns/int64(n)))
	}
	fmt.Fprintln(ew)
	if n == 0 {
		return ew.err
	}

	per := func(title string, rows func(vcpu int) []Row, note string) {
		secs := []section{{"all vCPUs", rows(AllVCPUs)}}
		if len(vcpus) > 1 {
			for _, v := range vcpus {
				secs = append(secs, section{"vCPU " + strconv.Itoa(v), rows(v)})
			}
		}
		fmt.Fprintf(ew, "\n%s\n", title)
		if note != "" {
			fmt.Fprintf(ew, "%s\n", note)
		}
		writeTable(ew, secs)
	}
	per("Exits by KVM exit reason (SHARE: of exits, TIME%: of handling time; times are handle_ns)", s.Reasons, "")
	derived := false
	for _, r := range s.Hardware(AllVCPUs) {
		derived = derived || r.Derived
	}
	note := ""
	if derived {
		note = "* derived from the KVM exit reason and the CPU vendor: KVM does not report it"
	}
	per("Exits by hardware exit reason (VT-x basic exit reason / SVM exit code)", s.Hardware, note)

	devs := s.Devices()
	rows := make([]Row, len(devs))
	for i, d := range devs {
		rows[i] = d.Row
	}
	fmt.Fprintf(ew, "\nExits by device (all vCPUs), with the most frequent ports/addresses and actions\n")
	widths := tableWidths([]section{{"DEVICE", rows}})
	writeHeader(ew, "DEVICE", widths)
	for _, d := range devs {
		writeRow(ew, d.Row, widths, n, ns)
		if len(d.Targets) > 0 {
			fmt.Fprintf(ew, "      at: %s\n", fmtTops(d.Targets, false))
		}
		if len(d.Actions) > 0 {
			fmt.Fprintf(ew, "      did: %s\n", fmtTops(d.Actions, true))
		}
	}
	return ew.err
}

type section struct {
	title string
	rows  []Row
}

type widths struct{ name, count int }

func tableWidths(secs []section) widths {
	w := widths{name: 6, count: 5}
	for _, s := range secs {
		w.name = max(w.name, len([]rune(s.title)))
		for _, r := range s.rows {
			w.name = max(w.name, len([]rune(rowName(r))))
			w.count = max(w.count, len(strconv.FormatUint(r.Count, 10)))
		}
	}
	return w
}

func rowName(r Row) string {
	if r.Derived {
		return r.Name + " *"
	}
	return r.Name
}

func writeTable(w io.Writer, secs []section) {
	wd := tableWidths(secs)
	for i, sec := range secs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var n uint64
		var t int64
		for _, r := range sec.rows {
			n += r.Count
			t += r.TotalNS
		}
		writeHeader(w, sec.title, wd)
		for _, r := range sec.rows {
			// Within a vCPU's section, shares are of that vCPU's exits.
			writeRow(w, r, wd, n, t)
		}
	}
}

func writeHeader(w io.Writer, title string, wd widths) {
	fmt.Fprintf(w, "  %-*s  %*s  %7s  %7s  %10s  %10s  %10s  %10s\n",
		wd.name, title, wd.count, "COUNT", "SHARE", "TIME%", "MIN", "AVG", "MAX", "TOTAL")
}

func writeRow(w io.Writer, r Row, wd widths, n uint64, ns int64) {
	fmt.Fprintf(w, "  %-*s  %*d  %6.2f%%  %6.2f%%  %10s  %10s  %10s  %10s\n",
		wd.name, rowName(r), wd.count, r.Count,
		pct(float64(r.Count), float64(n)), pct(float64(r.TotalNS), float64(ns)),
		fmtMicros(r.MinNS), fmtMicros(r.AvgNS()), fmtMicros(r.MaxNS), fmtTotal(r.TotalNS))
}

func fmtTops(t []Top, quote bool) string {
	var b strings.Builder
	for i, x := range t[:min(len(t), topShown)] {
		if i > 0 {
			b.WriteString(", ")
		}
		if quote && x.Name != "(other)" {
			b.WriteString(strconv.Quote(x.Name))
		} else {
			b.WriteString(x.Name)
		}
		fmt.Fprintf(&b, " ×%d", x.Count)
	}
	if len(t) > topShown {
		fmt.Fprintf(&b, ", … (%d more)", len(t)-topShown)
	}
	return b.String()
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * a / b
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// fmtMicros formats a duration in microseconds, as perf kvm stat does:
// 1234 -> "1.23µs".
func fmtMicros(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1e3, 'f', 2, 64) + "µs"
}

// fmtTotal formats a total in the largest unit that keeps it above one.
func fmtTotal(ns int64) string {
	switch a := max(ns, -ns); {
	case a >= 1e9:
		return strconv.FormatFloat(float64(ns)/1e9, 'f', 2, 64) + "s"
	case a >= 1e6:
		return strconv.FormatFloat(float64(ns)/1e6, 'f', 2, 64) + "ms"
	}
	return fmtMicros(ns)
}

// errWriter remembers the first write error and then writes nothing.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
