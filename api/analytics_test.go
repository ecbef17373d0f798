package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/analytics/chargeback"
	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
)

// Usage of March 2027 (in the future, so price sheets may still be set for it): 13–17 March
// around a price change at local midnight of the 15th, and 27–30 March around the DST change of
// the 28th in Berlin.
func TestAnalyticsUsageChargebackAndAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	orgA := e.createOrg(root, "acme", "alice")
	orgB := e.createOrg(root, "globex", "bob")
	e.grant(orgA, "carol", domain.RoleAuditor)
	e.grant(orgA, "victor", domain.RoleViewer)
	alice, bob, carol, victor := e.token("alice"), e.token("bob"), e.token("carol"), e.token("victor")
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	e.write(200, "PUT", "/api/v1/analytics/settings?org=acme", alice, map[string]string{"time_zone": "Europe/Berlin"})
	if r := e.call("PUT", "/api/v1/analytics/settings?org=acme", alice, map[string]string{"time_zone": "Mars/Olympus"}); r.status != 422 {
		t.Fatalf("unknown zone: %d %s", r.status, r.body)
	}

	t1, t2 := uuid.NewString(), uuid.NewString()
	key := uuid.NewString()
	var hours []time.Time
	for _, span := range [][2]time.Time{{time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 17, 0, 0, 0, 0, time.UTC)},
		{time.Date(2027, 3, 27, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 30, 0, 0, 0, 0, time.UTC)}} {
		for h := span[0]; h.Before(span[1]); h = h.Add(time.Hour) {
			hours = append(hours, h)
		}
	}
	var evs []eventstore.EventData
	for _, h := range hours {
		for _, u := range []*domain.UsageRecorded{logtest.UsageWindow(orgA, t1, domain.CallerUser, "alice", h), logtest.UsageWindow(orgA, t2, domain.CallerAccessKey, key, h),
			logtest.UsageWindow(orgB, uuid.NewString(), domain.CallerAnonymous, "", h)} {
			raw, err := json.Marshal(u)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: raw})
		}
	}
	res, err := e.store.Append(context.Background(), domain.NodeFactsStream(uuid.NewString()), eventstore.AnyVersion, evs...)
	if err != nil {
		t.Fatal(err)
	}
	wait := fmt.Sprint(res.LastPosition)

	// Prices: from the start of March (local), doubled from local midnight of the 15th.
	marchStart, change := time.Date(2027, 3, 1, 0, 0, 0, 0, berlin), time.Date(2027, 3, 15, 0, 0, 0, 0, berlin)
	sheet := func(from time.Time, f int) map[string]string {
		p := func(s string) string {
			r, _ := new(big.Rat).SetString(s)
			return r.Mul(r, big.NewRat(int64(f), 1)).FloatString(3)
		}
		return map[string]string{"effective_from": from.Format(time.RFC3339), "currency": "EUR", "per_gb_in": p("0.01"), "per_gb_out": p("0.02"),
			"per_1k_requests": p("0.001"), "per_streamed_hour": p("0.1"), "per_tunnel_day": p("1")}
	}
	e.write(201, "POST", "/api/v1/analytics/price-sheets?org=acme", alice, sheet(marchStart, 1))
	last := e.write(201, "POST", "/api/v1/analytics/price-sheets?org=acme", alice, sheet(change, 2))
	past := sheet(time.Now().Add(-2*time.Hour).Truncate(time.Hour), 1)
	if r := e.call("POST", "/api/v1/analytics/price-sheets?org=acme", alice, past); r.status != 422 {
		t.Fatalf("a sheet in the past: %d %s, want 422", r.status, r.body)
	}
	if r := e.call("POST", "/api/v1/analytics/price-sheets?org=acme", carol, sheet(change, 3)); r.status != 403 {
		t.Fatalf("an auditor sets prices: %d, want 403", r.status)
	}
	wait = fmt.Sprint(max(res.LastPosition, last.Position))

	usage := func(tok, org, groupBy, gran string, from, to time.Time, extra string) api.UsageReport {
		t.Helper()
		v := url.Values{"org": {org}, "group_by": {groupBy}, "granularity": {gran}, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}, "wait_for": {wait}}
		var rep api.UsageReport
		e.must(200, "GET", "/api/v1/analytics/usage?"+v.Encode()+extra, tok, nil).decode(t, &rep)
		return rep
	}
	from, to := time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 30, 0, 0, 0, 0, time.UTC)
	n := int64(len(hours))
	// Exact counts per tunnel, per caller and for the org.
	for _, tc := range []struct {
		groupBy string
		keys    int
		perKey  int64
	}{{"tunnel", 2, n}, {"caller", 2, n}, {"org", 1, 2 * n}} {
		rep := usage(alice, "acme", tc.groupBy, "month", from, to, "")
		if len(rep.Items) != tc.keys || rep.TimeZone != "Europe/Berlin" {
			t.Fatalf("%s: %d items in %s, want %d", tc.groupBy, len(rep.Items), rep.TimeZone, tc.keys)
		}
		for _, b := range rep.Items {
			if b.Requests != 1000*tc.perKey || b.BytesIn != 1_000_000_000*tc.perKey || b.BytesOut != 2_000_000_000*tc.perKey || b.StreamedSeconds != 3600*float64(tc.perKey) {
				t.Errorf("%s %+v: requests %d in %d out %d streamed %v, want %d windows' worth", tc.groupBy, b.UsageKey, b.Requests, b.BytesIn, b.BytesOut, b.StreamedSeconds, tc.perKey)
			}
			// p50 of 900 calls at 20 ms and 100 at 400 ms is 20 ms; p95 and p99 400 ms (±4.3%).
			if b.Latency.Count != 1000*tc.perKey || !near(b.Latency.P50, 20) || !near(b.Latency.P95, 400) || !near(b.TTFB.P99, 400) || b.StreamsMax != 3 {
				t.Errorf("%s: latency %+v ttfb %+v streams max %d", tc.groupBy, b.Latency, b.TTFB, b.StreamsMax)
			}
		}
	}
	callers := usage(carol, "acme", "caller", "month", from, to, "")
	if callers.Items[0].CallerKind == "" || callers.Items[1].CallerKind == "" || callers.Items[0].CallerKind == callers.Items[1].CallerKind {
		t.Errorf("callers %+v %+v", callers.Items[0].UsageKey, callers.Items[1].UsageKey)
	}

	// DST: 28 March 2027 in Berlin is 23 hours long; the days hold what the hours hold.
	dstFrom, dstTo := time.Date(2027, 3, 27, 0, 0, 0, 0, berlin), time.Date(2027, 3, 30, 0, 0, 0, 0, berlin)
	days := usage(alice, "acme", "org", "day", dstFrom, dstTo, "")
	hourly := usage(alice, "acme", "org", "hour", dstFrom, dstTo, "")
	var dayTotal, hourTotal int64
	for _, b := range hourly.Items {
		hourTotal += b.Requests
	}
	var dst *rollup.Bucket
	for i, b := range days.Items {
		dayTotal += b.Requests
		if b.Start.Equal(time.Date(2027, 3, 28, 0, 0, 0, 0, berlin)) {
			dst = &days.Items[i]
		}
	}
	if dst == nil || dst.End.Sub(dst.Start) != 23*time.Hour || dst.Hours != 23 || dst.Requests != 23*2000 {
		t.Fatalf("the DST day: %+v", dst)
	}
	if dayTotal != hourTotal || len(days.Items) != 3 || hourTotal == 0 {
		t.Fatalf("days hold %d requests in %d buckets, hours %d", dayTotal, len(days.Items), hourTotal)
	}

	// Paging by tunnel: one a page.
	first := usage(alice, "acme", "tunnel", "day", from, to, "&limit=1")
	if first.NextCursor == "" || first.Items[0].TunnelID == "" {
		t.Fatalf("first page %+v", first)
	}
	second := usage(alice, "acme", "tunnel", "day", from, to, "&limit=1&cursor="+first.NextCursor)
	if len(second.Items) == 0 || second.Items[0].TunnelID == first.Items[0].TunnelID {
		t.Fatalf("second page repeats the first")
	}

	// Chargeback for March: the change on the 15th splits every line in two periods.
	var st chargeback.Statement
	e.must(200, "GET", "/api/v1/analytics/chargeback?org=acme&month=2027-03&wait_for="+wait, alice, nil).decode(t, &st)
	var before, after int64
	for _, h := range hours {
		if h.Before(change) {
			before++
		} else {
			after++
		}
	}
	perWindow := func(f int64) *big.Rat { // 1 GB in, 2 GB out, 1,000 requests, 1 streamed hour
		r, _ := new(big.Rat).SetString("0.151")
		return r.Mul(r, big.NewRat(f, 1))
	}
	lineExact := new(big.Rat).Add(new(big.Rat).Mul(big.NewRat(before, 1), perWindow(1)), new(big.Rat).Mul(big.NewRat(after, 1), perWindow(2)))
	wantLine := chargeback.RoundHalfEven(lineExact, 2).FloatString(2)
	// Active local days: 13, 14 at the first prices; 15, 16, 17, 27, 28, 29, 30 at the second.
	wantDays := "16.00"
	traffic, tunnelDays := 0, 0
	for _, l := range st.Lines {
		switch l.Item {
		case chargeback.ItemTraffic:
			traffic++
			if l.Amount != wantLine || len(l.Periods) != 2 || !l.Periods[0].To.Equal(change) || !l.Periods[1].From.Equal(change) || l.Currency != "EUR" {
				t.Errorf("traffic line %s %s: %s in %d periods, want %s split at %s", l.TunnelID, l.CallerKind, l.Amount, len(l.Periods), wantLine, change)
			}
		case chargeback.ItemTunnelDays:
			tunnelDays++
			if l.Amount != wantDays {
				t.Errorf("tunnel-days line %s: %s, want %s (%+v)", l.TunnelID, l.Amount, wantDays, l.Periods)
			}
		}
	}
	wantTotal := new(big.Rat)
	for range 2 {
		r, _ := new(big.Rat).SetString(wantLine)
		d, _ := new(big.Rat).SetString(wantDays)
		wantTotal.Add(wantTotal, r.Add(r, d))
	}
	if traffic != 2 || tunnelDays != 2 || len(st.Totals) != 1 || st.Totals[0].Amount != wantTotal.FloatString(2) || st.Rounding == "" || len(st.Sheets) != 2 {
		t.Fatalf("statement: %d traffic lines, %d tunnel-day lines, totals %+v (want EUR %s), %d sheets", traffic, tunnelDays, st.Totals, wantTotal.FloatString(2), len(st.Sheets))
	}

	// Capacity: every hour had 3 streams at peak; one node enrolled? none: headroom is negative.
	var capRep api.CapacityReport
	e.must(200, "GET", "/api/v1/analytics/capacity?org=acme&group_by=org&from="+url.QueryEscape(from.Format(time.RFC3339))+"&to="+url.QueryEscape(to.Format(time.RFC3339))+"&wait_for="+wait, alice, nil).decode(t, &capRep)
	if len(capRep.Items) != 1 || capRep.Items[0].PeakStreamsMax != 3 || capRep.Items[0].P95StreamsMax != 3 || capRep.Items[0].PeakRequests != 2000 || capRep.Items[0].NodeCapacity != api.DefaultNodeStreamCapacity {
		t.Fatalf("capacity %+v", capRep.Items)
	}

	// Authorization: another org's admin, and a viewer, may not read acme's usage; the platform may.
	q := "/api/v1/analytics/usage?org=acme&from=2027-03-13T00:00:00Z&to=2027-03-14T00:00:00Z"
	for name, tok := range map[string]string{"another org's owner": bob, "a viewer": victor} {
		if r := e.call("GET", q, tok, nil); r.status != 403 {
			t.Errorf("%s reads acme's usage: %d", name, r.status)
		}
		if r := e.call("GET", "/api/v1/analytics/chargeback?org=acme&month=2027-03", tok, nil); r.status != 403 {
			t.Errorf("%s reads acme's chargeback: %d", name, r.status)
		}
	}
	e.must(200, "GET", q, root, nil)
	if r := usage(bob, "globex", "org", "month", from, to, ""); len(r.Items) != 1 || r.Items[0].Requests != 1000*n {
		t.Errorf("bob's own org: %+v", r.Items)
	}
	_ = orgB

	// Bad parameters are problems, not guesses.
	for _, bad := range []string{"&granularity=year", "&group_by=node", "&from=yesterday", "&bogus=1", "&tunnel=x"} {
		r := e.call("GET", q+bad, alice, nil)
		if r.status != 400 {
			t.Errorf("%s: %d %s", bad, r.status, r.body)
		}
		r.problem(t)
	}
	if r := e.call("GET", "/api/v1/analytics/usage?org=acme&from=2027-03-13T00:00:00Z", alice, nil); r.status != 400 {
		t.Errorf("no to: %d", r.status)
	}
	if r := e.call("GET", "/api/v1/analytics/chargeback?org=acme&month=March", alice, nil); r.status != 400 {
		t.Errorf("bad month: %d", r.status)
	}
}

func near(got, want float64) bool {
	return got >= want*(1-domain.HistogramRelativeError) && got <= want*(1+domain.HistogramRelativeError)
}
