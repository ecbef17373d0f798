package nodeapp

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// followEvents folds the relayed log into the view for the node's life. A subscription that
// ends (a gap, an unreadable record, the consumer lost) is logged and started again where the
// view stands, with a backoff of 1 s doubling to 30 s.
func (a *App) followEvents(ctx context.Context, js jetstream.JetStream) {
	apply := func(_ context.Context, ev wire.RelayedEvent) error {
		rec, err := ev.Record()
		if err == nil {
			err = a.View.Apply(view.Event{Position: ev.Position, Record: &rec, Checkpoint: ev.Checkpoint})
		}
		switch {
		case err == nil:
		case errors.Is(err, ledger.ErrTooManyPending):
			return err // read again from where the view stands
		case errors.Is(err, ledger.ErrUnverified), errors.Is(err, wire.ErrMalformed):
			// Not the log's (someone else published it), or not as the log signed it: skipped;
			// the genuine record for this position may still follow.
			a.skippedEvent(ev.Position, err)
			return nodebus.ErrSkipEvent
		default:
			// The view cannot fold an event in: keep serving with what it has, loudly.
			a.log.Error("node view: event not applied", "position", ev.Position, "type", ev.Type, "error", err)
		}
		return nil
	}
	skipBad := func(seq uint64, err error) { a.skippedEvent(int64(seq)-1, err) }
	delay := time.Second
	for {
		started := time.Now()
		err := nodebus.SubscribeEvents(ctx, js, nodebus.SubscribeEventsOptions{Names: a.names, Logger: a.log, FromPosition: a.View.Next(), SkipBad: skipBad,
			Next: a.View.Next}, apply)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			delay = time.Second
		}
		a.log.Error("node view: event subscription ended; subscribing again", "error", err, "position", a.View.Position(), "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// skippedEvent counts a relayed message the view did not take, and says so (at most every 10 s,
// with how many since: whoever floods TP_EVENTS must not flood the log too).
func (a *App) skippedEvent(pos any, err error) {
	a.skipped.Add(1)
	now := time.Now().UnixNano()
	last := a.skipLogged.Load()
	if now-last < int64(10*time.Second) || !a.skipLogged.CompareAndSwap(last, now) {
		return
	}
	a.log.Error("node view: a relayed message does not verify against the log and was skipped (someone other than the control plane can publish on events.>?)",
		"position", pos, "error", err, "skipped_so_far", a.skipped.Load())
}
