package api

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
)

// baseline runs the same workload through the command handlers in-process: the store, the
// aggregates, authorization and the read models, without HTTP, JSON and token verification.
func (b *bench) baseline(ctx context.Context, round int) (float64, error) {
	var wg sync.WaitGroup
	var count atomic.Int64
	var failed failures
	deadline := time.Now().Add(b.opts.Duration)
	start := time.Now()
	for c := range b.opts.Clients {
		wg.Go(func() { count.Add(b.baselineLoop(ctx, round, c, deadline, &failed)) })
	}
	wg.Wait()
	if failed.count() > count.Load()/100 {
		return 0, fmt.Errorf("bench api baseline: %d commands failed, first: %v", failed.count(), failed.firstErr())
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// baselineLoop is one in-process client's closed loop until deadline; it returns how many
// commands succeeded.
func (b *bench) baselineLoop(ctx context.Context, round, c int, deadline time.Time, failed *failures) int64 {
	h := b.sys.Service.Handlers
	org := c % b.opts.Orgs
	actx := commands.WithActor(ctx, commands.Actor{ID: ownerOf(org)})
	var mine []string
	var ok int64
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		var err error
		if creates(n, mine) {
			var res commands.Result
			res, err = h.CreateTunnel.Handle(actx, commands.CreateTunnel{OrgID: b.orgs[org], Name: fmt.Sprintf("b%d-c%d-t%d", round, c, n), Upstream: "http://127.0.0.1:11434"})
			if err == nil {
				mine = append(mine, res.ID)
			}
		} else {
			up := updatedUpstream(n)
			_, err = h.UpdateTunnel.Handle(actx, commands.UpdateTunnel{OrgID: b.orgs[org], TunnelID: mine[n%len(mine)], Upstream: &up})
		}
		if err != nil {
			failed.add(err)
			continue
		}
		ok++
	}
	return ok
}
