package controlapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/webhooks"
)

// hookReceiver records every delivery; while failFirst, the first try of each message is 503.
type hookReceiver struct {
	mu        sync.Mutex
	failFirst bool
	got       []hookDelivery
}

type hookDelivery struct {
	ID        string `json:"id"`
	Timestamp string `json:"timestamp"`
	Signature string `json:"signature"`
	Body      string `json:"body"`
	status    int
	msg       webhooks.Message
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	d := hookDelivery{ID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"), Signature: req.Header.Get("webhook-signature"),
		Body: string(body), status: 200}
	_ = json.Unmarshal(body, &d.msg)
	r.mu.Lock()
	if r.failFirst {
		seen := false
		for _, g := range r.got {
			seen = seen || g.ID == d.ID
		}
		if !seen {
			d.status = http.StatusServiceUnavailable
		}
	}
	r.got = append(r.got, d)
	r.mu.Unlock()
	w.WriteHeader(d.status)
}

func (r *hookReceiver) deliveries() []hookDelivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookDelivery(nil), r.got...)
}

// taken is the event ids the receiver answered 2xx, by type.
func (r *hookReceiver) taken() map[string]string {
	out := map[string]string{}
	for _, d := range r.deliveries() {
		if d.status == 200 {
			out[d.msg.EventID] = d.msg.Type
		}
	}
	return out
}

// freeAddr is a loopback address no one listens on (a moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	return probe.Addr().String()
}

