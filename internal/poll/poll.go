// Package poll is the one way tests wait for something to happen: poll a condition with a
// deadline (nats-server's checkFor idiom), never sleep for a fixed time and hope.
package poll

import (
	"testing"
	"time"
)

// Conditions are polled at first every millisecond, then less and less often, up to every
// maxInterval: a quick condition is seen at once, a slow one (a query, an HTTP call) does not
// load a busy machine.
const maxInterval = 50 * time.Millisecond

// Until polls cond until it holds; the test fails, saying what it waited for, when within passes
// first.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, maxInterval) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", within, what)
		}
		time.Sleep(wait)
	}
}

// Check polls f every every until it returns nil; the test fails with f's last error when within
// passes first.
func Check(t testing.TB, within, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		time.Sleep(every)
	}
}
