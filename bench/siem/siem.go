// Package siem is `bench siem`: forwarding the log to a local rsyslog over TLS (reading,
// formatting as OCSF in RFC 5424, batch deliveries each acknowledged, a cursor per batch)
// against a plain TLS client writing the same messages to the same rsyslog on one connection;
// then the forwarding lag while the admin API runs commands at a steady rate (bench api's
// workload). It does not assemble the control plane: the caller's Options.Start does.
package siem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	apibench "github.com/tunnelplane/tunnelplane/bench/api"
	"github.com/tunnelplane/tunnelplane/bench/stats"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/internal/rsyslog"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/siem"
)

// Options configures a run.
type Options struct {
	// AdminURL points at the server's maintenance database; the scratch database is made there.
	AdminURL string
	// Start starts the control plane on databaseURL with its keys in dataDir (both scratch), the
	// API on loopback: its log is the one forwarded, its API takes the commands of the lag phase.
	Start func(ctx context.Context, databaseURL, dataDir string) (*apibench.System, error)
	// Records in the log (default 50,000); Batch is the forwarder's batch size (default 2,000);
	// BatchesPerDelivery the most batches on one connection (0: the forwarder's default).
	Records, Batch, BatchesPerDelivery int
	// Rounds of each measurement; medians are reported (default 3).
	Rounds int
	// CommandRate is the API's commands per second during the lag phase (default 1,000), for
	// LoadDuration (default 10s), sent by LoadClients HTTP clients (default 64).
	CommandRate  float64
	LoadDuration time.Duration
	LoadClients  int
	// CPUProfile, when set, receives a CPU profile of the whole process during the rounds: the
	// baseline's client under Run, the forwarder under siem.(*Forwarder).
	CPUProfile string
	// Progress receives one line per measurement (nil: silent).
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is the outcome: rates in events per second, medians over rounds.
type Result struct {
	Records int `json:"records"`
	Batch   int `json:"batch"`
	// BatchesPerDelivery: the most batches one connection carried (the forwarder's setting).
	BatchesPerDelivery int     `json:"batches_per_delivery"`
	Rounds             int     `json:"rounds"`
	SiemEPS            float64 `json:"siem_eps"`
	BaselineEPS        float64 `json:"baseline_eps"`
	Ratio              float64 `json:"siem_ratio"`
	// LagP50MS and LagP99MS: from a record's RecordedAt until the receiver acknowledged the
	// batch holding it, over every record appended while the API ran CommandsPerS commands a
	// second (CommandRate asked for); LagRecords is how many records that was.
	LagP50MS     float64 `json:"lag_p50_ms"`
	LagP99MS     float64 `json:"lag_p99_ms"`
	LagRecords   int     `json:"lag_records"`
	CommandRate  float64 `json:"command_rate"`
	CommandsPerS float64 `json:"commands_per_s"`
	Commands     int     `json:"commands"`
	LoadS        float64 `json:"load_s"`
	Baseline     string  `json:"baseline"`
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
	if o.BatchesPerDelivery <= 0 {
		o.BatchesPerDelivery = siem.DefaultBatchesPerDelivery
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CommandRate <= 0 {
		o.CommandRate = 1000
	}
	if o.LoadDuration <= 0 {
		o.LoadDuration = 10 * time.Second
	}
	if o.LoadClients <= 0 {
		o.LoadClients = 64
	}
	if o.Start == nil {
		return nil, errors.New("bench siem: no way to start the control plane (Options.Start)")
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
	dataDir := filepath.Join(dir, "control")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return nil, err
	}
	sys, err := o.Start(ctx, dbURL, dataDir)
	if err != nil {
		return nil, fmt.Errorf("bench siem: start the control plane: %w", err)
	}
	defer sys.Stop()
	store, pool := sys.Store, sys.Pool
	if err := storebench.AppendOrgs(ctx, store, 0, o.Records); err != nil {
		return nil, err
	}
	n, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	// The read models catch up with the log before anything is measured: their work is not
	// the forwarder's.
	if err := caughtUp(ctx, sys.Runner, n); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "bench siem: %d records in the log\n", n)

	format := siem.SyslogOCSF(siem.SyslogConfig{Hostname: "bench"}, siem.DefaultProduct("bench"))
	appendFormat := siem.AppendSyslogOCSF(siem.SyslogConfig{Hostname: "bench"}, siem.DefaultProduct("bench"))
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

	stopProfile, err := apibench.StartCPUProfile(o.CPUProfile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	var siemRates, baseRates []float64
	for round := range o.Rounds {
		start := time.Now()
		if err := transport.Deliver(ctx, msgs); err != nil {
			return nil, fmt.Errorf("bench siem: baseline: %w", err)
		}
		base := float64(len(msgs)) / time.Since(start).Seconds()
		baseRates = append(baseRates, base)

		f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "bench-" + uuid.NewString(), Store: store, Pool: pool, Transport: transport,
			Format: format, AppendFormat: appendFormat, Unsigned: true, BatchSize: o.Batch, BatchesPerDelivery: o.BatchesPerDelivery, Logger: o.Logger})
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
	stopProfile()
	res := &Result{Records: int(n), Batch: o.Batch, BatchesPerDelivery: o.BatchesPerDelivery, Rounds: o.Rounds, SiemEPS: float64(int64(stats.Median(siemRates))),
		BaselineEPS: float64(int64(stats.Median(baseRates))), Baseline: baseline}
	res.Ratio = float64(int64(res.SiemEPS/res.BaselineEPS*100)) / 100

	if err := measureLag(ctx, o, sys, transport, appendFormat, res); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "lag: %.0f commands/s (%.0f asked) for %.1fs: p50 %.0f ms, p99 %.0f ms over %d records\n",
		res.CommandsPerS, res.CommandRate, res.LoadS, res.LagP50MS, res.LagP99MS, res.LagRecords)
	return res, nil
}

