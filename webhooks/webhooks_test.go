package webhooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/webhooks"
)

// The example of the Standard Webhooks specification (and of its libraries' tests).
func TestSignMatchesTheSpecificationExample(t *testing.T) {
	t.Parallel()
	key, err := webhooks.SecretKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := webhooks.Sign([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	if two := webhooks.Sign([][]byte{key, key}, "m", 1, nil); strings.Count(two, "v1,") != 2 || !strings.Contains(two, " ") {
		t.Fatalf("two keys: %q", two)
	}
	for _, bad := range []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_AAAA"} {
		if _, err := webhooks.SecretKey(bad); !errors.Is(err, webhooks.ErrSecret) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if s := webhooks.NewSecret(); !strings.HasPrefix(s, "whsec_") || s == webhooks.NewSecret() {
		t.Fatalf("NewSecret %q", s)
	}
}

func TestMessageIDIsStablePerEndpoint(t *testing.T) {
	t.Parallel()
	ev := uuid.New()
	a, b := uuid.NewString(), uuid.NewString()
	if webhooks.MessageID(a, ev) != webhooks.MessageID(a, ev) || webhooks.MessageID(a, ev) == webhooks.MessageID(b, ev) ||
		webhooks.MessageID(a, ev) == webhooks.MessageID(a, uuid.New()) || !strings.HasPrefix(webhooks.MessageID(a, ev), "msg_") {
		t.Fatal("a message id is the same for one event and endpoint, and differs otherwise")
	}
}

// Without the operator's leave, the client refuses loopback addresses after resolution (a name
// that resolves to one is no way around it), so a delivery never reaches the receiver.
func TestClientRefusesInternalAddresses(t *testing.T) {
	t.Parallel()
	hit := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit <- struct{}{} }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	for _, u := range []string{srv.URL, "http://localhost" + port} {
		_, err := webhooks.NewClient(time.Second, false).Post(u, "application/json", nil)
		if !errors.Is(err, webhooks.ErrInternalAddress) {
			t.Fatalf("%s: %v, want ErrInternalAddress", u, err)
		}
	}
	if len(hit) != 0 {
		t.Fatal("the receiver was reached")
	}
	res, err := webhooks.NewClient(time.Second, true).Post(srv.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}

// delivery is one request a receiver got.
type delivery struct {
	id, timestamp, signature string
	body                     []byte
	status                   int
}

// receiver records deliveries; fail decides the status of each (nil: 200).
type receiver struct {
	mu   sync.Mutex
	got  []delivery
	fail func(id string, tries int) int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	d := delivery{id: req.Header.Get("webhook-id"), timestamp: req.Header.Get("webhook-timestamp"), signature: req.Header.Get("webhook-signature"),
		body: body, status: 200}
	if r.fail != nil {
		tries := 1
		for _, g := range r.got {
			if g.id == d.id {
				tries++
			}
		}
		d.status = r.fail(d.id, tries)
	}
	r.got = append(r.got, d)
	r.mu.Unlock()
	w.WriteHeader(d.status)
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// appendNotifications appends n access.requested events of org (and one of another org).
func appendNotifications(t *testing.T, st *eventstore.Store, org string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n + 1 {
		o := org
		if i == n {
			o = uuid.NewString()
		}
		req := uuid.NewString()
		b, _ := json.Marshal(domain.AccessRequested{RequestID: req, OrgID: o, TunnelID: uuid.NewString(), Requester: "bob", DurationSeconds: 3600, Reason: "on call"})
		if _, err := st.Append(context.Background(), domain.SharingStream(uuid.NewString()), eventstore.NoStream,
			eventstore.EventData{Type: domain.TypeAccessRequested, Payload: b}); err != nil {
			t.Fatal(err)
		}
		if o == org {
			ids = append(ids, req)
		}
	}
	return ids
}

// A receiver that answers 503 to the first try of every message gets each again, under the same
// webhook-id and body; the cursor records delivered, retried and failed; only the endpoint's
// organization's events arrive.
func TestRedeliveryAfter503KeepsTheWebhookID(t *testing.T) {
	t.Parallel()
	log := logtest.Start(t, 10*time.Millisecond)
	r := &receiver{fail: func(_ string, tries int) int {
		if tries == 1 {
			return http.StatusServiceUnavailable
		}
		return 200
	}}
	srv := httptest.NewServer(r)
	defer srv.Close()
	org := uuid.NewString()
	key, _ := webhooks.SecretKey(webhooks.NewSecret())
	ep := webhooks.Endpoint{ID: uuid.NewString(), OrgID: org, URL: srv.URL, Keys: [][]byte{key}}
	d, err := webhooks.NewDeliverer(webhooks.Config{Endpoint: ep, Store: log.Store, Pool: log.Pool, Client: webhooks.NewClient(5*time.Second, true),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	want := appendNotifications(t, log.Store, org, 3)
	poll.Until(t, 30*time.Second, "three messages delivered", func() bool { return d.Status().Delivered == 3 })
	got := r.deliveries()
	if len(got) != 6 {
		t.Fatalf("%d requests, want 6 (each message twice)", len(got))
	}
	for i := 0; i < 6; i += 2 {
		first, again := got[i], got[i+1]
		if first.status != 503 || again.status != 200 || first.id != again.id || string(first.body) != string(again.body) {
			t.Fatalf("try %d: %s %d then %s %d: want the same id and body, 503 then 200", i/2, first.id, first.status, again.id, again.status)
		}
		var m webhooks.Message
		if err := json.Unmarshal(again.body, &m); err != nil {
			t.Fatal(err)
		}
		var data domain.AccessRequested
		_ = json.Unmarshal(m.Data, &data)
		if m.Type != domain.TypeAccessRequested || m.OrgID != org || data.RequestID != want[i/2] {
			t.Fatalf("message %d: %+v, want request %s of org %s", i/2, m, want[i/2], org)
		}
	}
	var delivered, retried, failed int64
	var lastErr string
	if err := log.Pool.QueryRow(context.Background(), `SELECT delivered, retried, failed, last_error FROM webhook_cursors WHERE endpoint_id = $1`, ep.ID).
		Scan(&delivered, &retried, &failed, &lastErr); err != nil {
		t.Fatal(err)
	}
	if delivered != 3 || retried != 3 || failed != 3 || !strings.Contains(lastErr, "503") {
		t.Fatalf("cursor: delivered %d retried %d failed %d last error %q", delivered, retried, failed, lastErr)
	}
}

// The deliverer keeps the lifecycle rules: a second Start starts nothing, Stop waits and is safe
// twice, a stopped one does not start again.
func TestDelivererStartStopStress(t *testing.T) {
	t.Parallel()
	log := logtest.Start(t, 10*time.Millisecond)
	key, _ := webhooks.SecretKey(webhooks.NewSecret())
	lifecycletest.StartStopStress(t, 5, func() lifecycletest.Component {
		d, err := webhooks.NewDeliverer(webhooks.Config{Endpoint: webhooks.Endpoint{ID: uuid.NewString(), OrgID: uuid.NewString(), URL: "http://127.0.0.1:9", Keys: [][]byte{key}},
			Store: log.Store, Pool: log.Pool, Client: webhooks.NewClient(time.Second, true)})
		if err != nil {
			t.Fatal(err)
		}
		return lifecycletest.Component{Start: d.Start, Stop: d.Stop}
	})
}

// What an endpoint receives: its organization's events of the types it named (none: every
// notification type), a scheduled report's schedule id and a forecast's event (a type this
// build may not know) included: the payload goes as the log holds it.
func TestMatchesAndBody(t *testing.T) {
	t.Parallel()
	org := uuid.NewString()
	rec := func(typ, payload string) *eventstore.Record {
		return &eventstore.Record{Type: typ, Payload: []byte(payload), EventID: uuid.New(), Position: 42, RecordedAt: time.Unix(1764690000, 0),
			Metadata: []byte(`{"actor":"system:schedules","correlation_id":"c1","causation_id":"s1"}`)}
	}
	report := rec(domain.TypeReportGenerated, `{"report_id":"r1","report":"soc2","org_id":"`+org+`","schedule_id":"sch-7"}`)
	forecast := rec(domain.NotificationForecastExceeded, `{"org_id":"`+org+`","tunnel_id":"t1","metric":"requests"}`)
	other := rec(domain.TypeReportGenerated, `{"report_id":"r2","org_id":"`+uuid.NewString()+`"}`)
	platform := rec(domain.TypeReportGenerated, `{"report_id":"r3"}`)
	usage := rec(domain.TypeUsageRecorded, `{"org_id":"`+org+`"}`)
	for _, c := range []struct {
		types []string
		rec   *eventstore.Record
		want  bool
	}{
		{nil, report, true}, {nil, forecast, true}, {nil, other, false}, {nil, platform, false}, {nil, usage, false},
		{[]string{domain.TypeAccessRequested}, report, false},
		{[]string{domain.NotificationForecastExceeded}, forecast, true},
	} {
		if got := webhooks.Matches(org, c.types, c.rec); got != c.want {
			t.Errorf("types %v, %s %s: %v, want %v", c.types, c.rec.Type, c.rec.Payload, got, c.want)
		}
	}
	b, err := webhooks.Body(report)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	data, _ := m["data"].(map[string]any)
	if m["type"] != "report.generated" || m["position"] != float64(42) || m["org_id"] != org || m["causation_id"] != "s1" ||
		m["timestamp"] != "2025-12-02T15:40:00Z" || data["schedule_id"] != "sch-7" {
		t.Fatalf("body %s", b)
	}
}
