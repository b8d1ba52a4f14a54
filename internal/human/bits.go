package human

import (
	"strconv"
	"strings"
)

// Bits names the set bits of a register value, lowest first, separated by
// spaces: names[i] is bit i's name, as a hardware manual prints it. A set
// bit without a name shows as bitN, so that a reserved bit a guest set is
// seen rather than hidden; no bit set shows as "none".
//
//	Bits(0x61, []string{0: "DR", 5: "THRE", 6: "TEMT"}) == "DR THRE TEMT"
//
// The device descriptions of the serial port and the keyboard controller
// and the register dumps of the stepper all name bits this way. A caller
// masks out bits it prints otherwise (a multi-bit field such as RFLAGS's
// IOPL, a bit that always reads 1).
func Bits(v uint64, names []string) string {
	var parts []string
	for i := range 64 {
		if v&(1<<i) == 0 {
			continue
		}
		if i < len(names) && names[i] != "" {
			parts = append(parts, names[i])
		} else {
			parts = append(parts, "bit"+strconv.Itoa(i))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
