package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Load is the workload of `bench api` for another bench to run beside what it measures: the
// organizations and their owners set up through the API, then the same commands (one tunnel
// create to three updates per client) at a fixed rate.
type Load struct {
	b    *bench
	runs int
}

// NewLoad sets up orgs organizations through sys's API, for clients concurrent clients.
func NewLoad(ctx context.Context, sys *System, clients, orgs int) (*Load, error) {
	o := Options{Duration: time.Second, Rounds: 1, Clients: clients, Orgs: orgs}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	b := &bench{progress: io.Discard, sys: sys, opts: o,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2}, Timeout: 30 * time.Second}}
	if err := b.setup(ctx); err != nil {
		b.client.CloseIdleConnections()
		return nil, err
	}
	return &Load{b: b}, nil
}

// Close releases the clients' connections.
func (l *Load) Close() { l.b.client.CloseIdleConnections() }

// PacedResult is what a paced run did: the rate it achieved and the commands' round trips.
type PacedResult struct {
	Commands     int     `json:"commands"`
	Errors       int     `json:"errors"`
	CommandsPerS float64 `json:"commands_per_s"`
	WriteP50     float64 `json:"write_p50_ms"`
	WriteP99     float64 `json:"write_p99_ms"`
}

// Paced issues rate commands a second for d, open loop: each command is due at its own time,
// whatever the latency of those before it, and is sent by the next free client. When every
// client is busy, the due commands wait for one and the achieved rate (CommandsPerS) falls
// below rate: it says so rather than hiding it.
func (l *Load) Paced(ctx context.Context, rate float64, d time.Duration) (*PacedResult, error) {
	if !(rate > 0) || d <= 0 {
		return nil, fmt.Errorf("bench api: paced load: rate %v for %s: want both above 0", rate, d)
	}
	b := l.b
	l.runs++
	prefix := fmt.Sprintf("p%d", l.runs)
	total := int(rate * d.Seconds())
	due := make(chan struct{}, b.opts.Clients)
	var failed failures
	writes := make([][]time.Duration, b.opts.Clients)
	var wg sync.WaitGroup
	for c := range b.opts.Clients {
		wg.Go(func() {
			var mine []string
			for n := 0; ; n++ {
				if _, ok := <-due; !ok {
					return
				}
				sent := time.Now()
				if _, err := b.command(ctx, prefix, c, n, &mine); err != nil {
					failed.add(err)
					continue
				}
				writes[c] = append(writes[c], time.Since(sent))
			}
		})
	}
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for issued := 0; issued < total && ctx.Err() == nil; {
		for now := min(total, int(time.Since(start).Seconds()*rate)+1); issued < now; issued++ {
			select {
			case due <- struct{}{}:
			case <-ctx.Done():
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var all []time.Duration
	for _, w := range writes {
		all = append(all, w...)
	}
	if len(all) == 0 {
		return nil, errors.Join(errors.New("bench api: paced load: no command succeeded"), failed.firstErr())
	}
	if n := failed.count(); n > int64(len(all))/100 {
		return nil, fmt.Errorf("bench api: paced load: %d of %d commands failed, first: %w", n, int64(len(all))+n, failed.firstErr())
	}
	return &PacedResult{Commands: len(all), Errors: int(failed.count()), CommandsPerS: float64(len(all)) / elapsed.Seconds(),
		WriteP50: percentileMS(all, 0.50), WriteP99: percentileMS(all, 0.99)}, nil
}
