package vmm

// Running one command in the guest (`kvmlab run --exec`; the contract with
// the guest is package guest/runexec): the machine gets three more devices,
// and its console is watched.
//
//   - COM2 and COM4, two more 16550A UARTs, carry the command's standard
//     output and standard error (the guest's uinit copies them there), each
//     to its own host writer through its own asyncWriter, so a slow reader
//     of one never stalls a vCPU.
//   - The exit-status port (devices/exitport) at 0x501: the byte written
//     there is the command's status, and the write stops the machine
//     (StopExit, Outcome.Status).
//   - COM1, the kernel's console, still goes to Config.Console (kvmlab
//     discards it) but through a consoleWatch first: it keeps the last
//     lines for the report of a failed run and recognises a kernel panic,
//     which it ends the run on (StopGuestPanic) once the kernel has printed
//     its whole report, whether or not the command line says panic=-1.
//
// The flow stays one way: vCPU loop -> I/O exit -> bus -> UART or exit port
// -> a host writer, or Machine.stop.

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"kvmlab/devices/bus"
	"kvmlab/devices/exitport"
	"kvmlab/devices/serial"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/x86"
)

// ExecConfig adds the devices of `kvmlab run --exec` to a machine.
type ExecConfig struct {
	Stdout io.Writer // what the guest writes to COM2; nil discards
	Stderr io.Writer // what the guest writes to COM4; nil discards
}

// execState is a machine's exec devices.
type execState struct {
	watch          *consoleWatch
	stdout, stderr *asyncWriter
	port           *exitport.Port
}

// consoleSink is where COM1's output goes: Config.Console, through the
// console watch in an exec run.
func (m *Machine) consoleSink() io.Writer {
	if m.cfg.Exec == nil {
		return m.cfg.Console
	}
	m.exec = &execState{watch: newConsoleWatch(m.cfg.Console, func(line string) {
		m.stop(Outcome{Reason: StopGuestPanic, VCPU: -1, Detail: "the guest kernel panicked: " + line})
	})}
	return m.exec.watch
}

// addExec registers COM2, COM4 and the exit-status port (after
// consoleSink has made m.exec).
func (m *Machine) addExec() error {
	if m.exec == nil {
		return nil
	}
	e := m.exec
	e.stdout = newAsyncWriter(orDiscard(m.cfg.Exec.Stdout))
	e.stderr = newAsyncWriter(orDiscard(m.cfg.Exec.Stderr))
	e.port = exitport.New(func(s uint8) {
		m.stop(Outcome{Reason: StopExit, VCPU: -1, Status: int(s),
			Detail: fmt.Sprintf("the guest reported exit status %d at port %#x", s, exitport.Base)})
	})
	for _, r := range []struct {
		base, size uint64
		name       string
		dev        bus.Device
	}{
		{x86.COM2Port, 8, "COM2", serial.New("COM2", kvm.Line{VM: m.vm, IRQ: x86.COM2IRQ}, e.stdout)},
		{x86.COM4Port, 8, "COM4", serial.New("COM4", kvm.Line{VM: m.vm, IRQ: x86.COM4IRQ}, e.stderr)},
		{exitport.Base, exitport.Size, "exit-status", e.port},
	} {
		if err := m.bus.Register(bus.PIO, r.base, r.size, r.name, r.dev); err != nil {
			return err
		}
	}
	return nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// finishExec runs after the vCPUs have stopped and COM1's writer has
// flushed: it flushes the command's output and completes the outcome with
// what the console showed. A reset or triple fault after a panic line is
// the panic (panic=-1 turns a panic into a reset).
func (m *Machine) finishExec() {
	e := m.exec
	if e == nil {
		return
	}
	if e.stdout != nil {
		e.stdout.Close()
		e.stderr.Close()
	}
	line, _ := e.watch.Panic()
	m.outcome.Console = e.watch.Tail()
	switch m.outcome.Reason {
	case StopReboot, StopTripleFault, StopQuit:
		if line != "" {
			m.outcome.Detail = "the guest kernel panicked: " + line + " (then: " + m.outcome.Detail + ")"
			m.outcome.Reason = StopGuestPanic
		}
	}
}

// StopTimeout stops the machine because the run's time is up
// (StopTimeout). It is safe to call from any goroutine, also before Run.
func (m *Machine) StopTimeout(after time.Duration) {
	m.stop(Outcome{Reason: StopTimeout, VCPU: -1, Detail: fmt.Sprintf("timed out after %v", after)})
}

// consoleWatch keeps the end of a console stream and recognises Linux's
// panic report in it. Linux's panic() (kernel/panic.c) prints
//
//	Kernel panic - not syncing: REASON
//
// then, after the stack dump and before it reboots or halts,
//
//	---[ end Kernel panic - not syncing: REASON ]---
//
// The first line names the panic; the second says the report is complete,
// and calls onEnd. The stream is the guest's, so every buffer is bounded:
// the tail keeps consoleTailMax bytes, a line is looked at in its first
// consoleLineMax bytes, and the panic line is reduced to printable text.
// Write never fails and never blocks on anything but next.
type consoleWatch struct {
	next  io.Writer
	onEnd func(line string)

	mu     sync.Mutex
	tail   []byte
	line   []byte
	panicL string
	ended  bool
}

const (
	consoleTailMax = 8 << 10
	consoleLineMax = 512
	panicMarker    = "Kernel panic - not syncing"
	panicEndMarker = "---[ end Kernel panic - not syncing"
)

func newConsoleWatch(next io.Writer, onEnd func(line string)) *consoleWatch {
	return &consoleWatch{next: orDiscard(next), onEnd: onEnd}
}

func (c *consoleWatch) Write(p []byte) (int, error) {
	n := len(p)
	_, _ = c.next.Write(p) // the console's own destination first, as it came
	c.mu.Lock()
	c.tail = append(c.tail, p...)
	if len(c.tail) > 2*consoleTailMax {
		// Trim in bulk: copying the tail at every write would make a
		// chatty console cost its square.
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-consoleTailMax:]...)
	}
	fire := ""
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := consoleLineMax - len(c.line); room > 0 {
			c.line = append(c.line, chunk[:min(room, len(chunk))]...)
		}
		if i < 0 {
			break
		}
		p = p[i+1:]
		if c.endOfLine() {
			fire = c.panicL
		}
		c.line = c.line[:0]
	}
	c.mu.Unlock()
	if fire != "" && c.onEnd != nil {
		c.onEnd(fire)
	}
	return n, nil
}

// endOfLine looks at the line just completed; it reports whether it ended
// a panic report for the first time.
func (c *consoleWatch) endOfLine() bool {
	if i := bytes.Index(c.line, []byte(panicEndMarker)); i >= 0 {
		if c.panicL == "" {
			c.panicL = printable(c.line[i+len("---[ end "):])
		}
		if !c.ended {
			c.ended = true
			return true
		}
		return false
	}
	if i := bytes.Index(c.line, []byte(panicMarker)); i >= 0 && c.panicL == "" {
		c.panicL = printable(c.line[i:])
	}
	return false
}

// printable keeps a line's printable characters, without a trailing
// " ]---" or carriage return.
func printable(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, string(b))
	s = strings.TrimSuffix(strings.TrimSpace(s), "]---")
	return strings.TrimSpace(s)
}

// Panic returns the kernel's panic line ("Kernel panic - not syncing: ...")
// if the console showed one, and whether the report was complete.
func (c *consoleWatch) Panic() (line string, ended bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.panicL, c.ended
}

// Tail returns the last consoleTailMax bytes written.
func (c *consoleWatch) Tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.tail[max(0, len(c.tail)-consoleTailMax):])
}
