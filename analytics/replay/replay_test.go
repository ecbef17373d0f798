package replay_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/replay"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
)

func appendWindows(t *testing.T, st *eventstore.Store, ws []domain.UsageRecorded) eventstore.AppendResult {
	t.Helper()
	var evs []eventstore.EventData
	for _, w := range ws {
		p, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: p})
	}
	res, err := st.Append(context.Background(), domain.NodeFactsStream("n1"), eventstore.AnyVersion, evs...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func window(org, tunnel string, start time.Time, requests, in, out, streamedMS int64) domain.UsageRecorded {
	return domain.UsageRecorded{NodeID: "n1", OrgID: org, TunnelID: tunnel, CallerKind: domain.CallerAnonymous,
		WindowStart: start, WindowEnd: start.Add(10 * time.Second), Requests: requests, BytesIn: in, BytesOut: out, StreamedMS: streamedMS}
}

func TestTheSeriesIsTheLogsWindowsSummedByHourAsOfAnyTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := logtest.Start(t, 20*time.Millisecond)
	now := time.Now().UTC()
	h0 := now.Truncate(time.Hour).Add(-48 * time.Hour) // the first of 48 whole hours before now

	// Batch A: hours 0..23 for tunnel t1 (two windows an hour), another tunnel and another org.
	var a []domain.UsageRecorded
	want := make([]float64, 48)
	for h := range 24 {
		at := h0.Add(time.Duration(h) * time.Hour)
		a = append(a, window("o1", "t1", at, int64(h+1), 100, 1000, 0), window("o1", "t1", at.Add(59*time.Minute+50*time.Second), 2, 1, 1, 1_800_000))
		a = append(a, window("o1", "t2", at, 1000, 0, 0, 0), window("o2", "t1", at, 5000, 0, 0, 0))
		want[h] = float64(h + 3)
	}
	bad := window("o1", "t1", h0, -7, 0, 0, 0) // a broken node's window: left out, counted
	resA := appendWindows(t, l.Store, append(a, bad))
	asOfA := resA.RecordedAt

	// Batch B: hours 24..47, recorded later.
	var b []domain.UsageRecorded
	for h := 24; h < 48; h++ {
		b = append(b, window("o1", "t1", h0.Add(time.Duration(h)*time.Hour), 10, 0, 0, 0))
		want[h] = 10
	}
	for !time.Now().After(asOfA) {
	}
	appendWindows(t, l.Store, b)

	got, err := replay.Hourly(ctx, l.Store, replay.Request{OrgID: "o1", TunnelID: "t1", Metric: replay.Requests, History: 48 * time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Start.Equal(h0) || !reflect.DeepEqual(got.Values, want) || got.Windows != 72 || got.Skipped != 1 {
		t.Fatalf("start %v (want %v), windows %d, skipped %d, values %v\nwant %v", got.Start, h0, got.Windows, got.Skipped, got.Values, want)
	}

	// As of batch A's time: only what the log held then, whatever came after.
	asOf := replay.Request{OrgID: "o1", TunnelID: "t1", Metric: replay.Requests, History: 48 * time.Hour, AsOf: asOfA}
	past, err := replay.Hourly(ctx, l.Store, asOf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if past.Position != resA.LastPosition || past.Windows != 48 {
		t.Fatalf("as of A: position %d (A ended at %d), windows %d", past.Position, resA.LastPosition, past.Windows)
	}
	for h, v := range past.Values {
		if h < 24 && v != want[h] || h >= 24 && v != 0 {
			t.Fatalf("as of A, hour %d: %v", h, v)
		}
	}
	appendWindows(t, l.Store, b) // more history later changes nothing about then
	again, err := replay.Hourly(ctx, l.Store, asOf, time.Now())
	if err != nil || !reflect.DeepEqual(again, past) {
		t.Fatalf("replayed again: %v, %+v != %+v", err, again, past)
	}

	// The other metrics, for the whole organization.
	org := replay.Request{OrgID: "o1", Metric: replay.Bytes, History: 48 * time.Hour, AsOf: asOfA}
	bytes, err := replay.Hourly(ctx, l.Store, org, time.Now())
	if err != nil || bytes.Values[5] != 1100+2 {
		t.Fatalf("bytes: %v %v", err, bytes.Values)
	}
	org.Metric = replay.Streams
	streams, err := replay.Hourly(ctx, l.Store, org, time.Now())
	if err != nil || streams.Values[5] != 0.5 {
		t.Fatalf("streams (30 min open in the hour = 0.5 on average): %v %v", err, streams.Values)
	}
}

func TestBadReplayRequestsAreRefused(t *testing.T) {
	t.Parallel()
	l := logtest.Start(t, 20*time.Millisecond)
	now := time.Now()
	for name, tc := range map[string]struct {
		req  replay.Request
		want error
	}{
		"no org":         {replay.Request{Metric: replay.Requests}, replay.ErrInvalid},
		"unknown metric": {replay.Request{OrgID: "o", Metric: "latency"}, replay.ErrInvalid},
		"future as-of":   {replay.Request{OrgID: "o", Metric: replay.Requests, AsOf: now.Add(time.Hour)}, replay.ErrInvalid},
		"history 0 < h":  {replay.Request{OrgID: "o", Metric: replay.Requests, History: time.Minute}, replay.ErrInvalid},
		"history huge":   {replay.Request{OrgID: "o", Metric: replay.Requests, History: 100 * 8766 * time.Hour}, replay.ErrInvalid},
		"before the log": {replay.Request{OrgID: "o", Metric: replay.Requests, AsOf: now.Add(-24 * time.Hour)}, replay.ErrNoData},
		"no usage":       {replay.Request{OrgID: "o", Metric: replay.Requests}, replay.ErrNoData},
	} {
		if _, err := replay.Hourly(context.Background(), l.Store, tc.req, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}
