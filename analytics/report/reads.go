package report

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/chargeback"
	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Bounds of a report's reads: a page of hourly rows holds at most MaxPageRows rows (fewer keys
// when the window is long), and a table lists at most MaxKeys tunnels or callers.
const (
	MaxPageRows = 250_000
	MaxKeys     = 50_000
	maxNodes    = 100 * 200 // pages of 200 nodes
)

// ChargeReader reads what a chargeback statement is priced from (a *readmodels.Queries).
type ChargeReader interface {
	PriceSheets(ctx context.Context, orgID string, until time.Time) ([]readmodels.PriceSheet, error)
	ChargeUsage(ctx context.Context, orgID string, from, to time.Time, boundaries []time.Time) ([]readmodels.ChargeUsage, error)
	ActiveTunnelDays(ctx context.Context, orgID string, dayStarts []time.Time, to time.Time) ([]readmodels.ActiveTunnelDay, error)
}

// NodeLister lists nodes (a *readmodels.Queries).
type NodeLister interface {
	ListNodes(ctx context.Context, f readmodels.NodeFilter) ([]readmodels.Node, error)
}

// Statement prices an organization's usage in [from, to) (local midnights in tz) with the price
// sheets in force, and returns the sheets it read (oldest first) with it. The analytics API's
// chargeback statement and the chargeback report both read through here.
func Statement(ctx context.Context, q ChargeReader, org, tz string, loc *time.Location, from, to time.Time) (chargeback.Statement, []readmodels.PriceSheet, error) {
	sheets, err := q.PriceSheets(ctx, org, to)
	if err != nil {
		return chargeback.Statement{}, nil, err
	}
	usage, err := q.ChargeUsage(ctx, org, from, to, chargeback.Boundaries(sheets))
	if err != nil {
		return chargeback.Statement{}, nil, err
	}
	days, err := q.ActiveTunnelDays(ctx, org, chargeback.DayStarts(from, to, loc), to)
	if err != nil {
		return chargeback.Statement{}, nil, err
	}
	if tz == "" {
		tz = "UTC"
	}
	return chargeback.Compute(chargeback.Input{OrgID: org, TimeZone: tz, From: from, To: to, Sheets: sheets, Usage: usage, Days: days}), sheets, nil
}

// NodesInService counts the nodes that take agents (joined), up to a bound.
func NodesInService(ctx context.Context, q NodeLister) (int, error) {
	const page = 200
	n := 0
	var after *readmodels.NodeKey
	for n < maxNodes {
		nodes, err := q.ListNodes(ctx, readmodels.NodeFilter{State: readmodels.NodeJoined, After: after, Limit: page})
		if err != nil {
			return 0, err
		}
		n += len(nodes)
		if len(nodes) < page {
			break
		}
		last := nodes[len(nodes)-1]
		after = &readmodels.NodeKey{Name: last.Name, ID: last.ID}
	}
	return n, nil
}

// eachPage reads every key of a scope in [from, to), a page of hourly rows at a time (ordered
// by key then hour), and hands each page to fn; it stops after MaxKeys keys and says so.
func eachPage(ctx context.Context, q *readmodels.Queries, org, scope string, from, to time.Time, fn func(rows []readmodels.UsageHour) error) (truncated bool, err error) {
	hours := int(to.Sub(from)/time.Hour) + 1
	limit := max(1, MaxPageRows/hours)
	var after *readmodels.UsageKey
	for keys := 0; ; keys += limit {
		if keys >= MaxKeys {
			return true, nil
		}
		rows, next, err := q.UsageHours(ctx, readmodels.UsageFilter{OrgID: org, Scope: scope, From: from, To: to, After: after, Limit: min(limit, MaxKeys-keys)})
		if err != nil {
			return false, fmt.Errorf("report: %w", err)
		}
		if err := fn(rows); err != nil {
			return false, err
		}
		if next == nil {
			return false, nil
		}
		after = next
	}
}

// totals is every key's usage over [from, to), one bucket each.
func totals(ctx context.Context, q *readmodels.Queries, org, scope string, from, to time.Time) ([]rollup.Bucket, bool, error) {
	var out []rollup.Bucket
	truncated, err := eachPage(ctx, q, org, scope, from, to, func(rows []readmodels.UsageHour) error {
		out = append(out, rollup.Totals(rows, from, to)...)
		return nil
	})
	return out, truncated, err
}

// orgHours is the organization's own hourly rows (scope org) in [from, to).
func (b *builder) orgHours(ctx context.Context, from, to time.Time) ([]readmodels.UsageHour, error) {
	rows, _, err := b.q.UsageHours(ctx, readmodels.UsageFilter{OrgID: b.req.OrgID, Scope: readmodels.UsageScopeOrg, From: from, To: to, Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return rows, nil
}
