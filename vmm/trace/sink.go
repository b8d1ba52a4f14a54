package trace

// Where events go.
//
// Every user-space exit passes through the VMM's exit path: KVM_RUN returns,
// the VMM decodes kvm_run, lets a device handle the access and calls KVM_RUN
// again. The guest's vCPU is stopped for all of that time, so whatever the
// observatory adds to it is added to every exit the guest takes. A Sink is
// the one call the exit path makes; everything else (encoding, writing,
// sorting) happens elsewhere.
//
// With tracing off the exit path should pay one predictable branch and not
// even build the Event (the Action string costs an allocation): keep a nil
// Sink and test it, or test Enabled once when the machine is set up.
// BenchmarkRecordOff measures what the check costs.

// Sink receives one Event per exit. Record is called on the vCPU's goroutine,
// possibly from several vCPUs at once, so implementations must be safe for
// concurrent use and quick. The *Event and the IO, MMIO and HW it points to
// are only valid during the call: a Sink that keeps the event must copy them
// (strings may be kept, they are immutable).
type Sink interface {
	Record(ev *Event)
}

// Nop is a Sink that does nothing.
type Nop struct{}

// Record does nothing.
func (Nop) Record(*Event) {}

// Enabled reports whether s would do anything: false for nil and Nop.
func Enabled(s Sink) bool {
	switch s.(type) {
	case nil, Nop, *Nop:
		return false
	}
	return true
}

// multi fans one event out to several sinks in order.
type multi []Sink

func (m multi) Record(ev *Event) {
	for _, s := range m {
		s.Record(ev)
	}
}

// Multi returns a Sink that passes every event to each of sinks in order.
// Nil and Nop sinks are left out and nested Multis flattened. When nothing
// is left Multi returns nil, so that "sink != nil" stays the exit path's
// off switch; with one sink left it returns that sink itself.
//
// Multi does not close anything: close each writer after the machine has
// stopped calling Record.
func Multi(sinks ...Sink) Sink {
	var out multi
	for _, s := range sinks {
		switch s := s.(type) {
		case nil, Nop, *Nop:
		case multi:
			out = append(out, s...)
		default:
			out = append(out, s)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}
