package compare

// The third way to run the same userland: a VM brought back from a snapshot
// (docs/snapshot.md). A cold VM pays for its kernel's boot; a restored one
// pays for reading its RAM back from a file, which is what makes snapshots
// the way production VMMs start functions in tens of milliseconds.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"kvmlab/guest/probe"
	"kvmlab/internal/human"
	"kvmlab/vmm"
	"kvmlab/vmm/vmstate"
)

// shellCmdline boots the guest to its shell, where a snapshot is taken and
// a restore types the probe's command.
const shellCmdline = "console=ttyS0 panic=-1 quiet"

// restoredSide boots the guest to its shell, snapshots it into dir, and
// then measures a restore of that snapshot: from opening the file to the
// probe's report, the probe's command typed at the restored shell. Besides
// the side, it returns what the snapshot cost.
func restoredSide(ctx context.Context, o *Options, dir string) (Side, string) {
	s := Side{Name: "VM (restored)"}
	path, note, err := takeShellSnapshot(ctx, o, dir)
	if err != nil {
		s.Error = "snapshot: " + err.Error()
		return s, ""
	}
	s.ImageBytes = fileSize(path)

	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		s.Error = err.Error()
		return s, note
	}
	defer f.Close()
	sf, err := vmstate.OpenFile(f)
	if err != nil {
		s.Error = err.Error()
		return s, note
	}
	in, typed := io.Pipe()
	defer typed.Close()
	var mu sync.Mutex
	var at time.Time
	var line string
	got := make(chan struct{})
	watch := &consoleWatch{fn: func(l string, t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if i := strings.Index(l, ProbeMarker); i >= 0 && at.IsZero() {
			at, line = t, l[i:]
			close(got)
		}
	}}
	m, err := vmm.Restore(vmm.Config{Console: watch, Input: in, Stats: true}, sf)
	if err != nil {
		s.Error = err.Error()
		return s, note
	}
	defer m.Close()
	done := make(chan vmm.Outcome, 1)
	go func() { done <- m.Run() }()
	// The shell is at its prompt: the command goes in at once.
	go func() { _, _ = io.WriteString(typed, "/bin/kvmlab-probe\n") }()
	select {
	case <-got:
	case out := <-done:
		s.Error = fmt.Sprintf("the restored VM stopped before the probe reported (%s); console: %s", out.Detail, watch.tail())
		return s, note
	case <-time.After(o.Timeout):
		s.Error = "the probe did not report in the restored VM; console: " + watch.tail()
	case <-ctx.Done():
		s.Error = "interrupted"
	}
	if s.Error == "" {
		mu.Lock()
		s.StartupMS = float64(at.Sub(start).Microseconds()) / 1000
		l := line
		mu.Unlock()
		st := m.Stats()
		s.FootprintBytes = st.RSS
		s.FootprintNote = fmt.Sprintf("VMM RSS %.1f MiB = guest RAM read from the snapshot %.1f MiB + VMM %.1f MiB", human.MiB(st.RSS), human.MiB(st.GuestResident), human.MiB(st.VMMResident()))
		var r probe.Report
		if err := jsonProbe(l, &r); err != nil {
			s.Error = "probe output: " + err.Error()
		} else {
			s.Probe = &r
		}
	}
	m.Quit()
	<-done
	s.BoundaryNote = "not counted for the restored VM: the same guest as the VM column"
	s.Blast = "not tried: the same kernel as the VM column"
	return s, note
}

// takeShellSnapshot boots the guest to its shell and saves it. It returns
// the file and a line on what the snapshot cost.
func takeShellSnapshot(ctx context.Context, o *Options, dir string) (string, string, error) {
	cfg, err := o.VMConfig(shellCmdline)
	if err != nil {
		return "", "", err
	}
	in, typed := io.Pipe()
	defer typed.Close()
	ready := make(chan struct{})
	var once sync.Once
	cfg.Console = &consoleWatch{fn: func(l string, _ time.Time) {
		if strings.Contains(l, "ready-42") {
			once.Do(func() { close(ready) })
		}
	}}
	cfg.Input = in
	m, err := vmm.New(cfg)
	if err != nil {
		if o.VMError != nil {
			err = o.VMError(err)
		}
		return "", "", err
	}
	defer m.Close()
	done := make(chan vmm.Outcome, 1)
	go func() { done <- m.Run() }()
	defer func() { m.Quit(); <-done }()
	// Ask the shell until it answers: then it is up, at its prompt.
	deadline := time.After(o.Timeout)
	for answered := false; !answered; {
		go func() { _, _ = io.WriteString(typed, "echo ready-$((6*7))\n") }()
		select {
		case <-ready:
			answered = true
		case <-time.After(2 * time.Second):
		case out := <-done:
			done <- out
			return "", "", fmt.Errorf("the VM stopped before its shell answered (%s)", out.Detail)
		case <-deadline:
			return "", "", fmt.Errorf("the shell did not answer within %v", o.Timeout)
		case <-ctx.Done():
			return "", "", ErrInterrupted
		}
	}
	// Let the shell print its prompt after the answer.
	time.Sleep(500 * time.Millisecond)
	path := dir + "/shell.snap"
	f, err := os.Create(path)
	if err != nil {
		return "", "", err
	}
	res, err := m.SaveSnapshot(f, true)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", err
	}
	note := fmt.Sprintf("snapshot of the VM at its shell: %.1f MiB (%.1f of its %d MiB of RAM), written in %.0f ms with the guest stopped",
		human.MiB(uint64(res.FileBytes)), human.MiB(res.SavedBytes), res.RAMBytes>>20, float64(res.Paused.Microseconds())/1000)
	return path, note, nil
}

// jsonProbe decodes a probe's report line. The probe writes its line in
// one write(2), but a VM's console is shared with the guest kernel: its
// printk goes straight to the UART (the kernel's console driver does not
// queue behind the tty), so a kernel warning can land before the marker or
// between the JSON and its newline. The report is therefore found by its
// marker and decoded as the first JSON value after it, whatever follows.
func jsonProbe(line string, r *probe.Report) error {
	i := strings.Index(line, ProbeMarker)
	if i < 0 {
		return fmt.Errorf("no %q in the line", strings.TrimSpace(ProbeMarker))
	}
	if err := json.NewDecoder(strings.NewReader(line[i+len(ProbeMarker):])).Decode(r); err != nil {
		return fmt.Errorf("decoding the report: %w", err)
	}
	return nil
}
