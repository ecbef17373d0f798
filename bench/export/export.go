// Package export is `bench export`: writing an evidence bundle of the whole log and verifying it
// offline, against today's `verify` of the same log in the same run (the baseline).
package export

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tunnelplane/tunnelplane/bench/stats"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Options configures a run.
type Options struct {
	// AdminURL points at the server's maintenance database; the scratch database is made there.
	AdminURL string
	// Records in the log (default 1,000,000); Rounds of each measurement (default 3, medians).
	Records, Rounds int
	// Progress receives one line per step (nil: silent).
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is the outcome: rates in records per second, medians over rounds.
type Result struct {
	Records         uint64  `json:"records"`
	Rounds          int     `json:"rounds"`
	ExportEPS       float64 `json:"export_eps"`
	VerifyExportEPS float64 `json:"verify_export_eps"`
	VerifyEPS       float64 `json:"verify_eps"`
	// ExportRatio and VerifyExportRatio are the rates over verify's, the baseline.
	ExportRatio       float64 `json:"export_ratio"`
	VerifyExportRatio float64 `json:"verify_export_ratio"`
	BundleBytes       int64   `json:"bundle_bytes"`
	Baseline          string  `json:"baseline"`
}

const baseline = "tunnelplane verify of the same log in the same run (every hash, signature and checkpoint, from the database, on all cores)"

// Run performs the benchmark.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Records <= 0 {
		o.Records = 1_000_000
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
	l, closeLog, err := storebench.NewScratchLog(ctx, o.AdminURL, "tunnelplane_bench_export", "bench export", o.Logger)
	if err != nil {
		return nil, err
	}
	defer closeLog()
	pool, store, key := l.Pool, l.Store, l.Key
	started := time.Now()
	if err := storebench.AppendOrgs(ctx, store, 0, o.Records); err != nil {
		return nil, fmt.Errorf("bench export: %w", err)
	}
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "bench export: %d records in the log (%.1fs)\n", head, time.Since(started).Seconds())
	dir, err := os.MkdirTemp("", "tunnelplane-bench-export-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	res := &Result{Rounds: o.Rounds, Baseline: baseline}
	var exp, vexp, ver []float64
	for round := range o.Rounds {
		// The window is the log as it was before the first export (each export appends one record).
		out := filepath.Join(dir, fmt.Sprintf("bundle-%d.tar.zst", round))
		t0 := time.Now()
		er, err := evidence.Export(ctx, evidence.ExportConfig{Pool: pool, Log: store, Key: key, Actor: "bench"}, evidence.Window{From: 0, To: head - 1}, out)
		if err != nil {
			return nil, fmt.Errorf("bench export: export: %w", err)
		}
		exp = append(exp, float64(head)/time.Since(t0).Seconds())
		res.BundleBytes, res.Records = er.Bytes, head

		t0 = time.Now()
		f, err := os.Open(out)
		if err != nil {
			return nil, err
		}
		rep, err := evidence.Verify(f, evidence.VerifyOptions{})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("bench export: verify-export: %w", err)
		}
		if len(rep.Problems) > 0 {
			return nil, fmt.Errorf("bench export: verify-export found the bundle damaged: %+v", rep.Problems[0])
		}
		vexp = append(vexp, float64(head)/time.Since(t0).Seconds())
		_ = os.Remove(out)

		t0 = time.Now()
		last := head - 1
		vr, err := eventstore.Verify(ctx, pool, eventstore.VerifyOptions{To: &last})
		if err != nil {
			return nil, fmt.Errorf("bench export: verify: %w", err)
		}
		if vr.Failure != nil {
			return nil, fmt.Errorf("bench export: verify found the log damaged: %v", vr.Failure)
		}
		ver = append(ver, float64(head)/time.Since(t0).Seconds())
		fmt.Fprintf(o.Progress, "bench export: round %d: export %.0f, verify-export %.0f, verify %.0f records/s (bundle %d bytes)\n",
			round+1, exp[round], vexp[round], ver[round], er.Bytes)
	}
	res.ExportEPS, res.VerifyExportEPS, res.VerifyEPS = stats.Median(exp), stats.Median(vexp), stats.Median(ver)
	res.ExportRatio, res.VerifyExportRatio = res.ExportEPS/res.VerifyEPS, res.VerifyExportEPS/res.VerifyEPS
	return res, nil
}
