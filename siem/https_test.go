package siem_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/internal/hectest"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/siem"
)

// hec is a HEC collector (internal/hectest) the tests deliver to.
type hec struct{ *hectest.Server }

func newHEC(t *testing.T, token string, busy int) *hec {
	h := &hec{hectest.New(t, token)}
	h.Busy(busy, 0)
	return h
}

func (h *hec) received() map[string][]string { return h.Received() }

func (h *hec) sink(t *testing.T, token string) *siem.HTTPS {
	t.Helper()
	s, err := siem.NewHTTPS(siem.HTTPSConfig{URL: h.URL(), Profile: siem.ProfileHEC, Token: token, TLS: h.TLSConfig(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Through a HEC that is busy at first, every record arrives once or more under its own sequence
// number; a bad token is a refusal the sink reports and retries without moving on or printing
// the token, and the right token then delivers everything.
func TestTheLogReachesAnHTTPEventCollector(t *testing.T) {
	t.Parallel()
	h := newHEC(t, "right-token", 3)
	log := logtest.Start(t, 10*time.Millisecond)
	appendOrgs(t, log.Store, 600)
	n, err := log.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := siem.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	forward := func(token string) *siem.Forwarder {
		f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "hec-test", Store: log.Store, Pool: log.Pool, Transport: h.sink(t, token), Metrics: metrics,
			Format: siem.HECFormat("cp-1", "ocsf", ocsfBody), BatchSize: 100, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Stop)
		return f
	}

	wrong := forward("wrong-token-x7")
	deadline := time.Now().Add(10 * time.Second)
	for !wrong.Status().Refused || wrong.Status().Retries < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("a bad token was not reported as a refusal: %+v", wrong.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := wrong.Status()
	if !strings.Contains(st.LastError, "Invalid token (code 4)") || strings.Contains(st.LastError, "wrong-token-x7") || st.Position != 0 || st.Delivered != 0 {
		t.Fatalf("refused: %+v", st)
	}
	if v := metric(t, reg, "tunnelplane_siem_refused", "hec-test"); v != 1 {
		t.Fatalf("tunnelplane_siem_refused = %v while refused, want 1 (the alert)", v)
	}
	if v := metric(t, reg, "tunnelplane_siem_lag_events", "hec-test"); v != float64(n) {
		t.Fatalf("tunnelplane_siem_lag_events = %v, want %d", v, n)
	}
	wrong.Stop()

	right := forward("right-token")
	deadline = time.Now().Add(30 * time.Second)
	for right.Status().Seq < n {
		if time.Now().After(deadline) {
			t.Fatalf("delivered up to sequence %d of %d within 30s: %+v", right.Status().Seq, n, right.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if right.Status().Retries < 3 {
		t.Fatalf("the busy collector's 503s were not retried: %+v", right.Status())
	}
	poll.Until(t, 5*time.Second, "lag back to 0", func() bool { return metric(t, reg, "tunnelplane_siem_lag_events", "hec-test") == 0 })
	if metric(t, reg, "tunnelplane_siem_refused", "hec-test") != 0 || metric(t, reg, "tunnelplane_siem_delivered_total", "hec-test") < float64(n) ||
		metric(t, reg, "tunnelplane_siem_delivery_failures_total", "hec-test") < 5 {
		t.Fatalf("metrics after delivery: refused %v, delivered %v, failures %v", metric(t, reg, "tunnelplane_siem_refused", "hec-test"),
			metric(t, reg, "tunnelplane_siem_delivered_total", "hec-test"), metric(t, reg, "tunnelplane_siem_delivery_failures_total", "hec-test"))
	}
	got := h.received()
	recs, err := log.Store.ReadAll(context.Background(), 0, int(n))
	if err != nil {
		t.Fatal(err)
	}
	for i, rec := range recs {
		ids := got[fmt.Sprint(i+1)]
		if len(ids) == 0 || ids[0] != rec.EventID.String() {
			t.Fatalf("sequence %d: %q, want event %s", i+1, ids, rec.EventID)
		}
	}
	if uint64(len(got)) != n {
		t.Fatalf("the collector holds %d sequence numbers, the log %d records", len(got), n)
	}
}

// metric is the sum of name's samples for sink.
func metric(t *testing.T, reg *prometheus.Registry, name, sink string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink_id" && l.GetValue() == sink {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// The plain JSON profile posts one array per batch; a configuration that could leak or misroute
// the token is refused up front.
func TestJSONProfileAndHTTPSConfig(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var batches []int
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var arr []json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&arr); err != nil || r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		batches = append(batches, len(arr))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	s, err := siem.NewHTTPS(siem.HTTPSConfig{URL: srv.URL + "/ingest", Profile: siem.ProfileJSON, Token: "tok",
		TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	if err != nil {
		t.Fatal(err)
	}
	docs := [][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`), []byte(`[3]`)}
	if err := s.Deliver(context.Background(), docs); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(batches) != 1 || batches[0] != 3 {
		t.Fatalf("batches %v, want one of 3", batches)
	}
	mu.Unlock()

	err = siem.HTTPSConfig{URL: "http://user:pw@x/", Profile: "xml", Token: "a\nb"}.Validate()
	for _, want := range []string{"https://", "profile", "one line"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config error %v does not say %q", err, want)
		}
	}
	if err := (siem.HTTPSConfig{URL: "https://x/", Profile: siem.ProfileHEC}).Validate(); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("a hec sink without a token: %v", err)
	}
}

// A record the receiver refuses for good holds the sink there: every record before it is
// delivered (the refused batch is tried one message at a time to find it), the sink names it and
// retries it, and it goes only when an operator skips it. The skipped record keeps its sequence
// number, so the receiver sees the gap; what the sink did is recorded beside its cursor.
func TestARefusedRecordIsFoundAndHeldUntilSkipped(t *testing.T) {
	t.Parallel()
	h := newHEC(t, "tok", 0)
	log := logtest.Start(t, 10*time.Millisecond)
	appendOrgs(t, log.Store, 300)
	recs, err := log.Store.ReadAll(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	poison := recs[149] // sequence 150
	h.Refuse(poison.EventID.String())
	f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "poison", Store: log.Store, Pool: log.Pool, Transport: h.sink(t, "tok"),
		Format: siem.HECFormat("cp-1", "ocsf", ocsfBody), BatchSize: 100, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	poll.Until(t, 20*time.Second, "the refused record named", func() bool { return f.Status().StuckPosition == poison.Position })
	st := f.Status()
	if !st.Refused || st.Seq != 149 || st.Position != poison.Position {
		t.Fatalf("stuck: %+v, want everything before sequence 150 delivered", st)
	}
	var stuck *int64
	var refused bool
	var retries int64
	// Recorded beside the cursor right after the status (best effort, so a moment later).
	poll.Until(t, 10*time.Second, "the refused record recorded beside the cursor", func() bool {
		if err := log.Pool.QueryRow(context.Background(), `SELECT stuck_position, refused, retries FROM siem_cursors WHERE sink_id = 'poison'`).
			Scan(&stuck, &refused, &retries); err != nil {
			t.Fatal(err)
		}
		return stuck != nil && uint64(*stuck) == poison.Position && refused && retries >= 1
	})
	time.Sleep(100 * time.Millisecond)
	if got := f.Status(); got.Seq != 149 {
		t.Fatalf("the sink moved past a refused record by itself: %+v", got)
	}

	f.Skip([]uint64{poison.Position})
	poll.Until(t, 20*time.Second, "everything after the skipped record delivered", func() bool { return f.Status().Seq == uint64(len(recs)) })
	got := h.received()
	for i, rec := range recs {
		ids := got[fmt.Sprint(i+1)]
		switch {
		case rec.Position == poison.Position && len(ids) != 0:
			t.Fatalf("the skipped record arrived: %v", ids)
		case rec.Position != poison.Position && (len(ids) == 0 || ids[0] != rec.EventID.String()):
			t.Fatalf("sequence %d: %q, want event %s", i+1, ids, rec.EventID)
		}
	}
	if st := f.Status(); st.Refused || st.StuckPosition != 0 || st.LastError != "" {
		t.Fatalf("after the skip: %+v", st)
	}
}