// caughtUp waits until every projection of the control plane has applied the log up to head.
func caughtUp(ctx context.Context, runner *projections.Runner, head uint64) error {
	sts, err := runner.Statuses(ctx)
	if err != nil {
		return fmt.Errorf("bench siem: projections: %w", err)
	}
	names := make([]string, 0, len(sts))
	for _, st := range sts {
		names = append(names, st.Name)
	}
	if head == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := runner.WaitFor(wctx, head-1, names...); err != nil {
		return fmt.Errorf("bench siem: projections catching up with the log: %w", err)
	}
	return nil
}

// measureLag starts a forwarder at the head of the log, runs the API's paced load and measures,
// for every record appended meanwhile, the time from its RecordedAt until the receiver
// acknowledged the batch holding it.
func measureLag(ctx context.Context, o Options, sys *apibench.System, transport *siem.SyslogTLS, appendFormat func([]byte, siem.Entry) ([]byte, error), res *Result) error {
	load, err := apibench.NewLoad(ctx, sys, o.LoadClients, min(4, o.LoadClients))
	if err != nil {
		return fmt.Errorf("bench siem: set up the API load: %w", err)
	}
	defer load.Close()
	head, err := sys.Store.Head(ctx)
	if err != nil {
		return err
	}
	// A new sink starts at the head, as one configured "from now" would: the lag is that of
	// what the API writes, not of the backlog.
	sink := "bench-lag-" + uuid.NewString()
	if _, err := sys.Pool.Exec(ctx, `INSERT INTO siem_cursors (sink_id, position, seq) VALUES ($1, $2, 0)`, sink, int64(head)); err != nil {
		return fmt.Errorf("bench siem: sink cursor: %w", err)
	}
	acks := &ackTimes{next: transport}
	f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: sink, Store: sys.Store, Pool: sys.Pool, Transport: acks,
		AppendFormat: appendFormat, Unsigned: true, BatchSize: o.Batch, BatchesPerDelivery: o.BatchesPerDelivery, Logger: o.Logger})
	if err != nil {
		return err
	}
	if err := f.Start(ctx); err != nil {
		return err
	}
	defer f.Stop()
	start := time.Now()
	paced, err := load.Paced(ctx, o.CommandRate, o.LoadDuration)
	if err != nil {
		return err
	}
	res.LoadS = time.Since(start).Seconds()
	last, err := sys.Store.Head(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for f.Status().Position < last {
		if st := f.Status(); st.Retries > 0 {
			return fmt.Errorf("bench siem: lag phase: a delivery failed: %s", st.LastError)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench siem: lag phase: the forwarder stood at %d of %d a minute after the load", f.Status().Position, last)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	lags, err := acks.lags()
	if err != nil {
		return err
	}
	if len(lags) == 0 {
		return errors.New("bench siem: lag phase: nothing was forwarded")
	}
	sorted := stats.Sorted(lags)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	res.LagP50MS, res.LagP99MS = ms(stats.Percentile(sorted, 0.50)), ms(stats.Percentile(sorted, 0.99))
	res.LagRecords = len(lags)
	res.CommandRate, res.CommandsPerS, res.Commands = o.CommandRate, float64(int64(paced.CommandsPerS)), paced.Commands
	res.LoadS = float64(int64(res.LoadS*10)) / 10
	return nil
}

// ackTimes is a transport that notes, for every message of a batch the receiver acknowledged,
// how long after its record was recorded the acknowledgement came. The RFC 5424 TIMESTAMP of
// the message is the record's RecordedAt (to the microsecond). It is a siem.Sender as its next
// transport is, so the forwarder delivers in steps as it does to a syslog sink.
type ackTimes struct {
	next *siem.SyslogTLS

	mu   sync.Mutex
	lag  []time.Duration
	errs []error
}

func (a *ackTimes) Deliver(ctx context.Context, msgs [][]byte) error {
	if err := a.next.Deliver(ctx, msgs); err != nil {
		return err
	}
	a.acknowledged(msgs)
	return nil
}

func (a *ackTimes) Open(ctx context.Context) (siem.Delivery, error) {
	d, err := a.next.Open(ctx)
	if err != nil {
		return nil, err
	}
	return &ackTimesDelivery{Delivery: d, a: a}, nil
}

// ackTimesDelivery notes the lag of its batches once the receiver acknowledged it.
type ackTimesDelivery struct {
	siem.Delivery
	a    *ackTimes
	msgs [][]byte
}

func (d *ackTimesDelivery) Send(msgs [][]byte) error {
	d.msgs = append(d.msgs, msgs...)
	return d.Delivery.Send(msgs)
}

func (d *ackTimesDelivery) Ack() error {
	if err := d.Delivery.Ack(); err != nil {
		return err
	}
	d.a.acknowledged(d.msgs)
	return nil
}

// acknowledged notes the lag of every message of a batch acknowledged just now.
func (a *ackTimes) acknowledged(msgs [][]byte) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range msgs {
		at, err := syslogTimestamp(m)
		if err != nil {
			a.errs = append(a.errs, err)
			continue
		}
		a.lag = append(a.lag, now.Sub(at))
	}
}

func (a *ackTimes) lags() ([]time.Duration, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Duration(nil), a.lag...), errors.Join(a.errs...)
}

// syslogTimestamp is the TIMESTAMP of an RFC 5424 message: "<PRI>1 TIMESTAMP …".
func syslogTimestamp(m []byte) (time.Time, error) {
	_, rest, ok := bytes.Cut(m, []byte(">1 "))
	if ok {
		var ts []byte
		if ts, _, ok = bytes.Cut(rest, []byte(" ")); ok {
			if at, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
				return at, nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("bench siem: no RFC 5424 timestamp in %.40q", m)
}
