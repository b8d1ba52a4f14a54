package virtio

// API skeleton: the bodies are being written (helper task). Signatures and
// semantics below are the contract the devices and the transport code use.

import (
	"io"

	"kvmlab/vmm/memory"
)

// Queue is one split virtqueue (§2.7) seen from the device side. The
// transport sets Size, the three ring addresses and Ready from the common
// configuration; the device pops chains and pushes used entries.
//
// A Queue is not safe for concurrent use: a device serves each queue from
// one goroutine at a time.
type Queue struct {
	// Size is the queue size the driver chose (a power of two, at most
	// MaxSize).
	Size uint16
	// DescAddr, AvailAddr and UsedAddr are the guest-physical addresses of
	// the descriptor table, the driver (available) ring and the device
	// (used) ring.
	DescAddr, AvailAddr, UsedAddr memory.GPA
	// Ready is queue_enable.
	Ready bool
	// MSIXVector is the MSI-X table entry for this queue's interrupts
	// (0xffff: none).
	MSIXVector uint16
}

// Buffer is one guest buffer of a chain.
type Buffer struct {
	Addr memory.GPA
	Len  uint32
}

// Chain is one descriptor chain popped from the available ring.
type Chain struct {
	Head     uint16   // descriptor index to push back on the used ring
	Readable []Buffer // driver → device buffers, in order
	Writable []Buffer // device → driver buffers, in order
}

// NewQueue returns a queue whose size may be at most maxSize.
func NewQueue(maxSize uint16) *Queue { panic("unimplemented") }

// MaxSize returns the largest size the device supports.
func (q *Queue) MaxSize() uint16 { panic("unimplemented") }

// Reset returns the queue to its state after NewQueue.
func (q *Queue) Reset() { panic("unimplemented") }

// SetEventIdx turns VIRTIO_F_EVENT_IDX semantics on or off.
func (q *Queue) SetEventIdx(on bool) { panic("unimplemented") }

// Validate checks size and ring addresses against guest memory.
func (q *Queue) Validate(mem *memory.Memory) error { panic("unimplemented") }

// Pop returns the next available chain, or nil with no error when the
// driver has posted nothing new.
func (q *Queue) Pop(mem *memory.Memory) (*Chain, error) { panic("unimplemented") }

// Push puts a chain's head on the used ring with the bytes written.
func (q *Queue) Push(mem *memory.Memory, head uint16, written uint32) error {
	panic("unimplemented")
}

// NeedsInterrupt reports whether the driver wants an interrupt for the used
// entries pushed since the last call.
func (q *Queue) NeedsInterrupt(mem *memory.Memory) (bool, error) { panic("unimplemented") }

// Reader returns a reader over the chain's readable buffers.
func (c *Chain) Reader(mem *memory.Memory) io.Reader { panic("unimplemented") }

// Writer returns a writer over the chain's writable buffers.
func (c *Chain) Writer(mem *memory.Memory) *ChainWriter { panic("unimplemented") }

// ChainWriter writes into a chain's writable buffers and counts the bytes.
type ChainWriter struct{}

// Write implements io.Writer.
func (w *ChainWriter) Write(p []byte) (int, error) { panic("unimplemented") }

// Written returns the number of bytes written so far.
func (w *ChainWriter) Written() uint32 { panic("unimplemented") }
