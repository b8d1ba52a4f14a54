package vmm

import (
	"io"
	"time"
)

// EscapeByte is Ctrl-A, the same console escape QEMU uses: Ctrl-A x quits,
// Ctrl-A Ctrl-A sends a literal Ctrl-A to the guest.
const EscapeByte = 0x01

// receiver is what the input pump feeds: the UART's receive FIFO.
type receiver interface {
	Input(p []byte) int
	Room() <-chan struct{}
}

// escapeFilter implements the Ctrl-A prefix. It returns the bytes to send to
// the guest and whether the user asked to quit.
type escapeFilter struct{ pending bool }

func (f *escapeFilter) filter(in []byte) (out []byte, quit bool) {
	out = in[:0:0]
	for _, b := range in {
		if f.pending {
			f.pending = false
			switch b {
			case 'x', 'X':
				return out, true
			case EscapeByte:
				out = append(out, EscapeByte)
			default:
				// Unknown escapes are swallowed, as QEMU does.
			}
			continue
		}
		if b == EscapeByte {
			f.pending = true
			continue
		}
		out = append(out, b)
	}
	return out, false
}

// pumpInput copies host input to the guest's UART until r ends or stop is
// closed. It waits for room in the 16-byte receive FIFO rather than dropping
// bytes, so pasted text and piped scripts arrive whole. quit is called on
// Ctrl-A x when escapes are enabled.
func pumpInput(r io.Reader, rx receiver, escapes bool, quit func(), stop <-chan struct{}) {
	var f escapeFilter
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			data := buf[:n]
			if escapes {
				var q bool
				data, q = f.filter(data)
				if q {
					quit()
					return
				}
			}
			for len(data) > 0 {
				k := rx.Input(data)
				data = data[k:]
				if len(data) == 0 {
					break
				}
				select {
				case <-rx.Room():
				case <-time.After(50 * time.Millisecond):
					// Re-check even without a signal: the guest may
					// have reset its FIFO.
				case <-stop:
					return
				}
			}
		}
		if err != nil {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}
