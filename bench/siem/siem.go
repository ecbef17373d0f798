// Package siem is `bench siem`: forwarding the log to a local rsyslog over TLS (reading,
// formatting as OCSF in RFC 5424, batch deliveries each acknowledged, a cursor per batch)
// against a plain TLS client writing the same messages to the same rsyslog on one connection.
package siem

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/bench/stats"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/rsyslog"
	"github.com/tunnelplane/tunnelplane/migrations"
	"github.com/tunnelplane/tunnelplane/siem"
)

// Options configures a run.
type Options struct {
	// AdminURL points at the server's maintenance database; the scratch database is made there.
	AdminURL string
	// Records in the log (default 50,000); Batch is the forwarder's batch size (default 2,000).
	Records, Batch int
	// Rounds of each measurement; medians are reported (default 3).
	Rounds int
	// Progress receives one line per measurement (nil: silent).
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is the outcome: rates in events per second, medians over rounds.
type Result struct {
	Records     int     `json:"records"`
	Batch       int     `json:"batch"`
	Rounds      int     `json:"rounds"`
	SiemEPS     float64 `json:"siem_eps"`
	BaselineEPS float64 `json:"baseline_eps"`
	Ratio       float64 `json:"siem_ratio"`
	Baseline    string  `json:"baseline"`
}

const baseline = "the same messages, formatted beforehand, written by a plain TLS client to the same rsyslog on one connection, acknowledged the same way (close_notify, then the receiver's close)"

// Run performs the benchmark.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Records <= 0 {
		o.Records = 50000
	}
	if o.Batch <= 0 {
		o.Batch = 2000
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "tunnelplane-bench-siem-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rs, err := rsyslog.New(dir)
	if err != nil {
		return nil, err
	}
	if err := rs.Start(); err != nil {
		return nil, err
	}
	defer rs.Stop()

	dbURL, drop, err := storebench.ScratchDatabase(ctx, o.AdminURL, "tunnelplane_bench_siem")
	if err != nil {
		return nil, err
	}
	defer drop()
	if err := migrations.Up(ctx, dbURL); err != nil {
		return nil, fmt.Errorf("bench siem: %w", err)
	}
	pool, err := eventstore.Connect(ctx, dbURL, eventstore.ConnectOptions{Role: "-", MaxConns: 8, ApplicationName: "tunnelplane-bench-siem"})
	if err != nil {
		return nil, fmt.Errorf("bench siem: %w", err)
	}
	defer pool.Close()
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		return nil, fmt.Errorf("bench siem: %w", err)
	}
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion})
	}
	store, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, Registry: eventstore.MustRegistry(types...), Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	if err := store.Start(ctx); err != nil {
		return nil, err
	}
	defer store.Stop()
	if err := fill(ctx, store, o.Records); err != nil {
		return nil, err
	}
	n, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "bench siem: %d records in the log\n", n)

	format := siem.SyslogOCSF(siem.SyslogConfig{Hostname: "bench"}, siem.DefaultProduct("bench"))
	transport, err := siem.NewSyslogTLS(siem.SyslogTLSConfig{Address: rs.Address(), TLS: rs.TLSConfig(), AckTimeout: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	// The baseline's messages: the same records, formatted once, up front.
	var msgs [][]byte
	for from := uint64(0); from < n; {
		recs, err := store.ReadAll(ctx, from, 5000)
		if err != nil {
			return nil, err
		}
		for i := range recs {
			m, err := format(siem.Entry{Record: &recs[i], Seq: recs[i].Position + 1})
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
		}
		from = recs[len(recs)-1].Position + 1
	}

	var siemRates, baseRates []float64
	for round := range o.Rounds {
		start := time.Now()
		if err := transport.Deliver(ctx, msgs); err != nil {
			return nil, fmt.Errorf("bench siem: baseline: %w", err)
		}
		base := float64(len(msgs)) / time.Since(start).Seconds()
		baseRates = append(baseRates, base)

		f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "bench-" + uuid.NewString(), Store: store, Pool: pool, Transport: transport,
			Format: format, BatchSize: o.Batch, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		start = time.Now()
		if err := f.Start(ctx); err != nil {
			return nil, err
		}
		for f.Status().Position < n {
			if err := ctx.Err(); err != nil {
				f.Stop()
				return nil, err
			}
			if st := f.Status(); st.Retries > 0 {
				f.Stop()
				return nil, fmt.Errorf("bench siem: a delivery failed: %s", st.LastError)
			}
			time.Sleep(time.Millisecond)
		}
		rate := float64(n) / time.Since(start).Seconds()
		f.Stop()
		siemRates = append(siemRates, rate)
		fmt.Fprintf(o.Progress, "round %d: forwarder %.0f ev/s, plain TLS client %.0f ev/s\n", round+1, rate, base)
	}
	res := &Result{Records: int(n), Batch: o.Batch, Rounds: o.Rounds, SiemEPS: float64(int64(stats.Median(siemRates))),
		BaselineEPS: float64(int64(stats.Median(baseRates))), Baseline: baseline}
	res.Ratio = float64(int64(res.SiemEPS/res.BaselineEPS*100)) / 100
	return res, nil
}

// fill appends n organization.created events, 500 streams per append.
func fill(ctx context.Context, store *eventstore.Store, n int) error {
	for done := 0; done < n; {
		k := min(500, n-done)
		appends := make([]eventstore.StreamAppend, k)
		for i := range appends {
			org := uuid.NewString()
			b, err := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: "o" + org[:8], CreatedBy: "bench"})
			if err != nil {
				return err
			}
			appends[i] = eventstore.StreamAppend{StreamID: domain.OrgStream(org), Expected: eventstore.NoStream,
				Events: []eventstore.EventData{{Type: domain.TypeOrganizationCreated, Payload: b}}}
		}
		if _, err := store.AppendMulti(ctx, appends...); err != nil {
			return fmt.Errorf("bench siem: fill the log: %w", err)
		}
		done += k
	}
	return nil
}