// serveOn serves r on addr (retrying while the port is not free yet), until the returned stop.
func serveOn(t *testing.T, addr string, r http.Handler) (stop func()) {
	t.Helper()
	var ln net.Listener
	poll.Until(t, 10*time.Second, "listening on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = srv.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// apiClient calls a control plane's API.
type apiClient struct {
	t    *testing.T
	base string
}

func (c apiClient) call(want int, method, path, tok string, body any) map[string]any {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, raw)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}

// TestWebhooksAtLeastOnceAcrossARestart: an endpoint configured through the API receives the
// access-request flow's events (requested, approved, grant created, grant about to expire,
// denied), signed so that the official standardwebhooks library verifies them; a 503 is retried
// under the same webhook-id; a receiver down while more is written, across a restart of the
// control plane, gets every event once it is back; GET /webhooks/{id} reports what happened.
func TestWebhooksAtLeastOnceAcrossARestart(t *testing.T) {
	t.Parallel()
	db, dir := pgtest.NewEmptyDatabase(t), t.TempDir()
	start := func() *controlapp.App {
		a, err := controlapp.New(controlapp.Config{DatabaseURL: db, DataDir: dir, APIAddr: "127.0.0.1:0", WebhookAllowPrivate: true,
			WebhookPoll: 50 * time.Millisecond, WebhookMinBackoff: 20 * time.Millisecond, WebhookMaxBackoff: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		if err := a.Start(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := start()
	tok := func(a *controlapp.App, user string) string {
		raw, err := token.MintUser(a.Service.TokenKey(), token.DefaultIssuer, user, "", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	ctx := commands.WithActor(context.Background(), commands.Actor{ID: "cli:test"})
	if _, err := a.Service.GrantDirect(ctx, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	c := apiClient{t: t, base: a.URL}
	org := c.call(201, "POST", "/api/v1/orgs", tok(a, "root"), map[string]string{"name": "acme", "owner": "alice"})["id"].(string)
	if _, err := a.Service.GrantDirect(ctx, commands.AssignRole{OrgID: org, UserID: "bob", Role: domain.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	tun := c.call(201, "POST", "/api/v1/tunnels?org=acme", tok(a, "alice"), map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"})["id"].(string)

	rcv := &hookReceiver{failFirst: true}
	addr := freeAddr(t)
	stop := serveOn(t, addr, rcv)
	created := c.call(201, "POST", "/api/v1/webhooks?org=acme", tok(a, "alice"), map[string]any{"name": "chatops", "url": "http://" + addr + "/hook",
		"types": []string{"access.requested", "access.approved", "access.denied", "grant.created", "grant.expiring"}})
	hook, secret := created["id"].(string), created["secret"].(string)

	request := func(a *controlapp.App) string {
		return apiClient{t: t, base: a.URL}.call(201, "POST", "/api/v1/access-requests", tok(a, "bob"),
			map[string]string{"org": "acme", "tunnel_id": tun, "duration": "1h", "reason": "on call"})["id"].(string)
	}
	req1 := request(a)
	c.call(200, "POST", "/api/v1/access-requests/"+req1+"/approve?org=acme", tok(a, "alice"), nil)
	// A one-hour grant is within the default notice lead (1h): grant.expiring follows at once.
	want := map[string]int{domain.TypeAccessRequested: 1, domain.TypeAccessApproved: 1, domain.TypeGrantCreated: 1, domain.TypeGrantExpiring: 1}
	counts := func() map[string]int {
		n := map[string]int{}
		for _, typ := range rcv.taken() {
			n[typ]++
		}
		return n
	}
	poll.Until(t, 60*time.Second, "the flow's four events delivered", func() bool { return fmt.Sprint(counts()) == fmt.Sprint(want) })
	byID := map[string][]int{}
	for _, d := range rcv.deliveries() {
		byID[d.ID] = append(byID[d.ID], d.status)
	}
	for id, st := range byID {
		if fmt.Sprint(st) != "[503 200]" {
			t.Fatalf("webhook-id %s: answers %v, want 503 then 200 under the same id", id, st)
		}
	}
	status := func(a *controlapp.App) map[string]any {
		return apiClient{t: t, base: a.URL}.call(200, "GET", "/api/v1/webhooks/"+hook+"?org=acme", tok(a, "alice"), nil)["status"].(map[string]any)
	}
	if st := status(a); st["delivered"].(float64) != 4 || st["retried"].(float64) != 4 || st["failed"].(float64) != 4 ||
		!strings.Contains(st["last_error"].(string), "503") {
		t.Fatalf("status after the flow: %v", st)
	}

	// The receiver goes down; more is written; the control plane restarts; more is written; the
	// receiver comes back: every event arrives.
	stop()
	rcv.mu.Lock()
	rcv.failFirst = false
	rcv.mu.Unlock()
	req2 := request(a)
	c.call(200, "POST", "/api/v1/access-requests/"+req2+"/deny?org=acme", tok(a, "alice"), map[string]string{"reason": "not now"})
	failed := status(a)["failed"].(float64)
	poll.Until(t, 30*time.Second, "a failed delivery while the receiver is down", func() bool { return status(a)["failed"].(float64) > failed })
	// The secret is rotated meanwhile: what is delivered from then on carries both signatures.
	rotated := c.call(200, "POST", "/api/v1/webhooks/"+hook+"/rotate-secret?org=acme", tok(a, "alice"), nil)
	c.call(200, "GET", fmt.Sprintf("/api/v1/webhooks/%s?org=acme&wait_for=%d", hook, int64(rotated["position"].(float64))), tok(a, "alice"), nil)
	// A notifications feed open at shutdown ends with it, rather than holding it for the
	// shutdown timeout (10s).
	feedReq, _ := http.NewRequest(http.MethodGet, a.URL+"/api/v1/notifications/stream", nil)
	feedReq.Header.Set("Authorization", "Bearer "+tok(a, "bob"))
	feed, err := http.DefaultClient.Do(feedReq)
	if err != nil || feed.StatusCode != 200 {
		t.Fatalf("feed: %v %v", err, feed)
	}
	stopped := time.Now()
	a.Close()
	if took := time.Since(stopped); took > 5*time.Second {
		t.Fatalf("the control plane took %s to stop with a feed open", took)
	}
	if _, err := io.ReadAll(feed.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("the feed ended: %v", err)
	}
	feed.Body.Close()
	a = start()
	request(a)
	before := len(rcv.deliveries())
	serveOn(t, addr, rcv)
	want[domain.TypeAccessRequested], want[domain.TypeAccessRequestDenied] = 3, 1
	poll.Until(t, 60*time.Second, "every event delivered after the restart", func() bool { return fmt.Sprint(counts()) == fmt.Sprint(want) })
	for _, d := range rcv.deliveries() {
		if d.msg.OrgID != org {
			t.Fatalf("a delivery of another organization: %s", d.Body)
		}
	}
	poll.Until(t, 30*time.Second, "the status shows all seven delivered", func() bool { return status(a)["delivered"].(float64) >= 7 })

	all := rcv.deliveries()
	for _, d := range all[before:] {
		if strings.Count(d.Signature, "v1,") != 2 {
			t.Fatalf("a delivery after the rotation is signed %q, want the new and the old secret's signatures", d.Signature)
		}
	}
	verifyWithStandardWebhooks(t, secret, all)
	verifyWithStandardWebhooks(t, rotated["secret"].(string), all[before:])
}

// verifyWithStandardWebhooks checks every 2xx delivery with the official Standard Webhooks
// library for Node, and that it refuses a tampered one. Skips when Node.js or the library (make
// deps: npm install in webhooks/testdata/verify) is missing.
func verifyWithStandardWebhooks(t *testing.T, secret string, ds []hookDelivery) {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("..", "..", "webhooks", "testdata", "verify"))
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the signatures were not checked by standardwebhooks")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks", "package.json")); err != nil {
		t.Skip("standardwebhooks is not installed in webhooks/testdata/verify (make deps runs npm install there): the signatures were not checked by it")
	}
	var in bytes.Buffer
	n := 0
	for _, d := range ds {
		if d.status != 200 {
			continue
		}
		line, _ := json.Marshal(map[string]string{"secret": secret, "id": d.ID, "timestamp": d.Timestamp, "signature": d.Signature, "body": d.Body})
		in.Write(append(line, '\n'))
		n++
	}
	tampered := ds[len(ds)-1]
	line, _ := json.Marshal(map[string]string{"secret": secret, "id": tampered.ID, "timestamp": tampered.Timestamp, "signature": tampered.Signature,
		"body": strings.Replace(tampered.Body, "acme", "evil", 1) + " "})
	in.Write(append(line, '\n'))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "verify.mjs")
	cmd.Dir, cmd.Stdin = dir, &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.mjs: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != n+1 {
		t.Fatalf("verify.mjs answered %d lines for %d deliveries and a tampered one: %s", len(lines), n, out)
	}
	for i, l := range lines {
		var r struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if i < n && !r.OK {
			t.Fatalf("standardwebhooks refuses delivery %d: %s", i, r.Error)
		}
		if i == n && r.OK {
			t.Fatal("standardwebhooks accepts a tampered body: the check proves nothing")
		}
	}
	t.Logf("standardwebhooks verified %d deliveries and refused the tampered one", n)
}

// The webhooks runner keeps the lifecycle rules.
func TestWebhooksRunnerStartStopStress(t *testing.T) {
	t.Parallel()
	r := newSIEMRig(t)
	lifecycletest.StartStopStress(t, 5, func() lifecycletest.Component {
		w, err := controlapp.NewWebhooks(controlapp.WebhooksConfig{Store: r.log.Store, Pool: r.log.Pool, Endpoints: readmodels.New(r.log.Pool),
			Secrets: r.secrets, Poll: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return lifecycletest.Component{Start: w.Start, Stop: w.Stop}
	})
}

// An endpoint that accepts connections and never answers holds only itself: another endpoint of
// the same organization gets every notification meanwhile.
func TestADeadEndpointDelaysNoOther(t *testing.T) {
	t.Parallel()
	r := newSIEMRig(t)
	alive := &hookReceiver{}
	addr := freeAddr(t)
	serveOn(t, addr, alive)
	org := uuid.NewString()
	for _, url := range []string{"http://" + hungReceiver(t) + "/hook", "http://" + addr + "/hook"} {
		sealed, err := r.secrets.Seal(webhooks.SealField, []byte(webhooks.NewSecret()))
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.NewString()
		ev, err := domain.CreateWebhook(domain.NewWebhook{EndpointID: id, OrgID: org, Spec: domain.WebhookSpec{Name: "h", URL: url}, Secret: sealed, AllowPrivate: true})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(ev)
		res, err := r.log.Store.Append(context.Background(), domain.WebhookStream(id), eventstore.NoStream, eventstore.EventData{Type: ev.EventType(), Payload: b})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.runner.WaitFor(context.Background(), res.LastPosition, projections.Webhooks); err != nil {
			t.Fatal(err)
		}
	}
	const n = 50
	for range n {
		b, _ := json.Marshal(domain.AccessRequested{RequestID: uuid.NewString(), OrgID: org, TunnelID: uuid.NewString(), Requester: "bob", DurationSeconds: 60, Reason: "x"})
		if _, err := r.log.Store.Append(context.Background(), domain.SharingStream(uuid.NewString()), eventstore.NoStream,
			eventstore.EventData{Type: domain.TypeAccessRequested, Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := controlapp.NewWebhooks(controlapp.WebhooksConfig{Store: r.log.Store, Pool: r.log.Pool, Endpoints: readmodels.New(r.log.Pool),
		Secrets: r.secrets, AllowPrivate: true, Timeout: time.Minute, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	poll.Until(t, 20*time.Second, "the live endpoint gets every notification", func() bool { return len(alive.taken()) == n })
}
