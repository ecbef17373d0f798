package node

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"
)

// The decision: all Ps at once when one P is more than half busy; back to one P only after a
// whole calm second; a short lull or a single busy tick in between changes nothing.
func TestProcsGovernorDecides(t *testing.T) {
	t.Parallel()
	g := procsGovernor{full: 4, procs: 4}
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	steps := []struct {
		ms    int
		cores float64
		want  int
	}{
		{0, 0.9, 4}, {100, 0.05, 4}, {500, 0.05, 4}, // calm for 500 ms: stays
		{600, 0.3, 4},                  // busy again: the calm second starts over
		{1500, 0.1, 4}, {1600, 0.1, 1}, // a full second below procsLower: one P
		{1700, 0.45, 1}, // busy but not past procsRaise: stays
		{1800, 0.7, 4},  // past procsRaise: all Ps
		{2700, 0.0, 4}, {2800, 0.0, 1},
	}
	for _, s := range steps {
		got := g.next(at(s.ms), s.cores)
		if got != s.want {
			t.Fatalf("at %d ms with %.2f cores: %d Ps, want %d", s.ms, s.cores, got, s.want)
		}
	}
}

// The real thing: a busy loop raises GOMAXPROCS within a few ticks, idleness lowers it, and Stop
// restores it (Stop returns once it has). (Not parallel: it changes a process-wide setting.)
func TestGovernProcsFollowsLoad(t *testing.T) {
	full := runtime.GOMAXPROCS(0)
	if full < 2 {
		t.Skip("needs at least 2 CPUs")
	}
	if _, ok := ProcessCPU(); !ok {
		t.Skip("process CPU time cannot be read here")
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS is set: the governor leaves it alone")
	}
	var gov ProcsGovernor
	if err := gov.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		gov.Stop()
		if n := runtime.GOMAXPROCS(0); n != full {
			t.Errorf("GOMAXPROCS %d after Stop, want %d", n, full)
		}
	}()
	if err := gov.Start(context.Background()); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	waitProcs(t, 1, procsCalm+time.Second) // a test binary at rest uses almost no CPU (else it skips)

	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		}
	}()
	waitProcs(t, full, 5*time.Second) // one tick past procsRaise, even on a machine busy with other tests
	close(stop)
	waitProcs(t, 1, procsCalm+time.Second)
}

// waitProcs waits for the governor to set want Ps. When it has not within the time, the
// process's CPU use decides: if it did not give the governor its reason (past procsRaise to
// raise, below procsLower to lower: a machine too busy to give the busy loop half a core, or
// other goroutines of the test binary busy), the test skips; if it did, it fails.
func waitProcs(t *testing.T, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for runtime.GOMAXPROCS(0) != want {
		if time.Now().After(deadline) {
			before, _ := ProcessCPU()
			start := time.Now()
			time.Sleep(500 * time.Millisecond)
			after, _ := ProcessCPU()
			cores := (after - before) / time.Since(start).Seconds()
			if (want > 1 && cores <= procsRaise) || (want == 1 && cores >= procsLower) {
				t.Skipf("GOMAXPROCS %d, not %d, after %v, but the process used %.2f cores: the machine did not let the load be what the test needs", runtime.GOMAXPROCS(0), want, within, cores)
			}
			t.Fatalf("GOMAXPROCS %d, not %d, after %v, the process using %.2f cores", runtime.GOMAXPROCS(0), want, within, cores)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
