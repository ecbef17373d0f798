// Package lifecycletest checks that a component keeps the lifecycle rules (internal/lifecycle):
// Start from several goroutines at once starts it once, Stop returns while Starts race it, and a
// stopped component does not start again. Use it in every component's tests; goleak in the
// package's TestMain then catches a goroutine that outlives Stop.
package lifecycletest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Component is what the check drives.
type Component struct {
	Start func(ctx context.Context) error
	Stop  func()
}

// StartStopStress runs rounds of: several concurrent Starts racing one Stop, a second Stop, and a
// Start after Stop, which must fail with lifecycle.ErrStopped (or whatever the component wraps
// it as). newComponent makes a fresh component each round.
func StartStopStress(t testing.TB, rounds int, newComponent func() Component) {
	t.Helper()
	for i := range rounds {
		c := newComponent()
		ctx := context.Background()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _ = c.Start(ctx) })
		}
		if i%2 == 0 {
			wg.Wait() // half the rounds stop a started component, half race the starts
		}
		stopped := make(chan struct{})
		go func() { defer close(stopped); c.Stop() }()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Stop did not return within 30s", i)
		}
		wg.Wait()
		c.Stop() // twice is safe
		if err := c.Start(ctx); !errors.Is(err, lifecycle.ErrStopped) {
			t.Fatalf("round %d: Start after Stop: %v, want an error wrapping lifecycle.ErrStopped", i, err)
		}
	}
}
