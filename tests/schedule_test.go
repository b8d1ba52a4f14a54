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
		code := shareRuns(context.Background(), 5, second, func(i, worker int) int {
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
		code := shareRuns(context.Background(), 3, nil, func(i, worker int) int {
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
	t.Run("second never opens", func(t *testing.T) {
		// The AMD series still running when the Intel runs are done:
		// no wait for it once the context ends (as at a timeout).
		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		code := shareRuns(ctx, 2, make(chan struct{}), func(i, worker int) int {
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
