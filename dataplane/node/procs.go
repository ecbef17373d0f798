package node

import (
	"context"
	"os"
	"runtime"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Procs governor: a second P only helps a node that has more work than one P can do. Below
// that, every hand-off between goroutines (x/crypto/ssh's read goroutine → its mux goroutine →
// the request's handler) wakes an idle scheduler thread to look for work: a futex, and often a
// preemption of the very thread doing the work. On a streamed chunk that is 20–35 µs of the node's
// delay (docs/performance.md). The governor runs the process on one P while it uses little CPU
// and on all of them as soon as it uses more.
const (
	procsTick = 100 * time.Millisecond
	// procsRaise: CPU use (cores, over one tick) at one P above which the node takes all Ps.
	procsRaise = 0.5
	// procsLower: below this CPU use (cores) for procsCalm, the node goes back to one P.
	procsLower = 0.2
	procsCalm  = time.Second
)

// ProcsGovernor runs the governor from Start to Stop, then restores the process's GOMAXPROCS. It
// does nothing when GOMAXPROCS is 1 already or the operator set it (environment GOMAXPROCS), or
// where the process's CPU time cannot be read. Like TuneGC it changes a process-wide setting: the
// process that runs a node starts it (tunnelplane node and serve), never a library.
type ProcsGovernor struct{ life lifecycle.Lifecycle }

// Start starts governing (once).
func (p *ProcsGovernor) Start(ctx context.Context) error {
	full := runtime.GOMAXPROCS(0)
	if _, set := os.LookupEnv("GOMAXPROCS"); set || full == 1 {
		return nil
	}
	if _, ok := ProcessCPU(); !ok {
		return nil
	}
	return p.life.Start(ctx, "procs governor", func(context.Context) error {
		p.life.Go(func(ctx context.Context) { govern(ctx, full) })
		return nil
	})
}

// Stop stops governing and restores GOMAXPROCS. Safe to call twice.
func (p *ProcsGovernor) Stop() { p.life.Stop() }

func govern(ctx context.Context, full int) {
	defer runtime.GOMAXPROCS(full)
	t := time.NewTicker(procsTick)
	defer t.Stop()
	g := procsGovernor{full: full, procs: full}
	lastCPU, _ := ProcessCPU()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu, _ := ProcessCPU()
			if before := g.procs; g.next(now, (cpu-lastCPU)/now.Sub(last).Seconds()) != before {
				runtime.GOMAXPROCS(g.procs)
			}
			lastCPU, last = cpu, now
		}
	}
}

// procsGovernor decides; it is separate from the clock and the runtime so that tests can drive it.
type procsGovernor struct {
	full, procs int
	busySince   time.Time // last tick at which the node used procsLower or more
}

// next moves to (and returns) the P count after a tick in which the process used cores CPU.
func (g *procsGovernor) next(now time.Time, cores float64) int {
	if cores >= procsLower || g.busySince.IsZero() {
		g.busySince = now
	}
	switch {
	case g.procs == 1 && cores > procsRaise:
		g.procs = g.full
	case g.procs > 1 && now.Sub(g.busySince) >= procsCalm:
		g.procs = 1
	}
	return g.procs
}
