// Package control is kvmlab's control plane: a Unix socket on which a
// running VMM takes commands from outside (pause, resume, snapshot, stats,
// quit), and the client that sends them.
//
// A VMM has two sides. The data plane is the guest's: vCPUs in KVM_RUN,
// exits, devices, interrupts. The control plane is the operator's: the
// channel through which the machine is managed while it runs, by a person or
// an orchestrator. Firecracker's is an HTTP API on a Unix socket (PUT
// /snapshot/create, PATCH /vm {"state": "Paused"}), QEMU's is QMP, the QEMU
// Machine Protocol: JSON objects on a socket, with a greeting, capability
// negotiation and asynchronous events. kvmlab's is the smallest useful
// version of both: one JSON object per line each way, a request and then its
// reply, so that a person can type at it with
//
//	socat - UNIX-CONNECT:/tmp/vm.sock
//	{"cmd":"pause"}
//	{"ok":true,"paused":true}
//
// and `kvmlab control PATH COMMAND` is a thin client of the same lines.
//
// The socket is an attack surface like the guest: only its owner may
// connect (mode 0600, set before anybody can reach it), a request is
// bounded (MaxRequest), parsed strictly (unknown commands and fields are
// errors), and one client that connects and says nothing cannot hold the
// socket for longer than IdleTimeout. Clients are served one at a time:
// a pause and a snapshot must not interleave.
//
// One command carries more than text: a snapshot is written into a file
// the client creates and passes with the request line as a descriptor
// (SCM_RIGHTS, unix(7)), because the running VMM is confined by seccomp
// and opens no files, and because FILE should mean what it means in the
// client's directory, with the client's permissions. socat cannot pass a
// descriptor, so by hand every command but snapshot works.
//
// The server sees the machine through Handler; ServeMachine puts a running
// vmm.Machine behind it, and tests a fake.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"kvmlab/internal/cli"
)

// MaxRequest is the longest request line accepted, newline excluded. A
// request is a few dozen bytes; the limit bounds what a client can make
// the VMM buffer.
const MaxRequest = 64 << 10

// maxPath bounds a snapshot file name (PATH_MAX).
const maxPath = 4096

// Commands, as they appear in "cmd".
const (
	CmdPause    = "pause"
	CmdResume   = "resume"
	CmdSnapshot = "snapshot"
	CmdStats    = "stats"
	CmdQuit     = "quit"
)

// Commands lists every command with a one-line summary, for usage texts.
var Commands = []struct{ Name, Args, Summary string }{
	{CmdPause, "", "stop every vCPU outside the guest (the console goes quiet)"},
	{CmdResume, "", "let the vCPUs run again"},
	{CmdSnapshot, "FILE [--paused]", "save the whole machine to FILE, then resume (or stay paused)"},
	{CmdStats, "", "exit counts, device accesses and memory so far (what run --stats prints)"},
	{CmdQuit, "", "stop the machine and end kvmlab run, like Ctrl-A x"},
}

// Names lists the commands' names, in the order of Commands.
func Names() []string {
	var n []string
	for _, c := range Commands {
		n = append(n, c.Name)
	}
	return n
}

// NewRequest makes the request a user gave as words (`kvmlab control PATH
// CMD ARGS...`, with --paused), refusing in one line (a cli.UsageError) a
// command that does not exist or arguments it does not take. path, the
// socket, is for the message.
func NewRequest(path, cmd string, args []string, paused bool) (Request, error) {
	req := Request{Cmd: cmd}
	switch cmd {
	case CmdSnapshot:
		if len(args) != 1 {
			return req, cli.Usagef("control: snapshot takes one FILE: kvmlab control %s snapshot FILE [--paused]", path)
		}
		req.Path, req.Paused = args[0], paused
	case CmdPause, CmdResume, CmdStats, CmdQuit:
		if len(args) > 0 || paused {
			return req, cli.Usagef("control: %s takes no arguments", cmd)
		}
	default:
		return req, cli.Usagef("control: unknown command %q: one of %s", cmd, strings.Join(Names(), ", "))
	}
	return req, nil
}

// Request is one line from a client.
type Request struct {
	Cmd string `json:"cmd"`
	// Path and Paused belong to snapshot: the file to write, and
	// whether the machine stays paused after it.
	Path   string `json:"path,omitempty"`
	Paused bool   `json:"paused,omitempty"`
}

