package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartOnceStopWaitsNoRestart(t *testing.T) {
	var l lifecycle.Lifecycle
	boom := errors.New("boom")
	var leftover atomic.Bool
	err := l.Start(context.Background(), "thing", func(ctx context.Context) error {
		l.Go(func(ctx context.Context) { <-ctx.Done(); leftover.Store(true) })
		return boom
	})
	if !errors.Is(err, boom) || !leftover.Load() {
		t.Fatalf("failed begin: err %v, its goroutine ended %v (want it ended before Start returned)", err, leftover.Load())
	}
	if l.Running() {
		t.Fatal("running after a failed begin")
	}
	var runs, ended atomic.Int32
	begin := func(context.Context) error {
		l.Go(func(ctx context.Context) { runs.Add(1); <-ctx.Done(); ended.Add(1) })
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := l.Start(ctx, "thing", begin); err != nil {
		t.Fatalf("start after a failed begin: %v", err)
	}
	if err := l.Start(ctx, "thing", begin); err != nil {
		t.Fatalf("second start: %v", err)
	}
	cancel() // the caller's context ends; the goroutine must not
	if !l.Go(func(ctx context.Context) { <-ctx.Done() }) {
		t.Fatal("Go refused while running")
	}
	if ended.Load() != 0 || !l.Running() {
		t.Fatal("the goroutine ended with the context Start was given")
	}
	if !l.Stop() {
		t.Fatal("first stop reported already stopped")
	}
	if runs.Load() != 1 || ended.Load() != 1 {
		t.Fatalf("begin's goroutine ran %d times, ended %d times; want once, ended before Stop returned", runs.Load(), ended.Load())
	}
	if l.Stop() {
		t.Fatal("second stop reported stopping")
	}
	if l.Go(func(context.Context) { t.Error("ran after Stop") }) {
		t.Fatal("Go after Stop")
	}
	if err := l.Start(context.Background(), "thing", begin); !errors.Is(err, lifecycle.ErrStopped) {
		t.Fatalf("start after stop: %v", err)
	}
	var never lifecycle.Lifecycle
	if !never.Stop() || never.Go(func(context.Context) {}) {
		t.Fatal("a never-started lifecycle")
	}
}

// Start, Go and Stop from many goroutines at once: begin runs once, no goroutine is left after
// Stop, and none starts after it.
func TestConcurrentStartStopStress(t *testing.T) {
	for range 200 {
		var l lifecycle.Lifecycle
		var begins, live atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_ = l.Start(context.Background(), "thing", func(context.Context) error {
					begins.Add(1)
					l.Go(func(ctx context.Context) { live.Add(1); <-ctx.Done(); live.Add(-1) })
					return nil
				})
				l.Go(func(ctx context.Context) { live.Add(1); <-ctx.Done(); live.Add(-1) })
			})
		}
		wg.Go(func() { l.Stop() })
		wg.Wait()
		l.Stop()
		if begins.Load() > 1 {
			t.Fatalf("begin ran %d times", begins.Load())
		}
		if n := live.Load(); n != 0 {
			t.Fatalf("%d goroutines alive after Stop", n)
		}
	}
}

func TestSleep(t *testing.T) {
	if !lifecycle.Sleep(context.Background(), time.Millisecond) {
		t.Fatal("a full sleep reported cut short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if lifecycle.Sleep(ctx, time.Hour) || time.Since(start) > time.Second {
		t.Fatal("a sleep whose context ended did not return at once")
	}
}
