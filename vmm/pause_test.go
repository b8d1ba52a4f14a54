package vmm

import (
	"errors"
	"sync"
	"testing"
	"time"

	"kvmlab/guest/tiny"
	"kvmlab/vmm/kvm"
)

// KVM tests of Pause and Resume on tiny guests (they run on kvm_pvm).

// counterLoop counts in RAX for ever without a single exit to user space:
// inc rax; pause; jmp back. A paused machine's RAX stands still; a running
// one's climbs.
var counterLoop = []byte{
	0x48, 0xff, 0xc0, // 1: inc rax
	0xf3, 0x90, // pause
	0xeb, 0xf9, // jmp 1b
}

// hangGuard is how long a test waits for something that must happen
// before calling it a hang (a hang detector, not a speed assertion).
const hangGuard = time.Minute

// startMachine boots code on cpus vCPUs and returns the machine and a
// channel with Run's outcome.
func startMachine(t *testing.T, code []byte, cpus int) (*Machine, <-chan Outcome) {
	t.Helper()
	needKVM(t)
	m, err := New(Config{Kernel: tiny.ELF(code), MemBytes: 64 << 20, CPUs: cpus})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan Outcome, 1)
	ended := make(chan struct{}) // closed when Run returned, read or not
	go func() {
		done <- m.Run()
		close(ended)
	}()
	// Wait until the vCPUs run: a pause answered by every vCPU also
	// orders Run's start-up writes before the test's reads (the race
	// detector would otherwise see Snapshot race with Run's start).
	if err := m.Pause(); err != nil {
		t.Fatalf("first Pause: %v", err)
	}
	m.Resume()
	t.Cleanup(func() {
		m.Quit()
		select {
		case <-ended:
		case <-time.After(hangGuard):
			t.Errorf("the machine did not stop after Quit")
			return
		}
		m.Close()
	})
	return m, done
}

// rax reads vCPU 0's RAX through the inspection snapshot, which a parked
// vCPU answers from its parking place.
func rax(t *testing.T, m *Machine) uint64 {
	t.Helper()
	s := m.Snapshot()
	if len(s.VCPUs) == 0 || !s.VCPUs[0].Answered {
		t.Fatalf("vCPU 0 did not answer the snapshot: %+v", s)
	}
	if err := s.VCPUs[0].State.Err; err != nil {
		t.Fatalf("reading vCPU 0: %v", err)
	}
	return s.VCPUs[0].State.Regs.RAX
}

// waitAdvance reads RAX until it moves past from (bounded by hangGuard).
func waitAdvance(t *testing.T, m *Machine, from uint64) uint64 {
	t.Helper()
	end := time.Now().Add(hangGuard)
	for time.Now().Before(end) {
		if r := rax(t, m); r != from {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("RAX stayed at %d: the guest does not run", from)
	return 0
}

func TestPauseHoldsAndResumeReleases(t *testing.T) {
	for _, cpus := range []int{1, 2} {
		t.Run(map[int]string{1: "1 vCPU", 2: "2 vCPUs"}[cpus], func(t *testing.T) {
			m, _ := startMachine(t, counterLoop, cpus)
			waitAdvance(t, m, 0) // running
			if m.Paused() {
				t.Fatal("Paused() before Pause")
			}
			if err := m.Pause(); err != nil {
				t.Fatalf("Pause: %v", err)
			}
			if !m.Paused() {
				t.Fatal("Paused() false after Pause")
			}
			if err := m.Pause(); err != nil { // idempotent
				t.Fatalf("second Pause: %v", err)
			}
			first := m.Snapshot()
			time.Sleep(50 * time.Millisecond)
			second := m.Snapshot()
			for i := range first.VCPUs {
				a, b := first.VCPUs[i], second.VCPUs[i]
				if !a.Answered || !b.Answered {
					t.Fatalf("vCPU %d did not answer while parked", i)
				}
				if a.State.Regs != b.State.Regs {
					t.Errorf("vCPU %d moved while paused: RIP %#x RAX %d, then RIP %#x RAX %d", i,
						a.State.Regs.RIP, a.State.Regs.RAX, b.State.Regs.RIP, b.State.Regs.RAX)
				}
			}
			r0 := first.VCPUs[0].State.Regs
			t.Logf("paused: RIP %#x RAX %d, twice", r0.RIP, r0.RAX)
			if r0.RIP < tiny.Base || r0.RIP >= tiny.Base+uint64(len(counterLoop)) {
				t.Errorf("paused RIP %#x is outside the guest's loop at %#x", r0.RIP, tiny.Base)
			}
			// Work handed to the parked vCPUs runs on them: each reads
			// its own registers.
			var ids []int
			if err := m.OnParked(func(id int, v *kvm.VCPU) error {
				ids = append(ids, id)
				_, err := v.GetRegs()
				return err
			}); err != nil {
				t.Fatalf("OnParked: %v", err)
			}
			if len(ids) != cpus {
				t.Errorf("OnParked ran on vCPUs %v, want all %d", ids, cpus)
			}
			m.Resume()
			if m.Paused() {
				t.Fatal("Paused() after Resume")
			}
			m.Resume() // idempotent
			after := waitAdvance(t, m, r0.RAX)
			t.Logf("resumed: RAX %d -> %d", r0.RAX, after)
			if err := m.OnParked(func(int, *kvm.VCPU) error { return nil }); !errors.Is(err, ErrNotPaused) {
				t.Errorf("OnParked on a running machine: %v, want ErrNotPaused", err)
			}
		})
	}
}

// A stop while paused (Ctrl-A x, the control socket's quit) releases the
// parked vCPUs and Run returns; a later Pause says the machine stopped.
func TestStopWhilePaused(t *testing.T) {
	m, done := startMachine(t, counterLoop, 2)
	waitAdvance(t, m, 0)
	if err := m.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	m.Quit()
	select {
	case out := <-done:
		if out.Reason != StopQuit {
			t.Errorf("outcome %v, want quit", out.Reason)
		}
	case <-time.After(hangGuard):
		t.Fatal("Run did not return after a stop while paused: parked vCPUs were not released")
	}
	if err := m.Pause(); !errors.Is(err, ErrStopped) {
		t.Errorf("Pause after the stop: %v, want ErrStopped", err)
	}
}

// A guest that powers off after a pause still powers off: the pause
// loses nothing of its work.
func TestPausedGuestPowersOffAfterResume(t *testing.T) {
	m, done := startMachine(t, tiny.PortLoopCode(200000), 1)
	if err := m.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	select {
	case out := <-done:
		t.Fatalf("the machine ended while paused: %v", out.Reason)
	case <-time.After(100 * time.Millisecond):
	}
	m.Resume()
	select {
	case out := <-done:
		if out.Reason != StopPoweroff {
			t.Errorf("outcome %v (%s), want poweroff", out.Reason, out.Detail)
		}
		t.Logf("powered off after the pause: %s", out.Detail)
	case <-time.After(hangGuard):
		t.Fatal("the guest did not power off after Resume")
	}
}

// Pause, Resume and inspection snapshots from many goroutines at once:
// no deadlock, no race (go test -race), and the machine ends running.
func TestPauseConcurrent(t *testing.T) {
	m, _ := startMachine(t, counterLoop, 2)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				switch (g + i) % 3 {
				case 0:
					if err := m.Pause(); err != nil {
						t.Errorf("Pause: %v", err)
					}
				case 1:
					m.Resume()
				default:
					m.Snapshot()
				}
			}
		}()
	}
	wg.Wait()
	m.Resume()
	waitAdvance(t, m, rax(t, m))
}