// Reply is one line back. OK says whether the command worked; Error is
// why not. The other fields are set by the commands they belong to.
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Paused is the machine's state after pause, resume and snapshot.
	Paused   *bool           `json:"paused,omitempty"`
	Snapshot *SnapshotResult `json:"snapshot,omitempty"`
	Stats    *Stats          `json:"stats,omitempty"`
}

// SnapshotResult is what a snapshot wrote.
type SnapshotResult struct {
	Path       string `json:"path"`
	Bytes      int64  `json:"bytes"`
	DurationNS int64  `json:"duration_ns"`
	// RAMBytes is the guest's RAM; SavedRAMBytes the part of it in the
	// file (the pages the guest touched and that are not all zeros).
	RAMBytes      uint64 `json:"ram_bytes,omitempty"`
	SavedRAMBytes uint64 `json:"saved_ram_bytes,omitempty"`
	// PausedNS is how long the guest was stopped for the snapshot.
	PausedNS int64 `json:"paused_ns,omitempty"`
}

// Stats is the run so far: what kvmlab run --stats prints at the end.
type Stats struct {
	RanNS            int64             `json:"ran_ns"`
	Paused           bool              `json:"paused"`
	TotalExits       uint64            `json:"total_exits"`
	ExitsByReason    map[string]uint64 `json:"exits_by_reason"`
	AccessesByDevice map[string]uint64 `json:"accesses_by_device"`
	RSSBytes         uint64            `json:"rss_bytes"`
	GuestResident    uint64            `json:"guest_resident_bytes"`
	GuestRAM         uint64            `json:"guest_ram_bytes"`
}

// ErrRequest is wrapped by every refusal of a malformed request.
var ErrRequest = errors.New("bad request")

// ParseRequest decodes and checks one request line (without its newline).
// Everything it returns is safe to act on: a known command, with the
// arguments that command takes and no others.
func ParseRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxRequest {
		return r, fmt.Errorf("%w: longer than %d bytes", ErrRequest, MaxRequest)
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return r, fmt.Errorf("%w: empty line: send one JSON object per line, e.g. {\"cmd\":\"stats\"}", ErrRequest)
	}
	if !utf8.Valid(line) {
		return r, fmt.Errorf("%w: not UTF-8 text: send one JSON object per line, e.g. {\"cmd\":\"stats\"}", ErrRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields() // a misspelt "pauesd" must not silently resume
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrRequest, cleanJSONError(err))
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: more than one JSON value on the line: one request per line", ErrRequest)
	}
	switch r.Cmd {
	case CmdSnapshot:
		if r.Path == "" {
			return Request{}, fmt.Errorf("%w: snapshot needs \"path\": the file to write", ErrRequest)
		}
		if len(r.Path) > maxPath || strings.IndexByte(r.Path, 0) >= 0 {
			return Request{}, fmt.Errorf("%w: snapshot \"path\" is not a usable file name", ErrRequest)
		}
	case CmdPause, CmdResume, CmdStats, CmdQuit:
		if r.Path != "" || r.Paused {
			return Request{}, fmt.Errorf("%w: %s takes no arguments", ErrRequest, r.Cmd)
		}
	case "":
		return Request{}, fmt.Errorf("%w: no \"cmd\": one of %s", ErrRequest, commandNames())
	default:
		return Request{}, fmt.Errorf("%w: unknown command %.40q: one of %s", ErrRequest, r.Cmd, commandNames())
	}
	return r, nil
}

// cleanJSONError keeps encoding/json's message short: a hostile line can
// be 64 KiB, and its error must not quote it back.
func cleanJSONError(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return "not a JSON request object (" + s + ")"
}

func commandNames() string {
	var names []string
	for _, c := range Commands {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// encodeLine is v as one line of JSON with its newline.
func encodeLine(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Replies are built from plain structs: this cannot happen,
		// but a reply must still be a line.
		b, _ = json.Marshal(Reply{Error: "internal: " + err.Error()})
	}
	return append(b, '\n')
}

// boolp returns a pointer to b, for Reply.Paused.
func boolp(b bool) *bool { return &b }

// durationNS is d in nanoseconds, for JSON.
func durationNS(d time.Duration) int64 { return d.Nanoseconds() }
