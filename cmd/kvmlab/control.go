package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

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
		return usagef("control: name the socket and a command, e.g. kvmlab control /tmp/vm.sock pause (commands: %s)", strings.Join(control.Names(), ", "))
	}
	path := pos[0]
	req, err := control.NewRequest(path, pos[1], pos[2:], *paused)
	if err != nil {
		return asUsage(err)
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
		fmt.Print(reply.Human(req.Cmd))
	default:
		fmt.Fprintf(os.Stderr, "kvmlab: control: %s", reply.Human(req.Cmd))
	}
	if !reply.OK {
		return exitError{1}
	}
	return nil
}
