package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"kvmlab/vmm"
	"kvmlab/vmm/control"
)

// kvmlab control PATH COMMAND: the client of kvmlab run --control PATH
// (package vmm/control has the protocol, the server and the client).

func controlUsage() string {
	var b strings.Builder
	b.WriteString("Usage: kvmlab control [--json] PATH COMMAND [ARGS]\n\n" +
		"Send COMMAND to the kvmlab run started with --control PATH, and print its reply.\n" +
		"Exit status 0 when the command worked, 1 when kvmlab refused it, 2 on bad usage.\n" +
		"The socket speaks one JSON object per line, so socat works too:\n" +
		"  echo '{\"cmd\":\"stats\"}' | socat - UNIX-CONNECT:PATH\n\nCommands:\n")
	for _, c := range control.Commands {
		fmt.Fprintf(&b, "  %-24s %s\n", strings.TrimSpace(c.Name+" "+c.Args), c.Summary)
	}
	b.WriteString("\nFlags:\n")
	return b.String()
}

func controlWords() []string {
	var w []string
	for _, c := range control.Commands {
		w = append(w, c.Name)
	}
	return w
}

func cmdControl(args []string) error {
	fset := flag.NewFlagSet("control", flag.ContinueOnError)
	asJSON := fset.Bool("json", false, "print the reply as the server sent it: one line of JSON")
	paused := fset.Bool("paused", false, "with snapshot: leave the machine paused after the snapshot")
	setUsage(fset, controlUsage())
	if help, err := parseFlags(fset, args, true); help || err != nil {
		return err
	}
	// Flags may also follow the positional arguments (kvmlab control
	// PATH snapshot FILE --paused): parse what is left after each.
	var pos []string
	for rest := fset.Args(); len(rest) > 0; rest = fset.Args() {
		pos = append(pos, rest[0])
		if help, err := parseFlags(fset, rest[1:], true); help || err != nil {
			return err
		}
	}
	if len(pos) < 2 {
		return usagef("control: name the socket and a command, e.g. kvmlab control /tmp/vm.sock pause (commands: %s)", strings.Join(controlWords(), ", "))
	}
	path, cmd, cargs := pos[0], pos[1], pos[2:]
	req := control.Request{Cmd: cmd}
	switch cmd {
	case control.CmdSnapshot:
		if len(cargs) != 1 {
			return usagef("control: snapshot takes one FILE: kvmlab control %s snapshot FILE [--paused]", path)
		}
		req.Path, req.Paused = cargs[0], *paused
	case control.CmdPause, control.CmdResume, control.CmdStats, control.CmdQuit:
		if len(cargs) > 0 || *paused {
			return usagef("control: %s takes no arguments", cmd)
		}
	default:
		return usagef("control: unknown command %q: one of %s", cmd, strings.Join(controlWords(), ", "))
	}
	reply, raw, err := control.Call(path, req)
	if errors.Is(err, control.ErrSnapshotFile) {
		return usagef("control: snapshot %s: %v", req.Path, err)
	}
	if errors.Is(err, control.ErrNoServer) {
		return usagef("control: %v: start kvmlab run --control %s first", err, path)
	}
	if err != nil {
		return fmt.Errorf("control: %s: %w", path, err)
	}
	switch {
	case *asJSON:
		fmt.Printf("%s\n", raw)
	case reply.OK:
		fmt.Print(reply.Human(cmd))
	default:
		fmt.Fprintf(os.Stderr, "kvmlab: control: %s", reply.Human(cmd))
	}
	if !reply.OK {
		return exitError{1}
	}
	return nil
}

// machineControl is the running machine as the control socket's
// Handler.
type machineControl struct{ m *vmm.Machine }

func (c machineControl) Pause() error  { return c.m.Pause() }
func (c machineControl) Resume() error { c.m.Resume(); return nil }
func (c machineControl) Paused() bool  { return c.m.Paused() }
func (c machineControl) Quit()         { c.m.Quit() }

// Snapshot writes the machine into out, the file kvmlab control created
// and passed (vmm.Machine.SaveSnapshot).
func (c machineControl) Snapshot(path string, out *os.File, stayPaused bool) (control.SnapshotResult, error) {
	res, err := c.m.SaveSnapshot(out, stayPaused)
	if err != nil {
		return control.SnapshotResult{}, err
	}
	return control.SnapshotResult{Path: path, Bytes: res.FileBytes, DurationNS: res.Took.Nanoseconds(),
		RAMBytes: res.RAMBytes, SavedRAMBytes: res.SavedBytes, PausedNS: res.Paused.Nanoseconds()}, nil
}

func (c machineControl) Stats() (control.Stats, error) {
	st := c.m.Stats()
	return control.Stats{
		RanNS: st.Ran.Nanoseconds(), Paused: c.m.Paused(), TotalExits: st.TotalExits,
		ExitsByReason: st.ExitsByReason, AccessesByDevice: st.AccessesByDevice,
		RSSBytes: st.RSS, GuestResident: st.GuestResident, GuestRAM: st.GuestRAM,
	}, nil
}

// startControl serves the control socket for m until stop is called,
// which closes it and removes its file.
func startControl(l *control.Listener, m *vmm.Machine) (stop func()) {
	if l == nil {
		return func() {}
	}
	go l.Serve(machineControl{m})
	return func() {
		_ = l.Close()
		select {
		case <-waitC(l):
		case <-time.After(time.Second): // a handler stuck in a snapshot must not hold the exit
		}
	}
}

func waitC(l *control.Listener) <-chan struct{} {
	c := make(chan struct{})
	go func() { l.Wait(); close(c) }()
	return c
}
