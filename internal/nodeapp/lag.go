package nodeapp

import (
	"context"
	"log/slog"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/view"
)

// A node whose view has not taken in what the control plane's log held staleAfter ago stops
// deciding on it (503 node-starting, as while it starts): a relay that stopped, a NATS that
// stalls delivery or someone flooding TP_EVENTS must not leave a node admitting agents and
// callers a revocation or deletion since then shuts out. lagSample is how often it asks.
const (
	staleAfter = 30 * time.Second
	lagSample  = 5 * time.Second
)

// lagWatch remembers the log sizes the control plane stated, and when, and raises the view's
// readiness target to the size it stated at least stale ago.
type lagWatch struct {
	view  *view.View
	stale time.Duration
	log   *slog.Logger
	seen  []sizeAt
}

type sizeAt struct {
	at   time.Time
	size uint64
}

// observe records that the log held size at now, and moves the view's target to what it held
// stale ago (never back). It reports the target (-2: none yet).
func (w *lagWatch) observe(now time.Time, size uint64) int64 {
	w.seen = append(w.seen, sizeAt{now, size})
	due := -1
	for i, s := range w.seen {
		if now.Sub(s.at) >= w.stale {
			due = i
		}
	}
	if due < 0 {
		return -2
	}
	target := int64(w.seen[due].size) - 1
	w.seen = w.seen[due+1:]
	if target > w.view.Target() {
		w.view.ReadyAt(target)
		if w.view.Ready() != nil {
			w.log.Error("node view: behind the control plane's log for longer than allowed; refusing agents and callers until it catches up",
				"view_next", w.view.Next(), "log_size_then", target+1, "allowed", w.stale)
		}
	}
	return target
}

// run asks the control plane for the log's size every sample until ctx ends. While the control
// plane cannot be asked, the target stays (the node goes on with what it has).
func (w *lagWatch) run(ctx context.Context, cp ControlPlane, sample time.Duration) {
	t := time.NewTicker(sample)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, sample)
		info, err := cp.Log(actx)
		cancel()
		if err != nil {
			w.log.Debug("node view: the control plane's log size is unknown", "error", err)
			continue
		}
		w.observe(time.Now(), info.Size)
	}
}
