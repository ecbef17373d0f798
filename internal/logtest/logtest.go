// Package logtest starts a real log for tests: a fresh migrated database (eventstore/pgtest)
// with its genesis record and a started store that knows every domain event type. It is for
// tests only and owns nothing else.
package logtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// Log is a started store on a database of its own, stopped when the test ends.
type Log struct {
	URL   string // the database
	Pool  *pgxpool.Pool
	Key   *eventstore.SigningKey // the log key the genesis record is signed with
	Store *eventstore.Store
}

// Start makes the database, writes the genesis record and starts a store that polls for new
// records every pollInterval.
func Start(t testing.TB, pollInterval time.Duration) *Log {
	t.Helper()
	ctx := context.Background()
	l := &Log{URL: pgtest.NewDatabase(t)}
	l.Pool = pgtest.Pool(t, l.URL)
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	l.Key = key
	if _, err := eventstore.Init(ctx, l.Pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: l.Pool, Key: key, Registry: eventstore.MustRegistry(DomainTypes()...), PollInterval: pollInterval})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	l.Store = st
	return l
}

// DomainTypes are the domain's event types as the store registers them (upcasters included).
func DomainTypes() []eventstore.EventType {
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	return types
}

// UsageWindow is the usage window a tunnel and caller send in an hour, the same in every test
// that prices or reports it: 1,000 requests (900 at 20 ms, 100 at 400 ms), 1 GB in, 2 GB out, 3
// streams at most and one hour of calls open, starting at half past, so figures add up by hand.
func UsageWindow(org, tunnel, kind, caller string, hour time.Time) *domain.UsageRecorded {
	var lat [domain.HistogramBuckets]int64
	lat[domain.HistogramIndex(20*time.Millisecond)] = 900
	lat[domain.HistogramIndex(400*time.Millisecond)] = 100
	return &domain.UsageRecorded{NodeID: "n1", OrgID: org, TunnelID: tunnel, WindowStart: hour.Add(30 * time.Minute), WindowEnd: hour.Add(30*time.Minute + 10*time.Second),
		CallerKind: kind, CallerID: caller, Requests: 1000, BytesIn: 1_000_000_000, BytesOut: 2_000_000_000, StreamsMax: 3, StreamedMS: 3_600_000,
		Latency: domain.HistogramOf(&lat), TTFB: domain.HistogramOf(&lat)}
}
