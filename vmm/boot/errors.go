package boot

import (
	"errors"
	"fmt"
)

// Error kinds. Every error from Parse and Load that is about the input (as
// opposed to a guest-memory access) is an *Error whose Kind is one of these,
// so callers can test with errors.Is and still print one clear line.
var (
	ErrEmpty         = errors.New("empty kernel file")
	ErrCompressed    = errors.New("compressed file, not a kernel")
	ErrText          = errors.New("text file, not a kernel")
	ErrNotKernel     = errors.New("not a kernel")
	ErrWrongArch     = errors.New("kernel for another architecture")
	ErrBadELF        = errors.New("unusable ELF kernel")
	ErrTooShort      = errors.New("file shorter than the setup header")
	ErrBootFlag      = errors.New("no 0xAA55 boot flag at offset 0x1fe")
	ErrNoHdrS        = errors.New("no \"HdrS\" magic at offset 0x202")
	ErrProtocol      = errors.New("boot protocol too old")
	ErrBadHeader     = errors.New("malformed setup header")
	ErrNotBzImage    = errors.New("not a bzImage (loadflags LOADED_HIGH clear)")
	ErrNo64BitEntry  = errors.New("no 64-bit entry point (xloadflags XLF_KERNEL_64 clear)")
	ErrTruncated     = errors.New("kernel file truncated")
	ErrAlignment     = errors.New("kernel_alignment is not a power of two")
	ErrTooBig        = errors.New("kernel does not fit in guest RAM")
	ErrCmdline       = errors.New("bad kernel command line")
	ErrInitrdTooBig  = errors.New("initrd does not fit in guest RAM")
	ErrLayout        = errors.New("guest RAM does not fit the boot layout")
	ErrInvalidImage  = errors.New("invalid Image")
	ErrTooManyRanges = errors.New("too many e820 entries for the zero page")
)

// Error is a boot error: Kind says which (one of the Err* values above),
// Msg says exactly what, in one line.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return "boot: " + e.Msg }

// Unwrap makes errors.Is(err, ErrProtocol) and friends work.
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
