package bus

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestLifecycle(t *testing.T) {
	var l lifecycle
	boom := errors.New("boom")
	if err := l.start(context.Background(), "thing", func(context.Context) (func(), error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed begin: %v", err)
	}
	var runs, ended atomic.Int32
	begin := func(lctx context.Context) (func(), error) {
		return func() { runs.Add(1); <-lctx.Done(); ended.Add(1) }, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := l.start(ctx, "thing", begin); err != nil {
		t.Fatalf("start after a failed begin: %v", err)
	}
	if err := l.start(ctx, "thing", begin); err != nil {
		t.Fatalf("second start: %v", err)
	}
	cancel() // the caller's context ends; the loop must not
	time.Sleep(20 * time.Millisecond)
	if ended.Load() != 0 {
		t.Fatal("the loop ended with the context start was given")
	}
	if !l.stop() {
		t.Fatal("first stop reported already stopped")
	}
	if runs.Load() != 1 || ended.Load() != 1 {
		t.Fatalf("loop ran %d times, ended %d times; want once, and ended before stop returned", runs.Load(), ended.Load())
	}
	if l.stop() {
		t.Fatal("second stop reported stopping")
	}
	if err := l.start(context.Background(), "thing", begin); !errors.Is(err, ErrClosed) {
		t.Fatalf("start after stop: %v", err)
	}
	var never lifecycle
	if !never.stop() {
		t.Fatal("stopping a never-started lifecycle")
	}
}
