package projections_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

type usageTotals struct {
	requests, errors, bytesIn, bytesOut, streamedMS, streamsMax int64
	latency                                                     [domain.HistogramBuckets]int64
}

func (t *usageTotals) add(u *domain.UsageRecorded) {
	t.requests += u.Requests
	for _, n := range u.Errors {
		t.errors += n
	}
	t.bytesIn += u.BytesIn
	t.bytesOut += u.BytesOut
	t.streamedMS += u.StreamedMS
	t.streamsMax = max(t.streamsMax, u.StreamsMax)
	u.Latency.AddTo(&t.latency)
}

func (t *usageTotals) check(tb testing.TB, what string, h readmodels.UsageHour) {
	tb.Helper()
	if h.Requests != t.requests || h.Errors != t.errors || h.BytesIn != t.bytesIn || h.BytesOut != t.bytesOut || h.StreamedMS != t.streamedMS ||
		h.StreamsMax != t.streamsMax {
		tb.Errorf("%s at %s: requests %d errors %d in %d out %d streamed %d max %d; want %d %d %d %d %d %d", what, h.Hour, h.Requests, h.Errors,
			h.BytesIn, h.BytesOut, h.StreamedMS, h.StreamsMax, t.requests, t.errors, t.bytesIn, t.bytesOut, t.streamedMS, t.streamsMax)
	}
	var got [domain.HistogramBuckets]int64
	h.Latency.AddTo(&got)
	if got != t.latency {
		tb.Errorf("%s at %s: merged latency histogram differs from the sum of the windows'", what, h.Hour)
	}
}

