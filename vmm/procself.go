package vmm

import (
	"errors"
	"io"
	"os"
	"sync"
)

// Reading /proc/self under a seccomp filter.
//
// kvmlab run reads its own /proc/self/statm (RSSBytes) and
// /proc/self/status (the Go runtime summary) after the guest stopped, when
// its seccomp filter (package vmm/seccomp) refuses open. These procfs files
// are generated afresh by every read that starts at offset 0, so a
// descriptor opened before the filter serves every later read: pread from
// offset 0 gives the figures of that moment.

// SelfFile is one /proc/self file, opened once and re-read with pread.
type SelfFile struct {
	name string
	mu   sync.Mutex
	f    *os.File
}

// The /proc/self files a running VMM reads.
var (
	SelfStatm  = &SelfFile{name: "/proc/self/statm"}
	SelfStatus = &SelfFile{name: "/proc/self/status"}
)

// Open opens the file now, so that later reads need no open(2).
func (s *SelfFile) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open()
}

func (s *SelfFile) open() error {
	if s.f != nil {
		return nil
	}
	f, err := os.Open(s.name)
	if err != nil {
		return err
	}
	s.f = f
	return nil
}

// ReadAll returns the file's contents now, opening it first if Open was
// not called.
func (s *SelfFile) ReadAll() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.open(); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= 1<<20 {
				return nil, errors.New(s.name + ": over 1 MiB")
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := s.f.ReadAt(buf[len(buf):cap(buf)], int64(len(buf)))
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
