// Package lifecycle is the one start/stop helper of every long-running component (river's
// BaseStartStop is the model): a second Start starts nothing, Stop waits for every goroutine the
// component launched through it, and a stopped component does not start again. Components embed
// or hold a Lifecycle and launch their goroutines with Go, never with a bare go statement, so
// that nothing they start outlives Stop.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrStopped: Start after Stop. A component is not restarted: make a new one.
var ErrStopped = errors.New("stopped")

// Lifecycle is the start-once, stop-once state of a component. The zero value is ready.
type Lifecycle struct {
	mu      sync.Mutex // serialises Start and Stop
	started bool
	stopped bool

	goMu    sync.Mutex // guards ctx and stopping against Go, which begin may call under mu
	ctx     context.Context
	cancel  context.CancelFunc
	closing bool
	wg      sync.WaitGroup
}

// Start runs begin once, with a context that keeps ctx's values but ends only at Stop. begin
// prepares the component and launches its goroutines with Go; an error from it cancels what it
// launched, waits for it, and leaves the component unstarted, so Start may be tried again.
// Starting a started component does nothing and returns nil; a stopped one returns ErrStopped.
func (l *Lifecycle) Start(ctx context.Context, what string, begin func(ctx context.Context) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return fmt.Errorf("start %s: %w", what, ErrStopped)
	}
	if l.started {
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.goMu.Lock()
	l.ctx, l.cancel, l.closing = runCtx, cancel, false
	l.goMu.Unlock()
	if err := begin(runCtx); err != nil {
		l.halt()
		return err
	}
	l.started = true
	return nil
}

// Go runs f on a goroutine Stop waits for; f's ctx ends at Stop. It runs nothing and reports
// false before Start has begun or once Stop has.
func (l *Lifecycle) Go(f func(ctx context.Context)) bool {
	l.goMu.Lock()
	if l.ctx == nil || l.closing {
		l.goMu.Unlock()
		return false
	}
	ctx := l.ctx
	l.wg.Add(1)
	l.goMu.Unlock()
	go func() {
		defer l.wg.Done()
		f(ctx)
	}()
	return true
}

// Stop ends the context given to begin and to every goroutine, and waits for all of them. It
// reports false when the component was stopped already; stopping one that never started only
// marks it stopped. Safe to call twice and concurrently.
func (l *Lifecycle) Stop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.stopped = true
	l.halt()
	return true
}

// halt cancels and waits for the goroutines (under mu).
func (l *Lifecycle) halt() {
	l.goMu.Lock()
	l.closing = true
	cancel := l.cancel
	l.goMu.Unlock()
	if cancel != nil {
		cancel()
	}
	l.wg.Wait()
	l.goMu.Lock()
	l.ctx, l.cancel = nil, nil
	l.goMu.Unlock()
}

// Running reports whether the component started and has not been stopped.
func (l *Lifecycle) Running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started && !l.stopped
}

// Sleep waits d, or less when ctx ends first; it reports whether the whole wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
