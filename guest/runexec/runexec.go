// Package runexec is the contract between `kvmlab run --exec CMD` on the host
// and the guest's first program (guest/uinit): how CMD reaches the guest, where
// its output and its exit status come back, and what kvmlab's own exit
// statuses mean.
//
// # How CMD travels
//
// The only thing a Linux guest can read from its VMM before any driver runs
// is the kernel command line (/proc/cmdline). It is short (the bzImage setup
// header's cmdline_size, 2047 bytes on current x86 kernels: Documentation/
// arch/x86/boot.rst) and the kernel splits it at spaces and treats double
// quotes specially (lib/cmdline.c, next_arg), so a shell command cannot go
// there as it is. kvmlab encodes it with base64 in its URL-safe alphabet
// without padding (RFC 4648 §5): only letters, digits, '-' and '_', none of
// which the kernel's parser treats specially, in one parameter,
// kvmlab.exec=ENCODED. The dot in the name makes the kernel take it for a
// module parameter of a module it does not have, so it is neither handed to
// init as an environment variable nor as an argument; uinit reads it from
// /proc/cmdline. CMD is at most MaxCommand bytes: with the encoding's 4/3
// growth that leaves room for the rest of the command line.
//
// # How the results come back
//
// Three one-way channels, each its own device, so that nothing CMD prints
// can be mistaken for anything else:
//
//   - CMD's standard output on the second UART (COM2, the guest's StdoutTTY),
//     copied to kvmlab's standard output;
//   - CMD's standard error on the fourth UART (COM4, StderrTTY), copied to
//     kvmlab's standard error;
//   - its exit status as one byte written to the exit-status port
//     (devices/exitport, StatusPort), which stops the machine.
//
// The kernel's own console stays on COM1, which kvmlab keeps out of both
// streams (it shows its last lines when the run fails). A status line on an
// output stream, with a marker the VMM looks for, would have been simpler
// but could be faked by accident: `cat` of a log that holds the marker would
// end the run with a status nobody chose. A write to a port that nothing
// else uses cannot happen by accident.
//
// COM4 rather than COM3: COM2 and COM4 share IRQ 3 (the PC/AT wiring Linux
// assumes, arch/x86/include/asm/serial.h), which Linux's 8250 driver chains
// for ports on one line; COM3 would share IRQ 4 with the console's COM1,
// and the console then would behave differently in exec runs.
package runexec

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"kvmlab/devices/exitport"
)

// Param is the kernel command line parameter that carries CMD.
const Param = "kvmlab.exec"

// MaxCommand is the longest CMD in bytes. Encoded it takes 1366 bytes of
// the command line, which leaves about 670 of the usual 2047 for the rest.
const MaxCommand = 1024

// Where the guest finds its channels (see the package comment).
const (
	StdoutTTY  = "/dev/ttyS1"     // COM2, 0x2f8, IRQ 3
	StderrTTY  = "/dev/ttyS3"     // COM4, 0x2e8, IRQ 3
	StatusPort = exitport.Base    // one byte written here is CMD's exit status
	PortDevice = "/dev/port"      // the kernel turns a write at offset N into OUT to port N
	Shell      = "/bin/defaultsh" // u-root's gosh; it runs CMD with -c
)

// kvmlab's exit statuses with --exec. CMD's own status (0-255) comes back
// unchanged, so these can collide with a status CMD chose; the line kvmlab
// prints on standard error says which it was.
const (
	// StatusUsage: bad input, refused before the machine was built.
	StatusUsage = 2
	// StatusPanic: the guest kernel crashed before CMD's status came
	// back: a panic (seen on the console, or the reset that panic=-1
	// turns it into) or a triple fault. 123 is free in the shell's
	// conventions (126 not executable, 127 not found, 128+N signal N)
	// and just below timeout(1)'s 124-127.
	StatusPanic = 123
	// StatusTimeout: --timeout expired; as timeout(1).
	StatusTimeout = 124
	// StatusFailed: kvmlab or the machine failed, or the guest stopped
	// without a status (powered off, or an initramfs without kvmlab's
	// uinit); as timeout(1)'s "the timeout command itself failed".
	StatusFailed = 125
)

// Errors Encode and Decode wrap.
var (
	ErrEmpty   = errors.New("empty command")
	ErrTooLong = errors.New("command too long")
	ErrNUL     = errors.New("command contains a NUL byte")
	ErrBad     = errors.New("not valid base64url")
)

// Encode returns the command line parameter that carries cmd
// ("kvmlab.exec=..."). cmd must be non-blank, at most MaxCommand bytes and
// free of NUL bytes (which no argument of exec(2) can hold).
func Encode(cmd string) (string, error) {
	if err := check(cmd); err != nil {
		return "", err
	}
	return Param + "=" + base64.RawURLEncoding.EncodeToString([]byte(cmd)), nil
}

func check(cmd string) error {
	switch {
	case strings.TrimSpace(cmd) == "":
		return ErrEmpty
	case len(cmd) > MaxCommand:
		return fmt.Errorf("%w: %d bytes, at most %d fit on the kernel command line", ErrTooLong, len(cmd), MaxCommand)
	case strings.IndexByte(cmd, 0) >= 0:
		return ErrNUL
	}
	return nil
}

// Decode finds the last kvmlab.exec parameter in a kernel command line (as
// read from /proc/cmdline) and returns the command it carries. found is
// false when there is none. The input is whatever the command line holds,
// so Decode bounds what it decodes and never panics (FuzzDecode).
func Decode(cmdline string) (cmd string, found bool, err error) {
	var enc string
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, Param+"="); ok {
			enc, found = v, true
		}
	}
	if !found {
		return "", false, nil
	}
	if base64.RawURLEncoding.DecodedLen(len(enc)) > MaxCommand {
		return "", true, fmt.Errorf("%s: %w: %d encoded bytes", Param, ErrTooLong, len(enc))
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", true, fmt.Errorf("%s: %w: %w", Param, ErrBad, err)
	}
	if err := check(string(b)); err != nil {
		return "", true, fmt.Errorf("%s: %w", Param, err)
	}
	return string(b), true, nil
}
