package gdbstub

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PacketSize is the largest packet data the stub accepts, and tells GDB in
// qSupported (PacketSize=, in hex): GDB then never sends more.
const PacketSize = 0x4000

// maxMemRead bounds one m reply: two hex digits a byte must fit in a
// packet of PacketSize. GDB asks again for the rest of a short read.
const maxMemRead = PacketSize/2 - 16

// eventKind is what the client sent.
type eventKind int

const (
	evPacket    eventKind = iota // $data#xx with a good checksum
	evAck                        // +
	evNak                        // -: send the last packet again
	evInterrupt                  // 0x03, Ctrl-C, outside a packet
	evBad                        // a packet with a bad checksum or too long: answered with -
)

// event is one thing read from the client.
type event struct {
	kind eventKind
	data string // evPacket: the unescaped data
	why  string // evBad: what was wrong
}

// ErrTooLong is the error of a packet over PacketSize.
var ErrTooLong = errors.New("packet longer than PacketSize")

// readEvent reads the next event from r (E.1: packets, acks, and the
// interrupt byte). Bytes between packets other than these are noise and
// skipped (GDB sends none; a telnet would).
func readEvent(r *bufio.Reader) (event, error) {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return event{}, err
		}
		switch b {
		case '+':
			return event{kind: evAck}, nil
		case '-':
			return event{kind: evNak}, nil
		case 0x03:
			return event{kind: evInterrupt}, nil
		case '$':
			return readPacket(r)
		}
	}
}

// readPacket reads the rest of a packet after its $: the data up to #, and
// two checksum digits. A $ inside starts the packet over (a resent packet
// after a lost byte).
func readPacket(r *bufio.Reader) (event, error) {
	var raw []byte
	tooLong := false
	for {
		b, err := r.ReadByte()
		if err != nil {
			return event{}, err
		}
		if b == '#' {
			break
		}
		if b == '$' {
			raw, tooLong = raw[:0], false
			continue
		}
		if len(raw) >= PacketSize {
			tooLong = true // keep reading to the end, keep nothing
			continue
		}
		raw = append(raw, b)
	}
	var cs [2]byte
	if _, err := io.ReadFull(r, cs[:]); err != nil {
		return event{}, err
	}
	if tooLong {
		return event{kind: evBad, why: ErrTooLong.Error()}, nil
	}
	want, err := strconv.ParseUint(string(cs[:]), 16, 8)
	if err != nil {
		return event{kind: evBad, why: fmt.Sprintf("checksum %q is not two hex digits", cs[:])}, nil
	}
	if got := checksum(raw); uint64(got) != want {
		return event{kind: evBad, why: fmt.Sprintf("checksum %02x, packet sums to %02x", want, got)}, nil
	}
	data, err := unescape(raw)
	if err != nil {
		return event{kind: evBad, why: err.Error()}, nil
	}
	return event{kind: evPacket, data: string(data)}, nil
}

// checksum is the sum of the bytes modulo 256 (E.1), over the data as
// sent, escapes included.
func checksum(p []byte) uint8 {
	var s uint8
	for _, b := range p {
		s += b
	}
	return s
}

// unescape undoes the binary escape: } then the byte XOR 0x20.
func unescape(p []byte) ([]byte, error) {
	if !strings.ContainsRune(string(p), '}') {
		return p, nil
	}
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '}' {
			out = append(out, p[i])
			continue
		}
		i++
		if i == len(p) {
			return nil, errors.New("packet ends in the escape byte }")
		}
		out = append(out, p[i]^0x20)
	}
	return out, nil
}

// frame builds the packet for data: escaped, with its checksum.
func frame(data string) []byte {
	out := make([]byte, 0, len(data)+4)
	out = append(out, '$')
	start := len(out)
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '$', '#', '}', '*':
			out = append(out, '}', c^0x20)
		default:
			out = append(out, c)
		}
	}
	return fmt.Appendf(out, "#%02x", checksum(out[start:]))
}

// parseHex parses a hex number of at most 64 bits, as addresses, lengths
// and register numbers come in packets.
func parseHex(s string) (uint64, error) {
	if s == "" || len(s) > 16 {
		return 0, fmt.Errorf("%q is not a hex number of 64 bits", s)
	}
	return strconv.ParseUint(s, 16, 64)
}

// parseAddrLen parses "addr,len", the argument of m, M and Z.
func parseAddrLen(s string) (addr, n uint64, err error) {
	a, l, ok := strings.Cut(s, ",")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not addr,length", s)
	}
	if addr, err = parseHex(a); err != nil {
		return 0, 0, err
	}
	if n, err = parseHex(l); err != nil {
		return 0, 0, err
	}
	return addr, n, nil
}

// parseThread parses a thread id as H and T send it: hex, or -1 for all,
// or 0 for any. It returns the vCPU index, -1 for all and any.
func parseThread(s string, cpus int) (int, error) {
	if s == "-1" || s == "0" {
		return -1, nil
	}
	// Multiprocess syntax pPID.TID: kvmlab has one process.
	if strings.HasPrefix(s, "p") {
		_, t, ok := strings.Cut(s[1:], ".")
		if !ok {
			return -1, nil
		}
		return parseThread(t, cpus)
	}
	n, err := parseHex(s)
	if err != nil {
		return 0, err
	}
	if n < 1 || n > uint64(cpus) {
		return 0, fmt.Errorf("no thread %s: threads are 1 to %d, one per vCPU", s, cpus)
	}
	return int(n - 1), nil
}

// hexString encodes text for O packets and qRcmd replies.
func hexString(s string) string { return hex.EncodeToString([]byte(s)) }

// decodeHex decodes hex data from a client (M, P, G, qRcmd).
func decodeHex(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad hex data: %w", err)
	}
	return b, nil
}
