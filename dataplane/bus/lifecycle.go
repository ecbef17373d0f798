package bus

import (
	"context"
	"fmt"
	"sync"
)

// lifecycle is the start-once, stop-once state of a component that runs one background loop
// (the publisher's resend loop, the ingester, the relay, the heartbeater, the registry watcher).
type lifecycle struct {
	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// start calls begin, under the lifecycle's lock, with the context the loop will run in: it keeps
// ctx's values but ends only at stop. begin prepares and returns the loop, which then runs in its
// own goroutine; an error from begin leaves the component unstarted, so start may be tried
// again. Starting a started component does nothing; a stopped one fails with ErrClosed.
func (l *lifecycle) start(ctx context.Context, what string, begin func(loopCtx context.Context) (loop func(), err error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return fmt.Errorf("start %s: %w", what, ErrClosed)
	}
	if l.started {
		return nil
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	loop, err := begin(lctx)
	if err != nil {
		cancel()
		return err
	}
	done := make(chan struct{})
	l.cancel, l.done, l.started = cancel, done, true
	go func() {
		defer close(done)
		loop()
	}()
	return nil
}

// stop ends the loop and waits for it to return. It reports false if the component was stopped
// already; stopping one that never started only marks it stopped.
func (l *lifecycle) stop() bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.stopped = true
	started := l.started
	l.mu.Unlock()
	if started {
		l.cancel()
		<-l.done
	}
	return true
}
