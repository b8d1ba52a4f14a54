package tests

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestShareRuns checks how the emulated-host groups are scheduled: one
// worker at first, a second once the AMD series is done (the Intel groups,
// which take longer, then use both cores), every run made exactly once and
// taken in order, never more than two at a time, and the worst status
// returned.
func TestShareRuns(t *testing.T) {
	t.Run("second worker joins", func(t *testing.T) {
		second := make(chan struct{})
		joined := make(chan struct{})
		var mu sync.Mutex
		var order []int
		byWorker := map[int]int{}
		running, most := 0, 0
		code := shareRuns(context.Background(), 5, second, nil, func(i, worker int) int {
			mu.Lock()
			order = append(order, i)
			byWorker[worker]++
			running++
			most = max(most, running)
			mu.Unlock()
			defer func() { mu.Lock(); running--; mu.Unlock() }()
			switch {
			case i == 0:
				// The AMD series ends while the first Intel run
				// is going: the second worker takes the next.
				close(second)
				select {
				case <-joined:
				case <-time.After(time.Minute):
					t.Error("the second worker did not start while the first was busy")
				}
			case worker == 2 && byWorker[2] == 1:
				close(joined)
			}
			if i == 3 {
				return 7
			}
			return 0
		})
		if code != 7 {
			t.Errorf("worst status %d, want 7", code)
		}
		if !slices.Equal(slices.Sorted(slices.Values(order)), []int{0, 1, 2, 3, 4}) {
			t.Errorf("runs made: %v, want each of 0-4 once", order)
		}
		if len(order) != 5 || byWorker[2] == 0 || most != 2 {
			t.Errorf("%d runs, %d by the second worker, at most %d at once; want 5, some, 2", len(order), byWorker[2], most)
		}
	})
	t.Run("one worker", func(t *testing.T) {
		var order []int
		code := shareRuns(context.Background(), 3, nil, nil, func(i, worker int) int {
			if worker != 1 {
				t.Errorf("run %d by worker %d without a second", i, worker)
			}
			order = append(order, i)
			return 0
		})
		if code != 0 || !slices.Equal(order, []int{0, 1, 2}) {
			t.Errorf("status %d, order %v; want 0, [0 1 2]", code, order)
		}
	})
	t.Run("idle series frees its core for the other", func(t *testing.T) {
		// Two series as TestEmulatedHostSuite runs them: the short one
		// runs out first and its idle starts the long one's second
		// worker, which takes runs the long one has not started; the
		// short one's own second never starts (all its runs are taken),
		// and neither waits for the other to return.
		shortIdle, longIdle := make(chan struct{}), make(chan struct{})
		var mu sync.Mutex
		byWorker := map[string]int{}
		release := make(chan struct{})
		shortDone := make(chan int, 1)
		go func() {
			shortDone <- shareRuns(context.Background(), 1, longIdle, shortIdle, func(i, worker int) int {
				mu.Lock()
				byWorker["short"+string(rune('0'+worker))]++
				mu.Unlock()
				return 0
			})
		}()
		code := shareRuns(context.Background(), 4, shortIdle, longIdle, func(i, worker int) int {
			mu.Lock()
			byWorker["long"+string(rune('0'+worker))]++
			mu.Unlock()
			if i == 0 {
				// The first long run lasts until the second
				// worker has taken one of the others.
				select {
				case <-release:
				case <-time.After(time.Minute):
					t.Error("the long series' second worker did not start when the short one went idle")
				}
			}
			if worker == 2 {
				select {
				case <-release:
				default:
					close(release)
				}
			}
			return 0
		})
		select {
		case c := <-shortDone:
			if c != 0 {
				t.Errorf("short series status %d", c)
			}
		case <-time.After(time.Minute):
			t.Fatal("the short series did not return")
		}
		if code != 0 || byWorker["long2"] == 0 || byWorker["short2"] != 0 || byWorker["long1"]+byWorker["long2"] != 4 || byWorker["short1"] != 1 {
			t.Errorf("status %d, runs by worker %v; want the long series' second worker to take some of its 4 runs and the short one's never to start", code, byWorker)
		}
	})
	t.Run("second never opens", func(t *testing.T) {
		// The AMD series still running when the Intel runs are done:
		// no wait for it once the context ends (as at a timeout).
		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		code := shareRuns(ctx, 2, make(chan struct{}), nil, func(i, worker int) int {
			n++
			if i == 1 {
				cancel()
			}
			return 0
		})
		if code != 0 || n != 2 {
			t.Errorf("status %d after %d runs; want 0 after 2", code, n)
		}
	})
}