// Windows from several nodes, tunnels and callers land in the hourly rollups per tunnel, per
// caller and per org with exact counts and merged histograms; a window across an hour boundary
// counts in the hour it starts in; invalid windows are skipped and counted, and the projection
// goes on; a rebuild gives the same rows.
func TestUsageWindowsRollUpExactlyPerTunnelCallerAndOrg(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := logtest.Start(t, 50*time.Millisecond)
	st := log.Store
	r, err := projections.New(projections.Config{Store: st, Projections: projections.All(), BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)

	org := uuid.NewString()
	tunnels := []string{uuid.NewString(), uuid.NewString()}
	callers := []readmodels.UsageKey{{CallerKind: domain.CallerUser, CallerID: "alice"}, {CallerKind: domain.CallerAccessKey, CallerID: uuid.NewString()},
		{CallerKind: domain.CallerAnonymous}}
	nodes := []string{uuid.NewString(), uuid.NewString()}
	base := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	want := map[readmodels.UsageKey]map[time.Time]*usageTotals{}
	add := func(k readmodels.UsageKey, hour time.Time, u *domain.UsageRecorded) {
		if want[k] == nil {
			want[k] = map[time.Time]*usageTotals{}
		}
		if want[k][hour] == nil {
			want[k][hour] = &usageTotals{}
		}
		want[k][hour].add(u)
	}
	rnd := rand.New(rand.NewPCG(7, 8))
	var last uint64
	byNode := map[string][]eventstore.EventData{}
	for i := range 300 {
		start := base.Add(time.Duration(i%360) * 20 * time.Second)
		if i == 299 {
			start = base.Add(time.Hour - 5*time.Second) // spans 10:59:55–11:00:05: counts in 10:00
		}
		tun, c, node := tunnels[i%2], callers[i%3], nodes[i%2]
		var lat [domain.HistogramBuckets]int64
		for range 1 + rnd.IntN(5) {
			lat[domain.HistogramIndex(time.Duration(rnd.IntN(500_000))*time.Microsecond)]++
		}
		u := &domain.UsageRecorded{NodeID: node, OrgID: org, TunnelID: tun, WindowStart: start, WindowEnd: start.Add(10 * time.Second),
			CallerKind: c.CallerKind, CallerID: c.CallerID, Requests: int64(1 + rnd.IntN(50)), BytesIn: rnd.Int64N(1 << 30), BytesOut: rnd.Int64N(1 << 32),
			StreamsMax: int64(rnd.IntN(9)), StreamedMS: rnd.Int64N(80_000), Latency: domain.HistogramOf(&lat), TTFB: domain.HistogramOf(&lat)}
		if i%11 == 0 {
			u.Latency, u.TTFB = nil, nil // a window with no finished call
		}
		if i%7 == 0 {
			u.Errors = map[string]int64{"upstream": 1, "timeout": int64(rnd.IntN(3))}
		}
		byNode[node] = append(byNode[node], event(t, u))
		hour := start.Truncate(time.Hour)
		add(readmodels.UsageKey{TunnelID: tun}, hour, u)
		add(readmodels.UsageKey{TunnelID: tun, CallerKind: c.CallerKind, CallerID: c.CallerID}, hour, u)
		add(readmodels.UsageKey{}, hour, u)
		if i == 150 {
			// Hostile windows: a negative count (Validate) and a tunnel id PostgreSQL would refuse.
			bad := *u
			bad.Requests = -1
			notUUID := *u
			notUUID.TunnelID = "not-a-uuid"
			byNode[node] = append(byNode[node], event(t, &bad), event(t, &notUUID))
		}
	}
	for node, evs := range byNode {
		res, err := st.Append(ctx, domain.NodeFactsStream(node), eventstore.AnyVersion, evs...)
		if err != nil {
			t.Fatal(err)
		}
		last = max(last, res.LastPosition)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := r.WaitFor(wctx, last, projections.Usage); err != nil {
		t.Fatal(err)
	}
	q := readmodels.New(log.Pool)
	check := func(label string) {
		t.Helper()
		for _, scope := range []string{readmodels.UsageScopeTunnel, readmodels.UsageScopeCaller, readmodels.UsageScopeOrg} {
			rows, next, err := q.UsageHours(ctx, readmodels.UsageFilter{OrgID: org, Scope: scope, From: base.Add(-time.Hour), To: base.Add(3 * time.Hour), Limit: 100})
			if err != nil || next != nil {
				t.Fatalf("%s %s: %v (next %v)", label, scope, err, next)
			}
			seen := 0
			for _, h := range rows {
				k := h.UsageKey
				if scope == readmodels.UsageScopeTunnel {
					k.CallerKind, k.CallerID = "", ""
				}
				w := want[k][h.Hour]
				if w == nil {
					t.Fatalf("%s %s: unexpected row %+v at %s", label, scope, k, h.Hour)
				}
				w.check(t, label+" "+scope, h)
				seen++
			}
			wantRows := map[string]int{readmodels.UsageScopeTunnel: 2 * 2, readmodels.UsageScopeCaller: 6 * 2, readmodels.UsageScopeOrg: 2}[scope]
			if seen != wantRows {
				t.Errorf("%s %s: %d rows, want %d", label, scope, seen, wantRows)
			}
		}
		n, pos, reason, err := q.UsageSkipped(ctx)
		if err != nil || n != 2 || pos < 0 || reason == "" {
			t.Errorf("%s: skipped %d (last %d %q) %v, want 2", label, n, pos, reason, err)
		}
	}
	check("live")
	// The window that spans 11:00 counts in 10:00: 11:00 holds no row of the org.
	if _, err := r.Rebuild(ctx, projections.Usage, nil); err != nil {
		t.Fatal(err)
	}
	check("rebuilt")

	// Paging over keys: one tunnel a page, every key once.
	var after *readmodels.UsageKey
	var pages []string
	for range 5 {
		rows, next, err := q.UsageHours(ctx, readmodels.UsageFilter{OrgID: org, Scope: readmodels.UsageScopeTunnel, From: base, To: base.Add(2 * time.Hour), Limit: 1, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) > 0 {
			pages = append(pages, rows[0].TunnelID)
		}
		if next == nil {
			break
		}
		after = next
	}
	if len(pages) != 2 || pages[0] == pages[1] {
		t.Fatalf("pages %v, want both tunnels once", pages)
	}
}
