package api

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/projections"
)

// round drives the API with every client for the round's duration and reports the rate and the
// write and visibility latencies.
func (b *bench) round(ctx context.Context, round int) (*Result, error) {
	in := make(chan pending, 1<<16)
	var visible []time.Duration
	observed := make(chan struct{})
	octx, stopObserving := context.WithCancel(ctx)
	defer func() {
		stopObserving()
		<-observed
	}()
	go b.observe(octx, in, &visible, observed)

	var wg sync.WaitGroup
	var failed failures
	writes := make([][]time.Duration, b.opts.Clients)
	deadline := time.Now().Add(b.opts.Duration)
	start := time.Now()
	for c := range b.opts.Clients {
		wg.Go(func() { writes[c] = b.clientLoop(ctx, round, c, deadline, in, &failed) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(in)
	select {
	case <-observed:
	case <-time.After(30 * time.Second):
		return nil, errors.New("bench api: writes did not become visible in the read model within 30s")
	}
	var all []time.Duration
	for _, w := range writes {
		all = append(all, w...)
	}
	if err := b.checkRound(round, len(all), len(visible), &failed); err != nil {
		return nil, err
	}
	return &Result{CommandsPerS: float64(len(all)) / elapsed.Seconds(), Commands: len(all), Errors: int(failed.count()),
		VisibleP50: percentileMS(visible, 0.50), VisibleP99: percentileMS(visible, 0.99),
		WriteP50: percentileMS(all, 0.50), WriteP99: percentileMS(all, 0.99)}, nil
}

// clientLoop is one HTTP client's closed loop until deadline: it returns the round trip of each
// successful write and sends the write's position to in.
func (b *bench) clientLoop(ctx context.Context, round, c int, deadline time.Time, in chan<- pending, failed *failures) []time.Duration {
	var mine []string
	var writes []time.Duration
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		sent := time.Now()
		res, err := b.command(ctx, fmt.Sprintf("r%d", round), c, n, &mine)
		if err != nil {
			failed.add(err)
			continue
		}
		writes = append(writes, time.Since(sent))
		in <- pending{pos: res.Position, sent: sent}
	}
	return writes
}

// command is client c's n-th command of the workload through the API: it creates a tunnel
// named after prefix, c and n (mine collects the client's tunnels), or updates one of mine.
func (b *bench) command(ctx context.Context, prefix string, c, n int, mine *[]string) (commands.Result, error) {
	org := c % b.opts.Orgs
	tok := b.tokens[org]
	var res commands.Result
	if creates(n, *mine) {
		err := b.do(ctx, tok, "POST", "/api/v1/tunnels?org="+b.orgs[org],
			map[string]string{"name": fmt.Sprintf("%s-c%d-t%d", prefix, c, n), "upstream": "http://127.0.0.1:11434"}, &res)
		if err == nil {
			*mine = append(*mine, res.ID)
		}
		return res, err
	}
	id := (*mine)[n%len(*mine)]
	err := b.do(ctx, tok, "PATCH", "/api/v1/tunnels/"+id+"?org="+b.orgs[org],
		map[string]string{"upstream": updatedUpstream(n)}, &res)
	return res, err
}

// checkRound fails a round in which not every write became visible, nothing succeeded or more
// than 1% failed; a few failures are reported on the progress writer.
func (b *bench) checkRound(round, writes, visible int, failed *failures) error {
	if visible < writes {
		cur, _ := b.sys.Runner.Position(projections.Tunnels)
		return fmt.Errorf("bench api: the tunnels read model stopped at position %d before showing every write", cur)
	}
	if writes == 0 {
		return fmt.Errorf("bench api: no command succeeded: %v", failed.firstErr())
	}
	if n := failed.count(); n > int64(writes)/100 {
		return fmt.Errorf("bench api: %d of %d commands failed, first: %v", n, int64(writes)+n, failed.firstErr())
	}
	if err := failed.firstErr(); err != nil {
		fmt.Fprintf(b.progress, "bench api: round %d: %d commands failed, first: %v\n", round+1, failed.count(), err)
	}
	return nil
}

// pending is a write waiting to become visible.
type pending struct {
	pos  uint64
	sent time.Time
}

type pendingHeap []pending

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return h[i].pos < h[j].pos }
func (h pendingHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *pendingHeap) Push(x any)        { *h = append(*h, x.(pending)) }
func (h *pendingHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// observe records, for every write sent on in, when the tunnels read model reached its position.
// One goroutine watches the runner instead of one waiter per write.
func (b *bench) observe(ctx context.Context, in <-chan pending, out *[]time.Duration, done chan<- struct{}) {
	defer close(done)
	var h pendingHeap
	open := true
	for (open || h.Len() > 0) && ctx.Err() == nil {
		if h.Len() == 0 {
			p, ok := <-in
			if !ok {
				return
			}
			heap.Push(&h, p)
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := b.sys.Runner.WaitFor(wctx, h[0].pos, projections.Tunnels)
		cancel()
		if errors.Is(err, projections.ErrStopped) {
			return
		}
		now := time.Now()
		if cur, _ := b.sys.Runner.Position(projections.Tunnels); cur >= 0 {
			for h.Len() > 0 && h[0].pos <= uint64(cur) {
				p := heap.Pop(&h).(pending)
				*out = append(*out, now.Sub(p.sent))
			}
		}
		open = drain(in, &h, open)
	}
}

// drain moves every write already waiting on in onto h; it returns false once in is closed.
func drain(in <-chan pending, h *pendingHeap, open bool) bool {
	for open {
		select {
		case p, ok := <-in:
			if !ok {
				return false
			}
			heap.Push(h, p)
		default:
			return true
		}
	}
	return open
}
