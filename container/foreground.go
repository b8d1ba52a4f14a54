package container

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Foreground runs cfg as a shell runs its foreground job: SIGINT, SIGTERM
// and SIGHUP sent to this process go on to the workload, through the
// container's init (Signal), rather than end the runtime, which then still
// waits for the workload and cleans up after it. started, when not nil,
// gets the runtime's notes (Notes) as soon as the container has started:
// a missing cgroup or a sweep of leftovers is news to whoever started it,
// and belongs before the workload's own output.
func Foreground(cfg Config, started func(notes []string)) (Result, error) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	c, err := Start(cfg)
	if err != nil {
		return Result{}, err
	}
	if started != nil {
		started(c.Notes())
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = c.Signal(s)
			case <-done:
				return
			}
		}
	}()
	return c.Wait()
}

// ForegroundRunc is Foreground with runc (RunRunc): SIGINT, SIGTERM and
// SIGHUP kill the container (runc kill), and started gets the runtime's
// notes when it has ended well (runc says nothing until then).
func ForegroundRunc(cfg Config, started func(notes []string)) (Result, error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	res, err := RunRunc(ctx, cfg)
	if err == nil && started != nil {
		started(res.Notes)
	}
	return res, err
}
